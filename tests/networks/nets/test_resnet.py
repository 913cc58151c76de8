from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from monai_crossd.converters import convert_reference_state_dict
from monai_crossd.networks.blocks import CrossDConv, RotationNetwork
from monai_crossd.networks.nets import (
    CrossDBasicBlock,
    CrossDBottleneck,
    CrossDResNet,
    crossd_resnet18,
    crossd_resnet34,
    crossd_resnet50,
)

SMALL = dict(block_inplanes=(4, 8, 8, 8))  # narrow stages keep every case fast on CPU


def outside_rotation(net: nn.Module) -> list[nn.Module]:
    """All modules of ``net`` except those inside the Cross-D rotation networks (the paper's own BN/ReLU)."""
    inner = {id(m) for r in net.modules() if isinstance(r, RotationNetwork) for m in r.modules()}
    return [m for m in net.modules() if id(m) not in inner]


def small(spatial_dims: int, block: str = "basic", **kwargs) -> CrossDResNet:
    return CrossDResNet(spatial_dims, kwargs.pop("in_channels", 3), kwargs.pop("num_classes", 5), block, (1, 1, 1, 1),
                        **{**SMALL, **kwargs})  # fmt: skip


# ---------------------------------------------------------------- shapes, 2D and 3D

SHAPE_CASES = []
for dim, in_shape in ((2, (2, 3, 32, 32)), (3, (2, 3, 8, 16, 16))):
    for block, expansion in (("basic", 1), ("bottleneck", 4)):
        SHAPE_CASES.append([dim, dict(block=block), in_shape, (2, 5)])
        SHAPE_CASES.append([dim, dict(block=block, feed_forward=False), in_shape, (2, 8 * expansion)])
    SHAPE_CASES.append([dim, dict(no_max_pool=True, conv1_kernel_size=3, conv1_stride=1), in_shape, (2, 5)])
    SHAPE_CASES.append([dim, dict(conv_kwargs={"rotation": False}), in_shape, (2, 5)])
SHAPE_CASES.append([3, dict(conv_kwargs={"kernel_3d": "raw"}), (1, 3, 8, 8, 8), (1, 5)])


@pytest.mark.parametrize("dim, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shape(dim, kwargs, in_shape, out_shape):
    net = small(dim, **kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(in_shape)).shape == out_shape


@pytest.mark.parametrize(
    "factory, block, layers", [(crossd_resnet18, CrossDBasicBlock, (2, 2, 2, 2)),
                               (crossd_resnet34, CrossDBasicBlock, (3, 4, 6, 3)),
                               (crossd_resnet50, CrossDBottleneck, (3, 4, 6, 3))],
)  # fmt: skip
def test_factories(factory, block, layers):
    net = factory(spatial_dims=2, in_channels=1, num_classes=3, **SMALL)
    assert tuple(len(getattr(net, f"layer{i}")) for i in range(1, 5)) == layers
    assert all(isinstance(b, block) for i in range(1, 5) for b in getattr(net, f"layer{i}"))
    assert net.fc.out_features == 3 and net.fc.in_features == 8 * block.expansion


# ---------------------------------------------------------------- acceptance: the authors' Cross-D ResNet18


def unpack(packed: dict) -> dict:
    return {k: (v["int8"].float() * v["scale"] if isinstance(v, dict) else v) for k, v in packed.items()}


def test_reference_resnet18(reference_cases):
    case = reference_cases[2]
    assert case["kind"] == "resnet18"
    net = crossd_resnet18(spatial_dims=2, in_channels=3, num_classes=case["num_classes"])
    state = convert_reference_state_dict(unpack(case["packed_state_dict"]))
    assert str(net.load_state_dict(state, strict=True)) == "<All keys matched successfully>"
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(case["input"]), case["output_eval"], atol=1e-4, rtol=0)
    # the same checkpoint drives the 3D network
    net3d = crossd_resnet18(spatial_dims=3, in_channels=3, num_classes=case["num_classes"])
    assert str(net3d.load_state_dict(state, strict=True)) == "<All keys matched successfully>"


def test_torchvision_layout():
    torchvision = pytest.importorskip("torchvision")
    ours = crossd_resnet18(2, 3, 10).state_dict()
    theirs = torchvision.models.resnet18(num_classes=10).state_dict()
    plain = {k.replace(".weight", "") for k in theirs if k.endswith(".weight") and theirs[k].ndim == 4}
    expected = {k for k in theirs if k.rsplit(".", 1)[0] not in plain}  # everything but the conv weights
    assert expected <= set(ours)
    for name in plain:
        assert ours[f"{name}.weight"].shape[:2] == theirs[f"{name}.weight"].shape[:2]
        assert ours[f"{name}.weight"].ndim == 5


# ---------------------------------------------------------------- one state dict for 2D and 3D


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("conv_kwargs", [None, {"rotation": False}])
@pytest.mark.parametrize("src, dst", [(2, 3), (3, 2)])
def test_state_dict_round_trip(block, conv_kwargs, src, dst):
    a = small(src, block, conv_kwargs=conv_kwargs)
    b = small(dst, block, conv_kwargs=conv_kwargs)
    assert str(b.load_state_dict(a.state_dict(), strict=True)) == "<All keys matched successfully>"
    back = small(src, block, conv_kwargs=conv_kwargs)
    back.load_state_dict(b.state_dict(), strict=True)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in a.state_dict().items())
    x = torch.randn(2, 3, 8, 8, 8) if dst == 3 else torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert b.eval()(x).shape == (2, 5)


