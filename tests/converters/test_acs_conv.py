from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from monai_crossd.converters import ACSConv, acs_conv3d, acs_split
from tests.converters._helpers import dense_acs

# out, in, K, stride, padding, dilation, groups, split, padding_mode
CASES = [
    (6, 4, 3, 1, 1, 1, 1, None, "zeros"),
    (8, 4, 3, 2, 1, 1, 2, (3, 3, 2), "zeros"),  # split not aligned to groups
    (7, 7, 3, 2, 0, 2, 7, None, "zeros"),  # depthwise, dilated, valid
    (9, 6, 5, (1, 2, 3), (2, 1, 0), (1, 2, 1), 3, (4, 2, 3), "zeros"),
    (6, 2, 3, 1, 1, 1, 1, None, "reflect"),
    (6, 2, 3, 1, 2, 2, 1, (0, 6, 0), "circular"),
    (6, 2, 3, 1, "same", 2, 2, (1, 5, 0), "zeros"),
    (4, 2, 1, 2, 0, 1, 1, None, "zeros"),
]


@pytest.mark.parametrize("out_ch, in_ch, k, stride, padding, dilation, groups, split, mode", CASES)
def test_acs_conv3d_equals_centre_plane_conv3d(out_ch, in_ch, k, stride, padding, dilation, groups, split, mode):
    x = torch.randn(2, in_ch, 9, 10, 11, dtype=torch.float64)
    w = torch.randn(out_ch, in_ch // groups, k, k, dtype=torch.float64)
    b = torch.randn(out_ch, dtype=torch.float64)
    split = split or acs_split(out_ch)
    out = acs_conv3d(x, w, b, stride, padding, dilation, groups, split, mode)
    ref = dense_acs(x, w, b, stride, padding, dilation, groups, split, mode)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("out_ch, in_ch, k, stride, padding", [(6, 4, 3, 1, 1), (8, 4, 7, 2, 3), (5, 5, 1, 2, 0), (16, 3, 3, 2, 1)])
def test_matches_pypi_acsconv_operator(out_ch, in_ch, k, stride, padding):
    """Same weights, same output as the authors' operator (``pip install acsconv``; its converters no longer
    run on current torch, its operator does)."""
    operators = pytest.importorskip("acsconv.operators")
    ref = operators.ACSConv(in_ch, out_ch, k, stride=stride, padding=padding)
    ours = ACSConv(in_ch, out_ch, k, stride=stride, padding=padding)
    ours.load_state_dict(ref.state_dict())
    assert ours.split == tuple(ref.acs_kernel_split)
    x = torch.randn(2, in_ch, 12, 13, 14)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_split_default_and_repr():
    assert acs_split(8) == (3, 3, 2) and acs_split(9) == (3, 3, 3) and acs_split(1) == (1, 0, 0)
    layer = ACSConv(2, 8, 3, padding=1)
    assert layer.weight.shape == (8, 2, 3, 3) and "split=(3, 3, 2)" in repr(layer)


def test_from_conv_keeps_weights_and_expands_arguments():
    conv = nn.Conv2d(4, 6, 3, stride=(2, 1), padding=(1, 0), dilation=(1, 2), bias=False, padding_mode="replicate")
    layer = ACSConv.from_conv(conv)
    assert torch.equal(layer.weight, conv.weight) and layer.bias is None
    assert layer.stride == (2, 2, 1) and layer.padding == (1, 1, 0) and layer.dilation == (1, 1, 2)
    assert layer.padding_mode == "replicate"
    assert layer(torch.randn(1, 4, 8, 8, 8)).shape == (1, 6, 4, 4, 4)


def test_all_axial_equals_2d_conv_on_each_slice():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    layer = ACSConv.from_conv(conv, split=(5, 0, 0))
    x = torch.randn(2, 3, 4, 9, 9)
    out = layer(x)
    for d in range(4):
        torch.testing.assert_close(out[:, :, d], conv(x[:, :, d]))


def test_gradients_reach_every_parameter():
    layer = ACSConv(3, 6, 3, padding=1).double()
    x = torch.randn(1, 3, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`split` should be 3 non-negative ints summing to 6, got \(1, 2\)"):
        ACSConv(2, 6, 3, split=(1, 2))
    with pytest.raises(ValueError, match=r"`kernel_size` should be .* square kernel\), got \(3, 1\)"):
        ACSConv(2, 6, (3, 1))
    with pytest.raises(ValueError, match=r"`x` should be 5D \(B, C, D, H, W\), got shape \(1, 2, 8, 8\)"):
        ACSConv(2, 6, 3)(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"`x` should have 2 channels"):
        ACSConv(2, 6, 3)(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match=r"`padding_mode` should be one of"):
        ACSConv(2, 6, 3, padding_mode="zero")
    with pytest.raises(TypeError, match=r"`conv` should be an nn.Conv2d, got Linear"):
        ACSConv.from_conv(nn.Linear(2, 2))


def test_torch_export_save_load(tmp_path):
    layer = ACSConv(2, 7, 3, stride=(1, 2, 2), padding=1).eval()
    x = torch.randn(2, 2, 6, 8, 8)
    torch.export.save(torch.export.export(layer, (x,)), tmp_path / "acs.pt2")
    loaded = torch.export.load(tmp_path / "acs.pt2").module()
    torch.testing.assert_close(loaded(x), layer(x))
