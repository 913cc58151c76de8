from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn as nn

from monai_crossd.converters import (
    LoadReport,
    adapt_input_channels,
    inflate_to_crossd,
    load_pretrained_2d,
    read_checkpoint,
)
from monai_crossd.networks import CrossDConv
from monai_crossd.networks.nets import crossd_resnet18
from tests.converters._helpers import randomise_norms

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return randomise_norms(torchvision.models.resnet18()).eval()


@pytest.fixture(scope="module")
def checkpoint(resnet18, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    torch.save(resnet18.state_dict(), path)
    return path


def _not_rotation(initialised: dict) -> list[str]:
    return sorted(k for k, why in initialised.items() if not why.startswith("Cross-D rotation network"))


def _assert_placed(base: torch.Tensor, kernel: torch.Tensor) -> None:
    """``base`` is a knowledge base ``(O, I, K, K, K)`` whose shifted kernel at ``R = I`` (the base rolled by one
    voxel on each axis) has ``kernel`` as its middle plane and zeros elsewhere (``depth_init="zeros"``)."""
    k = kernel.shape[-1]
    shifted = torch.roll(base.detach(), (1, 1, 1), (2, 3, 4))
    torch.testing.assert_close(shifted[:, :, k // 2], kernel.detach(), rtol=0, atol=0)
    assert shifted[:, :, : k // 2].abs().max() == 0 and shifted[:, :, k // 2 + 1 :].abs().max() == 0


def test_torchvision_resnet18_into_3d_crossd_resnet18_in_one_call(resnet18, checkpoint):
    net = crossd_resnet18(spatial_dims=3, in_channels=1, num_classes=2)
    report = load_pretrained_2d(net, checkpoint)
    assert isinstance(report, LoadReport) and report.ok
    assert (report.family, report.detected, report.input_convention) == ("torchvision", True, "")
    assert report.missing_keys == [] and report.unexpected_keys == [] and report.mismatched == {} and report.dropped == []
    assert _not_rotation(report.initialised) == ["fc.bias", "fc.weight"]
    assert report.initialised["fc.weight"] == "classifier re-initialised: checkpoint (1000, 512) vs model (2, 512)"
    assert all(".rotation_net." in k for k in report.initialised if not k.startswith("fc."))
    assert report.adapted["conv1.weight"] == (
        "input channels 3 -> 1 (auto); 2D kernel placed in the Cross-D knowledge base (depth_init=zeros)"
    )
    assert len(report.loaded) == len(resnet18.state_dict()) - 2
    _assert_placed(net.layer3[1].conv2.weight, resnet18.layer3[1].conv2.weight)
    # same features as the 2D network on a grey image, through the 3D network on a depth-1 volume
    net.fc, reference = nn.Identity(), nn.Sequential(*list(resnet18.children())[:-1], nn.Flatten())
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x.unsqueeze(2)), reference(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_2d_crossd_resnet18_computes_the_torchvision_function(resnet18, checkpoint):
    # static kernels (no rotation) keep this one fast; the test above runs the rotation network
    net = crossd_resnet18(spatial_dims=2, in_channels=3, num_classes=1000, conv_kwargs={"rotation": False})
    report = load_pretrained_2d(net, checkpoint)
    assert _not_rotation(report.initialised) == [] and report.ok
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), resnet18(x), rtol=1e-4, atol=1e-4)


def test_four_channel_brats_input_and_modes(checkpoint, resnet18):
    net = crossd_resnet18(spatial_dims=3, in_channels=4, num_classes=3)
    report = load_pretrained_2d(net, checkpoint)
    assert report.adapted["conv1.weight"].startswith("input channels 3 -> 4 (auto)")
    w = resnet18.conv1.weight.detach()
    _assert_placed(net.conv1.weight, torch.cat([w, w[:, :1]], 1) * 0.75)


def test_adapt_input_channels():
    w = torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(adapt_input_channels(w, 1), w.sum(1, keepdim=True))  # timm's adapt_input_conv
    torch.testing.assert_close(adapt_input_channels(w, 4), torch.cat([w, w[:, :1]], 1) * 0.75)
    torch.testing.assert_close(adapt_input_channels(w, 2, "mean"), w.mean(1, keepdim=True).expand(-1, 2, -1, -1) * 1.5)
    torch.testing.assert_close(adapt_input_channels(w, 1, "repeat"), w[:, :1] * 3)
    # a grey image gives the original response in every mode
    x = torch.randn(1, 1, 8, 8)
    conv = nn.functional.conv2d
    for mode, c in (("auto", 1), ("mean", 4), ("auto", 6)):
        torch.testing.assert_close(conv(x.expand(-1, c, -1, -1), adapt_input_channels(w, c, mode)), conv(x.expand(-1, 3, -1, -1), w))
    with pytest.raises(ValueError, match=r"`in_channels_mode` should be one of \('auto', 'mean', 'repeat'\), got 'repeats'. Did you mean 'repeat'\?"):
        adapt_input_channels(w, 1, "repeats")


@pytest.mark.parametrize("depth_init", ["zeros", "replicate"])
def test_inflate_to_crossd_gives_a_layer_that_applies_the_2d_kernel(depth_init):
    conv = nn.Conv2d(3, 4, 5, padding=2).double()
    layer = CrossDConv(2, 3, 4, 5, padding=2, rotation_init="identity").double()
    with torch.no_grad():
        layer.weight.copy_(inflate_to_crossd(conv.weight.detach(), depth_init))
        layer.bias.copy_(conv.bias)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-12, rtol=0)


def test_nestings_prefixes_and_safetensors(resnet18, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    state = resnet18.state_dict()
    nested = tmp_path / "nested.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, nested)
    flat = tmp_path / "flat.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in state.items()}, str(flat))
    for path in (nested, flat):
        target = torchvision.models.resnet18()
        report = load_pretrained_2d(target, path)
        assert report.ok and report.initialised == {} and len(report.loaded) == len(state)
        assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())
    assert report.renamed == {}
    assert read_checkpoint(nested).keys() == {f"module.{k}" for k in state}
    target = torchvision.models.resnet18()  # a state_dict in memory, as torchvision's weights give it
    report = load_pretrained_2d(target, state)
    assert report.ok and report.path == "<state_dict>" and str(report).startswith("LoadReport(<state_dict>, family=torchvision (detected)): 122 loaded")
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())


