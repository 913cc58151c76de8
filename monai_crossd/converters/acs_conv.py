"""ACS convolution: a 2D kernel applied to a volume along three views (axial, coronal, sagittal).

Yang et al., "Reinventing 2D Convolutions for 3D Images", IEEE JBHI 2021 (arXiv 1911.10477). The output
channels of a 2D convolution are split in three groups; the first sees the volume through axial
kernels ``(1, K, K)``, the second through coronal ones ``(K, 1, K)``, the third through sagittal ones
``(K, K, 1)``. Each view kernel is the 2D kernel placed in the centre plane of a ``K x K x K`` kernel, so
the output has the shape an ordinary ``nn.Conv3d`` with the same arguments would give, and the weight
keeps its 2D shape ``(O, C / groups, K, K)``: 2D checkpoints load as they are.

Written from the paper's description. The centre-tap view is computed as a thin convolution on the
padded volume cropped along the view axis, which is exact for any stride, padding, dilation and group
count (the centre tap of a dilated kernel sits ``(K // 2) * dilation`` voxels into the padded input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_crossd.networks.layers.conv_args import (
    PADDING_MODES,
    conv_output_size,
    conv_tuple,
    expand_2d_to_3d,
    padding_pairs,
)
from monai_crossd.utils import look_up

__all__ = ["ACSConv", "acs_conv3d", "acs_split"]

VIEWS = ("axial", "coronal", "sagittal")


def acs_split(out_channels: int) -> tuple[int, int, int]:
    """The default split of ``out_channels`` into (axial, coronal, sagittal): as equal as possible, the
    remainder going to the first views (``8 -> (3, 3, 2)``)."""
    base, rem = divmod(out_channels, 3)
    return (base + (rem >= 1), base + (rem >= 2), base)


def acs_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int | str = 0,
    dilation: Sequence[int] | int = 1,
    groups: int = 1,
    split: Sequence[int] | None = None,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """ACS convolution of a volume with a 2D-shaped kernel.

    Output channel ``o`` of view ``v`` equals ``F.conv3d`` with a ``K x K x K`` kernel holding ``weight[o]`` in
    its centre plane ``K // 2`` along axis ``v`` (``D`` for axial, ``H`` coronal, ``W`` sagittal) and zeros
    elsewhere; it is computed without those zeros.

    Args:
        x: ``(B, C, D, H, W)``.
        weight: ``(O, C / groups, K, K)``, square.
        bias: ``(O,)`` or None. Defaults to None.
        stride: an int or 3 ints ``(D, H, W)``. Defaults to 1.
        padding: an int, 3 ints, ``"same"`` or ``"valid"``, as for ``nn.Conv3d``. Defaults to 0.
        dilation: an int or 3 ints. Defaults to 1.
        groups: as ``nn.Conv3d``. Defaults to 1.
        split: output channels per view (axial, coronal, sagittal), summing to ``O``. Defaults to
            :func:`acs_split`.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``. Defaults to ``"zeros"``.

    Returns:
        ``(B, O, D', H', W')``, the shape of ``nn.Conv3d`` with the same arguments.

    Example:
        >>> acs_conv3d(torch.randn(1, 2, 8, 8, 8), torch.randn(6, 2, 3, 3), padding=1).shape
        torch.Size([1, 6, 8, 8, 8])
    """
    if x.ndim != 5:
        raise ValueError(f"`x` should be 5D (B, C, D, H, W), got shape {tuple(x.shape)}.")
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"`weight` should be (O, C / groups, K, K) with a square kernel, got shape {tuple(weight.shape)}.")
    out_channels, in_per_group, k = weight.shape[0], weight.shape[1], weight.shape[2]
    if groups < 1 or out_channels % groups or x.shape[1] != in_per_group * groups:
        raise ValueError(
            f"`x` should have {in_per_group * groups} channels for `weight` {tuple(weight.shape)} and "
            f"`groups`={groups} (with O divisible by groups), got shape {tuple(x.shape)}."
        )
    split = acs_split(out_channels) if split is None else tuple(split)
    if len(split) != 3 or any(s < 0 for s in split) or sum(split) != out_channels:
        raise ValueError(f"`split` should be 3 non-negative ints summing to {out_channels}, got {split!r}.")
    padding_mode = look_up(padding_mode, PADDING_MODES, "padding_mode")
    stride_, dilation_ = conv_tuple(stride, 3, "stride"), conv_tuple(dilation, 3, "dilation")
    pads = padding_pairs(padding if isinstance(padding, str) else conv_tuple(padding, 3, "padding"), k, dilation_)
    if any(lo or hi for lo, hi in pads):
        flat = [p for pair in reversed(pads) for p in pair]
        x = F.pad(x, flat, mode="constant" if padding_mode == "zeros" else padding_mode)
    sizes = conv_output_size(x.shape[2:], (k,) * 3, stride_, 0, dilation_)
    if min(sizes) < 1:
        raise ValueError(f"`x` of shape {tuple(x.shape)} (padded) is smaller than the dilated kernel {k}.")

    opg, ipg = out_channels // groups, in_per_group
    outputs, start = [], 0
    for axis, count in enumerate(split):
        a0, a1 = start, start + count
        start = a1
        if count == 0:
            continue
        g0, g1 = a0 // opg, (a1 - 1) // opg
        xv = x[:, g0 * ipg : (g1 + 1) * ipg]
        if g0 == g1 or (a0 % opg == 0 and a1 % opg == 0):
            w, crop = weight[a0:a1], None  # whole groups (or one group): slice the weight
        else:
            w, crop = weight[g0 * opg : (g1 + 1) * opg], (a0 - g0 * opg, a1 - g0 * opg)
        # the centre tap of the view axis reads padded input (K // 2) * dilation + i * stride
        xv = xv.narrow(2 + axis, (k // 2) * dilation_[axis], (sizes[axis] - 1) * stride_[axis] + 1)
        out = F.conv3d(xv, w.unsqueeze(2 + axis), None, stride_, 0, dilation_, 1 if g0 == g1 else g1 - g0 + 1)
        outputs.append(out if crop is None else out[:, crop[0] : crop[1]])
    out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, 1, 1, 1)
    return out


class ACSConv(nn.Module):
    """ACS convolution layer: 2D-shaped weights, 3D inputs ``(B, C, D, H, W)``, see :func:`acs_conv3d`.

    Args:
        in_channels: ``C``.
        out_channels: ``O``.
        kernel_size: ``K``: an int or two equal ints.
        stride: an int or 3 ints ``(D, H, W)``. Defaults to 1.
        padding: an int, 3 ints, ``"same"`` or ``"valid"``. Defaults to 0.
        dilation: an int or 3 ints. Defaults to 1.
        groups: as ``nn.Conv3d``. Defaults to 1.
        bias: add a learnable bias. Defaults to True.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``. Defaults to ``"zeros"``.
        split: output channels per view (axial, coronal, sagittal). Defaults to :func:`acs_split`.

    Example:
        >>> conv = ACSConv(2, 8, 3, padding=1)
        >>> conv.weight.shape, conv.split
        (torch.Size([8, 2, 3, 3]), (3, 3, 2))
        >>> conv(torch.randn(1, 2, 8, 8, 8)).shape
        torch.Size([1, 8, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str = 0,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        split: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        ks = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(set(ks)) != 1 or not isinstance(ks[0], int) or ks[0] < 1:
            raise ValueError(f"`kernel_size` should be a positive int or equal ints (a square kernel), got {kernel_size!r}.")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"`in_channels` ({in_channels}) and `out_channels` ({out_channels}) should be divisible by `groups` ({groups})."
            )
        padding_mode = look_up(padding_mode, PADDING_MODES, "padding_mode")
        self.in_channels, self.out_channels, self.kernel_size, self.groups = in_channels, out_channels, ks[0], groups
        self.stride, self.dilation = conv_tuple(stride, 3, "stride"), conv_tuple(dilation, 3, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"`padding` should be an int, 3 ints, 'same' or 'valid', got {padding!r}.")
            self.padding: tuple[int, int, int] | str = padding
        else:
            self.padding = conv_tuple(padding, 3, "padding")
        self.padding_mode = padding_mode
        self.split = acs_split(out_channels) if split is None else tuple(split)
        if len(self.split) != 3 or any(s < 0 for s in self.split) or sum(self.split) != out_channels:
            raise ValueError(f"`split` should be 3 non-negative ints summing to {out_channels}, got {split!r}.")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, ks[0], ks[0]))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, padding_mode={self.padding_mode!r}, split={self.split}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, O, D', H', W')``."""
        return acs_conv3d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.split, self.padding_mode
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, split: Sequence[int] | None = None) -> ACSConv:
        """The ACS layer with ``conv``'s weights; 2D arguments ``(h, w)`` become ``(h, h, w)`` for ``(D, H, W)``.

        Args:
            conv: an ``nn.Conv2d`` with a square kernel.
            split: output channels per view. Defaults to :func:`acs_split`.

        Returns:
            the layer, on ``conv``'s device and dtype.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"`conv` should be an nn.Conv2d, got {type(conv).__name__}.")
        if conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"`conv` should have a square kernel, got kernel_size={conv.kernel_size}.")

        expand = expand_2d_to_3d
        padding = expand(conv.padding)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=expand(conv.stride),
            padding=padding,
            dilation=expand(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            split=split,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer
