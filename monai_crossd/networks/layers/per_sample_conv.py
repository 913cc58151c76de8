"""Convolution with a different kernel for every sample of a batch.

Two problems live here, both with one dispatcher (:func:`select_path`) so that the choice of
formulation per device is made in one place:

* :func:`per_sample_conv` convolves sample ``b`` with a given kernel ``kernels[b]``. The default
  folds the batch into the channel axis and runs one grouped convolution with ``groups = B * groups``
  (the trick of timm's ``CondConv2d``): one kernel launch instead of ``B`` and the FLOPs of a shared
  kernel. ``reshape`` (not ``view``) keeps channels_last inputs valid. On CPU, small feature maps run
  faster as ``unfold`` + one batched GEMM (``"unfold"``) and a plain loop over samples (``"loop"``) is
  the fallback that any backend supports.
* :func:`per_sample_mixed_conv` convolves sample ``b`` with ``kernel_b = mix[b] @ weight``, a per-sample
  linear map of one shared weight (Cross-D Conv: the Fourier shift of the knowledge base). It either
  materialises the ``B`` kernels (one GEMM over the shared weight, then :func:`per_sample_conv`) or
  never builds them: the map is applied to the taps of the unfolded input instead and one GEMM with
  the shared weight follows (``"mixed_unfold"``). The second costs ``Q / P`` times the FLOPs of the
  convolution (3x for a 2D plane of a cubic kernel) but reads the weight once for the whole batch,
  where materialising writes and reads ``B`` kernels: on feature maps of a few pixels (ResNet stages
  3-4 at 64x64 inputs) the kernels are larger than the activations and this wins by several times.

Traced, scripted or exported (``torch.jit.trace``, either ONNX exporter, ``torch.export``), every function takes a
formulation whose graph holds for any batch size (``"taps"`` / ``"mixed_unfold"``: im2col by ``Tensor.unfold`` and
batched GEMMs, batch folded with ``-1``), since a graph recorded with the batch in its groups or loop would compute
something else at another batch size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_crossd.networks.layers.conv_args import conv_output_size, conv_tuple

__all__ = [
    "MIXED_PATHS",
    "PATHS",
    "mix_kernel",
    "per_sample_conv",
    "per_sample_conv_transpose",
    "per_sample_mixed_conv",
    "select_path",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

PATHS = ("grouped", "loop", "taps", "unfold")
"""Formulations of :func:`per_sample_conv` (``"unfold"`` needs 2D inputs; ``"taps"``, any batch size in one graph)."""

MIXED_PATHS = ("materialize", "mixed_unfold")
"""Formulations of :func:`per_sample_mixed_conv` (``"mixed_unfold"`` needs 2D or 3D inputs)."""

# output positions per sample up to which the GEMM formulations are chosen, per (device type, spatial
# dims). Both trade FLOPs for memory traffic, and that trade depends mostly on the positions (kernels
# cost B * O * I * P memory, the convolution B * O * I * P * L FLOPs). CPU, 2D: measured with ResNet18
# stages at 64x64 inputs (fwd+bwd, batch 8; benchmarks/README.md): mixed_unfold wins by 2.5-13x at 4x4
# and 2x2 maps and loses by 2.7-10x at 8x8 and 16x16; thresholds 64 and 256 made the whole network
# 3-8% and 27-32% slower than 32 (2026-12-03). CPU, 3D (no extra FLOPs there: P = Q = K^3): measured
# fwd+bwd at the 3D UNet (batch 2, 64^3), ResNet18 (batch 4, 32^3) and vessel ResNet18 (batch 16,
# 28^3) conv shapes (benchmarks/paths_3d.py, results/paths_3d_cpu.md): mixed_unfold wins by 3-40x at
# 1 and 8 positions, loses by 1.16-1.37x at 64 (bar one shape, 0.88x) and by 1.5-20x from 343 up.
# CUDA values are a guess (not measured): the grouped convolution is fast there and only the tiniest
# maps go the GEMM way.
_MIXED_UNFOLD_MAX_POSITIONS = {("cpu", 2): 32, ("cpu", 3): 32, ("cuda", 2): 16, ("cuda", 3): 16}
_UNFOLD_MAX_POSITIONS = {"cpu": 16, "cuda": 0}
# input positions per sample from which per_sample_conv_transpose loops over samples (measured on CPU only)
_TRANSPOSED_LOOP_MIN_POSITIONS = {"cpu": 32**3}


def exporting() -> bool:
    """True while a graph is recorded for another runtime: ``torch.jit`` tracing or scripting, ONNX export,
    ``torch.export`` (not plain ``torch.compile``, which re-traces on a new batch size)."""
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
    )


def select_path(
    x: torch.Tensor, kernel_size: Sequence[int], stride, padding, dilation, mixed: bool, transposed: bool = False
) -> str:
    """The formulation used for ``x`` on its device: the one place where the choice is made.

    Args:
        x: the input ``(B, C, *spatial)``.
        kernel_size: the spatial kernel shape.
        stride, padding, dilation: of the convolution (``padding`` as numbers).
        mixed: choose among :data:`MIXED_PATHS` (for :func:`per_sample_mixed_conv`) instead of
            :data:`PATHS`.
        transposed: for :func:`per_sample_conv_transpose` (``"grouped"`` or ``"loop"``). Defaults to False.

    Returns:
        a name from :data:`MIXED_PATHS` or :data:`PATHS`. Unknown devices get the plain paths
        (``"materialize"`` + ``"grouped"``).
    """
    nd = x.ndim - 2
    if exporting():  # one graph for every batch size
        return "mixed_unfold" if mixed else "taps"
    if transposed:  # per_sample_conv_transpose, CPU (results/paths_3d_cpu.md): a loop wins from 32^3 inputs
        # (1.23x at 2x32x32^3 -> 16), grouped below (1.3-1.7x at 16^3 and 8^3); elsewhere grouped
        large = math.prod(x.shape[2:]) >= _TRANSPOSED_LOOP_MIN_POSITIONS.get(x.device.type, math.inf)
        return "loop" if large else "grouped"
    positions = math.prod(conv_output_size(x.shape[2:], kernel_size, stride, padding, dilation))
    dev = x.device.type
    if mixed:
        ok = x.shape[0] > 1 and positions <= _MIXED_UNFOLD_MAX_POSITIONS.get((dev, nd), 0)
        return "mixed_unfold" if ok else "materialize"
    ok = nd == 2 and x.shape[0] > 1 and positions <= _UNFOLD_MAX_POSITIONS.get(dev, 0)
    return "unfold" if ok else "grouped"


def _check_path(path: str, options: Sequence[str], nd: int) -> None:
    if path not in options:
        raise ValueError(f"`path` should be one of {tuple(options)} or None, got {path!r}.")
    if path == "unfold" and nd != 2:
        raise ValueError(f"`path={path!r}` needs a 2D input (B, C, H, W), got {nd} spatial dims.")
    if path == "mixed_unfold" and nd not in (2, 3):
        raise ValueError(f"`path={path!r}` needs a 2D or 3D input, got {nd} spatial dims.")


def _add_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, *(1,) * (out.ndim - 2))


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """``(B, *spatial, C) -> (B, C, *spatial)``, contiguous (explicit dims: the legacy ONNX exporter mistranslates
    ``movedim(-1, 1)``)."""
    return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)).contiguous()


def _taps_last(x: torch.Tensor, kernel_size: Sequence[int], dilation, padding, stride) -> torch.Tensor:
    """im2col, channels last and taps last: ``(B, L * C, P)`` with ``L`` output positions and ``P`` taps (row-major).

    One copy of the input per tap, laid out so that the tap-mixing ``bmm`` and the GEMM with the shared
    weight that follow need no other copy (2D and 3D alike).
    """
    nd = x.ndim - 2
    dilation, padding = conv_tuple(dilation, nd, "dilation"), conv_tuple(padding, nd, "padding")
    stride = conv_tuple(stride, nd, "stride")
    if any(padding):
        x = F.pad(x, [p for p in reversed(padding) for _ in range(2)])
    if exporting():  # one strided slice per tap: Tensor.unfold has no ONNX export with a dynamic batch
        out = conv_output_size(x.shape[2:], kernel_size, stride, 0, dilation)
        taps = [
            x[(slice(None), slice(None), *(slice(o * d, o * d + (n - 1) * s + 1, s)
                                           for o, d, n, s in zip(offsets, dilation, out, stride)))]
            for offsets in itertools.product(*(range(k) for k in kernel_size))
        ]
        stacked = torch.stack(taps, -1).permute(0, *range(2, 2 + nd), 1, 2 + nd)  # (B, *out, C, P)
        return stacked.reshape(-1, math.prod(out) * x.shape[1], len(taps))
    x = x.movedim(1, -1)  # (B, *spatial, C)
    for i in range(nd):  # each unfold appends a window axis: (B, *out, C, *windows)
        x = x.unfold(1 + i, (kernel_size[i] - 1) * dilation[i] + 1, stride[i])
    if any(d > 1 for d in dilation):
        x = x[(..., *(slice(None, None, d) for d in dilation))]
    return x.reshape(x.shape[0], -1, math.prod(kernel_size))


def _taps_conv(x: torch.Tensor, kernels: torch.Tensor, stride, padding, dilation, groups: int) -> torch.Tensor:
    """Per-sample convolution as im2col (:func:`_taps_last`) and one batched GEMM per group; the batch size appears
    only as ``-1``, so a traced graph holds for every batch size. ``kernels``: ``(B, O, C / groups, *k)``."""
    o, ksize, c = int(kernels.shape[1]), kernels.shape[3:], int(x.shape[1])  # ints: static channels in a graph
    spatial = [int(n) for n in conv_output_size(x.shape[2:], ksize, stride, padding, dilation)]
    cols = _taps_last(x, ksize, dilation, padding, stride)  # (B, L * C, P)
    cols = cols.reshape(-1, math.prod(spatial), groups, (c // groups) * math.prod(ksize))  # (B, L, g, C / g * P)
    w = kernels.reshape(-1, groups, o // groups, (c // groups) * math.prod(ksize))  # (B, g, O / g, C / g * P)
    out = torch.einsum("blgk,bgok->blgo", cols, w)  # (B, L, g, O / g)
    return _channels_first(out.reshape(-1, *spatial, o))


def _per_sample(call, x: torch.Tensor, kernels: torch.Tensor, groups: int, path: str) -> torch.Tensor:
    """``call(x[b], kernels[b], groups)`` for every sample, as a loop (``"loop"``) or as one call with the batch
    folded into the channels and ``B * groups`` groups (``"grouped"``, the trick of timm's ``CondConv2d``)."""
    if path == "loop":
        return torch.cat([call(x[i : i + 1], k, groups) for i, k in enumerate(kernels)])
    b = x.shape[0]
    out = call(x.reshape(1, -1, *x.shape[2:]), kernels.reshape(-1, *kernels.shape[2:]), b * groups)
    return out.reshape(b, -1, *out.shape[2:])


def per_sample_conv(
    x: torch.Tensor,
    kernels: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    dilation: Sequence[int] | int = 1,
    groups: int = 1,
    path: str | None = None,
) -> torch.Tensor:
    """``out[b] = conv(x[b], kernels[b]) + bias``.

    Args:
        x: ``(B, C_in, *spatial)`` with 1 to 3 spatial dims.
        kernels: ``(B, C_out, C_in / groups, *kernel)``; a ``(C_out, C_in / groups, *kernel)`` kernel is shared.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (padding as numbers).
        path: one of :data:`PATHS`, or ``None`` for :func:`select_path`'s choice. All give the same
            result up to rounding. Defaults to None.

    Returns:
        ``(B, C_out, *spatial_out)``.
    """
    nd = x.ndim - 2
    conv = _CONV[nd]
    if kernels.ndim == nd + 2:
        return conv(x, kernels, bias, stride, padding, dilation, groups)
    b = x.shape[0]
    if b == 1 and path is None and not exporting():
        return conv(x, kernels[0], bias, stride, padding, dilation, groups)
    if path is None:
        path = select_path(x, kernels.shape[3:], stride, padding, dilation, mixed=False)
    _check_path(path, PATHS, nd)
    if path == "taps":
        out = _taps_conv(x, kernels, stride, padding, dilation, groups)
    elif path == "unfold":
        # im2col once for the batch, then one (B * groups)-batched GEMM with the per-sample kernels
        o, ksize = kernels.shape[1], kernels.shape[3:]
        cols = F.unfold(x, ksize, dilation, padding, stride)  # (B, C * P, L)
        cols = cols.view(b, groups, -1, cols.shape[-1])
        out = torch.matmul(kernels.reshape(b, groups, o // groups, -1), cols)  # (B, g, O / g, L)
        out = out.view(b, o, *conv_output_size(x.shape[2:], ksize, stride, padding, dilation))
    else:
        out = _per_sample(lambda xi, k, g: conv(xi, k, None, stride, padding, dilation, g), x, kernels, groups, path)
    return _add_bias(out, bias)


def mix_kernel(weight: torch.Tensor, mix: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """``kernels[b] = mix[b] @ weight`` over the flattened taps: one batched GEMM, written in the final layout.

    Args:
        weight: ``(O, I, *taps)``, shared; ``Q = prod(taps)``.
        mix: ``(B, P, Q)``.
        kernel_size: the output kernel shape, ``prod(kernel_size) = P``.

    Returns:
        ``(B, O, I, *kernel_size)``, contiguous. (One GEMM over the shared weight followed by a permute was
        1.8-6x slower on CPU: the permuted copy of ``B`` kernels costs more than reading the weight ``B`` times.)
    """
    o, i = weight.shape[:2]
    b, _, q = mix.shape
    # bmm, not matmul: matmul folds this into (B * P, Q) @ (Q, O * I) and copies the transpose (4x slower at B=1)
    out = torch.bmm(weight.reshape(1, o * i, q).expand(b, o * i, q), mix.transpose(1, 2))  # (B, O * I, P)
    return out.view(-1, o, i, *kernel_size)  # -1: keeps the shape static for ONNX export


def per_sample_mixed_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    mix: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    dilation: Sequence[int] | int = 1,
    groups: int = 1,
    path: str | None = None,
) -> torch.Tensor:
    """``out[b] = conv(x[b], mix[b] @ weight) + bias``: a per-sample linear map of one shared weight.

    Args:
        x: ``(B, C_in, *spatial)`` with 1 to 3 spatial dims.
        weight: ``(C_out, C_in / groups, *taps)`` with ``Q = prod(taps)`` taps (``(K, K, K)`` for Cross-D).
        mix: ``(B, P, Q)``: row ``p`` gives output tap ``p`` (row-major over a cubic kernel of
            ``x.ndim - 2`` axes, so ``P = K^2`` for a 2D kernel) as a combination of the ``Q`` taps.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (padding as numbers).
        path: one of :data:`MIXED_PATHS`, or ``None`` for :func:`select_path`'s choice. All give the same
            result up to rounding. Defaults to None.

    Returns:
        ``(B, C_out, *spatial_out)``.

    Example:
        >>> x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3, 3)
        >>> per_sample_mixed_conv(x, w, torch.randn(2, 9, 27), padding=1).shape
        torch.Size([2, 6, 8, 8])
    """
    nd = x.ndim - 2
    if nd not in _CONV:
        raise ValueError(f"`x` should have 1 to 3 spatial dims, got shape {tuple(x.shape)}.")
    if mix.ndim != 3:
        raise ValueError(f"`mix` should have shape (B, P, Q), got {tuple(mix.shape)}.")
    b, (p, q) = mix.shape[0], (int(s) for s in mix.shape[1:])  # the batch stays symbolic under torch.export
    k = round(p ** (1 / nd))
    if b != x.shape[0] or k**nd != p or q != math.prod(weight.shape[2:]):
        raise ValueError(
            f"`mix` should have shape (B={x.shape[0]}, K^{nd}, {math.prod(weight.shape[2:])}), got {tuple(mix.shape)}."
        )
    kernel_size = (k,) * nd
    if path is None:
        path = select_path(x, kernel_size, stride, padding, dilation, mixed=True)
    _check_path(path, MIXED_PATHS, nd)
    if path == "materialize":
        return per_sample_conv(x, mix_kernel(weight, mix, kernel_size), bias, stride, padding, dilation, groups)
    # mix the taps of the unfolded input (cheap: C * P * Q per position) and run one GEMM with the
    # shared weight, batch and positions folded into its M dimension; channels-last taps make both
    # contractions plain (batched) GEMMs on contiguous operands
    o, c, g = int(weight.shape[0]), int(x.shape[1]), groups  # ints: static channels in a traced graph
    cols = _taps_last(x, kernel_size, dilation, padding, stride)  # (B, L * C, P)
    mixed = torch.bmm(cols, mix).view(-1, c * q)  # (B * L, C * Q): taps of U, row-major per channel
    if g == 1:
        out = torch.mm(mixed, weight.reshape(o, c * q).t())  # (B * L, O)
    else:
        w = weight.reshape(g, o // g, (c // g) * q).transpose(1, 2)
        out = torch.bmm(mixed.view(-1, g, (c // g) * q).transpose(0, 1), w).transpose(0, 1).reshape(-1, o)
    spatial = [int(n) for n in conv_output_size(x.shape[2:], kernel_size, stride, padding, dilation)]
    out = _channels_first(out.view(-1, *spatial, o))  # -1: the batch, also in a traced graph
    return _add_bias(out, bias)


def _taps_conv_transpose(x, kernels, stride, padding, output_padding, groups, dilation) -> torch.Tensor:
    """A transposed convolution as a convolution: ``stride - 1`` zeros between the inputs (a depthwise transposed
    conv with a kernel of ones), ``dilation (K - 1) - padding`` of padding (``+ output_padding`` after; negative
    crops), and the flipped kernels with their in/out channels swapped per group, stride 1."""
    nd, (cin, cout_g), ksize = x.ndim - 2, kernels.shape[1:3], kernels.shape[3:]
    stride, padding = conv_tuple(stride, nd, "stride"), conv_tuple(padding, nd, "padding")
    output_padding, dilation = conv_tuple(output_padding, nd, "output_padding"), conv_tuple(dilation, nd, "dilation")
    for axis, s in enumerate(stride):  # s - 1 zeros after each input along the axis, none after the last
        if s > 1:
            dim = 2 + axis
            x = torch.stack([x, *[torch.zeros_like(x)] * (s - 1)], dim + 1).flatten(dim, dim + 1)
            x = x.narrow(dim, 0, x.shape[dim] - (s - 1))
    edges = [(d * (k - 1) - p, d * (k - 1) - p + op) for k, p, op, d in zip(ksize, padding, output_padding, dilation)]
    x = F.pad(x, [e for pair in reversed(edges) for e in pair])
    w = kernels.reshape(-1, groups, cin // groups, cout_g, *ksize).transpose(2, 3)  # (B, g, O / g, C / g, *k)
    w = w.flip(list(range(4, 4 + nd))).reshape(-1, groups * cout_g, cin // groups, *ksize)
    return _taps_conv(x, w, 1, 0, dilation, groups)


def per_sample_conv_transpose(
    x: torch.Tensor,
    kernels: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    output_padding: Sequence[int] | int = 0,
    groups: int = 1,
    dilation: Sequence[int] | int = 1,
    path: str | None = None,
) -> torch.Tensor:
    """``out[b] = conv_transpose(x[b], kernels[b]) + bias`` (arguments in ``F.conv_transpose3d``'s order).

    Args:
        x: ``(B, C_in, *spatial)`` with 1 to 3 spatial dims.
        kernels: ``(B, C_in, C_out / groups, *kernel)``; a ``(C_in, C_out / groups, *kernel)`` kernel is shared.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, output_padding, groups, dilation: as in ``torch.nn.functional.conv_transpose2d``.
        path: ``"grouped"`` (batch folded into the groups, one call), ``"loop"`` (one call per sample) or
            ``"taps"`` (zeros between the inputs, then :func:`per_sample_conv`'s batch-size-free ``"taps"`` with the
            flipped kernels), or ``None`` for :func:`select_path`'s choice. All give the same result up to rounding.

    Returns:
        ``(B, C_out, *spatial_out)``.
    """
    nd = x.ndim - 2
    conv_t = _CONV_T[nd]
    if kernels.ndim == nd + 2:
        return conv_t(x, kernels, bias, stride, padding, output_padding, groups, dilation)
    b = x.shape[0]
    if b == 1 and path is None and not exporting():
        return conv_t(x, kernels[0], bias, stride, padding, output_padding, groups, dilation)
    if path is None:
        path = select_path(x, kernels.shape[3:], 1, 0, 1, mixed=False, transposed=True)
    if path not in ("grouped", "loop", "taps"):
        raise ValueError(f"`path` should be 'grouped', 'loop', 'taps' or None for a transposed convolution, got {path!r}.")
    if path == "taps":
        return _add_bias(_taps_conv_transpose(x, kernels, stride, padding, output_padding, groups, dilation), bias)
    out = _per_sample(
        lambda xi, k, g: conv_t(xi, k, None, stride, padding, output_padding, g, dilation), x, kernels, groups, path
    )
    return _add_bias(out, bias)
