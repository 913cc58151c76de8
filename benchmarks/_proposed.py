"""The ``CrossDConv.forward`` proposed for ``blocks/crossd_conv.py``, measured side by side with the committed one.

The committed forward materialises the ``B`` shifted kernels and convolves (``kernels()`` +
``per_sample_conv``). The proposed one hands the shared knowledge base and the fused shift matrix to
:func:`~monai_crossd.networks.layers.per_sample_conv.per_sample_mixed_conv`, whose
:func:`~monai_crossd.networks.layers.per_sample_conv.select_path` may skip materialising the kernels
(small feature maps on CPU). Same outputs and gradients (``tests/networks/layers/test_paths.py``).
Kept here, not patched into the package, until the owner of ``crossd_conv.py`` adopts it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import shift_matrix, shift_operators
from monai_crossd.networks.layers.per_sample_conv import per_sample_conv, per_sample_mixed_conv

__all__ = ["proposed_forward", "use_proposed_forward"]


def proposed_forward(self: CrossDConv, x: torch.Tensor) -> torch.Tensor:
    self._check_input(x)
    pads = self._padding()
    if self.padding_mode == "zeros" and all(lo == hi for lo, hi in pads):
        padding = tuple(lo for lo, _ in pads)
    else:
        flat = [p for pair in reversed(pads) for p in pair]
        x = F.pad(x, flat, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        padding = 0
    args = (self.bias, self.stride, padding, self.dilation, self.groups)
    if not self.rotation or (self.spatial_dims == 3 and self.kernel_3d == "raw"):
        return per_sample_conv(x, self.static_kernel(), *args)
    real, imag = shift_operators(self.predict_shift(x).to(self.weight.dtype), self.kernel_size)
    return per_sample_mixed_conv(x, self.weight, shift_matrix(real, imag, self._plane()), *args)


@contextlib.contextmanager
def use_proposed_forward():
    """Within the block, every ``CrossDConv`` runs :func:`proposed_forward`."""
    original = CrossDConv.forward
    CrossDConv.forward = proposed_forward
    try:
        yield
    finally:
        CrossDConv.forward = original
