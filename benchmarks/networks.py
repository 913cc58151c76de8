"""Network speed: ResNet18, 3D Cross-D layers against ``nn.Conv3d``, 3D Cross-D networks against MONAI's.

ResNet18 (2D, ``resnet18``), one training step (forward, cross-entropy, backward, fused ``AdamW.step``) and one
inference forward (``eval``, ``no_grad``), median of ``--repeats``; ``plain`` and ``crossd`` are timed in one
loop, one call each per round in rotating order (``measure_interleaved``), ``fft`` on its own:

- ``plain``: ``torchvision.models.resnet18``;
- ``crossd``: ``monai_crossd.networks.nets.crossd_resnet18(2, 3, num_classes)``; the formulation
  ``select_path`` picks for each of its Cross-D convs (per input shape) is recorded in the results;
- ``fft``: torchvision's ResNet18 with every ``Conv2d`` replaced by ``tests.oracle.FFTCrossDConv2d``
  (the literal per-sample FFT layer, same stride/padding/groups, no bias): the authors-style network.

CPU: batch 8, 64x64, 10 classes. CUDA: batch 64, 224x224, 1000 classes, TF32 on for matmul and cuDNN
(recorded in the results), peak memory from ``torch.cuda.max_memory_allocated``. On CPU the literal
``fft`` model takes ~28 s per training step: its peak-memory call doubles as the warm-up and it gets
``--fft-repeats`` (3) timed calls.

3D layers (``layers_3d``): ``CrossDConv(3, C, C, 3, padding=1)`` with ``rotation=True`` (per-sample shifted 3D
kernels) and ``rotation=False`` (static kernel) against ``nn.Conv3d``, forward and forward+backward, at
``(4, 64, 32, 96, 96) -> 64`` on CUDA and ``(2, 32, 8, 32, 32) -> 32`` on CPU.

3D networks (``networks_3d``), our Cross-D networks against MONAI's own, built as a user builds them, same
shapes on CPU and CUDA, median of ``--repeats-3d`` (5 CPU, 10 CUDA) after 2 warm-up rounds; the networks of
one workload are timed in one loop, one call each per round in rotating order (``measure_interleaved``):

- UNet inference (``eval``, ``no_grad``), batch 1, ``1x96^3``: ``CrossDUNet(3, 1, 3, channels=(16, 32, 64,
  128, 256), strides=(2, 2, 2, 2), num_res_units=2)`` against ``monai.networks.nets.UNet`` with the same
  arguments; the Cross-D row is labelled with the ``up_mode`` the network reports (its default), and two
  more rows change one thing: ``up_mode="resize"`` (left out while that is the default) and
  ``conv_kwargs={"rotation": False}`` (static kernels: no rotation networks, no per-sample kernels);
- UNet training step (``zero_grad``, forward, cross-entropy, ``backward``, ``Adam(lr=1e-4).step``), batch 2,
  ``1x64^3``, random labels in ``[0, 3)`` per voxel;
- ResNet18 inference, batch 1, ``4x96^3``: ``crossd_resnet18(3, 4, 2)`` against MONAI's
  ``resnet18(spatial_dims=3, n_input_channels=4, num_classes=2, conv1_t_stride=2)``;
- ResNet18 training step, batch 4, ``1x32^3``, 2 classes, as the UNet's.

Each row records both times, their ratio (Cross-D / MONAI), both peak memories and parameter counts, and
the formulation of each Cross-D conv. ``--suite`` picks sections (``resnet18``, ``layers_3d``,
``networks_3d``, ``rotation_share``; all by default); a subset writes ``networks_<device>_<suites>.*`` so
that it does not replace a full run's files.

Rotation networks (``rotation_share``): in inference, one ``CrossDConv(3, 16, 16, 3)`` at ``1x16x96^3`` against its
rotation network alone, and the time inside the rotation networks of the default ``CrossDUNet`` (forward hooks)
against the whole network and MONAI's ``UNet``: what bounds the UNet ratio.

Usage (from the repository root)::

    python benchmarks/networks.py          # CUDA sizes when a GPU is present, else the CPU sizes
    python benchmarks/networks.py --device cpu --threads 2
    python benchmarks/networks.py --suite networks_3d   # only the 3D networks against MONAI
"""

