from __future__ import annotations

from .acs_conv import ACSConv, acs_conv3d, acs_split
from .crossd import convert_to_crossd
from .reference import convert_reference_state_dict
from .report import ConversionReport
from .to_3d import LAYERS_3D, METHODS, convert_to_3d, crossd_conv_to_3d

__all__ = [
    "ACSConv",
    "ConversionReport",
    "LAYERS_3D",
    "METHODS",
    "acs_conv3d",
    "acs_split",
    "convert_reference_state_dict",
    "convert_to_3d",
    "convert_to_crossd",
    "crossd_conv_to_3d",
]
