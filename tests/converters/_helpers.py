"""Small models and references shared by the converter tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def randomise_norms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so eval-mode outputs test them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def dense_acs(x, weight, bias, stride, padding, dilation, groups, split, padding_mode="zeros"):
    """ACS by definition: each output channel's 2D kernel in the centre plane of a K^3 kernel along its view axis."""
    o, i, k, _ = weight.shape
    full = weight.new_zeros(o, i, k, k, k)
    start = 0
    for axis, count in enumerate(split):
        index = [slice(None)] * 3
        index[axis] = k // 2
        full[start : start + count][(slice(None), slice(None), *index)] = weight[start : start + count]
        start += count
    if padding_mode != "zeros":
        pads = (padding,) * 3 if isinstance(padding, int) else padding
        x = F.pad(x, [p for v in reversed(pads) for p in (v, v)], mode=padding_mode)
        padding = 0
    return F.conv3d(x, full, bias, stride, padding, dilation, groups)
