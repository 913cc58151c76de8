"""Cross-D convolution with the shift applied to the input patches instead of the kernel.

A per-sample kernel ``U'_b = Re(S_b U)`` (``S_b = S_0 x S_1 x S_2``, see
:mod:`monai_crossd.networks.layers.fourier_shift`) costs ``B x O x C x K^3`` numbers to build and a
grouped convolution that reads them all. Since the output is linear in both,

    out_b = sum_t U'_b[t] . x_b(patch tap t) = sum_a U[a] . (sum_t Re(S_b)[t, a] x_b(patch tap t)),

the per-sample operators can instead mix the ``K^n`` taps of each input patch (three ``K x K``
contractions per sample, ``3K / O`` of the convolution's work), after which one convolution-sized
GEMM with the *shared* knowledge base does the rest. This wins where the patches are fewer than the
kernel's output channels (deep layers, small feature maps: ``L < O`` in 3D, ``K L < O`` in 2D, where
the 2D middle plane needs the depth axis of ``U`` weighted per sample as well), and loses on large
feature maps, where the materialised patches are large; :func:`prefer_tap_mixing` decides.
"""

from __future__ import annotations

import torch

__all__ = ["prefer_tap_mixing", "tap_mixing_conv"]


def prefer_tap_mixing(spatial_dims: int, out_channels: int, kernel_size: int, out_numel: int) -> bool:
    """Whether :func:`tap_mixing_conv` moves fewer numbers than per-sample kernels for one layer call.

    Args:
        spatial_dims: 2 or 3.
        out_channels: ``O``.
        kernel_size: ``K``.
        out_numel: output positions per sample, ``L``.
    """
    # measured on CPU (benchmarks/README.md): 9-16x faster at L = 1..8 with O = 256..512 in 3D,
    # 2.6x slower at L = 64, O = 128; the factor 4 leaves a margin for the backward pass
    factor = kernel_size if spatial_dims == 2 else 1
    return 4 * factor * out_numel < out_channels


def _patches(x: torch.Tensor, k: int, stride: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """``(B, C, *spatial)`` (already padded) -> ``(B, C, *out, *(K,) * n)`` view of the patches."""
    nd = x.ndim - 2
    for i in range(nd):
        span = (k - 1) * dilation[i] + 1
        x = x.unfold(2 + i, span, stride[i])
        if dilation[i] > 1:
            x = x[..., :: dilation[i]]
    return x


def _mix(cols: torch.Tensor, op: torch.Tensor, axis: int) -> torch.Tensor:
    """Contract tap axis ``axis`` (counted from the end among the last taps) with per-sample ``(B, K, K)``.

    ``cols[..., t]`` -> ``sum_t cols[..., t] op[t, a]``; ``cols`` is ``(B, ...)``.
    """
    dim = cols.ndim - 1 - axis
    moved = cols.movedim(dim, cols.ndim - 1)
    shape = (op.shape[0],) + (1,) * (cols.ndim - 3) + op.shape[1:]
    return torch.matmul(moved, op.reshape(shape)).movedim(cols.ndim - 1, dim)


def tap_mixing_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    real: torch.Tensor,
    imag: torch.Tensor | None,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-D convolution of an already padded input, shift applied to the patches.

    Args:
        x: padded input ``(B, C, H, W)`` (2D: the middle plane of the shifted kernel is used) or
            ``(B, C, D, H, W)`` (3D: the whole shifted kernel).
        weight: knowledge base ``U`` ``(O, C / groups, K, K, K)``.
        real, imag: ``(B, 3, K, K)`` shift operators from :func:`~.fourier_shift.shift_operators`
            (``imag`` is None for odd ``K``).
        stride, dilation: one int per spatial dim.
        groups: as in ``nn.Conv2d``.
        bias: ``(O,)`` or None.

    Returns:
        ``(B, O, *out)``, equal to the per-sample convolution with ``shift_kernel`` kernels.
    """
    nd = x.ndim - 2
    b, c = x.shape[:2]
    o, k = weight.shape[0], weight.shape[2]
    g = groups
    real = real.to(x.dtype)
    imag = imag.to(x.dtype) if imag is not None else None
    cols = _patches(x, k, stride, dilation)  # (B, C, *out, *taps)
    out_shape = cols.shape[2 : 2 + nd]
    cols = cols.reshape(b, g, c // g, -1, *(k,) * nd)  # (B, g, C/g, L, *taps)
    # kernel axis j of U' pairs with tap axis j of the patch: 3D taps (k0, k1, k2), 2D taps (k1, k2)
    axes = list(range(3 - nd, 3))
    yr, yi = cols, None
    for n, j in enumerate(axes):
        pos = nd - 1 - n  # tap axis counted from the end
        if imag is None:
            yr = _mix(yr, real[:, j], pos)
        elif yi is None:
            yr, yi = _mix(yr, real[:, j], pos), _mix(yr, imag[:, j], pos)
        elif nd == 3 and n == nd - 1:  # last axis of a 3D kernel: only the real part is needed
            yr, yi = _mix(yr, real[:, j], pos) - _mix(yi, imag[:, j], pos), None
        else:
            yr, yi = _mix(yr, real[:, j], pos) - _mix(yi, imag[:, j], pos), _mix(yr, imag[:, j], pos) + _mix(yi, real[:, j], pos)
    w = weight.reshape(g, o // g, c // g, k, k * k) if nd == 2 else weight.reshape(g, o // g, c // g, k**3)
    if nd == 3:
        yr = yr.reshape(b, g, c // g, -1, k**3)
        out = torch.einsum("gocA,bgclA->bgol", w, yr)  # U is real: the real part of the mixed patches is all
    else:
        # the depth axis of U is weighted per sample by row K // 2 of S_0 (complex for even K)
        row_r = real[:, 0, k // 2]  # (B, K)
        yr = yr.reshape(b, g, c // g, -1, k * k)
        mixed = torch.einsum("gocaA,bgclA->bgoal", w, yr)
        out = torch.einsum("bgoal,ba->bgol", mixed, row_r)
        if imag is not None:
            row_i = imag[:, 0, k // 2]
            if yi is not None:
                yi = yi.reshape(b, g, c // g, -1, k * k)
                out = out - torch.einsum("bgoal,ba->bgol", torch.einsum("gocaA,bgclA->bgoal", w, yi), row_i)
    out = out.reshape(b, o, *out_shape)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, *(1,) * nd)
    return out
