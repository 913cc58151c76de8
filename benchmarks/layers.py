"""Layer speed and memory: the paper's Table III (Yavuz & Yang, arXiv 2411.02441).

One layer, ``k = 3``, ``padding = 1``, no bias, at the paper's input shapes ``(B, C, H, W)`` with 512
output channels:

- ``conv2d``: ``nn.Conv2d`` on the 2D input (the reference of every ratio, same run);
- ``crossd``: our ``CrossDConv(2, ...)`` as committed (materialised per-sample kernels);
- ``crossd_mixed``: the same layer with the forward proposed in ``benchmarks/_proposed.py``
  (``per_sample_mixed_conv``: may skip materialising the kernels on small maps);
- ``fft``: ``tests.oracle.FFTCrossDConv2d``, the literal per-sample FFT layer (authors-style);
- ``acsconv``: the PyPI ``acsconv`` operator on a volume ``(B, C, D, H, W)`` (reported unavailable,
  with the error, if it cannot be imported or run on this torch);
- ``conv3d``: ``nn.Conv3d`` on the same volume.

The 3D methods see a volume of depth ``--depth`` (4 by default; 2 with ``--quick``). Each cell is the
median of ``--repeats`` timings after warm-up, of the forward (no autograd graph) and of
forward+backward (``out.backward(grad)`` with the input requiring grad, so weight and input gradients
are computed). ``--quick`` runs scaled-down shapes on a CPU in minutes:
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

from _common import RESULTS, env_markdown, environment, measure, peak_memory, pick_device, write_results  # noqa: I001

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import shift_matrix, shift_operators
from monai_crossd.networks.layers.per_sample_conv import mix_kernel, per_sample_conv, select_path
from tests.oracle import FFTCrossDConv2d

from _proposed import proposed_forward, use_proposed_forward  # noqa: E402

FULL_SHAPES = [(8, 64, 128, 128), (16, 128, 224, 224), (32, 384, 224, 224)]
FULL_OUT = 512
QUICK_SHAPES = [(4, 64, 32, 32), (4, 128, 32, 32), (4, 384, 32, 32)]
QUICK_OUT = 128
METHODS = ("conv2d", "crossd", "crossd_mixed", "fft", "acsconv", "conv3d")


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
    if method in ("crossd", "crossd_mixed"):
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
    ctx = use_proposed_forward if method == "crossd_mixed" else _null
    with ctx():
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
    if method in ("crossd", "crossd_mixed"):
        row["path"] = _paths(x, o)
    return row


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _paths(x: torch.Tensor, o: int) -> dict:
    return {
        "crossd": "materialize+" + select_path(x, (3, 3), 1, 1, 1, mixed=False),
        "crossd_mixed": select_path(x, (3, 3), 1, 1, 1, mixed=True),
    }


def check_proposed(device: torch.device) -> float:
    """The proposed forward gives the committed forward's output (max abs difference, float64)."""
    torch.manual_seed(0)
    layer = CrossDConv(2, 8, 16, 3, padding=1).to(device, torch.float64)
    x = torch.randn(4, 8, 4, 4, device=device, dtype=torch.float64)
    return (proposed_forward(layer, x) - layer(x)).abs().max().item()


def breakdown(shape, o: int, device: torch.device, repeats: int) -> dict:
    """Where the committed layer spends time: rotation network, kernel construction, per-sample conv."""
    b, c, h, w = shape
    torch.manual_seed(0)
    layer = CrossDConv(2, c, o, 3, padding=1, bias=False).to(device).train()
    x = torch.randn(b, c, h, w, device=device, requires_grad=True)
    shift = layer.predict_shift(x).detach()
    kernels = layer.kernels(x).detach().contiguous()

    def part(fn):
        def run():
            layer.zero_grad(set_to_none=True)
            out = fn()
            out.backward(torch.ones_like(out))

        return measure(run, device, repeats)["median_ms"]

    def construct():
        real, imag = shift_operators(shift, 3)
        return mix_kernel(layer.weight, shift_matrix(real, imag, 1), (3, 3))

    kg = kernels.clone().requires_grad_(True)
    result = {
        "rotation_network_ms": part(lambda: layer.predict_shift(x)),
        "kernel_construction_ms": part(construct),
        "per_sample_conv_ms": {p: part(lambda p=p: per_sample_conv(x, kg, padding=1, path=p)) for p in ("grouped", "loop", "unfold")},
        "whole_layer_ms": part(lambda: layer(x)),
        "conv2d_shared_kernel_ms": part(lambda: torch.nn.functional.conv2d(x, kg[0], padding=1)),
        "note": "forward+backward of each part alone (backward of ones), medians",
    }
    return result


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
    for shape_key, rows in payload["results"].items():
        lines.append(f"## input {shape_key}")
        lines.append("")
        lines.append("| method | fwd ms | fwd x conv2d | fwd+bwd ms | fwd+bwd x conv2d | peak MiB fwd | peak MiB fwd+bwd "
                     "| fwd+bwd x conv2d (CPU time) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        ref = rows.get("conv2d", {})
        for method, row in rows.items():
            if "error" in row:
                lines.append(f"| {method} | unavailable: {row['error'][:120]} | | | | | | |")
                continue
            cells = [method]
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
        lines.append("")
    if "breakdown" in payload:
        lines += ["## where `crossd` spends time (fwd+bwd, first shape)", "", "```", str(payload["breakdown"]), "```", ""]
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
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
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
        "proposed_forward_max_abs_diff_float64": check_proposed(device),
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
        payload["breakdown"] = breakdown(shapes[0], o, device, repeats)
        table = profile_table(shapes[0], o, device)
        payload["profile_table"] = table
        print(table)
    name = f"layers_{device.type}_{payload['size']}"
    paths = write_results(name, payload, markdown(payload), args.out)
    print("wrote", *paths)
    return payload


if __name__ == "__main__":
    main()
