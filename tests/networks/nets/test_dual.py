from __future__ import annotations

import copy
import functools
import io

import pytest
import torch
import torch.nn as nn

from monai_crossd.networks.blocks import CrossDConv
from monai_crossd.networks.nets import CrossDUNet, DualDimNet, crossd_resnet18, dual_crossd_resnet18, dual_crossd_unet

RESNET = functools.partial(crossd_resnet18, in_channels=1, num_classes=3, block_inplanes=(4, 8, 8, 8))
UNET = functools.partial(CrossDUNet, in_channels=1, out_channels=2, channels=(4, 8, 8), strides=(2, 2),
                         num_res_units=1, norm="batch")  # fmt: skip
BUILDS = {"resnet18": RESNET, "unet": UNET}
SHAPES = {2: (2, 1, 16, 16), 3: (2, 1, 8, 16, 16)}


def batch_norms(net: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {n: m for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def randomise_stats(net: nn.Module) -> None:
    """Running statistics far from (0, 1), so that eval-mode outputs depend on them."""
    with torch.no_grad():
        for bn in batch_norms(net).values():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)


def make(name: str) -> tuple[DualDimNet, nn.Module, nn.Module]:
    """A dual network and today's 2D and 3D networks loaded with its state_dict."""
    dual = DualDimNet(BUILDS[name])
    randomise_stats(dual)
    ref2d, ref3d = BUILDS[name](2), BUILDS[name](3)
    for ref in (ref2d, ref3d):
        assert str(ref.load_state_dict(dual.state_dict(), strict=True)) == "<All keys matched successfully>"
    return dual, ref2d, ref3d


def crossd_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.weight": m.weight for n, m in net.named_modules() if isinstance(m, CrossDConv)}


# ---------------------------------------------------------------- the tree is the 3D network's


@pytest.mark.parametrize("name", ["resnet18", "unet"])
def test_state_dict_is_the_3d_networks(name):
    dual = DualDimNet(BUILDS[name])
    state, ref = dual.state_dict(), BUILDS[name](3).state_dict()
    assert list(state) == list(ref) and all(state[k].shape == ref[k].shape for k in ref)
    assert all(v.device.type == "cpu" for v in state.values())  # the meta 2D twin is not in it
    assert [id(p) for p in dual.parameters()] == [id(p) for p in dual.net3d.parameters()]
    assert sum(p.numel() for p in dual.parameters()) == sum(p.numel() for p in BUILDS[name](3).parameters())
    other = DualDimNet(BUILDS[name])
    assert str(other.load_state_dict(state, strict=True)) == "<All keys matched successfully>"
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(v, other.net3d.state_dict()[k]) for k, v in state.items())  # loaded into the 3D net


# ---------------------------------------------------------------- (a), (b), (e): today's networks' outputs


