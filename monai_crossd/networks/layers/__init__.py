from __future__ import annotations

from .fourier_shift import (
    apply_shift,
    axis_angle_from_params,
    linear_rotation_matrix,
    shift_from_axis_angle,
    shift_from_rotation,
    shift_kernel,
    shift_operators,
)
from .per_sample_conv import per_sample_conv

__all__ = [
    "apply_shift",
    "axis_angle_from_params",
    "linear_rotation_matrix",
    "per_sample_conv",
    "shift_from_axis_angle",
    "shift_from_rotation",
    "shift_kernel",
    "shift_operators",
]
