"""Every formulation of the per-sample convolutions gives the same outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from monai_crossd.networks.layers.fourier_shift import shift_kernel, shift_matrix, shift_operators
from monai_crossd.networks.layers.per_sample_conv import (
    MIXED_PATHS,
    PATHS,
    mix_kernel,
    per_sample_conv,
    per_sample_mixed_conv,
    select_path,
)

F64 = dict(dtype=torch.float64)
TOL = dict(atol=1e-10, rtol=1e-10)

# (conv kwargs, input spatial shape)
CASES_2D = [
    (dict(padding=1), (9, 8)),
    (dict(stride=2, padding=1), (9, 8)),
    (dict(padding=2, dilation=2), (11, 10)),
    (dict(padding=(0, 1), stride=(1, 2)), (6, 7)),
    (dict(padding=1, groups=2), (5, 5)),
]


def _grads(fn, *tensors):
    out = fn(*tensors)
    grad_out = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    return (out, *torch.autograd.grad(out, tensors, grad_out))


def _assert_same(results):
    first = results[0]
    for other in results[1:]:
        for a, b in zip(first, other):
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kwargs,spatial", CASES_2D)
@pytest.mark.parametrize("bias", [True, False])
def test_per_sample_conv_paths_2d(kwargs, spatial, bias):
    g = kwargs.get("groups", 1)
    x = torch.randn(3, 4, *spatial, **F64, requires_grad=True)
    k = torch.randn(3, 6, 4 // g, 3, 3, **F64, requires_grad=True)
    b = torch.randn(6, **F64, requires_grad=True) if bias else None
    tensors = (x, k, b) if bias else (x, k)
    results = [
        _grads(lambda x, k, b=b, path=path: per_sample_conv(x, k, b, path=path, **kwargs), *tensors) for path in PATHS
    ]
    _assert_same(results)
    # and each sample is the plain convolution with its own kernel
    conv = torch.nn.functional.conv2d
    expected = torch.cat([conv(x[i : i + 1], k[i], b, **kwargs) for i in range(3)])
    torch.testing.assert_close(results[0][0], expected, **TOL)


@pytest.mark.parametrize("nd", [1, 3])
def test_per_sample_conv_paths_other_dims(nd):
    x = torch.randn(2, 3, *(5,) * nd, **F64, requires_grad=True)
    k = torch.randn(2, 4, 3, *(3,) * nd, **F64, requires_grad=True)
    results = [_grads(lambda x, k, p=p: per_sample_conv(x, k, padding=1, path=p), x, k) for p in ("grouped", "loop")]
    _assert_same(results)
    conv = getattr(torch.nn.functional, f"conv{nd}d")
    expected = torch.cat([conv(x[i : i + 1], k[i], padding=1) for i in range(2)])
    torch.testing.assert_close(results[0][0], expected, **TOL)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("kwargs,spatial", CASES_2D)
def test_mixed_paths_2d(k, kwargs, spatial):
    """Materialising the shifted kernels and mixing the taps of the input agree, gradients included."""
    g = kwargs.get("groups", 1)
    kwargs = dict(kwargs, padding=kwargs.get("padding", 0) if k == 3 else 0)
    x = torch.randn(3, 4, *spatial, **F64, requires_grad=True)
    weight = torch.randn(6, 4 // g, k, k, k, **F64, requires_grad=True)
    bias = torch.randn(6, **F64, requires_grad=True)
    shift = (1 + 0.3 * torch.randn(3, 3, **F64)).requires_grad_(True)

    def run(path):
        def fn(x, weight, bias, shift):
            real, imag = shift_operators(shift, k)
            return per_sample_mixed_conv(x, weight, shift_matrix(real, imag, k // 2), bias, path=path, **kwargs)

        return _grads(fn, x, weight, bias, shift)

    results = [run(path) for path in MIXED_PATHS]
    _assert_same(results)
    # the same as convolving with the kernels of shift_kernel (which the FFT oracle tests pin down)
    kernels = shift_kernel(weight, shift, plane=k // 2)
    expected = per_sample_conv(x, kernels, bias, path="loop", **kwargs)
    torch.testing.assert_close(results[0][0], expected, **TOL)


def test_mixed_paths_float32():
    x, weight = torch.randn(4, 8, 6, 6), torch.randn(16, 8, 3, 3, 3)
    real, imag = shift_operators(1 + 0.3 * torch.randn(4, 3), 3)
    mix = shift_matrix(real, imag, 1)
    out = [per_sample_mixed_conv(x, weight, mix, padding=1, path=p) for p in MIXED_PATHS]
    torch.testing.assert_close(out[0], out[1], atol=1e-4, rtol=1e-4)


def test_mix_kernel_matches_shift_kernel():
    weight = torch.randn(5, 3, 4, 4, 4, **F64)
    shift = torch.randn(2, 3, **F64)
    real, imag = shift_operators(shift, 4)
    torch.testing.assert_close(mix_kernel(weight, shift_matrix(real, imag), (4, 4, 4)), shift_kernel(weight, shift))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=(0, 1, 2)), dict(dilation=2, padding=2, groups=3)])
def test_mixed_paths_3d(k, kwargs):
    """Both formulations of the 3D shifted convolution agree with the loop over samples, gradients included."""
    x = torch.randn(2, 3, 5, 6, 7, **F64, requires_grad=True)
    weight = torch.randn(6, 3 // kwargs.get("groups", 1), k, k, k, **F64, requires_grad=True)
    shift = (torch.randn(2, 3, **F64)).requires_grad_()

    def run(path):
        def fn(xx, w, d):
            if path == "reference":  # each sample: torch's conv3d with its shifted kernel
                kernels = shift_kernel(w, d)
                return torch.cat([torch.nn.functional.conv3d(xx[i : i + 1], kernels[i], **kwargs) for i in range(2)])
            real, imag = shift_operators(d, k)
            return per_sample_mixed_conv(xx, w, shift_matrix(real, imag), path=path, **kwargs)

        return _grads(fn, x, weight, shift)

    _assert_same([run("reference"), *(run(p) for p in MIXED_PATHS)])


def test_select_path():
    small, large = torch.randn(8, 4, 4, 4), torch.randn(8, 4, 64, 64)
    assert select_path(small, (3, 3), 1, 1, 1, mixed=True) == "mixed_unfold"
    assert select_path(large, (3, 3), 1, 1, 1, mixed=True) == "materialize"
    assert select_path(torch.randn(8, 4, 2, 2, 2), (3, 3, 3), 1, 1, 1, mixed=True) == "mixed_unfold"
    assert select_path(torch.randn(8, 4, 8, 8, 8), (3, 3, 3), 1, 1, 1, mixed=True) == "materialize"
    assert select_path(torch.randn(1, 4, 4, 4), (3, 3), 1, 1, 1, mixed=True) == "materialize"
    assert select_path(small, (3, 3), 1, 1, 1, mixed=False) == "unfold"  # 16 positions: the GEMM form on CPU
    assert select_path(small[:1], (3, 3), 1, 1, 1, mixed=False) == "grouped"  # one sample: nothing to batch
    assert select_path(large, (3, 3), 1, 1, 1, mixed=False) == "grouped"


def test_bad_path_is_named():
    x, k = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"`path` should be one of \('grouped', 'loop', 'taps', 'unfold'\) or None, got 'bmm'"):
        per_sample_conv(x, k, path="bmm")
    with pytest.raises(ValueError, match=r"`path='unfold'` needs a 2D input"):
        per_sample_conv(torch.randn(2, 3, 5, 5, 5), torch.randn(2, 4, 3, 3, 3, 3), path="unfold")
    with pytest.raises(ValueError, match=r"`mix` should have shape \(B=2, K\^2, 27\), got \(2, 8, 27\)"):
        per_sample_mixed_conv(x, torch.randn(4, 3, 3, 3, 3), torch.randn(2, 8, 27))


def test_select_path_for_3d_and_transposed_follows_the_measured_cpu_thresholds():
    # results/paths_3d_cpu.md: mixed_unfold up to 32 positions per sample in 3D, a loop for transposed convs from 32^3
    assert select_path(torch.empty(2, 8, 2, 2, 2), (3, 3, 3), 1, 1, 1, mixed=True) == "mixed_unfold"
    assert select_path(torch.empty(2, 8, 4, 4, 4), (3, 3, 3), 1, 1, 1, mixed=True) == "materialize"  # 64 positions
    assert select_path(torch.empty(1, 8, 4, 4, 4), (3, 3, 3), 1, 1, 1, mixed=True) == "materialize"  # one sample
    assert select_path(torch.empty(2, 8, 32, 32, 32), (3, 3, 3), 1, 0, 1, mixed=False, transposed=True) == "loop"
    assert select_path(torch.empty(2, 8, 16, 16, 16), (3, 3, 3), 1, 0, 1, mixed=False, transposed=True) == "grouped"
