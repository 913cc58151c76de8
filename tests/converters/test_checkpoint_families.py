"""Checkpoint families: detection on real-shaped state_dicts (torchvision ResNets renamed the way each family
names them), the report, named families, and what a Keras ResNet50 carries that a model may not represent."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn as nn

from monai_crossd.converters import CHECKPOINT_FAMILIES, detect_family, load_pretrained_2d
from monai_crossd.converters.checkpoint_families import radimagenet_keras
from monai_crossd.networks.nets import CrossDUNet, crossd_resnet18
from tests.converters._helpers import randomise_norms

torchvision = pytest.importorskip("torchvision")

def _radimagenet(state: dict) -> dict:
    """The official RadImageNet layout: ``backbone = nn.Sequential(*resnet50.children()[:-1])``, no fc."""
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    return {f"backbone.{index[k.split('.')[0]]}.{k.partition('.')[2]}": v for k, v in state.items() if not k.startswith("fc.")}


def _keras_names(state: dict) -> dict:
    """``keras.applications.ResNet50`` weight names and layouts (HWIO kernels, (in, out) dense), no BN counters."""
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        module, _, param = key.rpartition(".")
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn)(\d)", module) or re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.(\d)", module)
        if module in ("conv1", "bn1"):
            layer = "conv1_conv" if module == "conv1" else "conv1_bn"
        elif module == "fc":
            layer = "predictions"
        elif m.lastindex == 4:
            layer = f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_{m[4]}_{m[3]}"
        else:
            layer = f"conv{int(m[1]) + 1}_block{int(m[2]) + 1}_0_{'conv' if m[3] == '0' else 'bn'}"
        is_bn = layer.endswith("_bn")
        param = {"weight": "gamma" if is_bn else "kernel", "bias": "beta" if is_bn else "bias",
                 "running_mean": "moving_mean", "running_var": "moving_variance"}[param]
        value = value.permute(2, 3, 1, 0) if value.ndim == 4 else (value.t() if value.ndim == 2 else value)
        out[f"{layer}/{param}:0"] = value.contiguous()
    return out


def _stride_on_conv1(model: nn.Module) -> nn.Module:
    """Move the stride of each downsampling bottleneck to its first 1x1 conv (ResNet50 v1, as Keras has it)."""
    for layer in (model.layer2, model.layer3, model.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return model


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return randomise_norms(torchvision.models.resnet50()).eval()


@pytest.fixture(scope="module")
def keras_resnet50():
    """A Keras ResNet50 as PyTorch computes it: a bias on every conv, BatchNorm eps 1.001e-5, stride on conv1."""
    torch.manual_seed(1)
    model = _stride_on_conv1(randomise_norms(torchvision.models.resnet50()))
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.bias = nn.Parameter(torch.randn(m.out_channels, generator=g) * 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            m.eps = 1.001e-5
    return model.eval()


def _keras_converted(model: nn.Module) -> dict:
    """The Keras conversion to torchvision-like names: the reference's state_dict without fc (RadImageNet has no top)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def test_detect_each_family(resnet50, keras_resnet50, reference_cases):
    resnet18 = torchvision.models.resnet18().state_dict()
    authors = reference_cases[2]["packed_state_dict"]  # the authors' own ResNet18 key names
    cases = [
        (resnet18, "torchvision", "conv1.weight"),
        (crossd_resnet18(2, 1, 2).state_dict(), "torchvision", "conv1.weight"),
        (CrossDUNet(2, 1, 2, channels=(4, 8), strides=(2,)).state_dict(), "torchvision", "model.0.conv.weight"),
        (_radimagenet(resnet50.state_dict()), "radimagenet", "backbone.0.weight"),
        (_keras_names(keras_resnet50.state_dict()), "radimagenet_keras", "conv1_conv/kernel:0"),
        (_keras_converted(keras_resnet50), "radimagenet_keras", "conv1.bias"),
        (authors, "authors", "conv1.weights_3d"),
    ]
    for state, family, evidence in cases:
        name, why = detect_family(state)
        assert name == family and why.endswith(f"e.g. {evidence!r}"), (family, name, why)
    assert detect_family(authors)[1] == "the authors' Cross-D keys (weights_3d, rotation_params), e.g. 'conv1.weights_3d'"
    assert set(CHECKPOINT_FAMILIES) == {"torchvision", "radimagenet", "radimagenet_keras", "authors"}


