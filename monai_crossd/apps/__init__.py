"""Applications built on the library and on MONAI's engines, transforms, metrics and handlers.

- :mod:`monai_crossd.apps.data`: datalists, readers and checks for the data the bundles use (NIfTI, DICOM, npz).
- :mod:`monai_crossd.apps.bundle`: what the bundles' configs call (checkpoints, writers, metrics, paths, training).
- :mod:`monai_crossd.apps.dicom`: results as DICOM objects (SEG for label maps, SR for class probabilities), highdicom.
- :mod:`monai_crossd.apps.hybrid`: one network trained on 2D and 3D batches (mixed loader, per-dimension loss weights).
- :mod:`monai_crossd.apps.io`: atomic file writes (temporary file, fsync, mode 0644, ``os.replace``) for every writer.
- :mod:`monai_crossd.apps.probing`: which parameters train under each transfer protocol.
- :mod:`monai_crossd.apps.transfer`: the 2D -> 3D transfer study, ``python -m monai_crossd.apps.transfer --help``.

Nothing in :mod:`monai_crossd.networks` or :mod:`monai_crossd.converters` imports this package.
"""

from __future__ import annotations

import importlib

__all__ = ["bundle", "data", "dicom", "hybrid", "io", "probing", "transfer"]


def __getattr__(name: str):
    if name in __all__:  # each application loads on first use
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