from __future__ import annotations

import argparse
import gc
import time
import traceback

import monai.networks.nets as monai_nets
import torch
import torch.nn as nn
import torchvision
from _common import (  # noqa: I001
    RESULTS,
    crossd_path,
    env_markdown,
    environment,
    measure,
    measure_interleaved,
    peak_memory,
    setup,
    sync,
    write_results,
)

from monai_crossd.networks.blocks.crossd_conv import CrossDConv, RotationNetwork
from monai_crossd.networks.blocks.crossd_conv_transpose import CrossDConvTranspose
from monai_crossd.networks.nets import CrossDUNet, crossd_resnet18
from tests.oracle import FFTCrossDConv2d

MODELS = ("plain", "crossd", "fft")
SUITES = ("resnet18", "layers_3d", "networks_3d", "rotation_share")  # also the payload's keys
UNET = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
            num_res_units=2)
UNET_SMOKE = dict(UNET, channels=(4, 8, 16), strides=(2, 2))


def fft_resnet18(num_classes: int) -> nn.Module:
    """torchvision's ResNet18 with every ``Conv2d`` replaced by the literal FFT layer."""
    model = torchvision.models.resnet18(num_classes=num_classes)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(
                    module,
                    name,
                    FFTCrossDConv2d(
                        child.in_channels, child.out_channels, child.kernel_size[0],
                        stride=child.stride, padding=child.padding, groups=child.groups,
                    ),
                )
            else:
                swap(child)

    swap(model)
    return model


def build(name: str, num_classes: int) -> nn.Module:
    if name == "plain":
        return torchvision.models.resnet18(num_classes=num_classes)
    if name == "crossd":
        return crossd_resnet18(2, 3, num_classes)
    if name == "fft":
        return fft_resnet18(num_classes)
    raise ValueError(f"unknown model {name!r}")


def make_optimizer(model: nn.Module, device) -> torch.optim.Optimizer:
    """AdamW with the fused kernel (CPU and CUDA, torch >= 2.4) for every model alike.

    The default for-loop AdamW is memory-bound and ~6x slower on CPU; Cross-D models hold ~3x the
    parameters of their 2D originals (a ``K^3`` knowledge base per conv), so the optimizer choice alone
    would move the Cross-D/plain ratio by more than the layers do.
    """
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4)


def crossd_paths(model: nn.Module, x: torch.Tensor) -> dict:
    """``{"<input shape>": {"<path>": count}}``: the formulation of every ``CrossDConv`` call in one forward.

    A ``CrossDConvTranspose`` (a ``CrossDConv`` subclass, which ``crossd_path`` does not model) counts as
    ``"transposed"`` (per-sample kernels built, then a transposed convolution), or ``"static"`` without rotation.
    """
    seen: dict = {}

    def hook(module, args):
        key = "x".join(map(str, args[0].shape))
        if isinstance(module, CrossDConvTranspose):
            path = "transposed" if module.rotation else "static"
        else:
            path = crossd_path(module, args[0])
        seen.setdefault(key, {}).setdefault(path, 0)
        seen[key][path] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, CrossDConv)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def bench_resnet(names: list[str], batch: int, size: int, num_classes: int, device, repeats: int) -> dict:
    """Rows ``{name: row}`` of the 2D ResNet18s ``names``, all timed in one loop (``measure_interleaved``).

    ``main`` passes ``plain`` and ``crossd`` together (one call each per round, rotating order, so their
    ratio compares calls made under the same machine load) and ``fft`` on its own.
    """
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def make_fns(model):
        opt = make_optimizer(model, device)

        def train_step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        def infer():
            with torch.no_grad():
                model(x)
        return train_step, infer

    models, train, infer = {}, {}, {}
    for name in names:
        torch.manual_seed(0)
        models[name] = build(name, num_classes).to(device)
        train[name], infer[name] = make_fns(models[name])
    slow = "fft" in names and device.type == "cpu"  # ~28 s per literal-FFT CPU step: the memory call is the warm-up
    rows = {name: {"parameters": sum(p.numel() for p in model.parameters())} for name, model in models.items()}
    for kind, mode, fns in (("train_step", True, train), ("inference", False, infer)):
        for model in models.values():
            model.train(mode)
        memory = {name: peak_memory(fn, device) for name, fn in fns.items()} if slow else {}
        times = measure_interleaved(fns, device, repeats, warmup=0 if slow else 2)
        for name, fn in fns.items():
            rows[name][kind] = dict(times[name], memory=memory.get(name) or peak_memory(fn, device))
    if "crossd" in rows:
        rows["crossd"]["paths"] = crossd_paths(models["crossd"].train(), x)
    return rows


