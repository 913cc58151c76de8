"""Per-sample convolution formulations in 3D: the measurements behind ``per_sample_conv.select_path``'s 3D thresholds.

For every ``3x3x3`` convolution shape (padding 1) of the 3D networks that our bundles and benchmarks run,
forward+backward (``out.backward(grad)`` with a fixed random ``grad``; the input ``x`` and the shared
weight ``w`` require grad, the mixing matrix does not) of each formulation of
``per_sample_mixed_conv`` (``w``: ``(O, C, 3, 3, 3)``, ``mix``: ``torch.randn(B, 27, 27)``, ``x``:
``(B, C, S, S, S)``):

- ``materialize+grouped``: ``k = mix_kernel(w, mix, (3, 3, 3))`` (the ``B`` kernels), then
  ``per_sample_conv(x, k, None, stride, 1, 1, 1, path="grouped")`` (batch folded into the groups);
- ``materialize+loop``: the same with ``path="loop"`` (one ``conv3d`` per sample);
- ``mixed_unfold``: ``per_sample_mixed_conv(x, w, mix, None, stride, 1, 1, 1, path="mixed_unfold")``
  (the taps of the unfolded input mixed, one GEMM with the shared weight: no per-sample kernels).

The formulations of one shape are timed in one loop, one call each per round in rotating order
(``_common.measure_interleaved``), median of ``--repeats`` (5 CPU, 10 CUDA). Each row records the output
positions per sample ``L``, what ``select_path(x, (3, 3, 3), stride, 1, 1, mixed=True)`` chooses (and, for
``materialize``, the ``mixed=False`` sub-choice), the fastest formulation, and whether the chosen one is
the fastest or within 15% of it. The first call of each formulation is a warm-up (``--warmup``, default 1,
counts it): a formulation whose warm-up call takes more than ``--max-seconds`` (default 2 s) is not timed
for that shape and is recorded as skipped (on CUDA a second call decides: the first includes cuDNN's
autotuning). The materialised kernels at ``(16, 512, 1^3) -> 512`` are 450 MB: ~4 s per call on a 2-core CPU.
The outputs of the formulations of a shape are compared with the first one's (largest difference relative
to its largest magnitude, float32).

Transposed (``per_sample_conv_transpose(x, k, None, 2, 1, 1, 1, 1, path=...)``, the 3D UNet's up-convs,
``k``: ``(B, C, O, 3, 3, 3)`` requiring grad): paths ``grouped`` and ``loop``, and
``select_path(x, (3, 3, 3), 1, 0, 1, mixed=False, transposed=True)``.

Shapes ``(B, C, S, O, stride)``: the 3D UNet at batch 2, ``1x64^3``, channels ``(16, 32, 64, 128, 256)``;
the 3D ResNet18 at batch 4, ``1x32^3``; the vessel bundle's ResNet18 at batch 16, ``1x28^3``.

Usage (from the repository root)::

    python benchmarks/paths_3d.py --device cpu                # benchmarks/results/paths_3d_cpu.{json,md}
    python benchmarks/paths_3d.py --device cpu --threads 1    # a shared machine
    python benchmarks/paths_3d.py --device cuda               # paths_3d_cuda.*
"""

from __future__ import annotations

import argparse
import gc
import time
import traceback

import torch
from _common import RESULTS, env_markdown, environment, measure_interleaved, setup, sync, write_results  # noqa: I001

from monai_crossd.networks.layers.per_sample_conv import (
    mix_kernel,
    per_sample_conv,
    per_sample_conv_transpose,
    per_sample_mixed_conv,
    select_path,
)

