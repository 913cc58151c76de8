from __future__ import annotations

from .reference import convert_reference_state_dict

__all__ = ["convert_reference_state_dict"]
