from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.networks.nets import UNet

from monai_crossd.converters import LAYERS_3D, METHODS, ACSConv, convert_to_3d, convert_to_crossd
from monai_crossd.networks import CrossDConv
from tests.converters._helpers import randomise_norms

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return randomise_norms(torchvision.models.resnet18(num_classes=10)).eval()


@pytest.mark.parametrize("method", ["center", "2.5d", "crossd"])
def test_depth_one_volume_gives_the_2d_output(resnet18, method):
    converted, report = convert_to_3d(resnet18, method)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(converted.eval()(x.unsqueeze(2)), resnet18(x), rtol=1e-4, atol=1e-4)
    assert report.method == method
    kinds = {"center": "Conv3d", "2.5d": "Conv3d", "crossd": "CrossDConv"}
    assert report.replaced["layer1.0.conv1"].startswith(f"Conv2d -> {kinds[method]}")
    assert report.replaced["bn1"] == "BatchNorm2d -> BatchNorm3d"
    assert report.replaced["avgpool"] == "AdaptiveAvgPool2d -> AdaptiveAvgPool3d"
    assert "fc" not in report.replaced and "relu" not in report.replaced
    assert type(resnet18.conv1) is nn.Conv2d  # the input is untouched


def test_i3d_depth_constant_volume_gives_the_2d_output():
    torch.manual_seed(0)
    model = randomise_norms(torchvision.models.resnet18(num_classes=10))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"  # no depth border: the equality holds on every slice
    model.eval()
    converted, report = convert_to_3d(model, "i3d")
    assert report.replaced["conv1"] == "Conv2d -> Conv3d (i3d, kernel (7, 7, 7))"
    assert converted.conv1.padding_mode == "circular"
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(converted.eval()(x.unsqueeze(2).expand(-1, -1, 4, -1, -1)), model(x), rtol=1e-4, atol=1e-4)


def test_i3d_interior_slices_with_zero_padding():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    layer, _ = convert_to_3d(conv, "i3d")
    x = torch.randn(1, 2, 9, 9)
    out = layer(x.unsqueeze(2).expand(-1, -1, 5, -1, -1))
    for d in range(1, 4):
        torch.testing.assert_close(out[:, :, d], conv(x))
    assert not torch.allclose(out[:, :, 0], conv(x))  # the border slice sees zero padding


def test_two_and_a_half_d_equals_center(resnet18):
    center, _ = convert_to_3d(resnet18, "center")
    thin, _ = convert_to_3d(resnet18, "2.5d")
    assert thin.layer1[0].conv1.kernel_size == (1, 3, 3) and center.layer1[0].conv1.kernel_size == (3, 3, 3)
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(thin.eval()(x), center.eval()(x), rtol=1e-4, atol=1e-4)