def bench_3d(method: str, shape, device, repeats: int) -> dict:
    b, c, d, h, w = shape
    torch.manual_seed(0)
    if method == "conv3d":
        layer = nn.Conv3d(c, c, 3, padding=1, bias=False)
    else:
        layer = CrossDConv(3, c, c, 3, padding=1, bias=False, rotation=method == "crossd_rotation")
    layer = layer.to(device).train()
    x = torch.randn(b, c, d, h, w, device=device)
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        grad = torch.randn_like(layer(x))

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        xg.grad = None
        layer(xg).backward(grad)

    row = {"forward": measure(forward, device, repeats), "forward_backward": measure(forward_backward, device, repeats)}
    row["forward"]["memory"] = peak_memory(forward, device)
    row["forward_backward"]["memory"] = peak_memory(forward_backward, device)
    if method != "conv3d":
        row["path"] = crossd_path(layer, x)
    return row


def workloads_3d(smoke: bool) -> list[dict]:
    """The 3D network workloads: Cross-D variants (row name suffix, builder, kwargs) against one MONAI network.

    ``smoke``: tiny shapes and a 3-level UNet, to check the code, not to measure.
    """
    unet = UNET_SMOKE if smoke else UNET
    big, mid, small = (32, 32, 16) if smoke else (96, 64, 32)
    resnet = dict(spatial_dims=3, num_classes=2)
    monai_resnet = dict(spatial_dims=3, num_classes=2, conv1_t_stride=2)
    return [
        dict(name="unet_inference", title="UNet inference", train=False, batch=1, input=(1, big, big, big),
             classes=3, dense=True, monai=(monai_nets.UNet, unet),
             crossd=[("", CrossDUNet, unet), ("_resize", CrossDUNet, dict(unet, up_mode="resize")),
                     ("_static", CrossDUNet, dict(unet, conv_kwargs={"rotation": False}))]),
        dict(name="unet_train_step", title="UNet train step", train=True, batch=2, input=(1, mid, mid, mid),
             classes=3, dense=True, monai=(monai_nets.UNet, unet),
             crossd=[("", CrossDUNet, unet), ("_static", CrossDUNet, dict(unet, conv_kwargs={"rotation": False}))]),
        dict(name="resnet18_inference", title="ResNet18 inference", train=False, batch=1, input=(4, big, big, big),
             classes=2, dense=False, monai=(monai_nets.resnet18, dict(monai_resnet, n_input_channels=4)),
             crossd=[("", crossd_resnet18, dict(resnet, in_channels=4))]),
        dict(name="resnet18_train_step", title="ResNet18 train step", train=True, batch=4,
             input=(1, small, small, small), classes=2, dense=False,
             monai=(monai_nets.resnet18, dict(monai_resnet, n_input_channels=1)),
             crossd=[("", crossd_resnet18, dict(resnet, in_channels=1))]),
    ]


