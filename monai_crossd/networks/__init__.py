from __future__ import annotations

from .blocks import CrossDConv, CrossDConv2d, CrossDConv3d
from .layers.factories import register as _register

_register()

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d"]
