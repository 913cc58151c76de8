from __future__ import annotations

from . import nets
from .blocks import CrossDConv, CrossDConv2d, CrossDConv3d, CrossDConvTranspose
from .factory import register

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d", "CrossDConvTranspose", "nets", "register"]