@pytest.mark.parametrize("name", ["resnet18", "unet"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_equal_todays_networks(name, mode):
    dual, ref2d, ref3d = make(name)
    for net in (dual, ref2d, ref3d):
        net.train(mode == "train")
    x2, x3 = torch.randn(SHAPES[2]), torch.randn(SHAPES[3])
    with torch.no_grad():
        torch.testing.assert_close(dual(x3), ref3d(x3), atol=1e-6, rtol=0)
        torch.testing.assert_close(dual(x2), ref2d(x2), atol=1e-5, rtol=1e-5)
    if mode == "eval":  # running statistics, not the batch's: a sample's output does not depend on the others
        with torch.no_grad():
            torch.testing.assert_close(dual(x2[:1]), dual(x2)[:1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(dual(x3[:1]), dual(x3)[:1], atol=1e-5, rtol=1e-5)
        assert not any(m.training for m in dual.template2d.modules())


# ---------------------------------------------------------------- (c) gradients and an optimiser step


@pytest.mark.parametrize("name", ["resnet18", "unet"])
def test_gradients_reach_every_knowledge_base(name):
    dual, ref2d, ref3d = make(name)
    for dims, ref in ((2, ref2d), (3, ref3d)):
        dual.zero_grad()
        x = torch.randn(SHAPES[dims])
        dual(x).square().sum().backward()
        ref(x).square().sum().backward()
        weights, expected = crossd_weights(dual), crossd_weights(ref)
        assert len(weights) == len(expected) >= 9
        for key, w in weights.items():
            assert w.grad is not None and w.grad.abs().sum() > 0, (dims, key)
            torch.testing.assert_close(w.grad, expected[key].grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "unet"])
def test_a_2d_step_moves_the_3d_network(name):
    dual = DualDimNet(BUILDS[name]).eval()
    x3 = torch.randn(SHAPES[3])
    with torch.no_grad():
        before3d = dual(x3)
    before = {k: v.clone() for k, v in dual.state_dict().items()}
    optimiser = torch.optim.SGD(dual.parameters(), lr=0.1)
    dual.train()
    optimiser.zero_grad()
    dual(torch.randn(SHAPES[2])).square().mean().backward()
    optimiser.step()
    after = dual.net3d.state_dict()
    for key in crossd_weights(dual):
        assert not torch.equal(after[key], before[key]), key
    with torch.no_grad():
        assert (dual.eval()(x3) - before3d).abs().max() > 1e-4


# ---------------------------------------------------------------- (d) BatchNorm statistics are the 3D buffers


@pytest.mark.parametrize("name", ["resnet18", "unet"])
def test_2d_forward_updates_the_3d_running_stats(name):
    dual, ref2d, _ = make(name)
    dual.train(), ref2d.train()
    bns = batch_norms(dual.net3d)
    assert len(bns) >= 5 and bns.keys() == batch_norms(dual).keys()
    before = {n: (bn.running_mean.clone(), int(bn.num_batches_tracked)) for n, bn in bns.items()}
    ptrs = {n: bn.running_mean.data_ptr() for n, bn in bns.items()}
    x = torch.randn(SHAPES[2])
    with torch.no_grad():
        dual(x), ref2d(x)
    expected = batch_norms(ref2d)
    for n, bn in bns.items():
        assert bn.running_mean.data_ptr() == ptrs[n] and bn.running_mean.device.type == "cpu", n
        assert not torch.equal(bn.running_mean, before[n][0]), n
        assert int(bn.num_batches_tracked) == before[n][1] + 1, n
        torch.testing.assert_close(bn.running_mean, expected[n].running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(bn.running_var, expected[n].running_var, atol=1e-6, rtol=1e-5)
    assert all(b.device.type == "meta" for b in dual.template2d.buffers())  # the twin holds nothing


def test_twin_follows_per_module_modes():
    dual = DualDimNet(RESNET).train()
    dual.bn1.eval()  # a frozen norm layer: its statistics do not move in 2D either
    mean, tracked = dual.bn1.running_mean.clone(), int(dual.bn1.num_batches_tracked)
    with torch.no_grad():
        dual(torch.randn(SHAPES[2]))
    assert torch.equal(dual.bn1.running_mean, mean) and int(dual.bn1.num_batches_tracked) == tracked
    assert dual.layer1[0].bn1.num_batches_tracked == 1


# ---------------------------------------------------------------- device/dtype, copies, pickling


def test_to_dtype_moves_the_shared_tensors():
    dual = dual_crossd_resnet18(1, 3, block_inplanes=(4, 8, 8, 8)).double().eval()
    assert all(p.dtype == torch.float64 for p in dual.net3d.parameters())
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for t in dual.template2d.parameters())
    with torch.no_grad():
        assert dual(torch.randn(SHAPES[2], dtype=torch.float64)).dtype == torch.float64
        assert dual(torch.randn(SHAPES[3], dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_are_independent_and_equal(how):
    dual = dual_crossd_unet(1, 2, channels=(4, 8), strides=(2,), norm="batch").eval()
    if how == "deepcopy":
        twin = copy.deepcopy(dual)
    else:
        buffer = io.BytesIO()
        torch.save(dual, buffer)
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    assert twin.net3d._modules is twin._modules and twin.template2d is not dual.template2d
    assert not twin.training and not any(m.training for m in twin.template2d.modules())
    x2, x3 = torch.randn(SHAPES[2]), torch.randn(SHAPES[3])
    with torch.no_grad():
        torch.testing.assert_close(twin(x2), dual(x2), atol=0, rtol=0)
        torch.testing.assert_close(twin(x3), dual(x3), atol=0, rtol=0)
        next(twin.parameters()).add_(1.0)
    assert {id(p) for p in twin.parameters()}.isdisjoint(id(p) for p in dual.parameters())
    assert not torch.equal(next(twin.parameters()), next(dual.parameters()))


# ---------------------------------------------------------------- (f) bad inputs and builds


@pytest.mark.parametrize("shape", [(2, 1, 16), (1, 2, 1, 8, 8, 8)])
def test_bad_input_rank(shape):
    dual = DualDimNet(RESNET)
    with pytest.raises(ValueError, match=r"`x` should be 4D \(B, C, H, W\) or 5D \(B, C, D, H, W\), got shape"):
        dual(torch.randn(shape))
    with pytest.raises(TypeError, match="`x` should be a torch.Tensor, got list"):
        dual([1.0])


def test_mismatched_builds():
    with pytest.raises(ValueError, match=r"tensors of equal sizes.*fc\.weight: 2D \(4, 8\) vs 3D \(3, 8\)"):
        DualDimNet(lambda d: RESNET(d, num_classes=3 if d == 3 else 4))
    with pytest.raises(ValueError, match=r"same parameters and buffers; only in 2D: \['fc.bias', 'fc.weight'\]"):
        DualDimNet(lambda d: RESNET(d, feed_forward=d == 2))
    with pytest.raises(TypeError, match=r"`build\(2\)` should return an nn.Module, got str"):
        DualDimNet(lambda d: RESNET(d) if d == 3 else "net")
    with pytest.raises(TypeError, match="`build` should be a callable"):
        DualDimNet(RESNET(3))  # a network, not a factory
