#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU (H100/H200): correctness on CUDA against the FFT
# oracle (every per_sample_conv / per_sample_mixed_conv path, 2D and 3D, and the whole layer on both
# sides of the CUDA path threshold), then the three benchmarks at their full GPU sizes. Installs nothing but pip wheels.
#
#   bash benchmarks/gpu_check.sh            # results to $OUT when set, else benchmarks/results/
#
# Budget on an H200 (estimates, never run): correctness ~1 min, layers.py ~3-5 min, networks.py ~2-4 min,
# bound.py ~1 min, paths_3d.py ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  PY=.venv/bin/python
fi
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
LOG="$DEST/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1

echo "== environment $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" - <<'PYEOF' || "$PY" -m pip install -q torch torchvision monai pytest acsconv
import torch, torchvision, monai
assert torch.cuda.is_available(), "no CUDA device visible"
print(torch.__version__, torchvision.__version__, monai.__version__, torch.cuda.get_device_name(0))
PYEOF
"$PY" -c "import acsconv" 2>/dev/null || "$PY" -m pip install -q acsconv || echo "acsconv unavailable (reported by layers.py)"

echo "== correctness on CUDA (float64 against the FFT oracle, every path)"
"$PY" - <<'PYEOF'
import sys
import torch
sys.path.insert(0, ".")
from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import shift_kernel, shift_matrix, shift_operators
from monai_crossd.networks.layers.per_sample_conv import MIXED_PATHS, PATHS, per_sample_conv, per_sample_mixed_conv
from tests.oracle import FFTCrossDConv2d, fft_rotate_kernel
from monai_crossd.networks.layers.fourier_shift import axis_angle_from_params, linear_rotation_matrix, shift_from_rotation

dev, f64 = torch.device("cuda"), torch.float64
torch.manual_seed(0)
worst = 0.0
for k in (2, 3, 5):
    w = torch.randn(8, 4, k, k, k, device=dev, dtype=f64)
    axis, angle = axis_angle_from_params(torch.randn(6, 4, device=dev, dtype=f64))
    shift = shift_from_rotation(linear_rotation_matrix(axis, angle))
    err = (shift_kernel(w, shift) - fft_rotate_kernel(w, axis, angle)).abs().max().item()
    worst = max(worst, err)
    x = torch.randn(6, 4, 9, 9, device=dev, dtype=f64, requires_grad=True)
    outs = []
    real, imag = shift_operators(shift, k)
    mix = shift_matrix(real, imag, k // 2)
    for p in MIXED_PATHS:
        outs.append(per_sample_mixed_conv(x, w, mix, path=p))
    for p in PATHS:
        outs.append(per_sample_conv(x, shift_kernel(w, shift, plane=k // 2), path=p))
    worst = max(worst, max((o - outs[0]).abs().max().item() for o in outs))
    # 3D: both per_sample_mixed_conv paths against the materialised 3D kernels
    v = torch.randn(6, 4, 5, 6, 7, device=dev, dtype=f64)
    ref = per_sample_conv(v, shift_kernel(w, shift), padding=k // 2)
    for p in MIXED_PATHS:
        worst = max(worst, (per_sample_mixed_conv(v, w, shift_matrix(real, imag), padding=k // 2, path=p) - ref).abs().max().item())
# the whole layer against the oracle layer with the same parameters
layer = CrossDConv(2, 16, 32, 3, padding=1, bias=False).to(dev, f64)
oracle = FFTCrossDConv2d(16, 32, 3, padding=1).to(dev, f64)
with torch.no_grad():
    layer.rotation_net[3].weight.mul_(10)
    oracle.weights_3d.copy_(layer.weight)
    oracle.rotation_params.load_state_dict(layer.rotation_net.state_dict())
for size in (4, 12):  # 16 positions take the tap-mixing path on CUDA, 144 the materialised kernels
    x = torch.randn(4, 16, size, size, device=dev, dtype=f64)
    worst = max(worst, (layer(x) - oracle(x)).abs().max().item())
print(f"max abs difference over all checks: {worst:.2e}")
assert worst < 1e-9, worst
print("correctness OK")
PYEOF
"$PY" -m pytest -q tests/networks/layers -x -p no:cacheprovider || echo "WARNING: layer tests failed (see above)"

echo "== layers.py (paper's Table III shapes)"
"$PY" benchmarks/layers.py --device cuda --out "$DEST" --profile
echo "== networks.py (ResNet18 batch 64 224x224 TF32; 3D layer (4,64,32,96,96); 3D UNet/ResNet18 against MONAI's)"
"$PY" benchmarks/networks.py --device cuda --out "$DEST"
echo "== bound.py (what bounds the Cross-D ResNet18 on this card)"
"$PY" benchmarks/bound.py --device cuda --out "$DEST"
echo "== paths_3d.py (3D per-sample formulations: the data for select_path's CUDA thresholds)"
"$PY" benchmarks/paths_3d.py --device cuda --out "$DEST"
echo "== done $(date -u +%FT%TZ); results in $DEST"
