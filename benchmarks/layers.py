"""Layer speed and memory: the paper's Table III (Yavuz & Yang, arXiv 2411.02441).

One layer, ``k = 3``, ``padding = 1``, no bias, at the paper's input shapes ``(B, C, H, W)`` with 512
output channels:

- ``conv2d``: ``nn.Conv2d`` on the 2D input (the reference of every ratio, same run);
- ``crossd``: our ``CrossDConv(2, ...)``: rotation network, fused shift matrix, then
  ``per_sample_mixed_conv``, whose ``select_path`` materialises the per-sample kernels or mixes the
  input taps (the path chosen for each shape is recorded in the results);
- ``fft``: ``tests.oracle.FFTCrossDConv2d``, the literal per-sample FFT layer (authors-style);
- ``acsconv``: the PyPI ``acsconv`` operator on a volume ``(B, C, D, H, W)`` (reported unavailable,
  with the error, if it cannot be imported or run on this torch);
- ``conv3d``: ``nn.Conv3d`` on the same volume.

The 3D methods see a volume of depth ``--depth`` (4 by default; 2 with ``--quick``). Each cell is the
median of ``--repeats`` timings after warm-up, of the forward (no autograd graph) and of
forward+backward (``out.backward(grad)`` with the input requiring grad, so weight and input gradients
are computed). Before timing, the layer is checked against the FFT oracle in float64 (max abs
difference recorded). ``--quick`` runs scaled-down shapes on a CPU in minutes:
``(4, 64, 32, 32)``, ``(4, 128, 32, 32)``, ``(4, 384, 32, 32)`` with 128 output channels.

Usage (from the repository root)::

    python benchmarks/layers.py --quick            # CPU, minutes
    python benchmarks/layers.py                    # the paper's shapes (a GPU: CUDA is used when present)
    python benchmarks/layers.py --quick --profile  # plus a breakdown of where our layer spends time
"""

from __future__ import annotations

import argparse
import gc
import traceback

import torch
import torch.nn as nn
from _common import (  # noqa: I001
    RESULTS,
    crossd_path,
    env_markdown,
    environment,
    measure,
    peak_memory,
    setup,
    write_results,
)

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import shift_matrix, shift_operators
from monai_crossd.networks.layers.per_sample_conv import MIXED_PATHS, per_sample_mixed_conv
from tests.oracle import FFTCrossDConv2d

FULL_SHAPES = [(8, 64, 128, 128), (16, 128, 224, 224), (32, 384, 224, 224)]
FULL_OUT = 512
QUICK_SHAPES = [(4, 64, 32, 32), (4, 128, 32, 32), (4, 384, 32, 32)]
QUICK_OUT = 128
METHODS = ("conv2d", "crossd", "fft", "acsconv", "conv3d")
# a ResNet18 stage-3 shape at 64x64 input (4x4 maps): where the selector takes the tap-mixing path
SMALL_MAP_SHAPE, SMALL_MAP_OUT = (8, 256, 4, 4), 256


def _acsconv():
    """The ACSConv operator class, or the error that prevents importing it."""
    try:
        from acsconv.operators import ACSConv

        return ACSConv, None
    except Exception as e:  # any import-time failure of the third-party package is a result to report
        return None, f"{type(e).__name__}: {e}"


def build(method: str, c: int, o: int, device: torch.device) -> tuple[nn.Module, bool]:
    """The layer and whether it takes a volume."""
    if method == "conv2d":
        return nn.Conv2d(c, o, 3, padding=1, bias=False).to(device), False
    if method == "crossd":
        return CrossDConv(2, c, o, 3, padding=1, bias=False).to(device), False
    if method == "fft":
        return FFTCrossDConv2d(c, o, 3, padding=1).to(device), False
    if method == "conv3d":
        return nn.Conv3d(c, o, 3, padding=1, bias=False).to(device), True
    if method == "acsconv":
        cls, err = _acsconv()
        if cls is None:
            raise RuntimeError(err)
        return cls(c, o, 3, padding=1, bias=False).to(device), True
    raise ValueError(f"unknown method {method!r}")


def bench_one(method: str, shape, o: int, depth: int, device: torch.device, repeats: int) -> dict:
    b, c, h, w = shape
    torch.manual_seed(0)
    layer, volume = build(method, c, o, device)
    layer.train()
    x = torch.randn(b, c, depth, h, w, device=device) if volume else torch.randn(b, c, h, w, device=device)
    with torch.no_grad():
        out = layer(x)
    grad = torch.randn_like(out)
    del out
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        xg.grad = None
        layer(xg).backward(grad)

    row = {
        "forward": measure(forward, device, repeats),
        "forward_backward": measure(forward_backward, device, repeats),
        "input_shape": list(x.shape),
    }
    row["forward"]["memory"] = peak_memory(forward, device)
    row["forward_backward"]["memory"] = peak_memory(forward_backward, device)
    if method == "crossd":
        row["path"] = crossd_path(layer, x)
    return row


