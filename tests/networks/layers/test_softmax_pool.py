"""The rotation network as GEMMs (training) and chunked with streaming softmax (inference) against the
paper's literal form: 1x1 ``Conv2d``, ``BatchNorm2d``, ReLU, 1x1 ``Conv2d``, softmax-weighted sum (Eq. 1)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from monai_crossd.networks.blocks import RotationNetwork
from monai_crossd.networks.layers.softmax_pool import bn_mlp_softmax_pool, mlp_softmax_pool, softmax_pool


def literal(net: RotationNetwork, x: torch.Tensor) -> torch.Tensor:
    """The modules called one after the other on a 4D view, as the authors' layer does."""
    maps = nn.Sequential.forward(net, x.flatten(3) if x.ndim == 5 else x).flatten(2)
    return (maps * torch.softmax(maps, dim=-1)).sum(-1)


def trained_net(channels: int) -> RotationNetwork:
    torch.manual_seed(0)
    net = RotationNetwork(channels).double()
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)
        net[1].bias.normal_()
        net[3].weight.mul_(5)
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(torch.randn(2, channels, 5, 7, dtype=torch.float64) * 3 + 1)
    return net


@pytest.mark.parametrize("shape", [(3, 5, 9, 11), (2, 5, 4, 6, 7), (1, 1, 3, 4, 5)])
def test_inference_form_equals_the_literal_layers(shape):
    net = trained_net(shape[1]).eval()
    x = torch.randn(*shape, dtype=torch.float64) * 2
    with torch.no_grad():
        assert net._form(x) == "inference"
        torch.testing.assert_close(net(x), literal(net, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunks_and_streaming_softmax_are_exact(chunk):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 150, dtype=torch.float64) * 4  # maxima that grow across chunks
    w1, b1, w2, b2 = (torch.randn(*s, dtype=torch.float64) for s in ((16, 4), (16,), (4, 16), (4,)))
    expected = softmax_pool(torch.matmul(w2, (torch.matmul(w1, x) + b1[:, None]).relu()) + b2[:, None])
    torch.testing.assert_close(mlp_softmax_pool(x, w1, b1, w2, b2, chunk=chunk), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(3, 5, 9, 11), (2, 5, 4, 6, 7)])
def test_training_form_equals_the_literal_layers_with_gradients_and_running_stats(shape):
    net = trained_net(shape[1])
    ref = copy.deepcopy(net)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    out, expected = net(x), literal(ref, xr)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-12, rtol=0)
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=0, msg=name)
    for (name, b), c in zip(net.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, atol=1e-12, rtol=0, msg=name)


def test_inference_form_only_without_gradients_on_running_stats():
    net = trained_net(3).eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert net._form(x) == "plain"  # parameters require grad
    with torch.no_grad():
        assert net._form(x) == "inference"
        assert net.train()._form(x) == "training"  # batch statistics
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net.eval()._form(x) == "plain"


def test_inference_form_takes_monai_metatensors():
    from monai.data import MetaTensor

    net = trained_net(2).eval()
    x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(net(MetaTensor(x))), literal(net, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk", [None, 5])
def test_training_form_gradcheck_across_chunks(chunk):
    torch.manual_seed(2)
    args = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 13), (6, 3), (6,), (6,), (6,), (4, 6), (4,))]
    assert torch.autograd.gradcheck(lambda *a: bn_mlp_softmax_pool(*a, 1e-5, chunk)[0], tuple(args))


def test_training_form_statistics_and_cumulative_momentum():
    net, ref = trained_net(3), None
    ref = copy.deepcopy(net)
    net[1].momentum = ref[1].momentum = None  # cumulative moving average
    x = torch.randn(4, 3, 6, 5, dtype=torch.float64) * 2 + 3
    torch.testing.assert_close(net(x), literal(ref, x), atol=1e-12, rtol=0)
    for (name, b), c in zip(net.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, c, atol=1e-12, rtol=0, msg=name)
    _, mean, var = bn_mlp_softmax_pool(x.flatten(2), net[0].weight.flatten(1), net[0].bias, net[1].weight,
                                       net[1].bias, net[3].weight.flatten(1), net[3].bias, 1e-5, chunk=7)  # fmt: skip
    hidden = torch.einsum("hc,bcn->bhn", net[0].weight.flatten(1), x.flatten(2)) + net[0].bias[:, None]
    torch.testing.assert_close(mean, hidden.mean(dim=(0, 2)), atol=1e-12, rtol=0)
    torch.testing.assert_close(var, hidden.var(dim=(0, 2), unbiased=False), atol=1e-12, rtol=0)