KERNEL = (3, 3, 3)
FORMULATIONS = ("materialize+grouped", "materialize+loop", "mixed_unfold")
TRANSPOSED_PATHS = ("grouped", "loop")
WITHIN = 1.15  # "the chosen one is good enough": at most 15% slower than the fastest
# (B, C, S, O, stride) of each 3x3x3 conv (padding 1), per network
SHAPES = {
    "3D UNet, batch 2, 1x64^3, channels (16, 32, 64, 128, 256)": [
        (2, 1, 64, 16, 2), (2, 16, 32, 16, 1), (2, 16, 32, 32, 2), (2, 32, 16, 32, 1), (2, 32, 16, 64, 2),
        (2, 64, 8, 64, 1), (2, 64, 8, 128, 2), (2, 128, 4, 128, 1), (2, 128, 4, 256, 1),
    ],
    "3D ResNet18, batch 4, 1x32^3": [
        (4, 64, 8, 64, 1), (4, 64, 8, 128, 2), (4, 128, 4, 128, 1), (4, 128, 4, 256, 2), (4, 256, 2, 256, 1),
        (4, 256, 2, 512, 2), (4, 512, 1, 512, 1),
    ],
    "vessel bundle ResNet18, batch 16, 1x28^3": [
        (16, 64, 7, 64, 1), (16, 128, 4, 128, 1), (16, 256, 2, 256, 1), (16, 512, 1, 512, 1),
    ],
}
# (B, C, S, O) of the UNet's stride-2 transposed up-convs (padding 1, output_padding 1: S -> 2S)
TRANSPOSED_SHAPES = [(2, 32, 32, 16), (2, 64, 16, 32), (2, 128, 8, 64), (2, 256, 4, 128)]
SMOKE_SHAPES = {"smoke (a code check, not a measurement)": [(2, 4, 8, 8, 1), (2, 8, 4, 8, 2), (4, 16, 2, 16, 1)]}
SMOKE_TRANSPOSED = [(2, 8, 4, 4)]


def _out_size(s: int, stride: int) -> int:
    return (s + 2 - 3) // stride + 1  # k=3, padding 1


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".strip().splitlines()[0]


def _fwd_bwd(forward, grad: torch.Tensor, leaves: list[torch.Tensor]):
    """A call: clear the leaves' gradients, forward, ``backward(grad)``; returns the output (detached)."""

    def call():
        for t in leaves:
            t.grad = None
        out = forward()
        out.backward(grad)
        return out.detach()

    return call


def _probe(fns: dict, device: torch.device, max_seconds: float) -> tuple[dict, dict, dict]:
    """One call of each function (the first warm-up): ``(kept fns, rows of the skipped/failed, diffs)``.

    A function whose call takes more than ``max_seconds`` (on CUDA: whose second call does, the first
    including cuDNN's autotuning) or fails is dropped, with the reason in its row. ``diffs``: the largest
    difference of each output from the first output, relative to that output's largest magnitude.
    """
    kept, rows, diffs, ref = {}, {}, {}, None
    for name, fn in fns.items():
        try:
            for _attempt in range(2 if device.type == "cuda" else 1):
                start = time.perf_counter()
                out = fn()
                sync(device)
                seconds = time.perf_counter() - start
                if seconds <= max_seconds:
                    break
        except Exception as e:  # noqa: BLE001  an OOM of one formulation is a result, not a crash
            traceback.print_exc()
            rows[name] = {"error": _error(e)}
            continue
        if seconds > max_seconds:
            rows[name] = {"skipped": f"warm-up call {seconds * 1e3:.0f} ms > {max_seconds:g} s",
                          "warmup_ms": seconds * 1e3, "max_seconds": max_seconds}
            print(f"    {name}: skipped ({seconds * 1e3:.0f} ms per call)", flush=True)
        else:
            kept[name] = fn
        if ref is None:
            ref = out
        diffs[name] = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        del out
    return kept, rows, diffs


def _verdict(row: dict, chosen: str | None) -> None:
    """Adds ``fastest``, ``chosen_over_fastest`` and ``chosen_ok`` (fastest or within 15%) to ``row``."""
    timed = {n: r["median_ms"] for n, r in row["formulations"].items() if "median_ms" in r}
    row["fastest"] = min(timed, key=timed.get) if timed else None
    if chosen in timed:
        row["chosen_over_fastest"] = timed[chosen] / timed[row["fastest"]]
        row["chosen_ok"] = row["chosen_over_fastest"] <= WITHIN
    else:  # the chosen one was skipped (slower than --max-seconds) or failed: not measured
        row["chosen_over_fastest"] = None
        skipped = "skipped" in row["formulations"].get(chosen, {})
        row["chosen_ok"] = False if skipped and timed else None  # slower than --max-seconds, another one was not


