"""2D model -> Cross-D model: every ``nn.Conv2d`` becomes a function-preserving :class:`CrossDConv`.

Cross-D Conv (Yavuz & Yang, arXiv 2411.02441) keeps a 3D knowledge base per layer; a 2D model converted
here computes what it computed before (the rotation network starts at ``R = I`` and the 2D kernel is the
middle plane of the shifted knowledge base, see :meth:`CrossDConv.from_conv`) and can then be fine-tuned,
or turned into a 3D model sharing its ``state_dict`` with :func:`convert_to_3d` ``(method="crossd")``.
"""

from __future__ import annotations

import copy
import inspect

import torch.nn as nn

from monai_crossd.converters._utils import choice, rewrite_modules
from monai_crossd.converters.acs_conv import ACSConv
from monai_crossd.converters.report import ConversionReport
from monai_crossd.networks.blocks.crossd_conv import DEPTH_INITS, CrossDConv

__all__ = ["check_crossd_kwargs", "convert_to_crossd"]

#: CrossDConv arguments read from the converted convolution; ``conv_kwargs`` may not set them.
FROM_CONV = frozenset(
    {"spatial_dims", "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias", "padding_mode"}
)


def check_crossd_kwargs(conv_kwargs: dict, name: str = "conv_kwargs") -> dict:
    """Check extra :class:`CrossDConv` arguments (``rotation``, ``kernel_3d``, ``rotation_channels``)."""
    allowed = [p for p in inspect.signature(CrossDConv.__init__).parameters if p not in FROM_CONV and p != "self"]
    for key in conv_kwargs:
        if key in FROM_CONV:
            raise ValueError(f"`{name}` may not set {key!r}: it is read from each convolution; allowed keys are {tuple(allowed)}.")
        if key not in allowed:
            choice(key, allowed, f"{name} key")
    return dict(conv_kwargs)


def convert_to_crossd(model: nn.Module, depth_init: str = "zeros", **conv_kwargs) -> tuple[nn.Module, ConversionReport]:
    """Replace every ``nn.Conv2d`` of a copy of ``model`` with :meth:`CrossDConv.from_conv`.

    The converted model computes the same function as ``model`` (exactly at initialisation, up to float
    rounding) for 2D inputs ``(B, C, H, W)``. Any stride, padding (including ``"same"``/``"valid"`` and every
    ``padding_mode``), dilation, group count and bias is carried over. Left as they are, and listed in
    ``report.skipped`` with the reason: convolutions with a non-square kernel (a Cross-D knowledge base is
    cubic) and subclasses of ``nn.Conv2d`` (their ``forward`` may do more than a convolution). Layers that
    are already :class:`CrossDConv` or :class:`ACSConv` are kept and not looked into. ``model`` is not
    modified.

    Args:
        model: any ``nn.Module`` (a 2D network, or a single ``nn.Conv2d``).
        depth_init: how the knowledge base is filled outside the 2D plane: ``"zeros"`` or ``"replicate"``,
            see :meth:`CrossDConv.from_conv`. Defaults to ``"zeros"``.
        conv_kwargs: other :class:`CrossDConv` arguments for every new layer (``rotation``,
            ``kernel_3d``, ``rotation_channels``).

    Returns:
        ``(converted, report)``: a new module and a :class:`ConversionReport` (``method="crossd"``) whose
        ``replaced``/``skipped`` are keyed by dotted module path (``""`` for ``model`` itself).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: for an unknown ``depth_init`` or ``conv_kwargs`` key.

    Example:
        >>> import torchvision
        >>> net, report = convert_to_crossd(torchvision.models.resnet18())
        >>> report.replaced["conv1"]
        'Conv2d -> CrossDConv (kernel 7, depth_init=zeros)'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` should be an nn.Module, got {type(model).__name__}.")
    depth_init = choice(depth_init, DEPTH_INITS, "depth_init")
    conv_kwargs = check_crossd_kwargs(conv_kwargs)
    report = ConversionReport(method="crossd")

    def visit(module: nn.Module, path: str) -> nn.Module | None:
        if isinstance(module, (CrossDConv, ACSConv)):
            return module
        if not isinstance(module, nn.Conv2d):
            return None
        if type(module) is not nn.Conv2d:
            report.skipped[path] = f"{type(module).__name__} is a subclass of nn.Conv2d: its forward may differ from a plain convolution"
            return module
        if module.kernel_size[0] != module.kernel_size[1]:
            report.skipped[path] = f"non-square kernel {tuple(module.kernel_size)}: a Cross-D knowledge base is cubic"
            return module
        new = CrossDConv.from_conv(module, spatial_dims=2, depth_init=depth_init, **conv_kwargs)
        new.train(module.training)
        new.weight.requires_grad_(module.weight.requires_grad)
        report.replaced[path] = f"Conv2d -> CrossDConv (kernel {module.kernel_size[0]}, depth_init={depth_init})"
        return new

    converted = rewrite_modules(copy.deepcopy(model), visit)
    return converted, report
