"""A literal FFT implementation of the paper's Eqs. 1-8 (Yavuz & Yang, arXiv 2411.02441).

Written from the equations, with the authors' conventions (``fftfreq`` grid, ``indexing="ij"``,
``eps = 1e-8`` on the axis norm, middle slice of the first kernel axis, per-sample grouped conv).
It is the test oracle and the "authors-style" baseline of the benchmarks: deliberately naive.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FFTCrossDConv2d", "FFTCrossDConvTranspose", "fft_rotate_kernel"]


def fft_rotate_kernel(weight: torch.Tensor, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Eqs. 3-8: ``Re(iFFT(FFT(U) exp(-2 pi i (f'_x + f'_y + f'_z))))`` with ``f' = (I + theta [k]x) f``.

    Args:
        weight: ``(O, I, K, K, K)``.
        axis: ``(B, 3)`` unit axes.
        angle: ``(B,)`` angles.

    Returns:
        ``(B, O, I, K, K, K)``.
    """
    b, k = axis.shape[0], weight.shape[-1]
    spectrum = torch.fft.fftn(weight, dim=(-3, -2, -1))
    freq = torch.fft.fftfreq(k, dtype=weight.dtype, device=weight.device)
    fx, fy, fz = torch.meshgrid(freq, freq, freq, indexing="ij")
    f = torch.stack([fx, fy, fz])  # (3, K, K, K)
    kx, ky, kz = axis.unbind(1)
    zero = torch.zeros_like(kx)
    skew = torch.stack(
        [torch.stack([zero, -kz, ky], -1), torch.stack([kz, zero, -kx], -1), torch.stack([-ky, kx, zero], -1)], -2
    )
    rot = torch.eye(3, dtype=weight.dtype, device=weight.device) + angle.view(b, 1, 1) * skew
    f_rot = torch.einsum("bij,jxyz->bixyz", rot, f)  # f' = R f
    phase = torch.exp(-2j * math.pi * f_rot.sum(1))  # (B, K, K, K)
    return torch.fft.ifftn(spectrum[None] * phase[:, None, None], dim=(-3, -2, -1)).real


class FFTCrossDConv2d(nn.Module):
    """The layer exactly as the equations read: FFT of the whole 3D kernel per sample, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1, padding=0, groups=1):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.groups = stride, padding, groups
        self.weights_3d = nn.Parameter(torch.empty(out_channels, in_channels // groups, *(kernel_size,) * 3))
        nn.init.kaiming_normal_(self.weights_3d, mode="fan_out", nonlinearity="relu")
        self.rotation_params = nn.Sequential(
            nn.Conv2d(in_channels, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        rot_map = self.rotation_params(x).flatten(2)  # Eq. 1
        rot_vec = (rot_map * torch.softmax(rot_map, dim=-1)).sum(-1)
        k = rot_vec[:, :3]
        axis = k / (k.norm(dim=1, keepdim=True) + 1e-8)
        angle = torch.tanh(rot_vec[:, 3]) * (math.pi / 4)
        kernels = fft_rotate_kernel(self.weights_3d, axis, angle)[:, :, :, self.kernel_size // 2]
        out = F.conv2d(
            x.reshape(1, -1, *x.shape[2:]),
            kernels.reshape(-1, *kernels.shape[2:]),
            stride=self.stride,
            padding=self.padding,
            groups=b * self.groups,
        )
        return out.view(b, self.out_channels, *out.shape[2:])


class FFTCrossDConvTranspose(nn.Module):
    """Eqs. 1-8 followed by a transposed convolution, literally: FFT of the whole knowledge base per sample,
    the middle plane (2D) or all of it (3D) as that sample's ``conv_transpose`` kernel, one call per sample.

    The knowledge base has ``nn.ConvTranspose3d``'s layout ``(in, out / groups, K, K, K)``; parameter names
    are ours (``weight``, ``bias``, ``rotation_net``) so that a ``CrossDConvTranspose`` state_dict loads.
    """

    def __init__(self, spatial_dims, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, dilation=1):  # fmt: skip
        super().__init__()
        self.spatial_dims, self.kernel_size = spatial_dims, kernel_size
        self.args = (stride, padding, output_padding, groups, dilation)
        k = kernel_size
        self.weight = nn.Parameter(torch.randn(in_channels, out_channels // groups, k, k, k))
        self.bias = nn.Parameter(torch.randn(out_channels))
        self.rotation_net = nn.Sequential(nn.Conv2d(in_channels, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rot_map = self.rotation_net(x.flatten(3) if x.ndim == 5 else x).flatten(2)  # Eq. 1
        rot_vec = (rot_map * torch.softmax(rot_map, dim=-1)).sum(-1)
        k = rot_vec[:, :3]
        axis = k / (k.norm(dim=1, keepdim=True) + 1e-8)
        angle = torch.tanh(rot_vec[:, 3]) * (math.pi / 4)
        kernels = fft_rotate_kernel(self.weight, axis, angle)
        if self.spatial_dims == 2:
            kernels = kernels[:, :, :, self.kernel_size // 2]
        conv_t = F.conv_transpose2d if self.spatial_dims == 2 else F.conv_transpose3d
        stride, padding, output_padding, groups, dilation = self.args
        return torch.cat(
            [conv_t(x[b : b + 1], kernels[b], self.bias, stride, padding, output_padding, groups, dilation)
             for b in range(x.shape[0])]
        )  # fmt: skip