def _describe(fn, kwargs: dict) -> str:
    return f"{fn.__module__}.{fn.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def bench_networks_3d(work: dict, device, repeats: int, warmup: int) -> dict:
    """Rows ``{name + suffix: row}`` of one workload: every Cross-D variant and the MONAI network timed in one loop.

    A Cross-D variant that builds the same network as an earlier one (``up_mode="resize"`` when that is
    the default) is left out. Inference: ``eval``, ``no_grad``; train step: ``zero_grad``, forward,
    cross-entropy, ``backward``, ``Adam(lr=1e-4).step`` (the optimizer as a user builds it).
    """
    x = torch.randn(work["batch"], *work["input"], device=device)
    label_shape = (work["batch"], *work["input"][1:]) if work["dense"] else (work["batch"],)  # per voxel / per image
    y = torch.randint(0, work["classes"], label_shape, device=device)

    def build(fn, kwargs) -> tuple[nn.Module, dict]:
        torch.manual_seed(0)
        model = fn(**kwargs).to(device).train(work["train"])
        return model, {"model": _describe(fn, kwargs), "parameters": sum(p.numel() for p in model.parameters())}

    models, described, seen = {}, {}, set()
    models["monai"], described["monai"] = build(*work["monai"])
    for suffix, fn, kwargs in work["crossd"]:
        model, info = build(fn, kwargs)
        label = "; ".join(([] if kwargs.get("conv_kwargs", {}).get("rotation", True) else ["rotation=False"])
                          + ([f"up_mode={model.up_mode}"] if hasattr(model, "up_mode") else []))  # read, not assumed
        if label in seen:  # the same network as an earlier row (up_mode="resize" when that is the default)
            continue
        seen.add(label)
        key = work["name"] + suffix
        models[key], described[key] = model, dict(info, label=label + (" (default)" if label and not suffix else ""))

    def make_fn(model):
        if not work["train"]:
            def infer():
                with torch.no_grad():
                    model(x)
            return infer
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train_step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return train_step

    fns = {key: make_fn(model) for key, model in models.items()}
    times = measure_interleaved(fns, device, repeats, warmup)
    for key, fn in fns.items():
        described[key].update(times[key], memory=peak_memory(fn, device))
    monai = described.pop("monai")
    rows = {}
    for key, ours in described.items():
        try:  # which formulation each Cross-D conv runs: information, not worth losing the timings for
            ours["paths"] = crossd_paths(models[key], x)
        except Exception as e:  # noqa: BLE001
            ours["paths"] = {"error": f"{type(e).__name__}: {e}"}
        rows[key] = {
            "workload": work["title"], "batch": work["batch"], "input": list(work["input"]), "crossd": ours,
            "monai": monai, "ratio": ours["median_ms"] / monai["median_ms"],
            "ratio_cpu_time": ours["cpu_time_median_ms"] / monai["cpu_time_median_ms"],
        }
    return rows


