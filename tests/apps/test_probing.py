from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.bundle import ConfigParser

import monai_crossd.apps.probing
from monai_crossd.apps.probing import find_classifier, full_finetuning, linear_probing, weak_probing
from monai_crossd.networks.nets import CrossDResNet, CrossDUNet

NORM_SUFFIXES = (".bn1", ".bn2", ".bn3", ".downsample.1")


def resnet(dim: int = 2, block: str = "bottleneck", **kwargs) -> CrossDResNet:
    return CrossDResNet(dim, 1, 3, block, (1, 1, 1, 1), block_inplanes=(4, 4, 8, 8), **kwargs)


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def is_net_norm(name: str) -> bool:
    module = name.rsplit(".", 1)[0]
    return module == "bn1" or module.endswith(NORM_SUFFIXES)


@pytest.mark.parametrize("dim, block", [(2, "basic"), (3, "bottleneck")])
def test_weak_probing(dim, block):
    net = resnet(dim, block)
    params = weak_probing(net)
    expected = {n for n, _ in net.named_parameters() if is_net_norm(n) or n.startswith("fc.")}
    assert trainable(net) == expected
    assert {"fc.weight", "fc.bias", "bn1.weight", "layer1.0.bn1.bias", "layer2.0.downsample.1.weight"} <= expected
    assert not any(".rotation_net." in n for n in expected)  # the Cross-D layers stay frozen, as in the paper
    assert [id(p) for p in params] == [id(p) for p in net.parameters() if p.requires_grad]


def test_weak_probing_with_rotation_norm():
    net = resnet()
    weak_probing(net, include_rotation_norm=True)
    rotation_bn = {n for n, _ in net.named_parameters() if ".rotation_net.1." in n}
    assert rotation_bn and rotation_bn <= trainable(net)
    assert not any(
        ".rotation_net.0." in n or ".rotation_net.3." in n or n.endswith("conv1.weight") for n in trainable(net)
    )


@pytest.mark.parametrize("norm", [("group", {"num_groups": 2}), ("instance", {"affine": True})])
def test_weak_probing_other_norms(norm):
    net = resnet(norm=norm, act="prelu")
    weak_probing(net)
    expected = {n for n, _ in net.named_parameters() if is_net_norm(n) or n.startswith("fc.")}
    assert trainable(net) == expected and len(expected) > 2
    assert not any(n.endswith("act1.weight") for n in expected)  # PReLU is not a normalisation layer


def test_linear_probing_and_full_finetuning():
    net = resnet()
    params = linear_probing(net)
    assert trainable(net) == {"fc.weight", "fc.bias"} and params == [net.fc.weight, net.fc.bias]
    params = full_finetuning(net)
    assert trainable(net) == {n for n, _ in net.named_parameters()} and len(params) == len(list(net.parameters()))
    weak_probing(net)
    linear_probing(net)  # protocols can be switched: each sets every parameter
    assert trainable(net) == {"fc.weight", "fc.bias"}


def test_only_trainable_parameters_change():
    net = resnet().train()
    optimizer = torch.optim.SGD(weak_probing(net), lr=0.1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    loss = nn.functional.cross_entropy(net(torch.randn(2, 1, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    optimizer.step()
    for name, p in net.named_parameters():
        assert p.requires_grad == (p.grad is not None), name
        if not p.requires_grad:
            assert torch.equal(p, before[name]), name
    assert not torch.equal(net.fc.weight, before["fc.weight"])


def test_find_classifier():
    net = resnet()
    name, head = find_classifier(net)
    assert name == "fc" and head is net.fc
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert find_classifier(seq)[0] == "2"
    assert find_classifier(seq, classifier="0")[0] == "0"

    class Timm(nn.Module):  # timm's convention: get_classifier() names the head
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)
            self.proj = nn.Linear(4, 4)

        def get_classifier(self):
            return self.head

    assert find_classifier(Timm())[0] == "head"
    unet = CrossDUNet(2, 1, 2, (4, 8), (2,))
    linear_probing(unet, classifier="model.2.conv")
    assert trainable(unet) == {n for n, _ in unet.named_parameters() if n.startswith("model.2.conv.")}


def test_errors():
    unet = CrossDUNet(2, 1, 2, (4, 8), (2,))
    for protocol in (weak_probing, linear_probing):
        with pytest.raises(ValueError, match="CrossDUNet has no final linear layer"):
            protocol(unet)
    with pytest.raises(ValueError, match="`classifier` 'head' is not a submodule of CrossDResNet"):
        linear_probing(resnet(), classifier="head")
    with pytest.raises(ValueError, match="`classifier` 'relu' of CrossDResNet has no parameters"):
        linear_probing(resnet(), classifier="relu")
    for protocol in (weak_probing, linear_probing, full_finetuning):
        with pytest.raises(TypeError, match="`model` should be a torch.nn.Module, got dict"):
            protocol({})


def test_bundle_config():
    config = {
        "imports": ["$import monai_crossd", "$import monai_crossd.apps.probing"],
        "network_def": {
            "_target_": "monai_crossd.networks.nets.crossd_resnet18",
            "spatial_dims": 3, "in_channels": 1, "num_classes": 2, "block_inplanes": [4, 4, 8, 8],
        },
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$monai_crossd.apps.probing.weak_probing(@network_def)",
                      "lr": 1e-3},
    }  # fmt: skip
    parser = ConfigParser(config)
    optimizer = parser.get_parsed_content("optimizer")
    net = parser.get_parsed_content("network_def")
    assert monai_crossd.apps.probing.weak_probing is weak_probing
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in net.parameters() if p.requires_grad]
    assert trainable(net) == {n for n, _ in net.named_parameters() if is_net_norm(n) or n.startswith("fc.")}
