#!/usr/bin/env bash
# The CPU benchmark run whose results are committed: both scripts, all cores, results to
# benchmarks/results/ (or $OUT). Run it on a quiet machine: ~3 min (layers) + ~15 min (networks,
# mostly the literal-FFT ResNet18).
#
#   bash benchmarks/run_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${OUT:-benchmarks/results}
"$PY" benchmarks/layers.py --quick --device cpu --profile --out "$DEST" "$@"
"$PY" benchmarks/networks.py --device cpu --out "$DEST"
