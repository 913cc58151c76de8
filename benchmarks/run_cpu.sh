#!/usr/bin/env bash
# The CPU benchmark run whose results are committed: the four scripts, results to benchmarks/results/
# (or $OUT). Extra arguments go to each script (e.g. `--threads 1` on a shared machine). On a quiet
# 2-core machine ~5 min: ~1.5 min (layers.py --quick --profile) + ~3 min (networks.py, mostly the
# literal-FFT ResNet18: ~28 s per training step, 1 warm-up/memory call + 3 timed calls) + ~1 min
# (bound.py: the measured bound of the Cross-D ResNet18); 13:25-13:35 UTC on 2026-11-29 the whole run took
# ~5 min (2 threads, quiet).
# Then paths_3d.py (the 3D per-sample formulations at the 3D networks' conv shapes: the data behind
# select_path's 3D thresholds; ~2-4 min, an estimate: not yet run in full).
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
