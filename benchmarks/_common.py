"""Shared helpers of the benchmark scripts: timing, peak memory, environment record, output files."""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:  # run from anywhere: `tests.oracle` and `monai_crossd` from the checkout
    sys.path.insert(0, str(ROOT))

__all__ = [
    "ROOT", "RESULTS", "crossd_path", "environment", "measure", "measure_interleaved", "peak_memory", "pick_device",
    "setup", "sync", "write_results",
]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return device


def setup(device_name: str, threads: int | None, tf32: bool) -> torch.device:
    """The run's device (``pick_device``), CPU thread count (``None``: torch's default) and, on CUDA, TF32."""
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device_name)
    if device.type == "cuda" and tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """What the numbers depend on: recorded in every result file."""
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return env


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> dict:
    """Median (and spread) of ``repeats`` wall-clock timings of ``fn`` after ``warmup`` calls, in ms."""
    return measure_interleaved({"fn": fn}, device, repeats, warmup)["fn"]


def measure_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, dict]:
    """``measure`` of several functions in one loop: ``{name: measure's dict}``.

    Each round calls every function once (warm-up rounds first), the order rotated by one per round
    (a, b, c; b, c, a; ...), so that a change of the machine's load during the run reaches all of
    them alike and none always runs right after the same other one.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync(device)
    times: dict = {name: [] for name in names}
    cpu_times: dict = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[name]()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu_times[name].append((time.process_time() - cpu_start) * 1e3)
    return {
        name: {
            "median_ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "max_ms": max(times[name]),
            # CPU time of the process (all threads): with one thread on a shared machine it leaves out the
            # time spent descheduled, so it is the steadier number there; on a quiet machine use median_ms
            "cpu_time_median_ms": statistics.median(cpu_times[name]),
            "repeats": repeats,
        }
        for name in names
    }


def crossd_path(layer, x: torch.Tensor) -> str:
    """The formulation ``CrossDConv.forward`` of ``layer`` runs for ``x``: ``select_path``'s choice, made as the forward makes it.

    ``"mixed_unfold"`` (taps of the unfolded input mixed, one GEMM with the shared weight),
    ``"materialize+<per_sample_conv path>"`` (the ``B`` kernels built, then ``grouped``/``unfold``;
    ``conv`` for one sample), or ``"static"`` without rotation (one shared kernel, a plain conv).
    """
    from monai_crossd.networks.layers.per_sample_conv import select_path

    if layer.is_static:
        return "static"
    k = (layer.kernel_size,) * layer.spatial_dims
    pads = layer._padding()
    padding = [lo for lo, _ in pads]
    if not (layer.padding_mode == "zeros" and all(lo == hi for lo, hi in pads)):  # the forward pads x first
        x = torch.nn.functional.pad(x, [p for pair in reversed(pads) for p in pair])
        padding = 0
    args = (x, k, layer.stride, padding, layer.dilation)
    if select_path(*args, mixed=True) == "mixed_unfold":
        return "mixed_unfold"
    return "materialize+" + ("conv" if x.shape[0] == 1 else select_path(*args, mixed=False))


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS delta then undercounts reused memory
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], object], device: torch.device) -> dict:
    """Peak memory of one extra call of ``fn`` above what was held before it.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocated bytes before the call (exact, the
    caching allocator's reserve excluded). CPU: glibc is first asked to return freed memory to the
    system (``malloc_trim(0)``, else the warm-up's freed blocks are reused and the RSS does not move),
    then the resident set size is sampled every ~0.5 ms by a thread during the call; the result is
    its maximum minus the RSS before the call (approximate: it misses peaks shorter than the sampling
    period, and includes oneDNN scratch buffers that no tensor counter sees).
    """
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20, "measured": "cuda_max_allocated_delta"}
    if not Path("/proc/self/statm").exists():
        return {"peak_mib": None, "measured": "unavailable (no /proc/self/statm)"}
    _malloc_trim()
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return {"peak_mib": (peak[0] - before) / 2**20, "measured": "cpu_rss_delta_sampled_after_malloc_trim"}


def write_results(
    name: str, payload: dict, markdown: Callable[[dict], str], out_dir: Path | None = None
) -> tuple[Path, Path]:
    """``<name>.json`` and ``markdown(payload)`` as ``<name>.md`` under ``out_dir`` (default ``benchmarks/results``).

    The 1-minute load average at the end of the run is added to ``payload["environment"]`` first.
    """
    if hasattr(os, "getloadavg") and "environment" in payload:  # how busy the machine was during the run
        payload["environment"]["load_average_1m_at_end"] = os.getloadavg()[0]
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown(payload))
    return json_path, md_path


def env_markdown(env: dict) -> str:
    keys = ["date_utc", "device", "gpu", "cpu_model", "cpu_count", "torch_threads", "torch", "cuda", "tf32_matmul",
            "load_average_1m_at_start", "load_average_1m_at_end", "command"]
    return "\n".join(f"- {k}: `{env[k]}`" for k in keys if k in env) + "\n"
