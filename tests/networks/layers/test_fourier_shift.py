from __future__ import annotations

import math

import pytest
import torch

from monai_crossd.networks.layers import (
    axis_angle_from_params,
    linear_rotation_matrix,
    shift_from_rotation,
    shift_kernel,
    shift_operators,
)
from tests.oracle import fft_rotate_kernel


def _random_rotation(b: int, dtype=torch.float64):
    axis, angle = axis_angle_from_params(torch.randn(b, 4, dtype=dtype))
    return axis, angle, shift_from_rotation(linear_rotation_matrix(axis, angle))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_matches_fft_oracle(k, dtype, tol):
    weight = torch.randn(6, 3, k, k, k, dtype=dtype)
    axis, angle, shift = _random_rotation(4, dtype)
    # the oracle runs in float64: it is the truth the float32 path is held to
    expected = fft_rotate_kernel(weight.double(), axis.double(), angle.double()).to(dtype)
    torch.testing.assert_close(shift_kernel(weight, shift), expected, atol=tol, rtol=0)
    torch.testing.assert_close(shift_kernel(weight, shift, plane=k // 2), expected[:, :, :, k // 2], atol=tol, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_identity_rotation_is_a_roll_by_one(k):
    weight = torch.randn(2, 2, k, k, k, dtype=torch.float64)
    rotation = linear_rotation_matrix(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    shift = shift_from_rotation(rotation)
    torch.testing.assert_close(shift, torch.ones(1, 3, dtype=torch.float64))
    torch.testing.assert_close(shift_kernel(weight, shift)[0], torch.roll(weight, (1, 1, 1), (2, 3, 4)))


def test_integer_shift_operator_is_a_permutation():
    real, imag = shift_operators(torch.tensor([[2.0, 0.0, -1.0]]), 5)
    assert imag is None
    torch.testing.assert_close(real[0, 0], torch.roll(torch.eye(5), 2, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(real[0, 1], torch.eye(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(real[0, 2], torch.roll(torch.eye(5), -1, 0), atol=1e-6, rtol=0)


def test_even_kernel_operators_are_complex():
    real, imag = shift_operators(torch.tensor([[0.5, 0.25, 1.0]]), 4)
    assert imag is not None and imag[0, 0].abs().max() > 1e-3
    assert imag[0, 2].abs().max() < 1e-6  # integer shift: real permutation


def test_shift_is_the_phase_factor_sum():
    # sum of the rotated frequency coordinates equals d . f with d = R^T 1 (the separability fact)
    axis, angle, shift = _random_rotation(3)
    f = torch.randn(3, 10, dtype=torch.float64)
    rotation = linear_rotation_matrix(axis, angle)
    torch.testing.assert_close((rotation @ f).sum(1), torch.einsum("bj,jn->bn", shift, f))


def test_axis_angle_ranges():
    axis, angle = axis_angle_from_params(torch.randn(100, 4) * 10)
    torch.testing.assert_close(axis.norm(dim=1), torch.ones(100))
    assert angle.abs().max() <= math.pi / 4


def test_gradcheck_kernel_construction():
    weight = torch.randn(2, 2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def build(w, p):
        axis, angle = axis_angle_from_params(p)
        return shift_kernel(w, shift_from_rotation(linear_rotation_matrix(axis, angle)), plane=2)

    assert torch.autograd.gradcheck(build, (weight, params))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"`weight` should have shape \(O, I, K, K, K\), got \(2, 2, 3, 3\)"):
        shift_kernel(torch.randn(2, 2, 3, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"`shift` should have shape \(B, 3\), got \(1, 2\)"):
        shift_kernel(torch.randn(2, 2, 3, 3, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"`params` should have shape \(B, 4\)"):
        axis_angle_from_params(torch.randn(2, 3))


def test_shift_from_axis_angle_is_the_column_sums_of_the_linear_rotation():
    from monai_crossd.networks.layers.fourier_shift import shift_from_axis_angle

    torch.manual_seed(3)
    axis, angle = axis_angle_from_params(torch.randn(7, 4, dtype=torch.float64))
    expected = shift_from_rotation(linear_rotation_matrix(axis, angle))
    torch.testing.assert_close(shift_from_axis_angle(axis, angle), expected, atol=1e-15, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7])
@pytest.mark.parametrize("depth_init", ["zeros", "replicate"])
def test_knowledge_base_from_2d_puts_the_kernel_in_the_middle_plane_of_the_identity_shift(k, depth_init):
    from monai_crossd.networks.layers.fourier_shift import knowledge_base_from_2d

    w = torch.randn(3, 2, k, k, dtype=torch.float64)
    u = knowledge_base_from_2d(w, depth_init)
    shifted = shift_kernel(u, torch.ones(1, 3, dtype=torch.float64))[0]  # R = I: d = (1, 1, 1)
    torch.testing.assert_close(shifted[:, :, k // 2], w, atol=1e-12, rtol=0)
    others = [shifted[:, :, d] for d in range(k) if d != k // 2]
    for plane in others:
        torch.testing.assert_close(plane, w if depth_init == "replicate" else torch.zeros_like(w), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="`depth_init` should be 'zeros' or 'replicate', got 'zero'"):
        knowledge_base_from_2d(w, "zero")
