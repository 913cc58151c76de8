"""Eq. 1 of Cross-D Conv (arXiv 2411.02441): a per-position two-layer MLP, then a softmax-weighted sum over positions.

The rotation network maps every position ``n`` of the input to ``m_n = W2 relu(W1 x_n + b1) + b2`` (two
1x1 convolutions with BatchNorm folded into the first) and aggregates ``sum_n m_n softmax(m)_n`` per
output channel. Written as 1x1 convolutions this is ~30x slower than a GEMM of its size on CPU; here it
is two GEMMs over ``(C, N)`` views of the ``(B, C, *spatial)`` input (no copy of the input).

:func:`mlp_softmax_pool` is the inference form: positions in chunks, the hidden layer in one reused
buffer that stays in cache, and the softmax taken online (a running maximum, sum and weighted sum per
channel, rescaled when the maximum grows, as in streaming softmax), so the ``(B, hidden, N)`` hidden
layer and the ``(B, 4, N)`` maps are never written to memory. :func:`softmax_pool` is the plain form
used when gradients are needed.
"""

from __future__ import annotations

import torch

__all__ = ["mlp_softmax_pool", "softmax_pool"]

#: hidden-layer floats per chunk of :func:`mlp_softmax_pool`: 2 MiB in float32, measured fastest on the
#: project's CPU (hidden 16 at 1x16x96^3: 11.5 ms at 32768 positions per chunk, 21 ms at 4096, 48 ms unchunked)
CHUNK_FLOATS = 2**19


def softmax_pool(maps: torch.Tensor) -> torch.Tensor:
    """``(B, M, N) -> (B, M)``: ``sum_n maps[..., n] * softmax(maps)[..., n]`` (Eq. 1's aggregation)."""
    return (maps * torch.softmax(maps, dim=-1)).sum(-1)  # not linalg.vecdot: ONNX has no export for it


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
        chunk: positions per chunk. Defaults to ``CHUNK_FLOATS // H``.

    Returns:
        ``(B, M)``, equal to the unchunked result up to float rounding.
    """
    bsz, _, n = x.shape
    hidden, m_out = w1.shape[0], w2.shape[0]
    chunk = min(n, chunk or max(1024, CHUNK_FLOATS // hidden))
    like = {"dtype": x.dtype, "device": x.device}  # torch.empty, not x.new_empty: x may be a MONAI MetaTensor
    h_buf, m_buf, out = torch.empty((hidden, chunk), **like), torch.empty((m_out, chunk), **like), torch.empty((bsz, m_out), **like)
    b1c, b2c = b1[:, None], b2[:, None]
    for b in range(bsz):
        top = total = weighted = None
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            h, m = h_buf[:, : stop - start], m_buf[:, : stop - start]
            torch.addmm(b1c, w1, x[b, :, start:stop], out=h).relu_()
            torch.addmm(b2c, w2, h, out=m)
            c_top = m.amax(dim=-1)
            e = torch.exp(m - c_top[:, None])
            c_total, c_weighted = e.sum(dim=-1), torch.linalg.vecdot(m, e)
            if top is None:
                top, total, weighted = c_top, c_total, c_weighted
                continue
            new_top = torch.maximum(top, c_top)
            old, new = torch.exp(top - new_top), torch.exp(c_top - new_top)
            total, weighted, top = total * old + c_total * new, weighted * old + c_weighted * new, new_top
        out[b] = weighted / total
    return out