def rotation_share(device, repeats: int, smoke: bool) -> dict:
    """What the rotation networks cost in inference (``eval``, ``no_grad``), timed in the same loop as the whole.

    - one ``CrossDConv(3, 16, 16, 3, padding=1)`` on ``(1, 16, 96, 96, 96)``: the layer, its rotation network
      alone and an ``nn.Conv3d`` of the same shape;
    - the default ``CrossDUNet`` of the UNet rows on ``1x96^3``: forward-hook time inside its rotation networks,
      per input shape, against the whole forward and MONAI's ``UNet`` (the network without its rotation
      networks is what a faster rotation network could reach).
    """
    size = 32 if smoke else 96
    torch.manual_seed(0)
    layer = CrossDConv(3, 16, 16, 3, padding=1).to(device).eval()
    conv = nn.Conv3d(16, 16, 3, padding=1).to(device).eval()
    x = torch.randn(1, 16, size, size, size, device=device)
    with torch.no_grad():
        t = measure_interleaved(
            {"layer": lambda: layer(x), "rotation_net": lambda: layer.rotation_net(x), "conv3d": lambda: conv(x)},
            device, repeats,
        )
    one = {k: v["median_ms"] for k, v in t.items()}
    one["share"] = one["rotation_net"] / one["layer"]
    unet_kw = UNET_SMOKE if smoke else UNET
    net, monai = CrossDUNet(**unet_kw).to(device).eval(), monai_nets.UNet(**unet_kw).to(device).eval()
    v = torch.randn(1, 1, size, size, size, device=device)
    spent, starts = {}, {}

    def pre(m, args):
        sync(device)
        starts[id(m)] = time.perf_counter()

    def post(m, args, out):
        sync(device)
        key = "x".join(map(str, args[0].shape))
        spent.setdefault(key, []).append((time.perf_counter() - starts[id(m)]) * 1e3)

    hooks = [h for m in net.modules() if isinstance(m, RotationNetwork)
             for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]  # fmt: skip
    try:
        with torch.no_grad():
            t = measure_interleaved({"crossd": lambda: net(v), "monai": lambda: monai(v)}, device, repeats)
    finally:
        for h in hooks:
            h.remove()
    calls = repeats + 2  # warm-up rounds included in the hook sums: per-call means
    per_shape = {k: sum(ts) / calls for k, ts in spent.items()}
    rot = sum(per_shape.values())
    unet = {"crossd_ms": t["crossd"]["median_ms"], "monai_ms": t["monai"]["median_ms"], "rotation_nets_ms": rot,
            "per_input_shape_ms": dict(sorted(per_shape.items(), key=lambda kv: -kv[1]))}
    unet["ratio"] = unet["crossd_ms"] / unet["monai_ms"]
    unet["ratio_without_rotation_nets"] = (unet["crossd_ms"] - rot) / unet["monai_ms"]
    return {"layer_input": list(x.shape), "layer": one, "unet_input": list(v.shape), "unet": unet}


def _fmt_mem(row) -> str:
    mem = row["memory"]["peak_mib"]
    return "-" if mem is None else f"{mem:.0f}"


