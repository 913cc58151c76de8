"""Moved to :mod:`monai_crossd.apps.transfer` in 0.2; ``python -m monai_crossd.evaluate`` still runs the study."""