def test_radimagenet_sequential_backbone(resnet18, tmp_path):
    class RadImageNetBackbone(nn.Module):  # the layout of the RadImageNet PyTorch ResNet checkpoints
        def __init__(self, resnet):
            super().__init__()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])

    path = tmp_path / "RadImageNet-ResNet18.pt"
    torch.save(RadImageNetBackbone(resnet18).state_dict(), path)
    net = crossd_resnet18(spatial_dims=3, in_channels=1, num_classes=5)
    report = load_pretrained_2d(net, path)
    assert report.ok and report.renamed["layer1.0.conv1.weight"] == "backbone.4.0.conv1.weight"
    assert report.renamed["bn1.running_var"] == "backbone.1.running_var"
    assert _not_rotation(report.initialised) == ["fc.bias", "fc.weight"]
    assert report.initialised["fc.bias"] == "classifier re-initialised: not in the checkpoint"
    assert torch.equal(net.layer4[1].bn2.running_var, resnet18.layer4[1].bn2.running_var)


def _keras_name(key: str) -> str:
    param = {"weight": "kernel", "bias": "bias", "running_mean": "moving_mean", "running_var": "moving_variance"}
    if key.startswith("fc."):
        return f"predictions/{'kernel' if key == 'fc.weight' else 'bias'}:0"
    m = re.match(r"(conv1|bn1)\.(\w+)$", key)
    if m:
        layer, p = ("conv1_conv", "kernel") if m[1] == "conv1" else ("conv1_bn", {"weight": "gamma", "bias": "beta"}.get(m[2], param.get(m[2])))
        return f"{layer}/{p}:0"
    m = re.match(r"layer(\d)\.(\d)\.(conv|bn|downsample\.)(\d)\.(\w+)$", key)
    stage, block, kind, index, p = int(m[1]) + 1, int(m[2]) + 1, m[3], m[4], m[5]
    if kind == "downsample.":
        kind, index = ("conv" if index == "0" else "bn"), "0"
    if kind == "bn":
        p = {"weight": "gamma", "bias": "beta"}.get(p, param.get(p))
    else:
        p = param[p]
    return f"conv{stage}_block{block}_{index}_{kind}/{p}:0"


