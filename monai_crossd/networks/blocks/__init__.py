from __future__ import annotations

from .crossd_conv import CrossDConv, CrossDConv2d, CrossDConv3d, RotationNetwork
from .crossd_conv_transpose import CrossDConvTranspose

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d", "CrossDConvTranspose", "RotationNetwork"]
