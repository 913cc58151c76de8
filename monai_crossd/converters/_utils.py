"""Helpers shared by the converters: option look-up (:func:`monai_crossd.utils.look_up`), module tree rewriting,
argument expansion."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from monai_crossd.networks.layers.conv_args import expand_2d_to_3d as expand
from monai_crossd.utils import look_up as choice

__all__ = ["choice", "expand", "finish_like", "rewrite_modules"]



def finish_like(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` the device, dtype, training mode and ``requires_grad`` flags of ``old``."""
    tensors = list(old.parameters(recurse=False)) + list(old.buffers(recurse=False))
    floats = [t for t in tensors if t.is_floating_point()]
    if floats:
        new.to(device=floats[0].device, dtype=floats[0].dtype)
    elif tensors:
        new.to(device=tensors[0].device)
    new.train(old.training)
    flags = {name: p.requires_grad for name, p in old.named_parameters()}
    for name, p in new.named_parameters():
        if name in flags:
            p.requires_grad_(flags[name])
    return new


def rewrite_modules(model: nn.Module, visit: Callable[[nn.Module, str], nn.Module | None]) -> nn.Module:
    """Rewrite a module tree in place, top-down.

    ``visit(module, path)`` returns the module to put at ``path`` (itself to keep it without looking
    inside) or None to descend into its children. A module reachable under several paths is visited
    once, and its replacement is shared in the same way.

    Returns:
        the (possibly replaced) root.
    """
    memo: dict[int, nn.Module] = {}

    def walk(module: nn.Module, path: str) -> nn.Module:
        if id(module) in memo:
            return memo[id(module)]
        new = visit(module, path)
        if new is None:
            for name, child in list(module._modules.items()):
                if child is None:
                    continue
                replaced = walk(child, f"{path}.{name}" if path else name)
                if replaced is not child:
                    module._modules[name] = replaced
            new = module
        memo[id(module)] = new
        return new

    return walk(model, "")
