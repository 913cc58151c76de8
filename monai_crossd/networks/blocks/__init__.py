from __future__ import annotations

from .crossd_conv import CrossDConv, CrossDConv2d, CrossDConv3d, RotationNetwork

__all__ = ["CrossDConv", "CrossDConv2d", "CrossDConv3d", "RotationNetwork"]
