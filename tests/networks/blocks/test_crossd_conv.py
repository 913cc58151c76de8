from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import Conv

from monai_crossd.converters import convert_reference_state_dict
from monai_crossd.networks import CrossDConv, CrossDConv2d, CrossDConv3d, register
from monai_crossd.networks.layers import shift_kernel
from tests.oracle import FFTCrossDConv2d

# ---------------------------------------------------------------- reference: the authors' outputs


@pytest.mark.parametrize("index", [0, 1])
def test_reference_fixture_layers(reference_cases, index):
    case = reference_cases[index]
    assert case["kind"] == "layer"
    cfg = case["config"]
    layer = CrossDConv(
        2, cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"],
        stride=cfg["stride"], padding=cfg["padding"], groups=cfg["groups"], bias=False,
    )
    state = case["state_dict"]
    before = {k: v.clone() for k, v in state.items()}
    converted = convert_reference_state_dict(state)
    assert list(state) == list(before) and all(torch.equal(state[k], before[k]) for k in state)  # input untouched
    assert str(layer.load_state_dict(converted, strict=True)) == "<All keys matched successfully>"
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(case["input"]), case["output_eval"], atol=1e-5, rtol=0)
        torch.testing.assert_close(layer.train()(case["input"]), case["output_train"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- oracle: the literal FFT layer

ORACLE_CASES = [
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=1, padding=1, groups=1),
    dict(in_channels=4, out_channels=4, kernel_size=4, stride=2, padding=2, groups=2),
    dict(in_channels=3, out_channels=5, kernel_size=5, stride=1, padding=0, groups=1),
    dict(in_channels=2, out_channels=2, kernel_size=2, stride=1, padding=1, groups=1),
]


@pytest.mark.parametrize("cfg", ORACLE_CASES)
@pytest.mark.parametrize("train", [False, True])
def test_matches_literal_fft_layer(cfg, train):
    oracle = FFTCrossDConv2d(**cfg).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics and rotations
        for p in oracle.rotation_params.parameters():
            p.normal_()
        oracle.rotation_params[1].running_mean.normal_()
        oracle.rotation_params[1].running_var.uniform_(0.5, 2.0)
    layer = CrossDConv(2, **cfg, bias=False).double()
    layer.load_state_dict(convert_reference_state_dict(oracle.state_dict()), strict=True)
    oracle.train(train), layer.train(train)
    x = torch.randn(3, cfg["in_channels"], 9, 10, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, actual = oracle(x1), layer(x2)
    torch.testing.assert_close(actual, expected, atol=1e-10, rtol=0)
    grad = torch.randn_like(expected)
    expected.backward(grad), actual.backward(grad)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-9, rtol=0)
    torch.testing.assert_close(layer.weight.grad, oracle.weights_3d.grad, atol=1e-9, rtol=0)
    torch.testing.assert_close(layer.rotation_net[3].weight.grad, oracle.rotation_params[3].weight.grad, atol=1e-9, rtol=0)


# ---------------------------------------------------------------- 2D and 3D share one knowledge base


def test_state_dicts_are_interchangeable():
    l2 = CrossDConv(2, 4, 8, 3, padding=1)
    l3 = CrossDConv(3, 4, 8, 3, padding=1)
    s2, s3 = l2.state_dict(), l3.state_dict()
    assert list(s2) == list(s3)
    assert all(s2[k].shape == s3[k].shape for k in s2)
    assert str(l3.load_state_dict(s2, strict=True)) == "<All keys matched successfully>"
    assert str(l2.load_state_dict(l3.state_dict(), strict=True)) == "<All keys matched successfully>"


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", [(7, 8), (3, 4)])  # kernels materialised / input taps mixed (select_path)
def test_2d_kernel_is_the_middle_plane_of_the_3d_kernel(k, train, size):
    # A depth-1 volume, zero-padded by K // 2 in depth, only meets the middle plane of the 3D kernel:
    # the 3D layer then computes exactly what the 2D layer computes on the slice.
    l2 = CrossDConv(2, 3, 4, k, padding=k // 2).double().train(train)
    l3 = CrossDConv(3, 3, 4, k, padding=k // 2).double().train(train)
    l3.load_state_dict(l2.state_dict())
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(l3(x[:, :, None])[:, :, 0], l2(x), atol=1e-10, rtol=0)
    k3 = l3.kernels(x[:, :, None])
    torch.testing.assert_close(k3[:, :, :, k // 2], l2.kernels(x), atol=1e-12, rtol=0)


def test_3d_without_rotation_is_conv3d_with_the_shifted_kernel():
    layer = CrossDConv(3, 4, 6, 3, stride=(1, 2, 2), padding=1, rotation=False)
    x = torch.randn(2, 4, 6, 10, 10)
    shifted = torch.roll(layer.weight, (1, 1, 1), (2, 3, 4))
    expected = F.conv3d(x, shifted, layer.bias, stride=(1, 2, 2), padding=1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)
    # the static kernel is the shifted kernel at R = I, for every sample
    on = CrossDConv(3, 4, 6, 3, stride=(1, 2, 2), padding=1)
    on.load_state_dict(layer.state_dict())
    on.rotation_net.reset_to_identity()
    torch.testing.assert_close(on(x), expected, atol=1e-5, rtol=0)


def test_3d_authors_protocol_is_conv3d_with_the_raw_weight():
    layer = CrossDConv(3, 4, 6, 3, padding=1, kernel_3d="raw")
    x = torch.randn(2, 4, 6, 10, 10)
    torch.testing.assert_close(layer(x), F.conv3d(x, layer.weight, layer.bias, padding=1), atol=1e-5, rtol=0)


def test_rotation_varies_the_kernel_per_sample():
    layer = CrossDConv(2, 3, 4, 3, padding=1)
    x = torch.randn(3, 3, 8, 8)
    kernels = layer.kernels(x)
    assert kernels.shape == (3, 4, 3, 3, 3)
    assert (kernels[0] - kernels[1]).abs().max() > 1e-4
    # each sample's output is the conv with its own kernel
    out = layer(x)
    for b in range(3):
        torch.testing.assert_close(out[b : b + 1], F.conv2d(x[b : b + 1], kernels[b], layer.bias, padding=1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_identity_rotation_init_starts_static_and_learns_rotation(spatial_dims):
    torch.manual_seed(0)
    layer = CrossDConv(spatial_dims, 3, 4, 3, padding=1, rotation_init="identity")
    static = CrossDConv(spatial_dims, 3, 4, 3, padding=1, rotation=False)
    static.load_state_dict(layer.state_dict())
    x = torch.randn(3, 3, *(6,) * spatial_dims)
    torch.testing.assert_close(layer.predict_shift(x), torch.ones(3, 3))  # R = I for every sample
    torch.testing.assert_close(layer(x), static(x), atol=1e-5, rtol=0)
    layer(x).square().sum().backward()
    assert layer.rotation_net[3].weight.grad.abs().max() > 0  # the angle can move away from zero
    assert "rotation_init='identity'" in repr(layer)
    # the default is the authors' initialisation: random per-sample rotations from the start
    assert (CrossDConv(spatial_dims, 3, 4, 3, padding=1).predict_shift(x) - 1).abs().max() > 1e-3


# ---------------------------------------------------------------- function-preserving initialisation

CONV_CASES = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, dilation=2, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same"),
    dict(in_channels=3, out_channels=5, kernel_size=5, padding=2, padding_mode="reflect"),
    dict(in_channels=3, out_channels=5, kernel_size=1),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, padding_mode="circular"),
    dict(in_channels=3, out_channels=5, kernel_size=7, stride=2, padding=3, padding_mode="replicate"),
]


@pytest.mark.parametrize("cfg", CONV_CASES)
@pytest.mark.parametrize("depth_init", ["zeros", "replicate"])
def test_from_conv_preserves_the_function(cfg, depth_init):
    conv = nn.Conv2d(**cfg)
    layer = CrossDConv.from_conv(conv, depth_init=depth_init)
    x = torch.randn(2, cfg["in_channels"], 13, 12)
    for mode in (False, True):
        layer.train(mode)
        torch.testing.assert_close(layer(x), conv(x), atol=1e-5, rtol=0)


def test_from_conv_zeros_in_3d_is_the_conv_on_every_slice():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    layer = CrossDConv.from_conv(conv, spatial_dims=3)
    assert layer.padding == (1, 1, 1)
    x = torch.randn(2, 3, 4, 9, 9)
    per_slice = torch.stack([conv(x[:, :, d]) for d in range(4)], dim=2)
    torch.testing.assert_close(layer(x), per_slice, atol=1e-5, rtol=0)


def test_from_conv_replicate_in_3d_inflates_the_kernel():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    layer = CrossDConv.from_conv(conv, spatial_dims=3, depth_init="replicate")
    torch.testing.assert_close(layer.static_kernel(), conv.weight.unsqueeze(2).expand(-1, -1, 3, -1, -1))


def test_from_conv_rejects_non_square_and_non_conv():
    with pytest.raises(ValueError, match=r"`conv` should have a square kernel, got kernel_size=\(1, 3\)"):
        CrossDConv.from_conv(nn.Conv2d(2, 2, (1, 3)))
    with pytest.raises(TypeError, match="`conv` should be an nn.Conv2d, got Linear"):
        CrossDConv.from_conv(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`depth_init` should be one of .* got 'zero'. Did you mean 'zeros'"):
        CrossDConv.from_conv(nn.Conv2d(2, 2, 3), depth_init="zero")


# ---------------------------------------------------------------- where a MONAI user puts it


def test_gradcheck_layer():
    layer = CrossDConv(2, 2, 2, 2, padding=1).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    l3 = CrossDConv(3, 2, 2, 3, padding=1).double().eval()
    assert torch.autograd.gradcheck(l3, (torch.randn(2, 2, 3, 4, 4, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_parameter_gets_a_gradient(spatial_dims):
    layer = CrossDConv(spatial_dims, 3, 4, 3, padding=1)
    x = torch.randn(2, 3, *(6,) * spatial_dims)
    layer(x).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_trace_save_load(spatial_dims):
    layer = CrossDConv(spatial_dims, 3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, *(6,) * spatial_dims)
    traced = torch.jit.trace(layer, x)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    torch.testing.assert_close(loaded(x), layer(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_onnx_export_matches_onnxruntime(spatial_dims, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = CrossDConv(spatial_dims, 3, 4, 3, padding=1).eval()
    with torch.no_grad():
        layer.rotation_net[3].weight.mul_(10)  # a visible rotation
    x = torch.randn(2, 3, *(8,) * spatial_dims)
    path = tmp_path / "crossd.onnx"
    torch.onnx.export(layer, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), layer(x).detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(dtype):
    layer = CrossDConv(2, 3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = layer(x)
        with torch.autocast("cpu", dtype=dtype):
            y = layer(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), reference, atol=0.1, rtol=0.05)


def test_channels_last_input():
    layer = CrossDConv(2, 3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), layer(x))
    l3 = CrossDConv(3, 3, 4, 3, padding=1).eval()
    v = torch.randn(2, 3, 4, 8, 8)
    torch.testing.assert_close(l3(v.to(memory_format=torch.channels_last_3d)), l3(v))


def test_torch_compile():
    layer = CrossDConv(2, 3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(layer, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_registered_in_monai_conv_factory_by_an_explicit_call():
    register()
    assert Conv["crossd", 2] is CrossDConv2d
    assert Conv["crossd", 3] is CrossDConv3d
    register()  # idempotent
    layer = Conv["crossd", 3](4, 8, kernel_size=3, padding=1)
    assert layer.spatial_dims == 3 and layer(torch.randn(1, 4, 4, 5, 5)).shape == (1, 8, 4, 5, 5)
    with pytest.raises(ValueError, match="Cross-D Conv supports `spatial_dims` 2 or 3, got 1"):
        Conv["crossd", 1]


# ---------------------------------------------------------------- bad arguments and inputs


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(kernel_size=(3, 3, 5)), ValueError, r"`kernel_size` should be .* cubic kernel\), got \(3, 3, 5\)"),
        (dict(in_channels=3, groups=2), ValueError, r"`in_channels` \(3\) and `out_channels` \(4\) should be divisible by `groups` \(2\)"),
        (dict(padding_mode="reflection"), ValueError, r"`padding_mode` should be one of .* got 'reflection'. Did you mean 'reflect'\?"),
        (dict(padding="sam"), ValueError, r"`padding` should be one of \('same', 'valid'\), got 'sam'. Did you mean 'same'\?"),
        (dict(padding="same", stride=2), ValueError, r"`padding='same'` needs `stride` 1, got 2"),
        (dict(spatial_dims=1), ValueError, r"`spatial_dims` should be 2 or 3, got 1"),
        (dict(stride=(1, 2, 3)), ValueError, r"`stride` should be a positive int or a sequence of 2 such ints, got \(1, 2, 3\)"),
        (dict(kernel_3d="authors"), ValueError, r"`kernel_3d` should be one of \('shifted', 'raw'\), got 'authors'"),
        (dict(rotation_init="zero"), ValueError, r"`rotation_init` should be one of \('random', 'identity'\), got 'zero'"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = dict(spatial_dims=2, in_channels=4, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(error, match=message):
        CrossDConv(**args)


def test_bad_inputs():
    l2, l3 = CrossDConv(2, 4, 4, 3), CrossDConv(3, 4, 4, 3)
    with pytest.raises(ValueError, match=r"`x` should be 4D \(B, C, H, W\) for spatial_dims=2, got shape \(1, 4, 5, 5, 5\)"):
        l2(torch.randn(1, 4, 5, 5, 5))
    with pytest.raises(ValueError, match=r"`x` should be 5D \(B, C, D, H, W\) for spatial_dims=3, got shape \(1, 4, 5, 5\)"):
        l3(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"`x` should have 4 channels \(dim 1\), got shape \(1, 3, 5, 5\)"):
        l2(torch.randn(1, 3, 5, 5))
    with pytest.raises(TypeError, match="`x` should be a torch.Tensor, got ndarray"):
        l2(torch.randn(1, 4, 5, 5).numpy())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_1x1_knowledge_base_ignores_its_rotation_network(spatial_dims):
    """A single tap has nothing to shift (the shift operator is 1 for K = 1): the layer is a plain 1x1 conv whose
    rotation network runs (DDP needs every parameter used) and gets exactly zero gradients."""
    layer = CrossDConv(spatial_dims, 3, 4, 1).double().train()
    with torch.no_grad():
        layer.rotation_net[3].weight.mul_(10)
    x = torch.randn(2, 3, *(5,) * spatial_dims, dtype=torch.float64)
    shifted = shift_kernel(layer.weight, layer.predict_shift(x), plane=0 if spatial_dims == 2 else None)
    torch.testing.assert_close(shifted[0], layer.static_kernel(), atol=1e-12, rtol=0)  # any shift: the same kernel
    conv = (F.conv2d, F.conv3d)[spatial_dims - 2]
    y = layer(x)
    torch.testing.assert_close(y, conv(x, layer.static_kernel(), layer.bias), atol=1e-12, rtol=0)
    y.square().sum().backward()
    assert layer.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in layer.rotation_net.parameters())
