"""What bounds the Cross-D ResNet18 on this device: the irreducible work of each Cross-D conv, measured.

A Cross-D conv convolves sample ``b`` with its own kernel ``W_b = M_b U`` (``M_b``: the ``K^2 x K^3``
shift matrix, ``U``: the ``K^3`` knowledge base). Without a fused custom kernel there are two ways:

- **tap mixing** (``mixed_unfold``): mix the input taps with ``M_b`` and multiply with the shared ``U``.
  Whatever else it does, it runs one GEMM ``(B * L, C * K^3) @ (C * K^3, O)``: ``K`` (3) times the
  multiply-adds of the plain convolution, at the GEMM rate of this device's BLAS (forward; forward+
  backward adds the two gradient GEMMs of the same size);
- **per-sample kernels** (``materialize``): one convolution with ``B`` different kernels (a grouped
  convolution, ``groups = B``), the plain multiply-adds but ``B`` times the weight traffic; building
  the kernels comes on top and is left out here.

For every Cross-D conv of the ResNet18 (batch 8, 64x64 on CPU) this script times, in one run, the plain
convolution with a shared kernel, that GEMM alone and that grouped convolution alone, plus the rotation
network (part of the method). The **bound** of a layer is ``rotation network + min(GEMM, grouped conv)``;
the network bound replaces each plain conv time in a measured plain ResNet18 step by it:

    bound ratio = (plain step - sum(plain convs) + sum(layer bounds) [+ extra optimizer time]) / plain step

Everything else a real layer does (unfolding, mixing, building kernels, copies) is counted as free, so
the real ratio can only be higher. Where the bound is above an issue's target, no amount of tuning of
these formulations reaches it; only a fused per-sample kernel (one that never writes ``B`` kernels and
keeps the plain multiply-adds) could.

Usage (from the repository root)::

    python benchmarks/bound.py --device cpu [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from _common import RESULTS, env_markdown, environment, measure, setup, write_results  # noqa: I001
from networks import make_optimizer

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.nets import crossd_resnet18


def _layer_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[CrossDConv, torch.Tensor]]:
    """Every Cross-D conv of ``model`` with the input it gets in one forward of ``x``."""
    seen: list = []
    handles = [m.register_forward_pre_hook(lambda m, a: seen.append((m, a[0]))) for m in model.modules() if isinstance(m, CrossDConv)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _fwd_bwd(fn, *tensors):
    def run():
        out = fn()
        grads = torch.autograd.grad(out, tensors, torch.ones_like(out))
        return grads

    return run


def bound_layer(layer: CrossDConv, x: torch.Tensor, device, repeats: int) -> dict:
    """Times of the plain conv, the tap-mixing GEMM and the grouped conv for one layer and input."""
    b, c = x.shape[:2]
    o, k = layer.out_channels, layer.kernel_size
    w2 = layer.weight[:, :, k // 2].detach().contiguous().requires_grad_()
    xg = x.detach().clone().requires_grad_()
    args = (None, layer.stride, layer.padding, layer.dilation, layer.groups)
    out_plain = F.conv2d(x, w2, *args)
    length = out_plain.shape[2] * out_plain.shape[3]
    a = torch.randn(b * length, c * k**3, device=device, requires_grad=True)  # the mixed taps (groups=1)
    u = layer.weight.detach().reshape(o, -1).clone().requires_grad_()
    kernels = torch.randn(b * o, c // layer.groups, k, k, device=device, requires_grad=True)
    xb = xg.reshape(1, b * c, *x.shape[2:])
    grouped_args = (None, layer.stride, layer.padding, layer.dilation, b * layer.groups)
    calls = {
        "plain_fwd": lambda: F.conv2d(x, w2, *args),
        "plain_fwd_bwd": _fwd_bwd(lambda: F.conv2d(xg, w2, *args), xg, w2),
        "gemm_fwd": lambda: a @ u.t(),
        "gemm_fwd_bwd": _fwd_bwd(lambda: a @ u.t(), a, u),
        "grouped_fwd": lambda: F.conv2d(xb, kernels, *grouped_args),
        "grouped_fwd_bwd": _fwd_bwd(lambda: F.conv2d(xb, kernels, *grouped_args), xb, kernels),
        "rotation_fwd": lambda: layer.predict_shift(x),
        "rotation_fwd_bwd": _fwd_bwd(lambda: layer.predict_shift(xg), xg, *layer.rotation_net.parameters()),
    }
    row = {"input": list(x.shape), "out_channels": o, "kernel_size": k, "stride": list(layer.stride), "positions": length}
    with torch.no_grad():
        for name in ("plain_fwd", "gemm_fwd", "grouped_fwd", "rotation_fwd"):
            row[name] = measure(calls[name], device, repeats)["median_ms"]
    layer.train()
    for name in ("plain_fwd_bwd", "gemm_fwd_bwd", "grouped_fwd_bwd", "rotation_fwd_bwd"):
        row[name] = measure(calls[name], device, repeats)["median_ms"]
    layer.eval()
    for kind in ("fwd", "fwd_bwd"):
        row[f"bound_{kind}"] = row[f"rotation_{kind}"] + min(row[f"gemm_{kind}"], row[f"grouped_{kind}"])
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--out", default=None, help=f"output folder (default {RESULTS})")
    args = parser.parse_args(argv)
    device = setup(args.device, args.threads, tf32=True)
    gpu = device.type == "cuda"
    batch, size = args.batch or (64 if gpu else 8), args.size or (224 if gpu else 64)
    num_classes = 1000 if gpu else 10
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    crossd = crossd_resnet18(2, 3, num_classes).to(device).eval()
    plain = torchvision.models.resnet18(num_classes=num_classes).to(device)

    steps = {}
    for name, model in (("plain", plain), ("crossd", crossd)):
        opt = make_optimizer(model, device)

        def train_step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        def infer(model=model):
            with torch.no_grad():
                model(x)

        model.train()
        steps[f"{name}_train_ms"] = measure(train_step, device, args.repeats)["median_ms"]
        steps[f"{name}_optimizer_ms"] = measure(opt.step, device, args.repeats)["median_ms"]
        model.eval()
        steps[f"{name}_inference_ms"] = measure(infer, device, args.repeats)["median_ms"]
        print(f"[bound] {name}: train {steps[f'{name}_train_ms']:.1f} ms, inference {steps[f'{name}_inference_ms']:.1f} ms", flush=True)

    layers = []
    for layer, xi in _layer_inputs(crossd, x):
        layers.append(bound_layer(layer, xi, device, args.repeats))
        r = layers[-1]
        print(f"[bound] {tuple(r['input'])} -> {r['out_channels']} k{r['kernel_size']}: plain {r['plain_fwd']:.2f}, "
              f"gemm {r['gemm_fwd']:.2f}, grouped {r['grouped_fwd']:.2f} ms", flush=True)
    total = {k: sum(r[k] for r in layers) for k in ("plain_fwd", "plain_fwd_bwd", "bound_fwd", "bound_fwd_bwd")}
    extra_opt = steps["crossd_optimizer_ms"] - steps["plain_optimizer_ms"]
    inference_bound = steps["plain_inference_ms"] - total["plain_fwd"] + total["bound_fwd"]
    train_bound = steps["plain_train_ms"] - total["plain_fwd_bwd"] + total["bound_fwd_bwd"] + extra_opt
    payload = {
        "benchmark": "bound",
        "environment": environment(device),
        "config": {"batch": batch, "size": size, "num_classes": num_classes, "repeats": args.repeats},
        "steps": steps,
        "layers": layers,
        "totals_ms": total,
        "inference_bound_ms": inference_bound,
        "inference_bound_ratio": inference_bound / steps["plain_inference_ms"],
        "inference_measured_ratio": steps["crossd_inference_ms"] / steps["plain_inference_ms"],
        "train_bound_ms": train_bound,
        "train_bound_ratio": train_bound / steps["plain_train_ms"],
        "train_measured_ratio": steps["crossd_train_ms"] / steps["plain_train_ms"],
    }
    paths = write_results(f"bound_{device.type}", payload, markdown, args.out)
    print(f"[bound] inference: bound {payload['inference_bound_ratio']:.2f}x, measured {payload['inference_measured_ratio']:.2f}x; "
          f"train: bound {payload['train_bound_ratio']:.2f}x, measured {payload['train_measured_ratio']:.2f}x")
    print("wrote", *paths)
    return payload


def markdown(p: dict) -> str:
    s, t = p["steps"], p["totals_ms"]
    lines = [
        "# What bounds the Cross-D ResNet18",
        "",
        env_markdown(p["environment"]),
        f"ResNet18, batch {p['config']['batch']}, {p['config']['size']}x{p['config']['size']}; median ms of "
        f"{p['config']['repeats']} calls. See `benchmarks/bound.py` for what each column is.",
        "",
        "| | plain | Cross-D measured | Cross-D bound | measured x plain | bound x plain |",
        "|---|---|---|---|---|---|",
        f"| inference | {s['plain_inference_ms']:.1f} | {s['crossd_inference_ms']:.1f} | {p['inference_bound_ms']:.1f} | "
        f"{p['inference_measured_ratio']:.2f} | {p['inference_bound_ratio']:.2f} |",
        f"| train step | {s['plain_train_ms']:.1f} | {s['crossd_train_ms']:.1f} | {p['train_bound_ms']:.1f} | "
        f"{p['train_measured_ratio']:.2f} | {p['train_bound_ratio']:.2f} |",
        "",
        f"Optimizer step alone (fused AdamW): plain {s['plain_optimizer_ms']:.1f} ms, Cross-D {s['crossd_optimizer_ms']:.1f} ms "
        "(3x the parameters: a `K^3` knowledge base per conv); the difference is in the train bound.",
        "",
        "Per Cross-D conv (ms; `gemm`: the tap-mixing GEMM alone, 3x the plain multiply-adds; `grouped`: one grouped "
        "conv with B per-sample kernels, building them not counted; `bound` = rotation + min(gemm, grouped)):",
        "",
        "| input | O | k | plain fwd | gemm fwd | grouped fwd | rotation fwd | bound fwd | plain fwd+bwd | gemm fwd+bwd | grouped fwd+bwd | bound fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["layers"]:
        lines.append(
            f"| {'x'.join(map(str, r['input']))} | {r['out_channels']} | {r['kernel_size']} | {r['plain_fwd']:.2f} | "
            f"{r['gemm_fwd']:.2f} | {r['grouped_fwd']:.2f} | {r['rotation_fwd']:.2f} | {r['bound_fwd']:.2f} | "
            f"{r['plain_fwd_bwd']:.2f} | {r['gemm_fwd_bwd']:.2f} | {r['grouped_fwd_bwd']:.2f} | {r['bound_fwd_bwd']:.2f} |"
        )
    lines.append(
        f"| **sum** | | | {t['plain_fwd']:.1f} | | | | {t['bound_fwd']:.1f} | {t['plain_fwd_bwd']:.1f} | | | {t['bound_fwd_bwd']:.1f} |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