def bench_mixed(shape, device, repeats: int, warmup: int, max_seconds: float) -> dict:
    b, c, s, o, stride = shape
    torch.manual_seed(0)
    x = torch.randn(b, c, s, s, s, device=device, requires_grad=True)
    w = torch.randn(o, c, *KERNEL, device=device, requires_grad=True)
    mix = torch.randn(b, 27, 27, device=device)
    so = _out_size(s, stride)
    grad = torch.randn(b, o, so, so, so, device=device)
    mixed = select_path(x, KERNEL, stride, 1, 1, mixed=True)
    sub = select_path(x, KERNEL, stride, 1, 1, mixed=False) if mixed == "materialize" else None
    chosen = f"materialize+{sub}" if sub else mixed

    def materialize(path):
        return lambda: per_sample_conv(x, mix_kernel(w, mix, KERNEL), None, stride, 1, 1, 1, path=path)

    forwards = {
        "materialize+grouped": materialize("grouped"),
        "materialize+loop": materialize("loop"),
        "mixed_unfold": lambda: per_sample_mixed_conv(x, w, mix, None, stride, 1, 1, 1, path="mixed_unfold"),
    }
    fns = {name: _fwd_bwd(fn, grad, [x, w]) for name, fn in forwards.items()}
    kept, rows, diffs = _probe(fns, device, max_seconds)
    times = measure_interleaved(kept, device, repeats, max(0, warmup - 1)) if kept else {}
    row = {
        "shape": {"B": b, "C": c, "S": s, "O": o, "stride": stride},
        "positions_per_sample": so**3,
        "select_path_mixed": mixed,
        "select_path_sub": sub,
        "chosen": chosen,
        "formulations": {name: times.get(name) or rows[name] for name in fns},
        "max_rel_diff_vs_first": diffs,
    }
    _verdict(row, chosen)
    return row


def bench_transposed(shape, device, repeats: int, warmup: int, max_seconds: float) -> dict:
    b, c, s, o = shape
    torch.manual_seed(0)
    x = torch.randn(b, c, s, s, s, device=device, requires_grad=True)
    k = torch.randn(b, c, o, *KERNEL, device=device, requires_grad=True)
    grad = torch.randn(b, o, 2 * s, 2 * s, 2 * s, device=device)
    chosen = select_path(x, KERNEL, 1, 0, 1, mixed=False, transposed=True)
    fns = {
        p: _fwd_bwd(lambda p=p: per_sample_conv_transpose(x, k, None, 2, 1, 1, 1, 1, path=p), grad, [x, k])
        for p in TRANSPOSED_PATHS
    }
    kept, rows, diffs = _probe(fns, device, max_seconds)
    times = measure_interleaved(kept, device, repeats, max(0, warmup - 1)) if kept else {}
    row = {
        "shape": {"B": b, "C": c, "S": s, "O": o, "stride": 2},
        "positions_per_sample": (2 * s) ** 3,
        "input_positions_per_sample": s**3,
        "chosen": chosen,
        "formulations": {name: times.get(name) or rows[name] for name in fns},
        "max_rel_diff_vs_first": diffs,
    }
    _verdict(row, chosen)
    return row


def _cell(r: dict) -> str:
    if "median_ms" in r:
        return f"{r['median_ms']:.1f}"
    if "skipped" in r:
        return f"skipped (>{r['max_seconds']:g} s per call)"
    return f"error: {r.get('error', '?')[:60]}"


def _table(rows: list[dict], names, transposed: bool) -> list[str]:
    head = "| B, C, S^3 -> O | L | " if transposed else "| B, C, S^3 -> O, stride | L | "
    lines = [head + " | ".join(f"{n} ms" for n in names) + " | chosen by select_path | fastest | chosen / fastest |",
             "|" + "---|" * (len(names) + 5)]
    for row in rows:
        sh = row["shape"]
        label = f"{sh['B']}, {sh['C']}, {sh['S']}^3 -> {sh['O']}" + ("" if transposed else f", {sh['stride']}")
        if "error" in row:
            lines.append(f"| {label} | | error: {row['error'][:100]} |" + " |" * (len(names) + 2))
            continue
        positions = f"{row['input_positions_per_sample']} -> {row['positions_per_sample']}" if transposed \
            else str(row["positions_per_sample"])
        ratio = row["chosen_over_fastest"]
        verdict = "" if row["chosen_ok"] is None else (" ok" if row["chosen_ok"] else " **no**")
        ratio_cell = (f"{ratio:.2f}" if ratio is not None else "chosen not timed") + verdict
        lines.append(f"| {label} | {positions} | " + " | ".join(_cell(row["formulations"][n]) for n in names)
                     + f" | {row['chosen']} | {row['fastest'] or '-'} | {ratio_cell} |")
    return lines


