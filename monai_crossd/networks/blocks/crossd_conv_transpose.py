"""Cross-D transposed convolution: the up-sampling counterpart of :class:`CrossDConv` (arXiv 2411.02441).

The layer keeps one knowledge base ``U`` in ``nn.ConvTranspose3d``'s layout ``(in, out / groups, K, K, K)``
and a rotation network on its input; ``U`` is shifted per sample exactly as in :class:`CrossDConv` (the
shift acts on the kernel taps only), and the middle plane of the shifted kernel (2D) or all of it (3D)
is the transposed-convolution kernel of that sample. A 2D and a 3D layer share one ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.conv_args import conv_tuple
from monai_crossd.networks.layers.per_sample_conv import per_sample_conv_transpose

__all__ = ["CrossDConvTranspose"]


class CrossDConvTranspose(CrossDConv):
    """Cross-D transposed convolution for 2D ``(B, C, H, W)`` or 3D ``(B, C, D, H, W)`` inputs.

    Arguments as :class:`CrossDConv` and ``nn.ConvTranspose3d``: ``padding`` and ``output_padding`` are ints or
    ``spatial_dims`` ints, ``padding_mode`` can only be ``"zeros"`` (as in PyTorch). ``weight`` has shape
    ``(in_channels, out_channels / groups, K, K, K)``; ``rotation_net`` reads the input.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: ``K`` (the knowledge base is cubic).
        stride: as ``nn.ConvTranspose3d``. Defaults to 1.
        padding: as ``nn.ConvTranspose3d``. Defaults to 0.
        output_padding: as ``nn.ConvTranspose3d``. Defaults to 0.
        groups: as ``nn.ConvTranspose3d``. Defaults to 1.
        bias: add a learnable bias. Defaults to True.
        dilation: as ``nn.ConvTranspose3d``. Defaults to 1.
        kwargs: ``rotation``, ``kernel_3d``, ``rotation_channels``, ``rotation_init`` as :class:`CrossDConv`;
            ``padding_mode="zeros"``.

    Example:
        >>> up = CrossDConvTranspose(2, 8, 4, 3, stride=2, padding=1, output_padding=1)
        >>> up(torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 4, 32, 32])
        >>> up3d = CrossDConvTranspose(3, 8, 4, 3, stride=2, padding=1, output_padding=1)
        >>> up3d.load_state_dict(up.state_dict())
        <All keys matched successfully>
        >>> up3d(torch.randn(2, 8, 4, 16, 16)).shape
        torch.Size([2, 4, 8, 32, 32])
    """

    transposed = True

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        output_padding: Sequence[int] | int = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Sequence[int] | int = 1,
        padding_mode: str = "zeros",
        **kwargs,
    ) -> None:
        if isinstance(padding, str):
            raise ValueError(f"`padding` should be ints for a transposed convolution, got {padding!r}.")
        if padding_mode != "zeros":
            raise ValueError(f"`padding_mode` should be 'zeros' for a transposed convolution, got {padding_mode!r}.")
        super().__init__(
            spatial_dims, in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=bias, padding_mode=padding_mode, **kwargs,
        )  # fmt: skip
        self.output_padding = conv_tuple(output_padding, spatial_dims, "output_padding")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"`output_padding` should be smaller than `stride` or `dilation`, got output_padding="
                    f"{output_padding!r}, stride={stride!r}, dilation={dilation!r}."
                )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, output_padding={self.output_padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, O, H', W')`` or ``(B, C, D, H, W) -> (B, O, D', H', W')``, with
        ``H' = (H - 1) stride - 2 padding + dilation (K - 1) + output_padding + 1`` as ``nn.ConvTranspose3d``."""
        self._check_input(x)
        kernels = self.static_kernel() if x.shape[0] == 0 else self.kernels(x)  # an empty batch: an empty output
        return per_sample_conv_transpose(
            x, kernels, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )
