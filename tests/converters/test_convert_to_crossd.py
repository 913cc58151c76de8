from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.networks.nets import UNet

from monai_crossd.converters import ConversionReport, convert_to_crossd
from monai_crossd.networks import CrossDConv
from tests.converters._helpers import randomise_norms

torchvision = pytest.importorskip("torchvision")


def test_resnet18_same_function_and_report():
    model = randomise_norms(torchvision.models.resnet18(num_classes=10)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted, report = convert_to_crossd(model)
    converted.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-4)
    assert isinstance(report, ConversionReport) and report.method == "crossd"
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(report.replaced) == convs and len(convs) == 20 and report.skipped == {}
    assert report.replaced["conv1"] == "Conv2d -> CrossDConv (kernel 7, depth_init=zeros)"
    assert isinstance(converted.layer2[0].downsample[0], CrossDConv)
    # the input is untouched
    assert all(type(m) is not CrossDConv for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_monai_unet_same_function():
    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    converted, report = convert_to_crossd(net)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(converted.eval()(x), net(x), rtol=1e-4, atol=1e-4)
    assert len(report.replaced) == sum(type(m) is nn.Conv2d for m in net.modules()) == 8
    assert all("rotation_net" in name for name, m in converted.named_modules() if isinstance(m, nn.Conv2d))
    # transposed convolutions are not Conv2d and stay as they are
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in converted.modules()) == 2


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.dilated = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3, padding_mode="reflect")
        self.same = nn.Conv2d(6, 4, 4, padding="same", padding_mode="circular")
        self.valid = nn.Conv2d(4, 4, 1, padding="valid")
        self.wide = nn.Conv2d(4, 4, (1, 3), padding=(0, 1))

    def forward(self, x):
        return self.wide(self.valid(self.same(torch.relu(self.dilated(self.strided(x))))))


def test_any_conv_arguments_and_non_square_skipped():
    model = Odd().eval()
    converted, report = convert_to_crossd(model)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(converted.eval()(x), model(x), rtol=1e-4, atol=1e-4)
    assert list(report.replaced) == ["strided", "dilated", "same", "valid"]
    assert report.skipped == {"wide": "non-square kernel (1, 3): a Cross-D knowledge base is cubic"}
    assert type(converted.wide) is nn.Conv2d
    assert "skipped  wide: non-square kernel" in str(report)


def test_conv_kwargs_reach_every_layer_and_depth_init():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    converted, _ = convert_to_crossd(model, depth_init="replicate", rotation=False, rotation_channels=8)
    layers = [m for m in converted.modules() if isinstance(m, CrossDConv)]
    assert len(layers) == 2
    assert all(not m.rotation and m.rotation_net[0].out_channels == 8 for m in layers)
    w = layers[0].weight
    assert torch.equal(w[:, :, 0], w[:, :, 2])  # replicated along depth
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(converted(x), model(x))


def test_subclass_skipped_existing_crossd_kept_shared_modules_stay_shared():
    class StdConv2d(nn.Conv2d):
        pass

    shared = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(shared, shared, StdConv2d(3, 3, 3), CrossDConv(2, 3, 3, 3))
    converted, report = convert_to_crossd(model)
    assert list(report.replaced) == ["0"]  # "1" is the same module
    assert converted[0] is converted[1] and isinstance(converted[0], CrossDConv)
    assert "subclass of nn.Conv2d" in report.skipped["2"]
    # an existing Cross-D layer is not looked into (its rotation network has 1x1 Conv2d layers)
    assert type(converted[3].rotation_net[0]) is nn.Conv2d


def test_single_conv_and_gradients():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    layer, report = convert_to_crossd(conv)
    assert isinstance(layer, CrossDConv) and report.replaced == {"": "Conv2d -> CrossDConv (kernel 3, depth_init=zeros)"}
    layer(torch.randn(2, 2, 6, 6)).square().sum().backward()
    rot_in, rot_bn, rot_out = layer.rotation_net[0], layer.rotation_net[1], layer.rotation_net[3]
    # the kernel learns, and the angle moves away from R = I
    for g in (layer.weight.grad, layer.bias.grad, rot_out.weight.grad[3], rot_out.bias.grad[3]):
        assert g.abs().sum() > 0
    # at R = I the last rotation layer is zero, so nothing reaches the first ones yet, nor the axis (theta = 0)
    for g in (rot_in.weight.grad, rot_in.bias.grad, rot_bn.weight.grad, rot_bn.bias.grad, rot_out.weight.grad[:3],
              rot_out.bias.grad[:3]):  # fmt: skip
        assert g.abs().sum() == 0


def test_errors():
    with pytest.raises(TypeError, match=r"`model` should be an nn.Module, got dict"):
        convert_to_crossd({})
    with pytest.raises(ValueError, match=r"`depth_init` should be one of \('zeros', 'replicate'\), got 'zero'. Did you mean 'zeros'\?"):
        convert_to_crossd(nn.Conv2d(1, 1, 3), depth_init="zero")
    with pytest.raises(ValueError, match=r"`conv_kwargs` may not set 'stride': it is read from each convolution"):
        convert_to_crossd(nn.Conv2d(1, 1, 3), stride=2)
    with pytest.raises(ValueError, match=r"`conv_kwargs key` should be one of .*got 'rotaton'. Did you mean 'rotation'\?"):
        convert_to_crossd(nn.Conv2d(1, 1, 3), rotaton=False)


def test_rotation_init_is_identity_and_said_so():
    """Regression: `rotation_init="random"` was accepted and silently ignored (the layer reset to R = I)."""
    conv = nn.Conv2d(2, 3, 3, padding=1)
    converted, _ = convert_to_crossd(conv)
    assert converted.rotation_init == "identity"
    with pytest.raises(ValueError, match="`rotation_init` should be 'identity' for from_conv"):
        convert_to_crossd(conv, rotation_init="random")
    with pytest.raises(ValueError, match="`rotation_init` should be 'identity' for from_conv"):
        CrossDConv.from_conv(conv, spatial_dims=3, rotation_init="random")


def test_every_crossd_layer_reports_whether_it_is_static():
    assert CrossDConv(2, 2, 2, 3, rotation=False).is_static
    assert CrossDConv(3, 2, 2, 3, kernel_3d="raw").is_static and not CrossDConv(2, 2, 2, 3, kernel_3d="raw").is_static
    assert not CrossDConv(3, 2, 2, 3).is_static