def test_acs_resnet18_matches_pypi_acsconv_operator(resnet18):
    operators = pytest.importorskip("acsconv.operators")
    converted, report = convert_to_3d(resnet18, "acs")
    assert report.replaced["conv1"] == "Conv2d -> ACSConv (split (22, 21, 21))"
    reference, _ = convert_to_3d(resnet18, "acs")
    for name, m in list(reference.named_modules()):
        if isinstance(m, ACSConv):
            ref = operators.ACSConv(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
            ref.load_state_dict(m.state_dict())
            parent, _, child = name.rpartition(".")
            setattr(reference.get_submodule(parent) if parent else reference, child, ref)
    x = torch.randn(1, 3, 8, 32, 32)
    torch.testing.assert_close(converted.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_monai_unet_every_method(method):
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    converted, report = convert_to_3d(net, method)
    assert converted(torch.randn(1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)
    two_d = [n for n, m in net.named_modules() if type(m) in (nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d)]
    assert sorted(report.replaced) == sorted(two_d)
    assert not any("2d" in type(m).__name__ for n, m in converted.named_modules() if "rotation_net" not in n)


def test_layer_table_copies_parameters_and_preserves_depth_constant_inputs():
    model = nn.Sequential(
        nn.BatchNorm2d(3),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.ReplicationPad2d(1),
        nn.MaxPool2d(2),
        nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.InstanceNorm2d(3, affine=True),
        nn.Dropout2d(0.3),
        nn.GroupNorm(1, 3),
        nn.UpsamplingNearest2d(scale_factor=2),
        nn.AdaptiveMaxPool2d((3, 4)),
    )
    randomise_norms(model).eval()
    converted, report = convert_to_3d(model, "center")
    assert [type(m).__name__ for m in converted] == [
        "BatchNorm3d", "Upsample", "ReplicationPad3d", "MaxPool3d", "AvgPool3d", "InstanceNorm3d", "Dropout3d",
        "GroupNorm", "Upsample", "AdaptiveMaxPool3d",
    ]  # fmt: skip
    assert report.replaced["1"] == "Upsample(bilinear) -> Upsample(trilinear)"
    assert converted[1].mode == "trilinear" and converted[8].mode == "nearest"
    assert converted[9].output_size == (3, 3, 4) and converted[2].padding == (1, 1, 1, 1, 1, 1)
    assert converted[4].count_include_pad is False and converted[6].p == 0.3
    assert torch.equal(converted[0].running_var, model[0].running_var) and converted[7] is not model[7]
    assert not converted.training
    x = torch.randn(2, 3, 5, 6)
    out = converted(x.unsqueeze(2).expand(-1, -1, 4, -1, -1))
    for d in range(out.shape[2]):
        torch.testing.assert_close(out[:, :, d], model(x))


def test_conv_transpose():
    up = nn.ConvTranspose2d(3, 2, 2, stride=2)
    layer, report = convert_to_3d(up, "i3d")
    assert report.replaced[""] == "ConvTranspose2d -> ConvTranspose3d (i3d: kernel repeated * stride / K)"
    x = torch.randn(1, 3, 4, 5)
    out = layer(x.unsqueeze(2).expand(-1, -1, 3, -1, -1))
    assert out.shape == (1, 2, 6, 8, 10)
    for d in range(6):
        torch.testing.assert_close(out[:, :, d], up(x))
    up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
    center, _ = convert_to_3d(up, "center")
    thin, _ = convert_to_3d(up, "2.5d")
    assert thin.kernel_size == (1, 3, 3)
    torch.testing.assert_close(center(x.unsqueeze(2))[:, :, 0], up(x))
    v = torch.randn(1, 3, 3, 4, 5)
    torch.testing.assert_close(thin(v), center(v))


def test_existing_crossd_layers_become_3d_with_the_same_state_dict():
    model2d, _ = convert_to_crossd(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)).double())
    model3d, report = convert_to_3d(model2d, "i3d")
    assert report.replaced["0"] == "CrossDConv(spatial_dims=2) -> CrossDConv(spatial_dims=3), same state_dict"
    assert model3d[0].spatial_dims == 3 and model3d[0].padding == (1, 1, 1)
    sd2, sd3 = model2d.state_dict(), model3d.state_dict()
    assert sd2.keys() == sd3.keys() and all(torch.equal(sd2[k], sd3[k]) for k in sd2)
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(model3d.eval()(x.unsqueeze(2))[:, :, 0], model2d.eval()(x), rtol=1e-10, atol=1e-10)


def test_crossd_kwargs_and_acs_split_are_passed():
    conv = nn.Conv2d(2, 6, 3, padding=1)
    layer, _ = convert_to_3d(conv, "crossd", depth_init="replicate", kernel_3d="raw")
    assert isinstance(layer, CrossDConv) and layer.kernel_3d == "raw"
    layer, _ = convert_to_3d(conv, "acs", split=(6, 0, 0))
    assert layer.split == (6, 0, 0)


class Spatial(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(2, 2, 3, 3))

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.kernel)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"`method` should be one of \('crossd', 'acs', 'i3d', 'center', '2.5d'\), got 'acs3'. Did you mean 'acs'\?"):
        convert_to_3d(nn.Conv2d(1, 1, 3), "acs3")
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sequential(nn.ReLU(), Spatial()))
    with pytest.raises(ValueError, match=r"cannot convert `1.1` \(Spatial\) to 3D: it holds a spatial tensor 'kernel' of shape \(2, 2, 3, 3\)"):
        convert_to_3d(model, "i3d")
    with pytest.raises(ValueError, match=r"cannot convert `0` \(PixelShuffle\) to 3D: a 2D-specific layer type"):
        convert_to_3d(nn.Sequential(nn.PixelShuffle(2)), "center")
    with pytest.raises(ValueError, match=r"cannot convert `0` \(Softmax2d\)"):
        convert_to_3d(nn.Sequential(nn.Softmax2d()), "center")

    class MyBN(nn.BatchNorm2d):
        pass

    with pytest.raises(ValueError, match=r"cannot convert `<model>` \(MyBN\) to 3D: a subclass of nn.BatchNorm2d"):
        convert_to_3d(MyBN(3), "center")
    with pytest.raises(ValueError, match=r"cannot convert `up` \(Upsample\) to 3D: interpolation mode 'bicubic' has no 3D counterpart"):
        convert_to_3d(nn.ModuleDict({"up": nn.Upsample(scale_factor=2, mode="bicubic")}), "center")
    with pytest.raises(ValueError, match=r"cannot convert `<model>` \(Conv2d\) to 3D: method 'acs' needs a square kernel, got kernel_size=\(1, 3\)"):
        convert_to_3d(nn.Conv2d(3, 3, (1, 3)), "acs")
    with pytest.raises(ValueError, match=r"`conv_kwargs` \['depth_init'\] are not used by method 'i3d'"):
        convert_to_3d(nn.Conv2d(3, 3, 3), "i3d", depth_init="zeros")
    with pytest.raises(TypeError, match=r"`model` should be an nn.Module, got str"):
        convert_to_3d("resnet", "i3d")