def test_keras_converted_resnet_names_and_layouts(resnet18, tmp_path):
    keras = {}
    for key, value in resnet18.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        value = value.permute(2, 3, 1, 0) if value.ndim == 4 else (value.t() if value.ndim == 2 else value)
        keras[_keras_name(key)] = value.contiguous()
    assert "conv2_block1_1_conv/kernel:0" in keras and "conv3_block1_0_bn/moving_variance:0" in keras
    path = tmp_path / "keras.pth"
    torch.save(keras, path)
    target = torchvision.models.resnet18()
    report = load_pretrained_2d(target, path)
    assert report.ok and (report.family, report.detected) == ("radimagenet_keras", True)
    assert report.renamed["layer2.0.downsample.1.running_var"] == "conv3_block1_0_bn/moving_variance:0"
    assert report.adapted["layer1.0.conv1.weight"] == "Keras HWIO kernel transposed"
    assert report.adapted["fc.weight"] == "Keras dense kernel transposed"
    assert report.adapted["bn1.running_var"] == "BatchNorm eps 1.001e-05 as 1e-05 (running_var + 1e-08)"
    assert sorted(set(report.initialised.values())) == ["BatchNorm counter kept"]
    sd = resnet18.state_dict()
    for k, v in target.state_dict().items():
        if k.endswith("running_var"):
            torch.testing.assert_close(v, sd[k] + 1e-8, rtol=0, atol=0)
        elif not k.endswith("num_batches_tracked"):
            assert torch.equal(v, sd[k]), k


def test_authors_crossd_checkpoint_is_copied_as_is(tmp_path):
    torch.manual_seed(1)
    source = crossd_resnet18(spatial_dims=2, in_channels=3, num_classes=4)
    layers = {name for name, m in source.named_modules() if isinstance(m, CrossDConv)}
    authors = {}
    for key, value in source.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layers and leaf == "weight":
            key = f"{owner}.weights_3d"
        authors[key.replace(".rotation_net.", ".rotation_params.")] = value
    assert "layer1.0.conv1.weights_3d" in authors and "conv1.rotation_params.3.bias" in authors
    path = tmp_path / "authors.pt"
    torch.save({"model": authors}, path)
    target = crossd_resnet18(spatial_dims=3, in_channels=3, num_classes=4)
    report = load_pretrained_2d(target, path)
    assert report.ok and report.initialised == {} and report.adapted == {}
    assert (report.family, report.detected) == ("authors", True)
    assert report.family_reason.endswith("e.g. 'conv1.weights_3d'")
    assert report.renamed["conv1.rotation_net.0.weight"] == "conv1.rotation_params.0.weight"
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_strict_lists_keys_and_leaves_the_model_alone(checkpoint, resnet18, tmp_path, caplog):
    state = dict(resnet18.state_dict())
    del state["layer4.1.bn2.running_mean"]
    state["extra.weight"] = torch.zeros(2)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    target = torchvision.models.resnet18()
    before = target.conv1.weight.detach().clone()
    message = (
        r"`path` '.*bad.pth' does not fit `model`: 1 missing keys: layer4.1.bn2.running_mean; "
        r"1 unexpected keys: extra.weight; 1 mismatched keys: layer1.0.conv1.weight \(checkpoint "
        r"'layer1.0.conv1.weight' \(64, 64, 5, 5\) vs model \(64, 64, 3, 3\)\); every unexpected key starts with 'extra.': "
        r"strip the prefix. Pass strict=False to load the keys that fit. Checkpoint family: torchvision \(PyTorch module "
        r"names only \(no '/', ':' or spaces\), e.g. 'conv1.weight'\).$"
    )
    with pytest.raises(ValueError, match=message):
        load_pretrained_2d(target, path)
    assert torch.equal(target.conv1.weight, before)
    with caplog.at_level(logging.WARNING, logger="monai_crossd.converters.pretrained"):
        report = load_pretrained_2d(target, path, strict=False)
    assert "missing keys (1): layer4.1.bn2.running_mean" in caplog.text and "unexpected keys (1): extra.weight" in caplog.text
    assert report.missing_keys == ["layer4.1.bn2.running_mean"] and report.unexpected_keys == ["extra.weight"]
    assert list(report.mismatched) == ["layer1.0.conv1.weight"] and not report.ok
    assert torch.equal(target.conv1.weight, resnet18.conv1.weight)