def _resnet_markdown(payload: dict) -> list[str]:
    cfg = payload["resnet_config"]
    lines = [
        f"## ResNet18: batch {cfg['batch']}, {cfg['size']}x{cfg['size']}, {cfg['num_classes']} classes, {cfg['optimizer']} + cross-entropy",
        "",
        f"Median ms of {payload['repeats']} after 2 warm-up calls (fft: {payload['fft_repeats']}, "
        f"{'after its peak-memory call as the only warm-up' if payload['environment']['device'] == 'cpu' else 'same warm-up'}); ratios to `plain` of the same run."
        f"{' ' + payload['resnet_timing'] if 'resnet_timing' in payload else ''} "  # absent from older files
        f"Peak memory: {payload['memory_measured']}. CPU-time ratios use process CPU time (all threads): "
        "steadier than wall time on a shared machine with one thread, not meaningful for GPU runs.",
        "",
        "| model | params (M) | train step ms | x plain | inference ms | x plain | train peak MiB | inference peak MiB "
        "| train x plain (CPU time) | inference x plain (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    res = payload["resnet18"]
    base = res.get("plain", {})
    for name, row in res.items():
        if "error" in row:
            lines.append(f"| {name} | unavailable: {row['error'][:120]} | | | | | | |")
            continue
        cells = [name, f"{row['parameters'] / 1e6:.1f}"]
        for kind in ("train_step", "inference"):
            ms = row[kind]["median_ms"]
            ref = base.get(kind, {}).get("median_ms") if "error" not in base else None
            cells += [f"{ms:.1f}", f"{ms / ref:.2f}" if ref else "-"]
        cells += [_fmt_mem(row["train_step"]), _fmt_mem(row["inference"])]
        for kind in ("train_step", "inference"):
            ref = base.get(kind, {}).get("cpu_time_median_ms") if "error" not in base else None
            cells.append(f"{row[kind]['cpu_time_median_ms'] / ref:.2f}" if ref else "-")
        lines.append("| " + " | ".join(cells) + " |")
    ours, fft = res.get("crossd", {}), res.get("fft", {})
    if "train_step" in ours and "train_step" in fft:
        speed = {k: fft[k]["median_ms"] / ours[k]["median_ms"] for k in ("train_step", "inference")}
        cpu = fft["train_step"]["cpu_time_median_ms"] / ours["train_step"]["cpu_time_median_ms"]
        lines.append(f"\n`crossd` against `fft`: train step {speed['train_step']:.1f}x faster ({cpu:.1f}x in CPU time), "
                     f"inference {speed['inference']:.1f}x faster.")
    if "paths" in ours:
        lines += ["", "Formulation of each Cross-D conv of `crossd` (input shape: path x count): " + "; ".join(
            f"`{shape}`: " + ", ".join(f"{p} x{n}" for p, n in paths.items()) for shape, paths in ours["paths"].items()) + "."]
    return lines + [""]


def _layers_3d_markdown(payload: dict) -> list[str]:
    lines = [f"## 3D layer: input {payload['conv3d_shape']} -> {payload['conv3d_shape'][1]} channels, k=3", ""]
    lines += ["| method | path | fwd ms | x conv3d | fwd+bwd ms | x conv3d | peak MiB fwd | peak MiB fwd+bwd |",
              "|---|---|---|---|---|---|---|---|"]
    r3 = payload["layers_3d"]
    b3 = r3.get("conv3d", {})
    for name, row in r3.items():
        if "error" in row:
            lines.append(f"| {name} | unavailable: {row['error'][:120]} | | | | | | |")
            continue
        cells = [name, row.get("path", "")]
        for kind in ("forward", "forward_backward"):
            ms = row[kind]["median_ms"]
            ref = b3.get(kind, {}).get("median_ms") if "error" not in b3 else None
            cells += [f"{ms:.1f}", f"{ms / ref:.2f}" if ref else "-"]
        cells += [_fmt_mem(row["forward"]), _fmt_mem(row["forward_backward"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _networks_3d_markdown(payload: dict) -> list[str]:
    cfg = payload["networks_3d_config"]
    unet = ", ".join(f"{k}={v}" for k, v in cfg["unet"].items())
    lines = [
        "## 3D networks: Cross-D against MONAI" + (" (smoke shapes: a code check, not a measurement)" * cfg["smoke"]),
        "",
        f"Median ms of {cfg['repeats']} after {cfg['warmup']} warm-up round(s); the networks of one workload run "
        "in one loop, one call each per round in rotating order, so each ratio (Cross-D / MONAI) compares calls "
        "made under the same machine load. Inference: `eval`, `no_grad`; train step: `zero_grad`, forward, "
        f"cross-entropy, `backward`, `{cfg['optimizer']}`. UNet (both): `{unet}`; MONAI "
        "ResNet18 with `conv1_t_stride=2` (the Cross-D one's default). Peak memory: "
        f"{payload['memory_measured']}.",
        "",
        "| workload | Cross-D ms | MONAI ms | ratio | peak MiB Cross-D | peak MiB MONAI "
        "| params Cross-D (M) | params MONAI (M) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in payload["networks_3d"].items():
        if "error" in row:
            lines.append(f"| {name} | unavailable: {row['error'][:120]} | | | | | | |")
            continue
        ours, monai = row["crossd"], row["monai"]
        shape = f"{row['input'][0]}x{row['input'][1]}^3"
        label = f", {ours['label']}" if ours["label"] else ""
        lines.append(
            f"| {row['workload']}, batch {row['batch']}, {shape}{label} | {ours['median_ms']:.1f} "
            f"| {monai['median_ms']:.1f} | {row['ratio']:.2f} | {_fmt_mem(ours)} | {_fmt_mem(monai)} "
            f"| {ours['parameters'] / 1e6:.2f} | {monai['parameters'] / 1e6:.2f} |"
        )
    return lines + [""]


def _rotation_share_markdown(payload: dict) -> list[str]:
    r = payload["rotation_share"]
    if "error" in r:
        return ["## Rotation networks in inference", "", f"unavailable: {r['error']}", ""]
    one, unet = r["layer"], r["unet"]
    shapes = "; ".join(f"`{k}` {v:.1f}" for k, v in unet["per_input_shape_ms"].items())
    return [
        "## Rotation networks in inference (`eval`, `no_grad`, timed in one loop with what they are part of)",
        "",
        "| measure | ms | share / ratio |",
        "|---|---|---|",
        f"| `CrossDConv(3, 16, 16, 3)` on `{r['layer_input']}` | {one['layer']:.1f} | |",
        f"| its rotation network alone | {one['rotation_net']:.1f} | {one['share']:.1%} of the layer |",
        f"| `nn.Conv3d(16, 16, 3)`, same input | {one['conv3d']:.1f} | |",
        f"| `CrossDUNet` (UNet rows) on `{r['unet_input']}` / MONAI `UNet` | {unet['crossd_ms']:.1f} / {unet['monai_ms']:.1f} "
        f"| {unet['ratio']:.2f}x |",
        f"| its rotation networks (forward hooks, all layers) | {unet['rotation_nets_ms']:.1f} "
        f"| without them {unet['ratio_without_rotation_nets']:.2f}x MONAI |",
        "",
        f"Rotation-network time per input shape (ms per forward): {shapes}.",
        "",
    ]


def markdown(payload: dict) -> str:
    suites = payload.get("suites", [s for s in SUITES if s in payload])  # files written before --suite: what they hold
    lines = [f"# Network benchmark ({payload['environment']['device']})", "", env_markdown(payload["environment"]), ""]
    sections = (_resnet_markdown, _layers_3d_markdown, _networks_3d_markdown, _rotation_share_markdown)
    for suite, section in zip(SUITES, sections):
        if suite in suites:
            lines += section(payload)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 10 GPU / 7 CPU)")
    parser.add_argument("--fft-repeats", type=int, default=None, help="timed calls for the slow fft model (default 3 CPU)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--suite", default=",".join(SUITES), help="comma-separated subset of " + ",".join(SUITES))
    parser.add_argument("--skip-3d", action="store_true", help="leave out layers_3d (as --suite without it)")
    parser.add_argument("--repeats-3d", type=int, default=None, help="rounds of networks_3d (10 GPU / 5 CPU)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny networks_3d shapes, 1 round
    parser.add_argument("--out", default=None, help=f"output folder (default {RESULTS})")
    args = parser.parse_args(argv)
    suites = [x for x in args.suite.split(",") if x and not (args.skip_3d and x == "layers_3d")]
    if unknown := set(suites) - set(SUITES):
        parser.error(f"unknown --suite {sorted(unknown)}; choose from {','.join(SUITES)}")
    models = [x for x in args.models.split(",") if x]
    if unknown := set(models) - set(MODELS):
        parser.error(f"unknown --models {sorted(unknown)}; choose from {','.join(MODELS)}")
    device = setup(args.device, args.threads, tf32=True)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    batch = args.batch or (64 if gpu else 8)
    size = args.size or (224 if gpu else 64)
    num_classes = args.num_classes or (1000 if gpu else 10)
    repeats = args.repeats or (10 if gpu else 7)
    fft_repeats = args.fft_repeats or (repeats if gpu else 3)
    shape_3d = (4, 64, 32, 96, 96) if gpu else (2, 32, 8, 32, 32)
    repeats_3d = args.repeats_3d or (1 if args.smoke else 10 if gpu else 5)
    payload = {
        "benchmark": "networks",
        "environment": environment(device),
        "suites": suites,
        "resnet_config": {"batch": batch, "size": size, "num_classes": num_classes, "optimizer": "AdamW(lr=1e-4, fused=True)",
                          "tf32": gpu},
        "repeats": repeats,
        "fft_repeats": fft_repeats,
        "resnet_timing": "`plain` and `crossd` are timed interleaved: one loop, one call each per round in "
        "rotating order, so their ratio compares calls made under the same machine load; `fft` on its own.",
        "memory_measured": "CUDA max allocated minus allocated before the call" if gpu
        else "CPU resident-set growth during one call after malloc_trim, sampled every 0.5 ms (approximate)",
        "resnet18": {},
        "conv3d_shape": list(shape_3d),
        "layers_3d": {},
        "networks_3d_config": {"repeats": repeats_3d, "warmup": 1 if args.smoke else 2, "smoke": args.smoke,
                               "optimizer": "Adam(lr=1e-4)", "unet": UNET_SMOKE if args.smoke else UNET},
        "networks_3d": {},
    }
    groups = [[m for m in ("plain", "crossd") if m in models], ["fft"] if "fft" in models else []]  # timed together
    for names in [g for g in groups if g and "resnet18" in suites]:
        print(f"[networks] resnet18 {' + '.join(names)} ...", flush=True)
        try:
            rows = bench_resnet(names, batch, size, num_classes, device, fft_repeats if names == ["fft"] else repeats)
            for name, row in rows.items():
                print(f"    {name}: train {row['train_step']['median_ms']:.1f} ms  "
                      f"inference {row['inference']['median_ms']:.1f} ms", flush=True)
        except Exception as e:  # noqa: BLE001  an OOM of the literal model is a result, not a crash
            traceback.print_exc()
            rows = dict.fromkeys(names, {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0]})
        payload["resnet18"].update(rows)
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()
    if "layers_3d" in suites:
        for method in ("conv3d", "crossd_rotation", "crossd_static"):
            print(f"[networks] 3D {method} {shape_3d} ...", flush=True)
            try:
                row = bench_3d(method, shape_3d, device, repeats)
                print(f"    fwd {row['forward']['median_ms']:.1f} ms  fwd+bwd {row['forward_backward']['median_ms']:.1f} ms", flush=True)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                row = {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0]}
            payload["layers_3d"][method] = row
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
    if "networks_3d" in suites:
        for work in workloads_3d(args.smoke):
            print(f"[networks] 3D {work['name']} batch {work['batch']} {work['input']} ...", flush=True)
            try:
                rows = bench_networks_3d(work, device, repeats_3d, payload["networks_3d_config"]["warmup"])
                for key, row in rows.items():
                    print(f"    {key}: Cross-D {row['crossd']['median_ms']:.1f} ms  "
                          f"MONAI {row['monai']['median_ms']:.1f} ms", flush=True)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                rows = {work["name"]: {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0]}}
            payload["networks_3d"].update(rows)
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
    if "rotation_share" in suites:
        print("[networks] rotation networks' share in inference ...", flush=True)
        try:
            payload["rotation_share"] = rotation_share(device, repeats_3d, args.smoke)
            print(f"    layer share {payload['rotation_share']['layer']['share']:.1%}", flush=True)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            payload["rotation_share"] = {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0]}
    # a subset of the suites or the smoke shapes get a file of their own: a full run's results stay
    name = "_".join([f"networks_{device.type}"] + (suites if suites != list(SUITES) else []) + ["smoke"] * args.smoke)
    paths = write_results(name, payload, markdown, args.out)
    print("wrote", *paths)
    return payload


if __name__ == "__main__":
    main()