def test_no_family_lists_the_families_tried_and_keys():
    vgg = {"block1_conv1/kernel:0": torch.zeros(3, 3, 3, 64), "fc1/kernel:0": torch.zeros(8, 4), "dense.weight": torch.zeros(1)}
    with pytest.raises(ValueError) as err:
        detect_family(vgg)
    message = str(err.value)
    assert message.startswith("`state_dict` matches no checkpoint family: tried authors (the authors' Cross-D keys")
    for family in ("; radimagenet_keras (", "; radimagenet (", "; torchvision (PyTorch module names only"):
        assert family in message
    assert message.endswith("2 keys none of them takes: 'block1_conv1/kernel:0', 'fc1/kernel:0'.")
    with pytest.raises(ValueError, match=r"^`path` '<state_dict>': `state_dict` matches no checkpoint family: .* Name the family with `family=`"):
        load_pretrained_2d(torchvision.models.resnet18(), vgg)


def test_radimagenet_detected_and_named(resnet50):
    state = _radimagenet(resnet50.state_dict())
    target = torchvision.models.resnet50(num_classes=3)
    report = load_pretrained_2d(target, state)
    assert report.ok and (report.family, report.detected) == ("radimagenet", True)
    assert report.family_reason == "nn.Sequential ResNet indices (backbone.0, backbone.1, backbone.4-7), e.g. 'backbone.0.weight'"
    assert report.renamed["layer3.5.conv2.weight"] == "backbone.6.5.conv2.weight"
    assert sorted(report.initialised) == ["fc.bias", "fc.weight"]
    assert all(torch.equal(v, resnet50.state_dict()[k]) for k, v in target.state_dict().items() if not k.startswith("fc."))
    assert "family=radimagenet (detected)" in str(report)

    named = load_pretrained_2d(torchvision.models.resnet50(), state, family="radimagenet")
    assert (named.family, named.detected, named.family_reason) == ("radimagenet", False, "named by the caller")
    assert "family=radimagenet (named)" in str(named)
    # naming the wrong family: the keys are left as they are and do not fit
    with pytest.raises(ValueError, match=r"unexpected keys: backbone.0.weight, .*Checkpoint family: torchvision \(named by the caller\)\.$"):
        load_pretrained_2d(torchvision.models.resnet50(), state, family="torchvision")


def test_unknown_family(resnet50):
    with pytest.raises(ValueError, match=r"^`family` should be one of \('auto', 'torchvision', 'radimagenet', 'radimagenet_keras', 'authors'\), got 'radimagnet'. Did you mean 'radimagenet'\?$"):
        load_pretrained_2d(torchvision.models.resnet50(), {"conv1.weight": torch.zeros(1)}, family="radimagnet")