# ---------------------------------------------------------------- options reach every layer


@pytest.mark.parametrize(
    "block, norm, norm_type, act, act_type",
    [("basic", ("group", {"num_groups": 4}), nn.GroupNorm, "elu", nn.ELU),
     ("bottleneck", "instance", (nn.InstanceNorm2d, nn.InstanceNorm3d), ("leakyrelu", {"negative_slope": 0.2}),
      nn.LeakyReLU)],
)  # fmt: skip
@pytest.mark.parametrize("dim", [2, 3])
def test_norm_act_reach_every_layer(dim, block, norm, norm_type, act, act_type):
    net = CrossDResNet(dim, 1, 2, block, (2, 1, 1, 1), norm=norm, act=act, **SMALL)
    modules = outside_rotation(net)
    convs = [m for m in modules if isinstance(m, CrossDConv)]
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._NormBase) or isinstance(m, nn.GroupNorm)]
    acts = [m for m in modules if type(m).__module__ == "torch.nn.modules.activation"]
    n_blocks = 5
    per_block = 2 if block == "basic" else 3
    shortcuts = 3 if block == "basic" else 4  # layer1 of a basic-block net keeps the stem's width
    assert len(convs) == 1 + per_block * n_blocks + shortcuts
    assert len(norms) == len(convs) and all(isinstance(m, norm_type) for m in norms)
    assert len(acts) == 1 + per_block * n_blocks and all(isinstance(m, act_type) for m in acts)
    assert isinstance(net.relu, act_type)  # torchvision's name for the stem activation
    if act_type is nn.LeakyReLU:
        assert all(m.negative_slope == 0.2 for m in acts)
    if norm_type is nn.GroupNorm:
        assert all(m.num_groups == 4 for m in norms)


def test_prelu_not_shared():
    net = small(2, act="prelu")
    prelus = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 + 2 * 4 and len({id(m.weight) for m in prelus}) == len(prelus)


def test_conv_kwargs_reach_every_conv():
    net = small(3, "bottleneck", conv_kwargs={"rotation": False, "kernel_3d": "raw", "padding_mode": "replicate"})
    convs = [m for m in net.modules() if isinstance(m, CrossDConv)]
    assert len(convs) == 1 + 3 * 4 + 4
    assert all(not c.rotation and c.kernel_3d == "raw" and c.padding_mode == "replicate" for c in convs)
    assert all(c.bias is None for c in convs)


# ---------------------------------------------------------------- TorchScript, gradients


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_save_load():
    net = small(2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)  # compared below, after the save/load
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


#: PReLU in front of the stem max pool: only its positive inputs are picked, so its slope gets no gradient
ZERO_GRAD_OK = {"relu.weight"}


@pytest.mark.parametrize("dim, block", [(2, "basic"), (3, "bottleneck")])
def test_every_parameter_gets_a_gradient(dim, block):
    net = small(dim, block, act="prelu").train()
    x = torch.randn(2, 3, *((8, 8, 8) if dim == 3 else (32, 32)))
    net(x).square().sum().backward()
    for name, p in net.named_parameters():
        if ".rotation_net." in name and net.get_submodule(name.split(".rotation_net.")[0]).kernel_size == 1:
            assert p.grad is not None and p.grad.abs().sum() == 0, name  # a 1x1x1 knowledge base: nothing to shift
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0 or name in ZERO_GRAD_OK, name  # every parameter learns


# ---------------------------------------------------------------- bad arguments

BAD_ARGS = [
    (dict(spatial_dims=4), ValueError, "`spatial_dims` should be 2 or 3, got 4"),
    (dict(in_channels=0), ValueError, "`in_channels` should be a positive int, got 0"),
    (dict(num_classes=0), ValueError, "`num_classes` should be a positive int, got 0"),
    (dict(block="basik"), ValueError, "Did you mean 'basic'?"),
    (dict(block=nn.Linear), TypeError, "`block`"),
    (dict(layers=()), ValueError, "`layers` should be a non-empty sequence of positive ints, got ()"),
    (dict(block_inplanes=(4, 8)), ValueError, "`block_inplanes` should have one positive int per stage (4"),
    (dict(conv1_kernel_size=4), ValueError, "`conv1_kernel_size` should be a positive odd int, got 4"),
    (dict(conv1_stride=0), ValueError, "`conv1_stride` should be a positive int, got 0"),
    (dict(norm="batchh"), ValueError, "`norm` should be a MONAI norm spec"),
    (dict(act="relux"), ValueError, "`act` should be a MONAI act spec"),
    (dict(conv_kwargs={"stride": 2}), ValueError, "`conv_kwargs` may not set 'stride'"),
    (dict(conv_kwargs={"rotaton": False}), ValueError, "Did you mean 'rotation'?"),
    (dict(conv_kwargs=[("rotation", False)]), TypeError, "`conv_kwargs` should be a mapping"),
]


@pytest.mark.parametrize("bad, error, message", BAD_ARGS)
def test_ill_arguments(bad, error, message):
    args = dict(spatial_dims=2, in_channels=3, num_classes=5, block="basic", layers=(1, 1, 1, 1), **SMALL)
    with pytest.raises(error) as info:
        CrossDResNet(**{**args, **bad})
    assert message in str(info.value)
