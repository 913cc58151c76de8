from __future__ import annotations

import pytest

from monai_crossd.utils import look_up


def test_look_up_returns_the_option_or_names_the_argument():
    assert look_up("zeros", ("zeros", "reflect"), "padding_mode") == "zeros"
    with pytest.raises(ValueError, match=r"^`padding_mode` should be one of \('zeros', 'reflect'\), got 'zero'\. Did you mean 'zeros'\?$"):
        look_up("zero", ("zeros", "reflect"), "padding_mode")
    with pytest.raises(ValueError, match=r"^`up_mode` should be one of \('deconv', 'resize'\), got \['x'\]\.$"):
        look_up(["x"], ("deconv", "resize"), "up_mode")  # unhashable: named, no hint
    with pytest.raises(ValueError, match=r"got 3\.$"):
        look_up(3, ("a", "b"), "k")