def check_oracle(device: torch.device) -> float:
    """``CrossDConv`` against the literal FFT layer with the same parameters (max abs difference, float64)."""
    torch.manual_seed(0)
    layer = CrossDConv(2, 8, 16, 3, padding=1, bias=False).to(device, torch.float64)
    oracle = FFTCrossDConv2d(8, 16, 3, padding=1).to(device, torch.float64)
    with torch.no_grad():
        layer.rotation_net[3].weight.mul_(10)  # visible rotations, not near-identity ones
        oracle.weights_3d.copy_(layer.weight)
        oracle.rotation_params.load_state_dict(layer.rotation_net.state_dict())
    worst = 0.0
    for size in (4, 12):  # both sides of the CPU selector threshold (16 and 144 positions)
        x = torch.randn(4, 8, size, size, device=device, dtype=torch.float64)
        worst = max(worst, (layer(x) - oracle(x)).abs().max().item())
    return worst


def breakdown(shape, o: int, device: torch.device, repeats: int) -> dict:
    """Where ``CrossDConv.forward`` spends time, forward+backward of each part alone.

    The parts of the forward: the rotation network (``predict_shift``: shift ``(B, 3)``), the shift
    matrix (``shift_operators`` + ``shift_matrix``: ``(B, K^2, K^3)``), and ``per_sample_mixed_conv``
    on every path of :data:`MIXED_PATHS` (the selected one marked), beside the whole layer and a
    ``conv2d`` with one shared kernel of the same shape (the floor).
    """
    b, c, h, w = shape
    torch.manual_seed(0)
    layer = CrossDConv(2, c, o, 3, padding=1, bias=False).to(device).train()
    x = torch.randn(b, c, h, w, device=device, requires_grad=True)
    shift = layer.predict_shift(x).detach().requires_grad_(True)
    with torch.no_grad():
        mix = shift_matrix(*shift_operators(shift, 3), 1)
    mix.requires_grad_(True)
    shared = layer.weight[:, :, 1].detach().clone().requires_grad_(True)

    def part(fn):
        def run():
            layer.zero_grad(set_to_none=True)
            x.grad = shift.grad = mix.grad = shared.grad = None
            out = fn()
            out.backward(torch.ones_like(out))

        return round(measure(run, device, repeats)["median_ms"], 3)

    return {
        "input": list(shape),
        "out_channels": o,
        "selected_path": crossd_path(layer, x),
        "rotation_network_ms": part(lambda: layer.predict_shift(x)),
        "shift_matrix_ms": part(lambda: shift_matrix(*shift_operators(shift, 3), 1)),
        "per_sample_mixed_conv_ms": {
            p: part(lambda p=p: per_sample_mixed_conv(x, layer.weight, mix, padding=1, path=p)) for p in MIXED_PATHS
        },
        "whole_layer_ms": part(lambda: layer(x)),
        "conv2d_shared_kernel_ms": part(lambda: torch.nn.functional.conv2d(x, shared, padding=1)),
        "note": "forward+backward of each part alone (backward of ones), medians; the parts do not overlap",
    }


def profile_table(shape, o: int, device: torch.device) -> str:
    from torch.profiler import ProfilerActivity, profile

    b, c, h, w = shape
    torch.manual_seed(0)
    layer = CrossDConv(2, c, o, 3, padding=1, bias=False).to(device).train()
    x = torch.randn(b, c, h, w, device=device, requires_grad=True)
    for _ in range(2):
        layer(x).sum().backward()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            layer(x).sum().backward()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=20)


