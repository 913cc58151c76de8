"""MONAI's ``UNet`` (Kerfoot et al., 2018) with Cross-D convolutions (Yavuz & Yang, arXiv 2411.02441).

The structure, the argument names and the ``state_dict`` layout follow
``monai.networks.nets.UNet`` (``model.0`` down path, ``model.1`` skip connection around the next
level, ``model.2`` up path; ``conv``/``adn`` inside each convolution block; ``conv.unitN`` and
``residual`` inside residual units). MONAI's ``Convolution`` and ``ResidualUnit`` build their layers
through ``Conv[Conv.CONV, dim]`` with no way to choose the type, hence the two small Cross-D blocks here,
which build :class:`CrossDConv` layers directly.

Up-sampling (``up_mode``): ``"deconv"`` (default) is MONAI's structure, a transposed convolution by the
level's stride, here a :class:`~monai_crossd.networks.blocks.CrossDConvTranspose` (a Cross-D knowledge base
in ``ConvTranspose3d`` layout whose shape does not depend on ``spatial_dims``). ``"resize"`` is
nearest-neighbour up-sampling followed by a stride-1 Cross-D conv ("resize-convolution"), the only up path
before the transposed layer existed: it runs each up-conv at the higher resolution (in 3D 8x the
multiply-adds of the transposed conv). Both keep every parameter 2D/3D-shareable; their ``state_dict`` keys
are the same but the up-conv weights are transposed to each other, so a checkpoint loads only into the mode
it was trained with (``up_mode="resize"`` for checkpoints from before the transposed layer).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import ADN
from monai.networks.layers.factories import Act, Norm
from monai.networks.layers.simplelayers import SkipConnection

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.blocks.crossd_conv_transpose import CrossDConvTranspose
from monai_crossd.networks.nets._utils import check_conv_kwargs, check_cubic_kernel, check_input, make_act, make_norm
from monai_crossd.utils import look_up

__all__ = ["CrossDConvolution", "CrossDResidualUnit", "CrossDUNet", "UP_MODES"]

UP_MODES = ("deconv", "resize")


def _is_strided(strides: Sequence[int] | int) -> bool:
    return math.prod((strides,) if isinstance(strides, int) else tuple(strides)) != 1


def _adn(
    out_channels: int,
    spatial_dims: int,
    adn_ordering: str,
    act: tuple | str | None,
    norm: tuple | str | None,
    dropout: tuple | str | float | None,
    dropout_dim: int | None,
) -> ADN:
    try:
        return ADN(
            ordering=adn_ordering,
            in_channels=out_channels,
            act=act,
            norm=norm,
            norm_dim=spatial_dims,
            dropout=dropout,
            dropout_dim=dropout_dim,
        )
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(
            f"could not build the norm/act/dropout layers from `norm`={norm!r}, `act`={act!r}, "
            f"`dropout`={dropout!r}, `adn_ordering`={adn_ordering!r} for {out_channels} channels: {err}"
        ) from err


class CrossDConvolution(nn.Sequential):
    """A Cross-D conv followed by norm, dropout and activation: MONAI's ``Convolution`` with a Cross-D ``conv``.

    ``-- [up] -- conv -- adn (Norm -- Dropout -- Act) --``; ``conv_only`` drops ``adn``. With
    ``is_transposed`` ``conv`` is a :class:`~monai_crossd.networks.blocks.CrossDConvTranspose` up-sampling by
    ``strides`` (padding ``K // 2``, output padding ``strides - 1``, as MONAI's transposed ``Convolution``).
    With ``upsample`` the input is first enlarged by ``strides`` (nearest neighbour, module ``up``) and
    ``conv`` has stride 1 (resize-convolution).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        strides: convolution stride, or up-sampling factor with ``upsample``. Defaults to 1.
        kernel_size: odd cubic kernel size (int or ``spatial_dims`` equal ints). Defaults to 3.
        adn_ordering: order of activation (A), dropout (D) and normalisation (N). Defaults to ``"NDA"``.
        act: MONAI act spec or None. Defaults to PReLU.
        norm: MONAI norm spec or None. Defaults to instance norm.
        dropout: dropout ratio or spec, or None. Defaults to None.
        dropout_dim: spatial dims of dropout (see MONAI ``ADN``). Defaults to 1.
        bias: convolution bias. Defaults to True.
        conv_only: no norm/dropout/activation. Defaults to False.
        upsample: up-sample by ``strides`` before a stride-1 conv. Defaults to False.
        is_transposed: a Cross-D transposed conv by ``strides``. Defaults to False.
        conv_kwargs: extra :class:`~monai_crossd.networks.blocks.CrossDConv` arguments. Defaults to None.

    Example:
        >>> block = CrossDConvolution(2, 4, 8, strides=2)
        >>> block(torch.randn(2, 4, 16, 16)).shape
        torch.Size([2, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int = 1,
        kernel_size: Sequence[int] | int = 3,
        adn_ordering: str = "NDA",
        act: tuple | str | None = Act.PRELU,
        norm: tuple | str | None = Norm.INSTANCE,
        dropout: tuple | str | float | None = None,
        dropout_dim: int | None = 1,
        bias: bool = True,
        conv_only: bool = False,
        upsample: bool = False,
        conv_kwargs: Mapping | None = None,
        is_transposed: bool = False,
    ) -> None:
        super().__init__()
        if upsample and is_transposed:
            raise ValueError("`upsample` and `is_transposed` are two ways to up-sample; set one of them.")
        k = check_cubic_kernel(kernel_size, spatial_dims, "kernel_size")
        kw = check_conv_kwargs(conv_kwargs)
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        conv_strides: Sequence[int] | int = strides
        if upsample:
            conv_strides = 1
            if _is_strided(strides):
                scale = float(strides) if isinstance(strides, int) else tuple(float(s) for s in strides)
                self.add_module("up", nn.Upsample(scale_factor=scale, mode="nearest"))
        if is_transposed:
            output_padding = [s - 1 for s in ((strides,) * spatial_dims if isinstance(strides, int) else strides)]
            conv: nn.Module = CrossDConvTranspose(
                spatial_dims, in_channels, out_channels, k, stride=strides, padding=k // 2,
                output_padding=output_padding, bias=bias, **kw,
            )  # fmt: skip
        else:
            conv = CrossDConv(
                spatial_dims, in_channels, out_channels, k, stride=conv_strides, padding=k // 2, bias=bias, **kw
            )
        self.add_module("conv", conv)
        if conv_only or (act is None and norm is None and dropout is None):
            return
        self.add_module("adn", _adn(out_channels, spatial_dims, adn_ordering, act, norm, dropout, dropout_dim))


class CrossDResidualUnit(nn.Module):
    """``subunits`` :class:`CrossDConvolution` blocks plus a residual path: MONAI's ``ResidualUnit`` in Cross-D.

    The residual path is the identity, or a Cross-D conv where the shape changes (``kernel_size`` and
    ``strides`` when strided, else 1x1). Arguments as :class:`CrossDConvolution`, plus ``subunits``
    (number of convolutions, at least 1; defaults to 2) and ``last_conv_only`` (no norm/dropout/activation
    after the last one; defaults to False).

    Example:
        >>> unit = CrossDResidualUnit(3, 4, 8, strides=2, subunits=2)
        >>> unit(torch.randn(2, 4, 8, 16, 16)).shape
        torch.Size([2, 8, 4, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int = 1,
        kernel_size: Sequence[int] | int = 3,
        subunits: int = 2,
        adn_ordering: str = "NDA",
        act: tuple | str | None = Act.PRELU,
        norm: tuple | str | None = Norm.INSTANCE,
        dropout: tuple | str | float | None = None,
        dropout_dim: int | None = 1,
        bias: bool = True,
        last_conv_only: bool = False,
        conv_kwargs: Mapping | None = None,
    ) -> None:
        super().__init__()
        k = check_cubic_kernel(kernel_size, spatial_dims, "kernel_size")
        kw = check_conv_kwargs(conv_kwargs)
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.conv = nn.Sequential()
        n = max(1, subunits)
        for su in range(n):
            self.conv.add_module(
                f"unit{su:d}",
                CrossDConvolution(
                    spatial_dims,
                    in_channels if su == 0 else out_channels,
                    out_channels,
                    strides=strides if su == 0 else 1,
                    kernel_size=k,
                    adn_ordering=adn_ordering,
                    act=act,
                    norm=norm,
                    dropout=dropout,
                    dropout_dim=dropout_dim,
                    bias=bias,
                    conv_only=last_conv_only and su == n - 1,
                    conv_kwargs=kw,
                ),
            )
        self.residual: nn.Module = nn.Identity()
        if _is_strided(strides) or in_channels != out_channels:
            rk, rpad = (k, k // 2) if _is_strided(strides) else (1, 0)
            self.residual = CrossDConv(
                spatial_dims, in_channels, out_channels, rk, stride=strides, padding=rpad, bias=bias, **kw
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial) -> (B, C_out, *spatial / strides)``."""
        return self.conv(x) + self.residual(x)


class CrossDUNet(nn.Module):
    """MONAI's ``UNet`` with Cross-D convolutions, for 2D ``(B, C, H, W)`` or 3D ``(B, C, D, H, W)`` inputs.

    Each level is ``Sequential(down, SkipConnection(next level), up)``; the down path is a strided
    :class:`CrossDConvolution` (or :class:`CrossDResidualUnit` with ``num_res_units > 0``), the up path
    restores the resolution and is followed by a residual unit with ``num_res_units > 0``. ``norm``,
    ``act`` and ``dropout`` reach every block; ``conv_kwargs`` reaches every Cross-D conv. The rotation
    networks inside the Cross-D layers keep the paper's own BatchNorm and ReLU.

    The up path (see the module docstring) is a Cross-D transposed conv by the level's stride
    (``up_mode="deconv"``, MONAI's structure and cost) or nearest-neighbour up-sampling and a Cross-D conv
    (``"resize"``). Either way a 2D network's ``state_dict`` loads strictly into the 3D one of the same
    configuration and back, provided the norm's parameters do not depend on ``spatial_dims`` (batch,
    instance, group do; MONAI's "layer" with a spatial ``normalized_shape`` does not).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: channels per level, top first; at least 2 values.
        strides: stride per level; ``len(channels) - 1`` values (extra ones are ignored with a warning).
        kernel_size: odd cubic kernel size of the convolutions. Defaults to 3.
        up_kernel_size: odd cubic kernel size of the up-path convolutions. Defaults to 3.
        num_res_units: convolutions per residual unit; 0 uses plain convolution blocks. Defaults to 0.
        act: MONAI act spec. Defaults to PReLU.
        norm: MONAI norm spec. Defaults to instance norm.
        dropout: dropout ratio. Defaults to 0.0.
        bias: convolution bias. Defaults to True.
        adn_ordering: order of activation (A), dropout (D) and normalisation (N). Defaults to ``"NDA"``.
        conv_kwargs: extra :class:`~monai_crossd.networks.blocks.CrossDConv` arguments for every Cross-D
            conv, e.g. ``{"rotation": False}``. Defaults to None.
        up_mode: ``"deconv"`` or ``"resize"``; a checkpoint loads only with the mode it was trained with.
            Defaults to ``"deconv"``.

    Example:
        >>> net = CrossDUNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
        >>> net(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
        >>> net3d = CrossDUNet(3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
        >>> net3d.load_state_dict(net.state_dict())
        <All keys matched successfully>
        >>> net3d(torch.randn(2, 1, 16, 32, 32)).shape
        torch.Size([2, 3, 16, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel_size: Sequence[int] | int = 3,
        up_kernel_size: Sequence[int] | int = 3,
        num_res_units: int = 0,
        act: tuple | str = Act.PRELU,
        norm: tuple | str = Norm.INSTANCE,
        dropout: float = 0.0,
        bias: bool = True,
        adn_ordering: str = "NDA",
        conv_kwargs: Mapping | None = None,
        up_mode: str = "deconv",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` should be 2 or 3, got {spatial_dims!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` should be a positive int, got {value!r}.")
        channels, strides = tuple(channels), tuple(strides)
        if len(channels) < 2:
            raise ValueError(f"the length of `channels` should be no less than 2, got {channels!r}.")
        if not all(isinstance(c, int) and c >= 1 for c in channels):
            raise ValueError(f"`channels` should be positive ints, got {channels!r}.")
        delta = len(strides) - (len(channels) - 1)
        if delta < 0:
            raise ValueError(
                f"the length of `strides` should equal to `len(channels) - 1` ({len(channels) - 1}), got {strides!r}."
            )
        if delta > 0:
            warnings.warn(
                f"`len(strides) > len(channels) - 1`, the last {delta} values of strides will not be used.",
                stacklevel=2,
            )
        if isinstance(num_res_units, bool) or not isinstance(num_res_units, int) or num_res_units < 0:
            raise ValueError(f"`num_res_units` should be a non-negative int, got {num_res_units!r}.")
        up_mode = look_up(up_mode, UP_MODES, "up_mode")
        padding_mode = (conv_kwargs or {}).get("padding_mode", "zeros")
        if up_mode == "deconv" and padding_mode != "zeros":
            raise ValueError(
                f"`conv_kwargs` padding_mode={padding_mode!r} cannot apply to the transposed up-convs of "
                "up_mode='deconv' (only zeros); use up_mode='resize'."
            )
        make_norm(norm, spatial_dims, channels[0])  # fail early, with the argument named
        make_act(act)
        self.dimensions = spatial_dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels, self.strides = channels, strides
        self.kernel_size = check_cubic_kernel(kernel_size, spatial_dims, "kernel_size")
        self.up_kernel_size = check_cubic_kernel(up_kernel_size, spatial_dims, "up_kernel_size")
        self.num_res_units, self.act, self.norm, self.dropout, self.bias = num_res_units, act, norm, dropout, bias
        self.adn_ordering, self.up_mode = adn_ordering, up_mode
        self.conv_kwargs = check_conv_kwargs(conv_kwargs)
        self.model = self._create_block(in_channels, out_channels, channels, strides, True)

    def _create_block(
        self, inc: int, outc: int, channels: Sequence[int], strides: Sequence[int], is_top: bool
    ) -> nn.Sequential:
        """``Sequential(down, SkipConnection(lower levels), up)``, built bottom-up by recursion."""
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            subblock: nn.Module = self._create_block(c, c, channels[1:], strides[1:], False)
            upc = c * 2
        else:
            subblock = self._get_down_layer(c, channels[1], 1, False)  # the bottom layer
            upc = c + channels[1]
        down = self._get_down_layer(inc, c, s, is_top)
        up = self._get_up_layer(upc, outc, s, is_top)
        return nn.Sequential(down, SkipConnection(subblock), up)

    def _block_args(self) -> dict:
        return dict(
            adn_ordering=self.adn_ordering,
            act=self.act,
            norm=self.norm,
            dropout=self.dropout,
            bias=self.bias,
            conv_kwargs=self.conv_kwargs,
        )

    def _get_down_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        if self.num_res_units > 0:
            return CrossDResidualUnit(
                self.dimensions, in_channels, out_channels, strides=strides, kernel_size=self.kernel_size,
                subunits=self.num_res_units, **self._block_args(),
            )  # fmt: skip
        return CrossDConvolution(
            self.dimensions, in_channels, out_channels, strides=strides, kernel_size=self.kernel_size,
            **self._block_args(),
        )  # fmt: skip

    def _get_up_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        conv_only = is_top and self.num_res_units == 0
        conv: nn.Module = CrossDConvolution(
            self.dimensions, in_channels, out_channels, strides=strides, kernel_size=self.up_kernel_size,
            conv_only=conv_only, upsample=self.up_mode == "resize", is_transposed=self.up_mode == "deconv",
            **self._block_args(),
        )  # fmt: skip
        if self.num_res_units > 0:
            ru = CrossDResidualUnit(
                self.dimensions, out_channels, out_channels, strides=1, kernel_size=self.kernel_size,
                subunits=1, last_conv_only=is_top, **self._block_args(),
            )  # fmt: skip
            conv = nn.Sequential(conv, ru)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``.

        Raises:
            TypeError: ``x`` is not a tensor.
            ValueError: ``x`` does not have ``spatial_dims + 2`` dimensions or ``in_channels`` channels.
        """
        check_input(x, self.dimensions, self.in_channels, type(self).__name__)
        return self.model(x)