def test_many_missing_keys_are_counted(checkpoint):
    with pytest.raises(ValueError, match=r"12 missing keys: 0.weight, 0.bias, 1.weight, 1.bias, 1.running_mean, 1.running_var, 2.weight, 2.bias, \.\.\. \(4 more\)"):
        load_pretrained_2d(nn.Sequential(nn.Conv2d(3, 64, 7), *[nn.BatchNorm2d(64)] * 2, nn.Linear(3, 3)), checkpoint, classifier=None)


def test_read_errors(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match=r"`path` '.*nope.pth' is not a file"):
        load_pretrained_2d(nn.Linear(1, 1), tmp_path / "nope.pth")
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"0")
    with pytest.raises(ValueError, match=r"`path` should end with one of \('.pt', '.pth', '.bin', '.ckpt', '.safetensors'\), got 'weights.npz'"):
        read_checkpoint(bad)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, empty)
    with pytest.raises(ValueError, match=r"holds no state_dict .*found \['epoch', 'config'\]"):
        read_checkpoint(empty)
    with pytest.raises(ValueError, match=r"^`path` as a state_dict should be a non-empty mapping of names to tensors\.$"):
        load_pretrained_2d(nn.Linear(1, 1), {"weight": [1.0]})
    with pytest.raises(TypeError, match=r"`model` should be an nn.Module, got str"):
        load_pretrained_2d("resnet18", checkpoint)
    with pytest.raises(ValueError, match=r"`first_conv` should be a module path of `model` with parameters, got 'stem'"):
        load_pretrained_2d(torchvision.models.resnet18(), checkpoint, first_conv="stem")


@pytest.mark.parametrize("method", ["acs", "2.5d"])
def test_into_3d_models_whose_kernels_keep_their_2d_shape(resnet18, checkpoint, method):
    from monai_crossd.converters import convert_to_3d

    target, _ = convert_to_3d(torchvision.models.resnet18(), method)
    report = load_pretrained_2d(target, checkpoint)
    assert report.ok and report.initialised == {}
    if method == "2.5d":
        assert report.adapted["layer1.0.conv1.weight"] == "2D kernel as a (1, K, K) kernel"
    reference, _ = convert_to_3d(resnet18, method)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in target.state_dict().items())


def test_into_inflated_3d_model_says_what_to_do(checkpoint):
    from monai_crossd.converters import convert_to_3d

    target, _ = convert_to_3d(torchvision.models.resnet18(), "i3d")  # 17 kernels of 3 or 7; 3 of 1 (1x1x1) load
    with pytest.raises(ValueError, match=r"17 mismatched keys: conv1.weight \(checkpoint 'conv1.weight' \(64, 3, 7, 7\) vs model \(64, 3, 7, 7, 7\) \(a 2D kernel for a 3D layer: load into the 2D model, then convert_to_3d\)\)"):
        load_pretrained_2d(target, checkpoint)
