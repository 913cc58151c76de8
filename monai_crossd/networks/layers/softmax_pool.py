"""Eq. 1 of Cross-D Conv (arXiv 2411.02441): a per-position two-layer MLP, then a softmax-weighted sum over positions.

The rotation network maps every position ``n`` of the input to ``m_n = W2 relu(BN(W1 x_n + b1)) + b2`` (two
1x1 convolutions around a BatchNorm) and aggregates ``sum_n m_n softmax(m)_n`` per output channel. Written as
1x1 convolutions this is ~30x slower than a GEMM of its size on CPU, and in training its ``(B, 16, N)`` hidden
layer is written, normalised, rectified and read back several times (at 64^3 a layer's rotation network then
costs more than its convolution). Here it is GEMMs over ``(C, n)`` chunks of the ``(B, C, N)`` view of the
input, with the hidden layer kept in one cache-sized chunk at a time:

- :func:`mlp_softmax_pool` (inference, no autograd): BatchNorm on running statistics folded into ``W1``, the
  softmax taken online (a running maximum, sum and weighted sum per channel, rescaled when the maximum
  grows, as in streaming softmax), so neither the hidden layer nor the ``(B, 4, N)`` maps are stored.
- :func:`bn_mlp_softmax_pool` (training, batch statistics): one chunked pass for the statistics of
  ``W1 x + b1``, one for the maps (only the ``(B, 4, N)`` maps are stored); the backward pass recomputes
  the hidden layer chunk by chunk once (the parts of BatchNorm's gradient that need sums over all
  positions are affine in ``x`` and applied afterwards).
- :func:`softmax_pool`: the aggregation alone, for the plain form (autocast, tracing, double backward).
"""

from __future__ import annotations

import torch

__all__ = ["bn_mlp_softmax_pool", "mlp_softmax_pool", "softmax_pool"]

#: hidden-layer floats per chunk: 2 MiB in float32, measured fastest on the project's CPU (inference, hidden 16
#: at 1x16x96^3: 11.5 ms at 32768 positions per chunk, 21 ms at 4096, 48 ms unchunked)
CHUNK_FLOATS = 2**19


def softmax_pool(maps: torch.Tensor) -> torch.Tensor:
    """``(B, M, N) -> (B, M)``: ``sum_n maps[..., n] * softmax(maps)[..., n]`` (Eq. 1's aggregation)."""
    return (maps * torch.softmax(maps, dim=-1)).sum(-1)  # not linalg.vecdot: ONNX has no export for it


