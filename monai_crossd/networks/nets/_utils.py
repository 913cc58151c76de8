"""Argument checks and layer builders shared by the Cross-D networks.

Every network here resolves ``norm``/``act`` specs (a string or a ``(name, kwargs)`` tuple, as in
MONAI bundles) through MONAI's factories, and forwards ``conv_kwargs`` to every Cross-D layer. The
helpers re-raise factory errors with the offending argument named, and check ``conv_kwargs`` before
any layer is built.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch.nn as nn
from monai.networks.layers.utils import get_act_layer, get_norm_layer

from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.utils import look_up

__all__ = ["check_conv_kwargs", "check_cubic_kernel", "check_input", "make_act", "make_norm", "CROSSD_RESERVED"]

#: CrossDConv arguments that the networks set themselves; ``conv_kwargs`` may not override them.
CROSSD_RESERVED = frozenset(
    {"spatial_dims", "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"}
)


def check_conv_kwargs(conv_kwargs: Mapping | None, name: str = "conv_kwargs") -> dict:
    """Validate extra :class:`~monai_crossd.networks.blocks.CrossDConv` arguments.

    Args:
        conv_kwargs: ``None`` or a mapping of ``CrossDConv`` argument names (``rotation``, ``kernel_3d``,
            ``padding_mode``, ``rotation_channels``) to values.
        name: the argument name used in error messages. Defaults to ``"conv_kwargs"``.

    Returns:
        a new ``dict`` (empty for ``None``).

    Raises:
        TypeError: if ``conv_kwargs`` is not a mapping.
        ValueError: for a key the network sets itself or that ``CrossDConv`` does not accept.
    """
    if conv_kwargs is None:
        return {}
    if not isinstance(conv_kwargs, Mapping):
        raise TypeError(
            f"`{name}` should be a mapping of CrossDConv arguments or None, got {type(conv_kwargs).__name__}."
        )
    allowed = [p for p in inspect.signature(CrossDConv.__init__).parameters if p != "self"]
    free = [p for p in allowed if p not in CROSSD_RESERVED]
    for key in conv_kwargs:
        if key in CROSSD_RESERVED:
            raise ValueError(f"`{name}` may not set {key!r}: the network sets it; allowed keys are {tuple(free)}.")
        look_up(key, free, f"{name}` key (a CrossDConv argument)")
    return dict(conv_kwargs)


def check_input(x: object, spatial_dims: int, in_channels: int, net: str) -> None:
    """Check a network input up front: a tensor ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial axes.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` has the wrong number of dimensions or of channels; the message names ``x``, the network
            and the expected layout.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{net}: `x` should be a torch.Tensor, got {type(x).__name__}.")
    layout = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{net}: `x` should be {spatial_dims + 2}D {layout} for spatial_dims={spatial_dims}, got shape "
            f"{tuple(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{net}: `x` should have in_channels={in_channels} channels (dim 1 of {layout}), got shape {tuple(x.shape)}."
        )


def check_cubic_kernel(kernel_size: Sequence[int] | int, spatial_dims: int, name: str) -> int:
    """An odd cubic kernel size as one int (Cross-D knowledge bases are ``K x K x K``).

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd int or a sequence of ``spatial_dims`` equal ones.
    """
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        values = tuple(kernel_size)
        if len(values) != spatial_dims or len(set(values)) != 1:
            raise ValueError(
                f"`{name}` should be an int or {spatial_dims} equal ints (a cubic Cross-D kernel), got {kernel_size!r}."
            )
        kernel_size = values[0]
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"`{name}` should be a positive odd int, got {kernel_size!r}.")
    return kernel_size


def make_norm(norm: tuple | str, spatial_dims: int, channels: int, name: str = "norm") -> nn.Module:
    """``get_norm_layer(norm, spatial_dims, channels)`` with the argument named in errors."""
    try:
        return get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=channels)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"`{name}` should be a MONAI norm spec (str or (name, kwargs)), got {norm!r}: {err}") from err


def make_act(act: tuple | str, name: str = "act") -> nn.Module:
    """``get_act_layer(act)`` with the argument named in errors."""
    try:
        return get_act_layer(name=act)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"`{name}` should be a MONAI act spec (str or (name, kwargs)), got {act!r}: {err}") from err
