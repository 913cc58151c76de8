"""A loss weighted by the spatial dimensions of its input, for training one network on 2D and 3D batches."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import nn

__all__ = ["DimensionWeightedLoss"]


def _check_weight(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` should be a finite number >= 0, got {value!r}.")
    return float(value)


class DimensionWeightedLoss(nn.Module):
    """``loss(input, target)`` times ``weight_2d`` for a 2D prediction ``(B, C, H, W)``, ``weight_3d`` for 3D.

    The dimension is read from the prediction's ``ndim`` (4: 2D, 5: 3D), so this fits dense outputs
    (segmentation); a classifier's ``(B, N)`` output carries no spatial dimension and is refused.

    Args:
        loss: the loss, e.g. ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``.
        weight_2d: factor of the loss of 2D batches (>= 0). Defaults to 1.0.
        weight_3d: factor of the loss of 3D batches (>= 0). Defaults to 1.0.

    Raises:
        TypeError: ``loss`` is not callable.
        ValueError: a weight is negative or not a finite number.

    Example:
        >>> loss = DimensionWeightedLoss(nn.MSELoss(), weight_2d=0.5)
        >>> loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item()
        0.5
    """

    def __init__(self, loss: Callable[..., torch.Tensor], weight_2d: float = 1.0, weight_3d: float = 1.0) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"`loss` should be callable, e.g. an nn.Module, got {type(loss).__name__}.")
        self.loss = loss
        self.weights = {2: _check_weight(weight_2d, "weight_2d"), 3: _check_weight(weight_3d, "weight_3d")}

    def forward(self, input: torch.Tensor, target: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The weighted loss of ``input`` (``(B, C, H, W)`` or ``(B, C, D, H, W)``) against ``target``.

        Raises:
            ValueError: ``input`` is neither 4D nor 5D.
        """
        if input.ndim not in (4, 5):
            raise ValueError(
                f"{type(self).__name__}: `input` should be 4D (B, C, H, W) or 5D (B, C, D, H, W), got shape "
                f"{tuple(input.shape)}."
            )
        return self.loss(input, target, *args, **kwargs) * self.weights[input.ndim - 2]

    def extra_repr(self) -> str:
        return f"weight_2d={self.weights[2]}, weight_3d={self.weights[3]}"