def _chunks(x: torch.Tensor, hidden: int, chunk: int | None) -> list[slice]:
    """Position slices of ``x`` ``(B, C, N)`` such that a ``(B, hidden, n)`` chunk holds about ``CHUNK_FLOATS``."""
    n = x.shape[-1]
    step = chunk or max(256, CHUNK_FLOATS // (hidden * x.shape[0]))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


class _Scratch:
    """Chunk buffers reused across the chunks of one call (no autograd runs through them).

    Fresh multi-MB tensors per chunk are slower than the GEMMs on CPU: glibc serves and returns them with
    ``mmap``, so every allocation is page-faulted again (a 262144-position UNet layer: 2.5x).
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.like, self.bufs = {"dtype": x.dtype, "device": x.device}, {}

    def __call__(self, name: str, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        key = (name, shape)
        if key not in self.bufs:
            self.bufs[key] = torch.empty(shape, **{**self.like, **({"dtype": dtype} if dtype else {})})
        return self.bufs[key]


def mlp_softmax_pool(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """``softmax_pool(W2 relu(W1 x + b1) + b2)`` without storing the hidden layer or the maps (no autograd).

    Args:
        x: ``(B, C, N)``; any strides along ``B`` and ``C`` (a view of a ``(B, C, *spatial)`` tensor).
        w1: ``(H, C)``; b1: ``(H,)``: the first pointwise layer with its normalisation folded in.
        w2: ``(M, H)``; b2: ``(M,)``: the second pointwise layer.
        chunk: positions per chunk. Defaults to ``CHUNK_FLOATS // (H * B)`` (at least 256).

    Returns:
        ``(B, M)``, equal to the unchunked result up to float rounding.
    """
    bsz, (hid, m_out) = x.shape[0], (w1.shape[0], w2.shape[0])
    scratch, w1e, w2e = _Scratch(x), w1.expand(bsz, *w1.shape), w2.expand(bsz, *w2.shape)
    top = total = weighted = None
    b1c, b2c = b1[:, None], b2[:, None]
    for sl in _chunks(x, hid, chunk):
        n = sl.stop - sl.start
        h = torch.bmm(w1e, x[:, :, sl], out=scratch("h", bsz, hid, n)).add_(b1c).relu_()
        m = torch.bmm(w2e, h, out=scratch("m", bsz, m_out, n)).add_(b2c)
        c_top = m.amax(dim=-1)
        e = torch.sub(m, c_top[..., None], out=scratch("e", bsz, m_out, n)).exp_()
        c_total = e.sum(dim=-1)
        c_weighted = e.mul_(m).sum(dim=-1)
        if top is None:
            top, total, weighted = c_top, c_total, c_weighted
            continue
        new_top = torch.maximum(top, c_top)
        old, new = torch.exp(top - new_top), torch.exp(c_top - new_top)
        total, weighted, top = total * old + c_total * new, weighted * old + c_weighted * new, new_top
    return weighted / total


class _BNMLPSoftmaxPool(torch.autograd.Function):
    """Forward and backward of :func:`bn_mlp_softmax_pool`, chunked over positions (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, w1, b1, gamma, beta, w2, b2, eps, chunk):
        (bsz, _, npos), hid, m_out = x.shape, w1.shape[0], w2.shape[0]
        chunks, scratch = _chunks(x, hid, chunk), _Scratch(x)
        w1e, w2e = w1.expand(bsz, *w1.shape), w2.expand(bsz, *w2.shape)
        count = bsz * npos
        b1c = b1[:, None]
        s1 = torch.zeros(hid, dtype=torch.float64, device=x.device)
        s2 = torch.zeros_like(s1)
        for sl in chunks:  # batch statistics of h = W1 x + b1 (chunk sums added in float64)
            h = torch.bmm(w1e, x[:, :, sl], out=scratch("h", bsz, hid, sl.stop - sl.start)).add_(b1c)
            s1 += h.sum(dim=(0, 2)).double()
            s2 += h.square_().sum(dim=(0, 2)).double()
        mean64 = s1 / count
        var64 = (s2 / count - mean64.square()).clamp_min_(0)  # biased, as BatchNorm normalises
        mean, invstd = mean64.to(x.dtype), torch.rsqrt(var64 + eps).to(x.dtype)
        scale = gamma * invstd
        w1f = (w1 * scale[:, None]).expand(bsz, *w1.shape)
        b1f, b2c = ((b1 - mean) * scale + beta)[:, None], b2[:, None]
        maps = torch.empty(bsz, m_out, npos, dtype=x.dtype, device=x.device)
        for sl in chunks:
            n = sl.stop - sl.start
            h = torch.bmm(w1f, x[:, :, sl], out=scratch("h", bsz, hid, n)).add_(b1f).relu_()
            maps[:, :, sl] = torch.bmm(w2e, h, out=scratch("m", bsz, m_out, n)).add_(b2c)
        top = maps.amax(dim=-1, keepdim=True)
        total, weighted = torch.zeros_like(top), torch.zeros_like(top)
        for sl in chunks:
            e = torch.sub(maps[:, :, sl], top, out=scratch("m", bsz, m_out, sl.stop - sl.start)).exp_()
            total += e.sum(dim=-1, keepdim=True)
            weighted += e.mul_(maps[:, :, sl]).sum(dim=-1, keepdim=True)
        out = (weighted / total).squeeze(-1)
        ctx.save_for_backward(x, w1, b1, gamma, beta, w2, maps, top, total, out, mean, invstd)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(mean64, var64)
        return out, mean64, var64

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _mean, _var):
        x, w1, b1, gamma, beta, w2, maps, top, total, out, mean, invstd = ctx.saved_tensors
        (bsz, chans, npos), hid, m_out = x.shape, w1.shape[0], w2.shape[0]
        count = bsz * npos
        scratch = _Scratch(x)
        # hhat = (W1 x + b1 - mean) * invstd = W1n x + c: the normalised hidden layer, recomputed per chunk
        w1n = w1 * invstd[:, None]
        w1ne, c = w1n.expand(bsz, hid, chans), ((b1 - mean) * invstd)[:, None]
        w2te, gammac, betac = w2.t().expand(bsz, hid, m_out), gamma[:, None], beta[:, None]
        outc, gradc = out[..., None], grad_out[..., None]
        need_x = ctx.needs_input_grad[0]
        g_x = torch.empty_like(x) if need_x else None
        w1tke = (w1.t() * (gamma * invstd)).expand(bsz, chans, hid)  # W1^T diag(k), k = gamma * invstd
        g_w2, g_b2 = torch.zeros_like(w2), torch.zeros_like(w2[:, 0])
        sum_g, sum_gh, sum_hhat = torch.zeros_like(gamma), torch.zeros_like(gamma), torch.zeros_like(gamma)
        g_pre_x, hhat_x, sum_x = torch.zeros_like(w1), torch.zeros_like(w1), torch.zeros_like(w1[0])
        # One pass. BatchNorm's input gradient k (g_pre - mean(g_pre) - hhat mean(g_pre hhat)) needs two sums
        # over all positions; the terms with them are affine in x (hhat is), so they are applied after the
        # pass as a correction of g_x = W1^T diag(k) g_pre, and g_W1 is assembled from sums over the pass.
        for sl in _chunks(x, hid, ctx.chunk):
            n, xc = sl.stop - sl.start, x[:, :, sl]
            hhat = torch.bmm(w1ne, xc, out=scratch("h", bsz, hid, n)).add_(c)
            act = torch.mul(hhat, gammac, out=scratch("a", bsz, hid, n)).add_(betac)
            mask = torch.gt(act, 0, out=scratch("mask", bsz, hid, n, dtype=torch.bool))
            act.relu_()
            m = maps[:, :, sl]  # d/dm_k of sum_n m_n softmax(m)_n is s_k (1 + m_k - out)
            g_maps = torch.sub(m, top, out=scratch("gm", bsz, m_out, n)).exp_().div_(total)
            g_maps.mul_(torch.sub(m, outc, out=scratch("t", bsz, m_out, n)).add_(1)).mul_(gradc)
            g_pre = torch.bmm(w2te, g_maps, out=scratch("gp", bsz, hid, n)).mul_(mask)  # at BatchNorm's output
            g_w2 += torch.bmm(g_maps, act.transpose(1, 2)).sum(0)
            g_b2 += g_maps.sum(dim=(0, 2))
            xt = xc.transpose(1, 2)
            g_pre_x += torch.bmm(g_pre, xt).sum(0)
            hhat_x += torch.bmm(hhat, xt).sum(0)
            sum_x += xc.sum(dim=(0, 2))
            sum_g += g_pre.sum(dim=(0, 2))
            sum_hhat += hhat.sum(dim=(0, 2))
            sum_gh += hhat.mul_(g_pre).sum(dim=(0, 2))
            if need_x:
                g_x[:, :, sl] = torch.bmm(w1tke, g_pre, out=scratch("gx", bsz, chans, n))
        k = gamma * invstd
        mean_g, mean_gh = sum_g / count, sum_gh / count
        if need_x:  # g_x -= W1^T (k mean_g) + W1^T diag(k mean_gh) hhat, hhat = W1n x + c
            kg = k * mean_gh
            lin = (w1.t() * kg) @ w1n  # (C, C)
            const = (w1.t() @ (k * mean_g + kg * c[:, 0]))[:, None]
            lin_e = lin.expand(bsz, chans, chans)
            for sl in _chunks(x, hid, ctx.chunk):
                buf = scratch("gx", bsz, chans, sl.stop - sl.start)
                g_x[:, :, sl] -= torch.bmm(lin_e, x[:, :, sl], out=buf).add_(const)
        # g_W1 = sum_n g_h x^T with g_h = k (g_pre - mean_g - hhat mean_gh); g_b1 = sum_n g_h
        g_w1 = k[:, None] * (g_pre_x - mean_g[:, None] * sum_x - mean_gh[:, None] * hhat_x)
        g_b1 = k * (sum_g - count * mean_g - mean_gh * sum_hhat)
        return g_x, g_w1, g_b1, sum_gh, sum_g, g_w2, g_b2, None, None


def bn_mlp_softmax_pool(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    eps: float,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``softmax_pool(W2 relu(BN(W1 x + b1)) + b2)`` with BatchNorm on batch statistics, chunked (autograd, once).

    Args:
        x: ``(B, C, N)``.
        w1: ``(H, C)``; b1: ``(H,)``: the first pointwise layer.
        gamma, beta: ``(H,)``: BatchNorm's affine parameters; eps: its epsilon.
        w2: ``(M, H)``; b2: ``(M,)``: the second pointwise layer.
        chunk: positions per chunk. Defaults to ``CHUNK_FLOATS // (H * B)`` (at least 256).

    Returns:
        ``(out, mean, var)``: ``out`` ``(B, M)``; the batch mean and biased variance of ``W1 x + b1`` per hidden
        channel (float64, no gradient) for the caller's running statistics.
    """
    return _BNMLPSoftmaxPool.apply(x, w1, b1, gamma, beta, w2, b2, eps, chunk)
