"""Helpers shared by the library (:mod:`monai_crossd.networks`, :mod:`monai_crossd.converters`) and its applications."""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from monai.utils import look_up_option

__all__ = ["look_up"]


def look_up(value: Any, options: Collection, name: str) -> Any:
    """``value`` if it is one of ``options`` (MONAI's ``look_up_option``), else a ``ValueError`` naming the argument.

    Args:
        value: what the caller passed.
        options: the accepted values.
        name: the argument's name, for the message.

    Returns:
        the matching option.

    Raises:
        ValueError: ``"`name` should be one of (...), got 'x'. Did you mean 'y'?"`` (the hint when one is close).

    Example:
        >>> look_up("zeros", ("zeros", "reflect"), "padding_mode")
        'zeros'
        >>> look_up("zero", ("zeros", "reflect"), "padding_mode")
        Traceback (most recent call last):
        ...
        ValueError: `padding_mode` should be one of ('zeros', 'reflect'), got 'zero'. Did you mean 'zeros'?
    """
    try:
        return look_up_option(value, options, print_all_options=False)
    except ValueError:
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`{name}` should be one of {tuple(options)}, got {value!r}.{hint}") from None
