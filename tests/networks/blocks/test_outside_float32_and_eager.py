"""The layers in half precision, traced, exported to ONNX (run in onnxruntime), and on inputs that plain convs accept
or refuse: one graph for every batch size, never a silently wrong result."""

from __future__ import annotations

import warnings

import pytest
import torch

from monai_crossd.networks import CrossDConv, CrossDConvTranspose
from monai_crossd.networks.nets import CrossDUNet, crossd_resnet18

LAYERS = {
    "2d": (lambda: CrossDConv(2, 3, 4, 3, padding=1), (3, 8, 8)),
    "3d": (lambda: CrossDConv(3, 3, 4, 3, padding=1, stride=2), (3, 6, 6, 6)),
    "transposed_3d": (lambda: CrossDConvTranspose(3, 4, 3, 3, stride=2, padding=1, output_padding=1), (4, 4, 4, 4)),
}


def _rotating(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = LAYERS[name][0]().eval()
    with torch.no_grad():
        layer.rotation_net[3].weight.mul_(10)  # a visible, input-dependent rotation
    return layer


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_modules(name, dtype):
    layer, shape = _rotating(name), LAYERS[name][1]
    x = torch.randn(2, *shape).to(dtype)
    with torch.no_grad():
        reference = layer.double()(x.double())  # the same rounded input, float64 maths
        y = layer.to(dtype)(x)
    assert y.dtype == dtype and y.shape == reference.shape
    error = (y.double() - reference).abs().max() / reference.abs().max()
    assert error < {torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype], float(error)


def _assert_traced_at_batch_1_is_exact_at_batch_3(model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(1, *shape))
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(LAYERS))
def test_traced_at_batch_1_runs_at_batch_3(name):
    _assert_traced_at_batch_1_is_exact_at_batch_3(_rotating(name), LAYERS[name][1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_traced_network_at_another_batch_size(spatial_dims):
    torch.manual_seed(0)
    net = crossd_resnet18(spatial_dims, 1, 3).eval()
    _assert_traced_at_batch_1_is_exact_at_batch_3(net, (1, *(16,) * spatial_dims))


def _onnx_outputs(model, shape, path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            torch.onnx.export(model, (torch.randn(2, *shape),), str(path), input_names=["x"], output_names=["y"],
                              dynamo=True, dynamic_shapes={"x": {0: batch}})
        else:
            torch.onnx.export(model, (torch.randn(2, *shape),), str(path), input_names=["x"], output_names=["y"],
                              dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = torch.randn(b, *shape)
        (y,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            yield torch.from_numpy(y), model(x)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_dynamic_batch_in_onnxruntime(name, dynamo, tmp_path):
    layer, shape = _rotating(name), LAYERS[name][1]
    for got, expected in _onnx_outputs(layer, shape, tmp_path / "layer.onnx", dynamo):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_onnx_unet_dynamic_batch_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    net = CrossDUNet(3, 1, 2, channels=(4, 8), strides=(2,)).eval()
    for got, expected in _onnx_outputs(net, (1, 16, 16, 16), tmp_path / "unet.onnx", dynamo=True):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layer_type", [CrossDConv, CrossDConvTranspose])
def test_empty_batch_gives_an_empty_output(layer_type):
    layer = layer_type(3, 4, 6, 3, stride=2, padding=1)
    full = layer(torch.randn(2, 4, 5, 6, 7))
    empty = layer(torch.randn(0, 4, 5, 6, 7))
    assert empty.shape == (0, *full.shape[1:])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stride=0), r"`stride` should be a positive int or a sequence of 2 such ints, got 0"),
        (dict(dilation=(1, 0)), r"`dilation` should be a positive int or a sequence of 2 such ints, got \(1, 0\)"),
        (dict(kernel_size=3.0), r"`kernel_size` should be a positive int or equal ints \(a cubic kernel\), got 3.0"),
        (dict(padding=-1), r"`padding` should be a non-negative int or a sequence of 2 such ints, got -1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossDConv(2, 4, 8, **{"kernel_size": 3, **kwargs})


def test_input_smaller_than_the_kernel():
    with pytest.raises(ValueError, match=r"`x` of spatial shape \(2, 2\) \(padded: \(2, 2\)\) is smaller than the "
                       r"kernel \(\(3, 3\)\) of CrossDConv"):
        CrossDConv(2, 4, 8, 3)(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"is smaller than the dilated kernel \(\(5, 5, 5\)\)"):
        CrossDConv(3, 4, 8, 3, dilation=2, padding=1)(torch.randn(2, 4, 2, 2, 2))
    assert CrossDConv(2, 4, 8, 3, padding=1)(torch.randn(2, 4, 1, 1)).shape == (2, 8, 1, 1)  # padding makes room
