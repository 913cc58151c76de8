from __future__ import annotations

from .acs_conv import ACSConv, acs_conv3d, acs_split
from .checkpoint_families import CHECKPOINT_FAMILIES, detect_family
from .crossd import convert_to_crossd
from .pretrained import LoadReport, adapt_input_channels, inflate_to_crossd, load_pretrained_2d, read_checkpoint
from .reference import convert_reference_state_dict
from .report import ConversionReport
from .to_3d import LAYERS_3D, METHODS, convert_to_3d, crossd_conv_to_3d

__all__ = [
    "CHECKPOINT_FAMILIES",
    "LAYERS_3D",
    "METHODS",
    "ACSConv",
    "ConversionReport",
    "LoadReport",
    "acs_conv3d",
    "acs_split",
    "adapt_input_channels",
    "convert_reference_state_dict",
    "convert_to_3d",
    "convert_to_crossd",
    "crossd_conv_to_3d",
    "detect_family",
    "inflate_to_crossd",
    "load_pretrained_2d",
    "read_checkpoint",
]
