"""monai_crossd: Cross-D Conv (arXiv 2411.02441) for MONAI."""

from __future__ import annotations

__version__ = "0.1.0"

from . import networks  # noqa: E402  (registers Conv["crossd", ...])
from . import converters, engines  # noqa: E402

__all__ = ["__version__", "converters", "engines", "networks"]
