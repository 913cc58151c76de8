"""Convolution arguments, each rule once: tuple normalisation, explicit padding, output size, 2D -> 3D expansion."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PADDING_MODES", "conv_output_size", "conv_tuple", "expand_2d_to_3d", "padding_pairs"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  #: torch's ``padding_mode`` values


_POSITIVE = ("stride", "dilation")  # arguments that must be >= 1 (padding-like ones may be 0)


def conv_tuple(value: Sequence[int] | int, n: int, name: str) -> tuple[int, ...]:
    """``value`` as ``n`` ints (an int is repeated): positive for ``stride`` and ``dilation``, else non-negative.

    Raises:
        ValueError: naming ``name``, for another length or a value out of range or not an int.

    Example:
        >>> conv_tuple(2, 3, "stride")
        (2, 2, 2)
    """
    low, kind = (1, "positive") if name in _POSITIVE else (0, "non-negative")
    out = (value,) * n if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else (value,)
    if len(out) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in out):
        raise ValueError(f"`{name}` should be a {kind} int or a sequence of {n} such ints, got {value!r}.")
    return out


def padding_pairs(padding: Sequence[int] | str, kernel_size: int, dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(before, after)`` padding per spatial dim for ``padding`` ints, ``"valid"`` or ``"same"`` (stride 1).

    ``"same"`` pads ``dilation * (kernel_size - 1)`` in total, the extra voxel of an odd total after, as torch does.

    Example:
        >>> padding_pairs("same", 4, (1, 2))
        ((1, 2), (3, 3))
    """
    if padding == "valid":
        return ((0, 0),) * len(dilation)
    if padding == "same":
        totals = [d * (kernel_size - 1) for d in dilation]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in padding)  # type: ignore[union-attr]


def conv_output_size(
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int] | int = 1,
    padding: Sequence[int] | int = 0,
    dilation: Sequence[int] | int = 1,
) -> list[int]:
    """Output size per spatial dim of a convolution with symmetric integer ``padding`` (torch's formula).

    Example:
        >>> conv_output_size((32, 31), (3, 3), stride=2, padding=1)
        [16, 16]
    """
    n = len(spatial)
    st, pd, dl = conv_tuple(stride, n, "stride"), conv_tuple(padding, n, "padding"), conv_tuple(dilation, n, "dilation")
    return [(s + 2 * p - d * (k - 1) - 1) // t + 1 for s, k, t, p, d in zip(spatial, kernel_size, st, pd, dl)]


def expand_2d_to_3d(value):
    """A 2D argument ``(h, w)`` as a 3D one ``(h, h, w)`` for ``(D, H, W)``: depth takes the first in-plane value.

    Ints, floats, strings and None pass through.

    Example:
        >>> expand_2d_to_3d((2, 1)), expand_2d_to_3d("same"), expand_2d_to_3d(3)
        ((2, 2, 1), 'same', 3)
    """
    if value is None or isinstance(value, (int, float, str)):
        return value
    value = tuple(value)
    return (value[0], *value)
