"""monai_crossd: Cross-D Conv (arXiv 2411.02441) for MONAI.

The library is :mod:`monai_crossd.networks` (layers, blocks, networks) and :mod:`monai_crossd.converters` (2D -> Cross-D
-> 3D, pretrained checkpoints); importing the package loads those two only. The applications built on them (datasets,
bundle helpers, probing, the transfer study) live in :mod:`monai_crossd.apps` and load on first use.
"""

from __future__ import annotations

import importlib

from . import converters, networks

__version__ = "0.2.0"

__all__ = ["__version__", "converters", "networks"]


def __getattr__(name: str):
    if name == "apps":  # loaded on first use: the library does not depend on it
        return importlib.import_module(f"{__name__}.apps")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