def markdown(payload: dict) -> str:
    lines = [f"# Layer benchmark ({payload['size']})", "", env_markdown(payload["environment"]), ""]
    lines.append(f"Output channels {payload['out_channels']}, k=3, padding 1, no bias; 3D methods on depth {payload['depth']}. "
                 "Median ms; ratio to conv2d of the same run; peak memory: " + payload["memory_measured"] + ". "
                 "CPU-time ratio: process CPU time, steadier than wall time on a shared machine with one thread.")
    lines.append("")
    lines.append(f"`crossd` against the FFT oracle (float64, same parameters): max abs difference "
                 f"{payload['crossd_vs_fft_oracle_max_abs_diff_float64']:.1e}.")
    lines.append("")
    for shape_key, rows in payload["results"].items():
        lines.append(f"## input {shape_key}")
        lines.append("")
        lines.append("| method | path | fwd ms | fwd x conv2d | fwd+bwd ms | fwd+bwd x conv2d | peak MiB fwd | peak MiB fwd+bwd "
                     "| fwd+bwd x conv2d (CPU time) |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        ref = rows.get("conv2d", {})
        for method, row in rows.items():
            if "error" in row:
                lines.append(f"| {method} | unavailable: {row['error'][:120]} | | | | | | | |")
                continue
            cells = [method, row.get("path", "")]
            for kind in ("forward", "forward_backward"):
                ms = row[kind]["median_ms"]
                base = ref.get(kind, {}).get("median_ms") if "error" not in ref else None
                cells += [f"{ms:.1f}", f"{ms / base:.2f}" if base else "-"]
            for kind in ("forward", "forward_backward"):
                mem = row[kind]["memory"]["peak_mib"]
                cells.append("-" if mem is None else f"{mem:.0f}")
            base = ref.get("forward_backward", {}).get("cpu_time_median_ms") if "error" not in ref else None
            cells.append(f"{row['forward_backward']['cpu_time_median_ms'] / base:.2f}" if base else "-")
            lines.append("| " + " | ".join(cells) + " |")
        ours, fft = rows.get("crossd", {}), rows.get("fft", {})
        if "forward_backward" in ours and "forward_backward" in fft:
            speed = fft["forward_backward"]["median_ms"] / ours["forward_backward"]["median_ms"]
            cpu = fft["forward_backward"]["cpu_time_median_ms"] / ours["forward_backward"]["cpu_time_median_ms"]
            lines += ["", f"`crossd` fwd+bwd is {speed:.1f}x faster than `fft` (wall; {cpu:.1f}x in CPU time)."]
        lines.append("")
    if payload.get("breakdown"):
        lines += ["## where `crossd` spends time (fwd+bwd of each part alone, median ms)", "",
                  ("| input -> out | selected path | rotation net | shift matrix | per_sample_mixed_conv | whole layer "
                   "| conv2d, one shared kernel |"), "|---|---|---|---|---|---|---|"]
        for bd in payload["breakdown"]:
            conv = ", ".join(f"{p} {ms:.1f}" for p, ms in bd["per_sample_mixed_conv_ms"].items())
            lines.append(f"| {'x'.join(map(str, bd['input']))} -> {bd['out_channels']} | {bd['selected_path']} "
                         f"| {bd['rotation_network_ms']:.2f} | {bd['shift_matrix_ms']:.2f} | {conv} "
                         f"| {bd['whole_layer_ms']:.1f} | {bd['conv2d_shared_kernel_ms']:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down shapes for a CPU (minutes)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per cell (default 10 GPU / 5 CPU)")
    parser.add_argument("--depth", type=int, default=None, help="depth of the volume for acsconv/conv3d")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--profile", action="store_true", help="add a time breakdown and a torch.profiler table")
    parser.add_argument("--out", default=None, help=f"output folder (default {RESULTS})")
    args = parser.parse_args(argv)
    device = setup(args.device, args.threads, tf32=False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shapes, o = (QUICK_SHAPES, QUICK_OUT) if args.quick else (FULL_SHAPES, FULL_OUT)
    depth = args.depth or (2 if args.quick else 4)
    repeats = args.repeats or (10 if device.type == "cuda" else 5)
    methods = [m for m in args.methods.split(",") if m]
    payload = {
        "benchmark": "layers",
        "size": "quick" if args.quick else "full",
        "environment": environment(device),
        "out_channels": o,
        "kernel_size": 3,
        "depth": depth,
        "memory_measured": "CUDA max allocated minus allocated before the call" if device.type == "cuda"
        else "CPU resident-set growth during one call after malloc_trim, sampled every 0.5 ms (approximate)",
        "crossd_vs_fft_oracle_max_abs_diff_float64": check_oracle(device),
        "results": {},
    }
    for shape in shapes:
        key = "x".join(map(str, shape))
        payload["results"][key] = {}
        for method in methods:
            print(f"[layers] {key} {method} ...", flush=True)
            try:
                row = bench_one(method, shape, o, depth, device, repeats)
            except Exception as e:  # noqa: BLE001  a method that cannot run (OOM, acsconv on new torch) is a result
                row = {"error": f"{type(e).__name__}: {e}".strip().splitlines()[0]}
                if method != "acsconv":
                    traceback.print_exc()
            payload["results"][key][method] = row
            if "error" not in row:
                print(f"    fwd {row['forward']['median_ms']:.1f} ms  fwd+bwd {row['forward_backward']['median_ms']:.1f} ms", flush=True)
            else:
                print(f"    unavailable: {row['error']}", flush=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.profile:
        # the first shape (materialised kernels) and a 4x4 map (tap mixing on CPU)
        payload["breakdown"] = [breakdown(shapes[0], o, device, repeats), breakdown(SMALL_MAP_SHAPE, SMALL_MAP_OUT, device, repeats)]
        table = profile_table(shapes[0], o, device)
        payload["profile_table"] = table
        print(table)
    name = f"layers_{device.type}_{payload['size']}"
    paths = write_results(name, payload, markdown, args.out)
    print("wrote", *paths)
    return payload


if __name__ == "__main__":
    main()
