from __future__ import annotations

from .blocks import CrossDConv, CrossDConv2d, CrossDConv3d, CrossDConvTranspose
from .layers.factories import register as _register

_register()

from . import nets  # noqa: E402  (after registration: nets build Conv["crossd", dim])

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d", "CrossDConvTranspose", "nets"]