def markdown(payload: dict) -> str:
    cfg = payload["config"]
    lines = [f"# Per-sample formulations in 3D ({payload['environment']['device']})"
             + (" (smoke shapes: a code check, not a measurement)" * cfg["smoke"]), "",
             env_markdown(payload["environment"]), "",
             "Forward+backward (`backward` of a fixed random gradient; input and shared weight require grad), "
             f"median ms of {cfg['repeats']} after {cfg['warmup']} warm-up call(s), the formulations of a shape "
             "timed in one loop in rotating order. `L`: output positions per sample. A formulation whose warm-up "
             f"call took more than {cfg['max_seconds']:g} s is skipped for that shape. chosen / fastest: median of "
             f"`select_path`'s choice over the fastest one's; ok when at most {WITHIN:.2f}x, **no** otherwise "
             "(also when the chosen one was skipped and another was timed).", ""]
    for group, rows in payload["mixed"].items():
        lines += [f"## {group}", ""] + _table(rows, FORMULATIONS, False) + [""]
    if payload["transposed"]:
        lines += ["## Transposed (UNet up-convs): `per_sample_conv_transpose`, stride 2, padding 1, output_padding 1",
                  "", "`L`: input -> output positions per sample; per-sample kernels `(B, C, O, 3, 3, 3)` given "
                  "(requiring grad), not built.", ""]
        lines += _table(payload["transposed"], TRANSPOSED_PATHS, True) + [""]
    diffs = [d for rows in [*payload["mixed"].values(), payload["transposed"]] for r in rows
             for d in r.get("max_rel_diff_vs_first", {}).values()]
    if diffs:
        lines.append(f"Outputs of the formulations of each shape agree to {max(diffs):.1e} of the largest magnitude "
                     "(float32).")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per shape (default 10 GPU / 5 CPU)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up calls per formulation, the probe call included")
    parser.add_argument("--max-seconds", type=float, default=2.0,
                        help="skip a formulation for a shape when its warm-up call takes longer (default 2)")
    parser.add_argument("--tf32", action="store_true",
                        help="CUDA: TF32 for matmul and cuDNN (torch's defaults otherwise)")
    parser.add_argument("--skip-transposed", action="store_true", help="leave out the transposed convolutions")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # 3 tiny shapes: a code check
    parser.add_argument("--out", default=None, help=f"output folder (default {RESULTS})")
    args = parser.parse_args(argv)
    device = setup(args.device, args.threads, tf32=args.tf32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    repeats = args.repeats or (10 if device.type == "cuda" else 5)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    transposed = [] if args.skip_transposed else SMOKE_TRANSPOSED if args.smoke else TRANSPOSED_SHAPES
    payload = {
        "benchmark": "paths_3d",
        "environment": environment(device),
        "config": {"repeats": repeats, "warmup": max(1, args.warmup), "max_seconds": args.max_seconds,
                   "smoke": args.smoke, "within": WITHIN, "kernel_size": list(KERNEL), "padding": 1,
                   "mix": "torch.randn(B, 27, 27)", "weight": "torch.randn(O, C, 3, 3, 3), requires grad",
                   "timed": "forward + backward(fixed random grad), input requires grad"},
        "mixed": {},
        "transposed": [],
    }
    jobs = [(group, shape, bench_mixed) for group, group_shapes in shapes.items() for shape in group_shapes]
    jobs += [(None, shape, bench_transposed) for shape in transposed]
    for group, shape, bench in jobs:
        print(f"[paths_3d] {'transposed ' if group is None else ''}{shape} ...", flush=True)
        try:
            row = bench(shape, device, repeats, args.warmup, args.max_seconds)
            times = ", ".join(f"{n} {_cell(r)}" for n, r in row["formulations"].items())
            print(f"    {times}; chosen {row['chosen']}, fastest {row['fastest']}", flush=True)
        except Exception as e:  # noqa: BLE001  one shape that cannot run (OOM) is a result, not a crash
            traceback.print_exc()
            keys = ("B", "C", "S", "O", "stride")
            row = {"shape": dict(zip(keys, (*shape, 2) if group is None else shape)), "error": _error(e)}
        (payload["transposed"] if group is None else payload["mixed"].setdefault(group, [])).append(row)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = f"paths_3d_{device.type}" + "_smoke" * args.smoke
    paths = write_results(name, payload, markdown, args.out)
    print("wrote", *paths)
    return payload


if __name__ == "__main__":
    main()
