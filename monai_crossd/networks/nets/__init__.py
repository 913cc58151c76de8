from __future__ import annotations

from .dual import DualDimNet, dual_crossd_resnet18, dual_crossd_unet
from .resnet import (
    CrossDBasicBlock,
    CrossDBottleneck,
    CrossDBottleneckV1,
    CrossDResNet,
    crossd_resnet18,
    crossd_resnet34,
    crossd_resnet50,
)
from .unet import CrossDConvolution, CrossDResidualUnit, CrossDUNet

__all__ = [
    "CrossDBasicBlock",
    "CrossDBottleneck",
    "CrossDBottleneckV1",
    "CrossDConvolution",
    "CrossDResNet",
    "CrossDResidualUnit",
    "CrossDUNet",
    "DualDimNet",
    "crossd_resnet18",
    "crossd_resnet34",
    "crossd_resnet50",
    "dual_crossd_resnet18",
    "dual_crossd_unet",
]
