"""Builds and executes notebooks/01_crossd_conv.ipynb (run from the repo root)."""
import nbformat as nbf
from nbclient import NotebookClient

cells = [
    nbf.v4.new_markdown_cell("""# 01 · What a Cross-D convolution does

Cross-D Conv (Yavuz & Yang, arXiv 2411.02441) keeps one learnable 3D kernel `U` per layer, the
*knowledge base*. A small rotation network reads the input and predicts an axis `k` and an angle
`θ` per sample; `U` is phase-shifted in the Fourier domain with `R = I + θ[k]×`. A 2D image is
convolved with the middle plane of the shifted kernel, a volume with all of it.

This notebook shows, on a real MR slice:
1. the shift interpretation: the phase factor is a circular fractional **translation** of `U` by `d = Rᵀ(1,1,1)`;
2. how the 2D kernel changes as the predicted rotation varies;
3. that the 2D kernel is the middle plane of the 3D one, so a 2D-trained layer is a 3D layer."""),
    nbf.v4.new_code_cell("""import math
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import torch

from monai_crossd.networks import CrossDConv
from monai_crossd.networks.layers import linear_rotation_matrix, shift_from_rotation, shift_kernel

torch.manual_seed(0)
DATA = Path("..").resolve().parent / "shared" / "data"
if not DATA.exists():
    DATA = Path.cwd().resolve().parents[1] / "shared" / "data"
print("data:", DATA)"""),
    nbf.v4.new_markdown_cell("""## 1. The Fourier shift is a translation
`exp(-2πi (f'x + f'y + f'z))` with `f' = R f` equals `exp(-2πi d·f)` with `d = Rᵀ(1,1,1)`: the kernel
moves by `d` voxels (circularly). At `θ = 0`, `d = (1, 1, 1)`: a roll by one voxel. Below, a kernel with a
single bright voxel is shifted for growing `θ` about the depth axis: the voxel slides sub-voxel in-plane."""),
    nbf.v4.new_code_cell("""K = 7
U = torch.zeros(1, 1, K, K, K, dtype=torch.float64)
U[0, 0, K // 2 - 1, 2, 2] = 1.0  # lands at the centre of plane K // 2 after the roll by one
angles = torch.linspace(-math.pi / 4, math.pi / 4, 5, dtype=torch.float64)
axis = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).expand(len(angles), 3)
d = shift_from_rotation(linear_rotation_matrix(axis, angles))
planes = shift_kernel(U, d, plane=K // 2)[:, 0, 0]
fig, axes = plt.subplots(1, len(angles), figsize=(12, 2.8))
for a, t, p, s in zip(axes, angles, planes, d):
    a.imshow(p, cmap="RdBu_r", vmin=-1, vmax=1)
    a.set_title(f"θ={math.degrees(t):.0f}°\\nd=({s[0]:.2f},{s[1]:.2f},{s[2]:.2f})", fontsize=9)
    a.axis("off")
fig.suptitle("middle plane of the shifted kernel: a fractional translation (sinc ringing for non-integer d)")
plt.tight_layout(); plt.show()"""),
    nbf.v4.new_markdown_cell("""## 2. Per-sample kernels on a real MR slice
A Cross-D layer on slices of a real hippocampus T1 MR (MSD Task04). The rotation network predicts a
different rotation for each slice, hence a different 2D kernel per sample."""),
    nbf.v4.new_code_cell("""img = nib.load(sorted((DATA / "hippocampus" / "imagesTr").glob("*.nii.gz"))[0]).get_fdata()
img = (img - img.mean()) / img.std()
slices = torch.tensor(np.stack([img[:, :, z] for z in (8, 16, 24)]), dtype=torch.float32)[:, None]
layer = CrossDConv(2, in_channels=1, out_channels=1, kernel_size=5, padding=2).eval()
with torch.no_grad():
    layer.rotation_net[3].weight.mul_(20)  # an untrained net predicts tiny angles; exaggerate them
    shift = layer.predict_shift(slices)
    kernels = layer.kernels(slices)[:, 0, 0]
    out = layer(slices)[:, 0]
fig, axes = plt.subplots(3, 3, figsize=(8, 8))
for i in range(3):
    axes[i, 0].imshow(slices[i, 0], cmap="gray"); axes[i, 0].set_title(f"slice {i}")
    axes[i, 1].imshow(kernels[i], cmap="RdBu_r"); axes[i, 1].set_title(f"kernel, d=({shift[i, 1]:.2f},{shift[i, 2]:.2f})")
    axes[i, 2].imshow(out[i], cmap="gray"); axes[i, 2].set_title("output")
for a in axes.flat: a.axis("off")
plt.tight_layout(); plt.show()
print("kernel difference between samples 0 and 1:", float((kernels[0] - kernels[1]).abs().max()))"""),
    nbf.v4.new_markdown_cell("""## 3. The 2D kernel is the middle plane of the 3D kernel
The same `state_dict` loads into a 3D layer. On a volume of depth 1 (zero-padded in depth) only the middle
plane of the 3D kernel meets the data, so the 3D layer computes exactly what the 2D layer computes."""),
    nbf.v4.new_code_cell("""layer3d = CrossDConv(3, 1, 1, 5, padding=2).eval()
print(layer3d.load_state_dict(layer.state_dict(), strict=True))
with torch.no_grad():
    out3d = layer3d(slices[:, :, None])[:, 0, 0]
    k3 = layer3d.kernels(slices[:, :, None])[0, 0, 0]
print("max |3D on depth-1 volume - 2D|:", float((out3d - out).abs().max()))
fig, axes = plt.subplots(1, 5, figsize=(12, 2.6))
for z in range(5):
    axes[z].imshow(k3[z], cmap="RdBu_r", vmin=-float(k3.abs().max()), vmax=float(k3.abs().max()))
    axes[z].set_title(("middle plane = 2D kernel" if z == 2 else f"plane {z}"), fontsize=9); axes[z].axis("off")
plt.tight_layout(); plt.show()
volume = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None, None]  # (1, 1, D, H, W)
with torch.no_grad():
    print("3D output on the whole volume:", tuple(layer3d(volume).shape))"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
nbf.write(nb, "notebooks/01_crossd_conv.ipynb")
