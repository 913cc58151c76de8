from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from monai.networks.blocks import ADN
from monai.networks.nets import UNet

from monai_crossd.networks.blocks import CrossDConv, CrossDConvTranspose, RotationNetwork
from monai_crossd.networks.nets import CrossDConvolution, CrossDResidualUnit, CrossDUNet

BASE = dict(in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2))


def outside_rotation(net: nn.Module) -> list[nn.Module]:
    """All modules of ``net`` except those inside the Cross-D rotation networks (the paper's own BN/ReLU)."""
    inner = {id(m) for r in net.modules() if isinstance(r, RotationNetwork) for m in r.modules()}
    return [m for m in net.modules() if id(m) not in inner]


# ---------------------------------------------------------------- shapes, 2D and 3D

SHAPE_CASES = []
for dim, size in ((2, (16, 16)), (3, (8, 16, 16))):
    for res in (0, 1, 2):
        SHAPE_CASES.append([dim, dict(num_res_units=res), (2, 1, *size), (2, 3, *size)])
    SHAPE_CASES.append([dim, dict(strides=(2, 1), kernel_size=5, up_kernel_size=1), (2, 1, *size), (2, 3, *size)])
    SHAPE_CASES.append([dim, dict(up_mode="resize", num_res_units=1), (2, 1, *size), (2, 3, *size)])
    SHAPE_CASES.append(
        [dim, dict(channels=(4, 8), strides=(2,), dropout=0.1, norm="batch"), (2, 1, *size), (2, 3, *size)]
    )


