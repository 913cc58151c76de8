"""Convolution with a different kernel for every sample of a batch.

The batch is folded into the channel axis and run as one grouped convolution with
``groups = B * groups`` (the trick of timm's ``CondConv2d``): one kernel launch instead of ``B``,
and the same FLOPs as a shared kernel. ``reshape`` (not ``view``) keeps channels_last inputs valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["per_sample_conv"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def per_sample_conv(
    x: torch.Tensor,
    kernels: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    dilation: Sequence[int] | int = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``out[b] = conv(x[b], kernels[b]) + bias``.

    Args:
        x: ``(B, C_in, *spatial)`` with 1 to 3 spatial dims.
        kernels: ``(B, C_out, C_in / groups, *kernel)``; a ``(C_out, C_in / groups, *kernel)`` kernel is shared.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (padding as numbers).

    Returns:
        ``(B, C_out, *spatial_out)``.
    """
    nd = x.ndim - 2
    conv = _CONV[nd]
    if kernels.ndim == nd + 2:
        return conv(x, kernels, bias, stride, padding, dilation, groups)
    b = x.shape[0]
    if b == 1:
        return conv(x, kernels[0], bias, stride, padding, dilation, groups)
    out = conv(
        x.reshape(1, -1, *x.shape[2:]),
        kernels.reshape(-1, *kernels.shape[2:]),
        None,
        stride,
        padding,
        dilation,
        b * groups,
    )
    out = out.reshape(b, kernels.shape[1], *out.shape[2:])
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, *(1,) * nd)
    return out
