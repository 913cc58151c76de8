"""monai_crossd: Cross-D Conv (arXiv 2411.02441) for MONAI.

The library is :mod:`monai_crossd.networks` (layers, blocks, networks) and :mod:`monai_crossd.converters` (2D -> Cross-D
-> 3D, pretrained checkpoints); importing the package loads those two only. The application modules (``engines``,
``data``, ``bundle``, ``evaluate``) load on first use, as ``monai_crossd.engines`` or by their own import.
"""

from __future__ import annotations

import importlib

from . import converters, networks

__version__ = "0.1.0"

__all__ = ["__version__", "converters", "networks"]

_APPLICATIONS = ("bundle", "data", "engines", "evaluate")


def __getattr__(name: str):
    if name in _APPLICATIONS:  # loaded on first use: the library does not depend on them
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