@pytest.mark.parametrize("dim, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shape(dim, kwargs, in_shape, out_shape):
    net = CrossDUNet(dim, **{**BASE, **kwargs}).eval()
    with torch.no_grad():
        assert net(torch.randn(in_shape)).shape == out_shape


@pytest.mark.parametrize("up_mode", ["resize", "deconv"])
@pytest.mark.parametrize("num_res_units", [0, 2])
def test_mirrors_monai_unet(up_mode, num_res_units):
    """Same state_dict keys as MONAI's UNet (plus the rotation networks), same output shape."""
    ours = CrossDUNet(2, **BASE, num_res_units=num_res_units, up_mode=up_mode)
    theirs = UNet(2, **BASE, num_res_units=num_res_units)
    assert {k for k in ours.state_dict() if ".rotation_net." not in k} == set(theirs.state_dict())
    convs = [m for m in outside_rotation(ours) if isinstance(m, CrossDConv)]
    plain = [m for m in theirs.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == len(plain) and not any(isinstance(m, nn.ConvTranspose2d) for m in ours.modules())
    transposed = [m for m in convs if isinstance(m, CrossDConvTranspose)]
    assert len(transposed) == (0 if up_mode == "resize" else sum(isinstance(m, nn.ConvTranspose2d) for m in plain))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert ours.eval()(x).shape == theirs.eval()(x).shape


# ---------------------------------------------------------------- one state dict for 2D and 3D


@pytest.mark.parametrize("norm", ["instance", "batch", ("group", {"num_groups": 1})])
@pytest.mark.parametrize("num_res_units", [0, 1])
@pytest.mark.parametrize("src, dst", [(2, 3), (3, 2)])
def test_state_dict_round_trip(norm, num_res_units, src, dst):
    kwargs = dict(**BASE, norm=norm, num_res_units=num_res_units)
    a, b = CrossDUNet(src, **kwargs), CrossDUNet(dst, **kwargs)
    assert str(b.load_state_dict(a.state_dict(), strict=True)) == "<All keys matched successfully>"
    back = CrossDUNet(src, **kwargs)
    back.load_state_dict(b.state_dict(), strict=True)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in a.state_dict().items())
    shape = (2, 1, 8, 8, 8) if dst == 3 else (2, 1, 16, 16)
    with torch.no_grad():
        assert b.eval()(torch.randn(shape)).shape == (2, 3, *shape[2:])


@pytest.mark.parametrize("num_res_units", [0, 2])
def test_3d_deconv_has_monai_unet_parameter_shapes(num_res_units):
    """Outside the rotation networks, every parameter of the 3D network has the shape of MONAI's UNet's."""
    ours = CrossDUNet(3, **BASE, num_res_units=num_res_units)
    theirs = UNet(3, **BASE, num_res_units=num_res_units)
    shapes = {k: v.shape for k, v in ours.state_dict().items() if ".rotation_net." not in k}
    assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("up_mode", ["deconv", "resize"])
def test_up_modes_are_transferable_but_not_interchangeable(up_mode):
    a, b = CrossDUNet(2, **BASE, up_mode=up_mode), CrossDUNet(3, **BASE, up_mode=up_mode)
    assert str(b.load_state_dict(a.state_dict(), strict=True)) == "<All keys matched successfully>"
    other = CrossDUNet(3, **BASE, up_mode="resize" if up_mode == "deconv" else "deconv")
    with pytest.raises(RuntimeError, match="size mismatch for model.2.conv.weight"):
        other.load_state_dict(a.state_dict(), strict=True)


def test_deconv_up_path_is_a_cross_d_transposed_conv():
    net = CrossDUNet(3, **BASE, num_res_units=1)
    up = net.model[2][0]  # the top level's up path: transposed conv, then the residual unit
    assert isinstance(up.conv, CrossDConvTranspose) and up.conv.stride == (2, 2, 2)
    assert up.conv.padding == (1, 1, 1) and up.conv.output_padding == (1, 1, 1)
    assert [n for n, _ in up.named_children()] == ["conv", "adn"]


# ---------------------------------------------------------------- options reach every layer


@pytest.mark.parametrize("num_res_units", [0, 2])
@pytest.mark.parametrize(
    "norm, norm_type, act, act_type",
    [(("group", {"num_groups": 2}), nn.GroupNorm, "elu", nn.ELU),
     ("batch", nn.modules.batchnorm._BatchNorm, ("leakyrelu", {"negative_slope": 0.2}), nn.LeakyReLU)],
)  # fmt: skip
@pytest.mark.parametrize("dim", [2, 3])
def test_norm_act_reach_every_layer(dim, norm, norm_type, act, act_type, num_res_units):
    kwargs = dict(**{**BASE, "out_channels": 2}, norm=norm, act=act, num_res_units=num_res_units, dropout=0.2)
    net = CrossDUNet(dim, **kwargs)
    reference = UNet(dim, **kwargs)  # MONAI's UNet: where its norm/act layers are, ours must be
    modules = outside_rotation(net)
    norms = [m for m in modules if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm))]
    acts = [m for m in modules if type(m).__module__ == "torch.nn.modules.activation"]
    adns = [m for m in modules if isinstance(m, ADN)]
    assert len(norms) == len(adns) == sum(isinstance(m, norm_type) for m in reference.modules())
    assert len(norms) == (4 if num_res_units == 0 else 9)
    assert all(isinstance(m, norm_type) for m in norms)
    assert len(acts) == len(adns) and all(isinstance(m, act_type) for m in acts)
    assert all(isinstance(a.D, nn.Dropout) and a.D.p == 0.2 for a in adns)
    if norm_type is nn.GroupNorm:
        assert all(m.num_groups == 2 for m in norms)


@pytest.mark.parametrize("up_mode", ["deconv", "resize"])
def test_conv_kwargs_reach_every_conv(up_mode):
    kw = {"rotation": False, "rotation_init": "identity"}
    net = CrossDUNet(3, **BASE, num_res_units=2, conv_kwargs=kw, up_mode=up_mode)
    convs = [m for m in net.modules() if isinstance(m, CrossDConv)]
    assert len(convs) == 3 * 2 + 3 + 2 * 2  # down units, strided/channel residuals, up convs + up residual units
    assert all(not c.rotation and c.rotation_init == "identity" for c in convs)
    net = CrossDUNet(3, **BASE, conv_kwargs={"padding_mode": "replicate"}, up_mode="resize")
    assert all(c.padding_mode == "replicate" for c in net.modules() if isinstance(c, CrossDConv))


