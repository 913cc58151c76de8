"""Property-based tests (hypothesis) of CrossDConv and the 2D -> Cross-D converter.

* Shape: for random channels, groups, kernel size (odd and even), stride, dilation, padding (ints, ``"same"``,
  ``"valid"``), padding mode and spatial dims 2/3, ``CrossDConv`` gives the output shape of ``nn.Conv2d`` /
  ``nn.Conv3d`` with the same arguments.
* Function: ``CrossDConv.from_conv(conv)`` computes ``conv`` (2D), and its 3D version applies ``conv`` to every
  depth slice (``depth_init="zeros"``, odd ``K``, ``"same"``-sized padding); ``convert_to_crossd`` preserves random small
  conv stacks (Conv2d / BatchNorm2d / ReLU).

Few examples each (``max_examples`` 15-25, no deadline) so the file runs in well under a minute on a CPU.
"""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from monai_crossd.converters import convert_to_crossd  # noqa: E402
from monai_crossd.networks.blocks import CrossDConv  # noqa: E402
from monai_crossd.networks.layers.conv_args import PADDING_MODES  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None)


@st.composite
def conv_args(draw, spatial_dims=None, kernel_sizes=None):
    """Arguments valid for both ``nn.ConvNd`` and ``CrossDConv``, and an input shape they accept."""
    dims = draw(st.sampled_from((2, 3))) if spatial_dims is None else spatial_dims
    kernel_sizes = st.integers(1, 4) if kernel_sizes is None else kernel_sizes
    groups = draw(st.sampled_from((1, 2)))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 3))
    k = draw(kernel_sizes)
    padding_mode = draw(st.sampled_from(PADDING_MODES))
    kind = draw(st.sampled_from(("int", "same", "valid")))
    if kind == "same":
        stride = 1
    else:
        stride = draw(st.integers(1, 2) | st.tuples(*[st.integers(1, 2)] * dims))
    dilation = draw(st.integers(1, 2) | st.tuples(*[st.integers(1, 2)] * dims))
    padding = draw(st.integers(0, 2)) if kind == "int" else kind
    dil = dilation if isinstance(dilation, tuple) else (dilation,) * dims
    pad = padding if isinstance(padding, int) else (dilation if isinstance(dilation, int) else max(dilation)) * k
    # large enough for the kernel and for reflect padding (pad < size); a little bigger at random
    size = tuple(max(d * (k - 1) + 1, pad + 1) + draw(st.integers(0, 2)) for d in dil)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                  padding_mode=padding_mode)  # fmt: skip
    return dims, in_channels, out_channels, k, kwargs, (2, in_channels, *size)


@SETTINGS
@given(conv_args())
def test_output_shape_matches_torch_conv(args):
    dims, cin, cout, k, kwargs, shape = args
    reference = (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, k, **kwargs)
    layer = CrossDConv(dims, cin, cout, k, **kwargs).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert layer(x).shape == reference(x).shape, (args, layer)


@SETTINGS
@given(conv_args(spatial_dims=2))
def test_from_conv_preserves_the_2d_function(args):
    _, cin, cout, k, kwargs, shape = args
    conv = nn.Conv2d(cin, cout, k, **kwargs).double()
    layer = CrossDConv.from_conv(conv).eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), atol=1e-10, rtol=1e-10)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 2), st.integers(1, 3), st.sampled_from((1, 3)), st.integers(1, 2), st.booleans(), st.integers(1, 3))
def test_from_conv_3d_applies_conv_to_each_slice(cin, cout, k, dilation, bias, depth):
    conv = nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=bias).double()
    layer = CrossDConv.from_conv(conv, spatial_dims=3).eval()
    x = torch.randn(2, cin, depth, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.stack([conv(x[:, :, d]) for d in range(depth)], dim=2)
        torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=1e-10)


@st.composite
def conv_stacks(draw):
    layers, channels = [], draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from((1, channels)))
        out = groups * draw(st.integers(1, 2))
        k = draw(st.sampled_from((1, 2, 3)))
        padding = draw(st.sampled_from(("same", "valid", 0, 1)))
        stride = 1 if padding == "same" else draw(st.integers(1, 2))
        layers.append(nn.Conv2d(channels, out, k, stride=stride, padding=padding, groups=groups,
                                bias=draw(st.booleans()), padding_mode=draw(st.sampled_from(PADDING_MODES))))  # fmt: skip
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU())
        channels = out
    return nn.Sequential(*layers)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(conv_stacks(), st.booleans())
def test_convert_to_crossd_preserves_conv_stacks(model, train):
    model = model.double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.train(train)
    converted, report = convert_to_crossd(model)
    assert len(report.replaced) == sum(isinstance(m, nn.Conv2d) for m in model.modules()) and not report.skipped
    assert all(isinstance(c, CrossDConv) for m, c in zip(model, converted) if isinstance(m, nn.Conv2d))
    x = torch.randn(3, model[0].in_channels, 12, 11, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-9, rtol=1e-9)
