from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_crossd.networks import CrossDConv, CrossDConvTranspose
from monai_crossd.networks.layers.per_sample_conv import per_sample_conv_transpose
from tests.oracle import FFTCrossDConvTranspose

CASES = [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1, groups=1, dilation=1),
    dict(in_channels=4, out_channels=4, kernel_size=4, stride=2, padding=1, output_padding=0, groups=2, dilation=1),
    dict(in_channels=3, out_channels=2, kernel_size=3, stride=1, padding=0, output_padding=0, groups=1, dilation=2),
    dict(in_channels=2, out_channels=3, kernel_size=2, stride=3, padding=0, output_padding=2, groups=1, dilation=1),
]


def _pair(spatial_dims: int, cfg: dict, train: bool):
    torch.manual_seed(0)
    oracle = FFTCrossDConvTranspose(spatial_dims, **cfg).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics and rotations
        for p in oracle.rotation_net.parameters():
            p.normal_()
        oracle.rotation_net[1].running_mean.normal_()
        oracle.rotation_net[1].running_var.uniform_(0.5, 2.0)
    layer = CrossDConvTranspose(spatial_dims, **cfg).double()
    assert str(layer.load_state_dict(oracle.state_dict(), strict=True)) == "<All keys matched successfully>"
    return oracle.train(train), layer.train(train)


@pytest.mark.parametrize("cfg", CASES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("train", [False, True])
def test_matches_literal_fft_transposed_layer(cfg, spatial_dims, train):
    oracle, layer = _pair(spatial_dims, cfg, train)
    x = torch.randn(3, cfg["in_channels"], *(5, 6, 4)[-spatial_dims:], dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected, actual = oracle(x1), layer(x2)
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    actual.backward(grad)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-9, rtol=0)
    for (name, p), q in zip(layer.named_parameters(), oracle.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=0, msg=name)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shape_matches_conv_transpose(spatial_dims):
    torch_t = (nn.ConvTranspose2d, nn.ConvTranspose3d)[spatial_dims - 2]
    args = dict(stride=2, padding=1, output_padding=1, dilation=1, groups=2)
    layer, ref = CrossDConvTranspose(spatial_dims, 4, 6, 3, **args), torch_t(4, 6, 3, **args)
    x = torch.randn(2, 4, *(3, 5, 7)[-spatial_dims:])
    assert layer(x).shape == ref(x).shape
    assert layer.weight.shape == (4, 3, 3, 3, 3) and layer.bias.shape == (6,)


def test_one_state_dict_for_2d_and_3d_and_the_2d_kernel_is_the_middle_plane():
    l2 = CrossDConvTranspose(2, 3, 4, 3, stride=2, padding=1, output_padding=1).double().eval()
    l3 = CrossDConvTranspose(3, 3, 4, 3, stride=2, padding=1, output_padding=1).double().eval()
    assert str(l3.load_state_dict(l2.state_dict())) == "<All keys matched successfully>"
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    k2, k3 = l2.kernels(x), l3.kernels(x[:, :, None])
    torch.testing.assert_close(k3[:, :, :, 1], k2, atol=1e-12, rtol=0)


def test_static_and_from_conv_equal_the_2d_transposed_conv():
    conv = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1).double()
    layer = CrossDConvTranspose.from_conv(conv).double()
    assert layer.weight.shape == (3, 4, 3, 3, 3) and layer.output_padding == (1, 1)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-12, rtol=0)
    static = CrossDConvTranspose(2, 3, 4, 3, stride=2, padding=1, output_padding=1, rotation=False).double()
    static.load_state_dict(layer.state_dict())
    torch.testing.assert_close(static(x), conv(x), atol=1e-12, rtol=0)
    # in 3D with depth_init="zeros": conv applied to every depth slice
    l3 = CrossDConvTranspose.from_conv(conv, spatial_dims=3).double()
    assert l3.stride == (2, 2, 2) and l3.output_padding == (1, 1, 1)
    with pytest.raises(TypeError, match="`conv` should be an nn.ConvTranspose2d, got Conv2d"):
        CrossDConvTranspose.from_conv(nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="`conv` should be an nn.Conv2d, got ConvTranspose2d"):
        CrossDConv.from_conv(conv)


@pytest.mark.parametrize("path", ["grouped", "loop", "taps"])
@pytest.mark.parametrize(
    "args", [(2, 1, 1, 2, 1), (1, 0, 0, 1, 1), (3, 2, 1, 1, 1), (2, 1, 0, 2, 2), ((1, 2, 3), (0, 1, 2), (0, 1, 0), 1, 1)]
)
def test_paths_agree(path, args):
    """Every formulation is torch's own transposed conv per sample (args: stride, padding, output_padding, groups,
    dilation), "taps" too: zeros between the inputs, padding or cropping, flipped kernels."""
    x = torch.randn(3, 4, 3, 4, 5, dtype=torch.float64)
    k = torch.randn(3, 4, 6 // args[3], 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    expected = torch.cat([F.conv_transpose3d(x[i : i + 1], k[i], bias, *args) for i in range(3)])
    torch.testing.assert_close(per_sample_conv_transpose(x, k, bias, *args, path=path), expected)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`padding` should be ints for a transposed convolution, got 'same'"):
        CrossDConvTranspose(2, 2, 2, 3, padding="same")
    with pytest.raises(ValueError, match="`padding_mode` should be 'zeros' for a transposed convolution"):
        CrossDConvTranspose(2, 2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="`output_padding` should be smaller than `stride` or `dilation`"):
        CrossDConvTranspose(2, 2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="`output_padding` should be a non-negative int or a sequence of 3 such ints"):
        CrossDConvTranspose(3, 2, 2, 3, output_padding=(1, 1))
    with pytest.raises(ValueError, match="`x` should have 2 channels"):
        CrossDConvTranspose(2, 2, 2, 3)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="`path` should be 'grouped', 'loop', 'taps' or None"):
        per_sample_conv_transpose(torch.randn(2, 2, 3, 3), torch.randn(2, 2, 2, 3, 3), path="unfold")