def test_padding_mode_needs_the_resize_up_path():
    with pytest.raises(ValueError, match=r"padding_mode='reflect'.* up_mode='deconv'.* use up_mode='resize'"):
        CrossDUNet(3, **BASE, conv_kwargs={"padding_mode": "reflect"})


def test_blocks():
    block = CrossDConvolution(2, 4, 8, strides=2, upsample=True, conv_only=True)
    assert [n for n, _ in block.named_children()] == ["up", "conv"]
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 16, 16)
    unit = CrossDResidualUnit(3, 4, 4, subunits=1)
    assert isinstance(unit.residual, nn.Identity)
    assert unit(torch.randn(2, 4, 4, 8, 8)).shape == (2, 4, 4, 8, 8)


# ---------------------------------------------------------------- TorchScript, gradients


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_save_load():
    net = CrossDUNet(2, **BASE, num_res_units=1).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)  # compared below, after the save/load
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


ZERO_GRAD_OK: set = set()


@pytest.mark.parametrize("dim, num_res_units", [(2, 0), (2, 2), (3, 1)])
def test_every_parameter_gets_a_gradient(dim, num_res_units):
    net = CrossDUNet(dim, **BASE, num_res_units=num_res_units, norm="batch").train()
    x = torch.randn(2, 1, *((8, 8, 8) if dim == 3 else (16, 16)))
    net(x).square().sum().backward()
    for name, p in net.named_parameters():
        if ".rotation_net." in name and net.get_submodule(name.split(".rotation_net.")[0]).kernel_size == 1:
            assert p.grad is not None and p.grad.abs().sum() == 0, name  # a 1x1x1 knowledge base: nothing to shift
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0 or name in ZERO_GRAD_OK, name  # every parameter learns


# ---------------------------------------------------------------- bad arguments

BAD_ARGS = [
    (dict(spatial_dims=1), "`spatial_dims` should be 2 or 3, got 1"),
    (dict(in_channels=0), "`in_channels` should be a positive int, got 0"),
    (dict(channels=(4,), strides=()), "the length of `channels` should be no less than 2, got (4,)"),
    (dict(strides=(2,)), "the length of `strides` should equal to `len(channels) - 1` (2), got (2,)"),
    (dict(kernel_size=4), "`kernel_size` should be a positive odd int, got 4"),
    (dict(kernel_size=(3, 5)), "`kernel_size` should be an int or 2 equal ints (a cubic Cross-D kernel), got (3, 5)"),
    (dict(up_kernel_size=2), "`up_kernel_size` should be a positive odd int, got 2"),
    (dict(num_res_units=-1), "`num_res_units` should be a non-negative int, got -1"),
    (dict(up_mode="resise"), "Did you mean 'resize'?"),
    (dict(norm="instanse"), "`norm` should be a MONAI norm spec"),
    (dict(act="prelux"), "`act` should be a MONAI act spec"),
    (dict(norm=("group", {"num_groups": 3})), "`norm`"),
    (dict(conv_kwargs={"kernel_size": 5}), "`conv_kwargs` may not set 'kernel_size'"),
    (dict(conv_kwargs={"kernel3d": "raw"}), "Did you mean 'kernel_3d'?"),
]


@pytest.mark.parametrize("bad, message", BAD_ARGS)
def test_ill_arguments(bad, message):
    with pytest.raises(ValueError) as info:
        CrossDUNet(**{"spatial_dims": 2, **BASE, **bad})
    assert message in str(info.value)


def test_extra_strides_warn():
    with pytest.warns(UserWarning, match="the last 1 values of strides will not be used"):
        CrossDUNet(2, **{**BASE, "strides": (2, 2, 2)})
