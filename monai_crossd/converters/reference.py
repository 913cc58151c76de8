"""Key mapping from the authors' implementation (convergedmachine/Cross-D-Conv) to ours.

The authors' layer stores the knowledge base as ``weights_3d`` and the rotation network as
``rotation_params.{0,1,3}``; ours names them ``weight`` and ``rotation_net.{0,1,3}``. Everything else
(BatchNorm, linear layers of a ResNet built from their layer) keeps its key.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["convert_reference_state_dict"]

_RENAMES = (("weights_3d", "weight"), ("rotation_params", "rotation_net"))


def _rename(key: str) -> str:
    parts = key.split(".")
    for i, part in enumerate(parts):
        for old, new in _RENAMES:
            if part == old:
                parts[i] = new
    return ".".join(parts)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a checkpoint of the authors' Cross-D layer or network to :class:`~monai_crossd.networks.CrossDConv` keys.

    Works for a single layer (``weights_3d``, ``rotation_params.0.weight``, ...) and for whole networks
    under any prefix (``layer1.0.conv1.weights_3d`` -> ``layer1.0.conv1.weight``). The input is not modified;
    tensors are shared, not copied.

    Args:
        state_dict: the authors' ``state_dict``.

    Returns:
        a new ``dict`` with our key names, in the same order.

    Raises:
        TypeError: if ``state_dict`` is not a mapping.
        ValueError: if two keys map to the same new key.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"`state_dict` should be a mapping of names to tensors, got {type(state_dict).__name__}.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key)
        if new in out:
            raise ValueError(f"`state_dict` maps two keys to {new!r} (one of them {key!r}).")
        out[new] = value
    return out