def test_custom_converters_take_precedence():
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.PixelShuffle(2))
    converted, report = convert_to_3d(model, "i3d", custom={nn.PixelShuffle: lambda m: nn.Identity()})
    assert isinstance(converted[1], nn.Identity) and report.replaced["1"] == "PixelShuffle -> Identity (custom)"


def test_table_is_explicit():
    assert {nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.MaxPool2d, nn.AvgPool2d} <= set(LAYERS_3D)
    assert {nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout2d, nn.Upsample} <= set(LAYERS_3D)


@pytest.mark.parametrize("method", METHODS)
def test_float64_models_convert_without_rounding(method):
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), randomise_norms(nn.BatchNorm2d(6)), nn.ConvTranspose2d(6, 3, 3, padding=1))
    model = model.double().eval()
    converted, _ = convert_to_3d(model, method)
    assert all(p.dtype == torch.float64 for p in converted.parameters())
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    if method == "acs":
        assert torch.equal(converted[0].weight, model[0].weight)
        return
    depth, middle = (5, 2) if method == "i3d" else (1, 0)  # i3d: a depth-constant volume, away from its borders
    out = converted.eval()(x.unsqueeze(2).expand(-1, -1, depth, -1, -1))[:, :, middle]
    torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)


def test_crossd_conv_transpose_and_2d_crossd_layers_keep_every_argument():
    from monai_crossd.networks import CrossDConv, CrossDConvTranspose

    up = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1).double()
    layer, report = convert_to_3d(up, "crossd")
    assert isinstance(layer, CrossDConvTranspose) and layer.spatial_dims == 3 and layer.output_padding == (1, 1, 1)
    assert report.replaced[""] == "ConvTranspose2d -> CrossDConvTranspose (spatial_dims=3, kernel 3)"
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    out = layer(x.unsqueeze(2))  # depth 1 -> 2; the middle (2D) plane of the kernel lands on slice 0
    torch.testing.assert_close(out[:, :, 0], up(x))
    torch.testing.assert_close(out[:, :, 1], up.bias.view(1, -1, 1, 1).expand(1, -1, 8, 10))  # zero planes: bias only
    model = nn.Sequential(
        CrossDConv(2, 3, 4, 3, stride=(2, 1), padding=1, rotation_init="identity"),
        CrossDConvTranspose(2, 4, 2, 3, stride=2, padding=1, output_padding=1, rotation_init="identity"),
    )
    converted, report = convert_to_3d(model, "crossd")
    assert report.replaced["1"] == "CrossDConvTranspose(spatial_dims=2) -> CrossDConvTranspose(spatial_dims=3), same state_dict"
    assert [m.rotation_init for m in converted] == ["identity", "identity"]
    assert converted[0].stride == (2, 2, 1) and converted[1].output_padding == (1, 1, 1)
    assert converted(torch.randn(2, 3, 4, 8, 6)).shape == (2, 2, 4, 8, 12)
    assert model[0].spatial_dims == 2 and model[1].stride == (2, 2)  # the input is untouched
