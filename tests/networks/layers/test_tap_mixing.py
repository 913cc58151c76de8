from __future__ import annotations

import itertools

import pytest
import torch

from monai_crossd.networks.layers.fourier_shift import shift_kernel, shift_operators
from monai_crossd.networks.layers.per_sample_conv import per_sample_conv
from monai_crossd.networks.layers.tap_mixing import prefer_tap_mixing, tap_mixing_conv

CASES = list(itertools.product([2, 3], [1, 2, 3, 4], [1, 2], [1, 2], [1, 2]))


@pytest.mark.parametrize("nd,k,stride,dilation,groups", CASES)
def test_equals_per_sample_kernels(nd, k, stride, dilation, groups):
    b, c, o = 3, 4, 6
    weight = torch.randn(o, c // groups, k, k, k, dtype=torch.float64)
    shift = torch.rand(b, 3, dtype=torch.float64) * 2
    x = torch.randn(b, c, *(9,) * nd, dtype=torch.float64)
    bias = torch.randn(o, dtype=torch.float64)
    real, imag = shift_operators(shift, k)
    kernels = shift_kernel(weight, shift, plane=k // 2 if nd == 2 else None)
    expected = per_sample_conv(x, kernels, bias, stride, 0, dilation, groups)
    actual = tap_mixing_conv(x, weight, real, imag, (stride,) * nd, (dilation,) * nd, groups, bias)
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("nd,k", [(2, 3), (2, 4), (3, 3), (3, 2)])
def test_gradients_equal_per_sample_kernels(nd, k):
    weight = torch.randn(4, 2, k, k, k, dtype=torch.float64, requires_grad=True)
    shift = (torch.rand(2, 3, dtype=torch.float64) * 2).requires_grad_()
    x = torch.randn(2, 2, *(6,) * nd, dtype=torch.float64, requires_grad=True)

    def by_kernels(w, d, xx):
        return per_sample_conv(xx, shift_kernel(w, d, plane=k // 2 if nd == 2 else None), None, 1, 0, 1, 1)

    def by_patches(w, d, xx):
        real, imag = shift_operators(d, k)
        return tap_mixing_conv(xx, w, real, imag, (1,) * nd, (1,) * nd, 1)

    grad = torch.randn_like(by_kernels(weight, shift, x))
    g1 = torch.autograd.grad((by_kernels(weight, shift, x) * grad).sum(), (weight, shift, x))
    g2 = torch.autograd.grad((by_patches(weight, shift, x) * grad).sum(), (weight, shift, x))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_preference():
    assert prefer_tap_mixing(3, 512, 3, 1) and prefer_tap_mixing(2, 512, 3, 4)
    assert not prefer_tap_mixing(3, 64, 3, 343) and not prefer_tap_mixing(2, 64, 3, 256)
