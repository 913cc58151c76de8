#!/usr/bin/env bash
# The CPU benchmark run whose results are committed: the four scripts, results to benchmarks/results/
# (or $OUT). Extra arguments go to each script (e.g. `--threads 1` on a shared machine). On the quiet
# 2-core VM (Intel Xeon, 2 threads) on 2026-12-03 the whole run took ~3.5 min: ~20 s layers.py --quick
# --profile, ~2.5 min networks.py (mostly the literal-FFT ResNet18: ~18 s per training step, 1 warm-up/
# memory call + 3 timed calls; the 3D networks against MONAI's ~1 min), a few s bound.py, ~30 s paths_3d.py
# (the 3D per-sample formulations at the 3D networks' conv shapes: the data behind select_path's thresholds).
#
#   bash benchmarks/run_cpu.sh [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${OUT:-benchmarks/results}
"$PY" benchmarks/layers.py --quick --device cpu --profile --out "$DEST" "$@"
"$PY" benchmarks/networks.py --device cpu --out "$DEST" "$@"
"$PY" benchmarks/bound.py --device cpu --out "$DEST" "$@"
"$PY" benchmarks/paths_3d.py --device cpu --out "$DEST" "$@"