@pytest.mark.parametrize("names", ["torchvision-like", "keras"])
def test_keras_resnet50_loads_exactly_into_a_model_striding_on_conv1(keras_resnet50, names):
    state = _keras_converted(keras_resnet50) if names == "torchvision-like" else _keras_names(keras_resnet50.state_dict())
    target = _stride_on_conv1(torchvision.models.resnet50(num_classes=2)).double()
    report = load_pretrained_2d(target, {k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    assert report.ok and (report.family, report.detected) == ("radimagenet_keras", True)
    assert report.input_convention.startswith("BGR caffe-style input") and "expects BGR caffe-style" in str(report)
    bias = "layer1.0.conv1.bias" if names == "torchvision-like" else "conv2_block1_1_conv/bias:0"
    assert report.adapted["layer1.0.bn1.running_mean"].endswith(f"conv bias {bias!r} folded in (running_mean - bias, exact)")
    assert sorted(k for k, why in report.initialised.items() if why != "BatchNorm counter kept") == ["fc.bias", "fc.weight"]
    # the model (no conv biases, eps 1e-5) computes the Keras network's function: exactly with running statistics
    # (float64), and in training mode up to the eps (1e-8 apart) that batch statistics then meet
    reference = copy.deepcopy(keras_resnet50).double()
    target.fc = reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), reference.eval()(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(target.train()(x), reference.train()(x), rtol=1e-4, atol=1e-4)


def test_keras_resnet50_into_a_model_striding_on_conv2_is_refused(keras_resnet50):
    target = torchvision.models.resnet50()
    before = copy.deepcopy(target.state_dict())
    message = (
        r"^`path` '<state_dict>' is a radimagenet_keras checkpoint \(Keras ResNet50 layer names or a ResNet conv bias "
        r"before BatchNorm, e.g. 'conv1.bias'\) that `model` cannot represent: loading it would lose the stride of "
        r"layer2.0 \(model: on conv2\), layer3.0 \(model: on conv2\), layer4.0 \(model: on conv2\) on conv1 as the "
        r"checkpoint has it \(Keras ResNet50 v1 strides the first 1x1 conv of each downsampling block; build `model` "
        r"with its stride there to load it exactly\)\.$"
    )
    for strict in (True, False):  # never loaded silently wrong, whatever `strict` says
        with pytest.raises(ValueError, match=message):
            load_pretrained_2d(target, _keras_converted(keras_resnet50), strict=strict)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_keras_conv_biases_with_nowhere_to_go_are_refused(keras_resnet50):
    state = {k: v for k, v in _keras_converted(keras_resnet50).items() if not k.startswith(("layer1.0.bn1.", "layer2.1.bn3."))}
    target = torchvision.models.resnet50()
    with pytest.raises(ValueError, match=(
        r"cannot represent: loading it would lose 2 conv biases with no BatchNorm statistics to fold them into and no "
        r"bias in `model` \(first: layer1.0.conv1.bias\) and the stride of layer2.0 \(model: on conv2\)"
    )):
        load_pretrained_2d(target, state, strict=False)
    # a model with those biases takes them; the stride is still the model's business
    target = _stride_on_conv1(torchvision.models.resnet50())
    target.layer1[0].conv1.bias = nn.Parameter(torch.zeros(64))
    target.layer2[1].conv3.bias = nn.Parameter(torch.zeros(512))
    report = load_pretrained_2d(target, state, strict=False)
    assert torch.equal(target.layer1[0].conv1.bias, keras_resnet50.layer1[0].conv1.bias)
    assert report.missing_keys[:4] == ["layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"]


def test_keras_filter_is_pure_and_exact_on_values(keras_resnet50):
    state = _keras_names(keras_resnet50.state_dict())
    before = {k: v.clone() for k, v in state.items()}
    out = radimagenet_keras(state)
    assert all(torch.equal(v, before[k]) for k, v in state.items())
    ref = keras_resnet50
    torch.testing.assert_close(out["layer2.0.downsample.0.weight"].value, ref.layer2[0].downsample[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(
        out["layer2.0.downsample.1.running_mean"].value,
        ref.layer2[0].downsample[1].running_mean - ref.layer2[0].downsample[0].bias, rtol=0, atol=0,
    )
    assert out["layer2.0.downsample.1.running_mean"].source == "conv3_block1_0_bn/moving_mean:0"
    assert not any(k.endswith(("conv1.bias", "conv2.bias", "conv3.bias", "downsample.0.bias")) for k in out)
    with pytest.raises(ValueError, match=r"^`state_dict` maps two keys to 'conv1.weight': 'conv1_conv/kernel:0' and 'conv1.weight'\.$"):
        radimagenet_keras({"conv1_conv/kernel:0": torch.zeros(1, 1, 1, 1), "conv1.weight": torch.zeros(1, 1, 1, 1)})


def test_keras_resnet50_loads_exactly_into_a_crossd_resnet50_v1(keras_resnet50):
    """RadImageNet's Keras ResNet50 as a 2D Cross-D prior: blocks that stride on the first 1x1 conv take it exactly
    (the knowledge bases hold the 2D kernels at R = I), the default (torchvision v1.5) blocks refuse it."""
    from monai_crossd.networks.nets import crossd_resnet50

    state = {k: v.double() for k, v in _keras_names(keras_resnet50.state_dict()).items()}
    with pytest.raises(ValueError, match=r"the stride of layer2.0 \(model: on conv2\)"):
        load_pretrained_2d(crossd_resnet50(2, 3, 2), state)
    target = crossd_resnet50(2, 3, 2, block="bottleneck_v1").double()
    report = load_pretrained_2d(target, state)
    assert report.ok and report.family == "radimagenet_keras"
    reference = copy.deepcopy(keras_resnet50).double()
    target.fc = reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), reference.eval()(x), rtol=1e-9, atol=1e-9)
