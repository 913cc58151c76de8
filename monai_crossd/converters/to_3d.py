"""2D model -> 3D model, by one of five ways of turning 2D convolutions into 3D ones.

``method``:

- ``"crossd"``: :meth:`CrossDConv.from_conv` with ``spatial_dims=3`` (Yavuz & Yang, arXiv 2411.02441); a
  :class:`CrossDConv` with ``spatial_dims=2`` becomes the 3D layer with the same ``state_dict``;
  ``ConvTranspose2d`` becomes a :class:`CrossDConvTranspose` the same way.
- ``"acs"``: :class:`ACSConv`, output channels split over axial/coronal/sagittal views (Yang et al., IEEE
  JBHI 2021); the weight keeps its 2D shape.
- ``"i3d"``: ``nn.Conv3d`` with the 2D kernel repeated along depth and divided by the depth ``K``
  (Carreira & Zisserman, CVPR 2017): a volume constant along depth gives the 2D output on every slice.
- ``"center"``: ``nn.Conv3d`` with the 2D kernel in the middle depth plane and zeros elsewhere: each
  slice sees the 2D convolution of itself, at first.
- ``"2.5d"``: ``nn.Conv3d`` with a ``(1, K, K)`` kernel: slice-wise 2D convolution.

The other layers follow :data:`LAYERS_3D`, one explicit table: BatchNorm/InstanceNorm (parameters and
running statistics copied), max/average/adaptive pools, ``Dropout2d``, ``nn.Upsample`` (bilinear becomes
trilinear), ``UpsamplingBilinear2d``/``UpsamplingNearest2d``, 2D padding layers and ``ConvTranspose2d``. 2D
arguments ``(h, w)`` become ``(h, h, w)`` for ``(D, H, W)``: depth, the first spatial dimension, takes the
first in-plane value (strides included, so downsampling stays isotropic). Layers without spatial
structure (activations, ``nn.Linear``, ``nn.Dropout``, ``GroupNorm``, ``LayerNorm``, containers, ...) are
kept. A module that is not in the table but has a 2D-specific type (a name with ``2d``, pixel shuffles,
fold/unfold) or holds a parameter or buffer with 4 or more dimensions raises a ValueError naming its path;
give it a converter in ``custom``. Functional 2D calls inside a ``forward`` cannot be seen.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from monai_crossd.converters._utils import choice, expand, finish_like, rewrite_modules
from monai_crossd.converters.acs_conv import ACSConv
from monai_crossd.converters.crossd import check_crossd_kwargs
from monai_crossd.converters.report import ConversionReport
from monai_crossd.networks.blocks.crossd_conv import DEPTH_INITS, CrossDConv
from monai_crossd.networks.blocks.crossd_conv_transpose import CrossDConvTranspose

__all__ = ["LAYERS_3D", "METHODS", "convert_to_3d", "crossd_conv_to_3d"]

METHODS = ("crossd", "acs", "i3d", "center", "2.5d")

#: ``ConvTranspose2d`` per method: ``"crossd"`` gives a :class:`CrossDConvTranspose`; there is no ACS transposed
#: convolution, ``"acs"`` uses ``"center"``.
TRANSPOSED = {"crossd": "crossd", "acs": "center", "i3d": "i3d", "center": "center", "2.5d": "2.5d"}

_2D_SPECIFIC = (nn.PixelShuffle, nn.PixelUnshuffle, nn.Fold, nn.Unfold)
_2D_NAME = re.compile(r"2d", re.IGNORECASE)


def crossd_conv_to_3d(layer: CrossDConv) -> CrossDConv:
    """The 3D layer (same class, arguments and ``state_dict``) of a 2D :class:`CrossDConv` or
    :class:`CrossDConvTranspose` (a new layer: a copy with its 2D arguments ``(h, w)`` as ``(h, h, w)``)."""
    if not isinstance(layer, CrossDConv) or layer.spatial_dims != 2:
        raise ValueError(f"`layer` should be a CrossDConv with spatial_dims=2, got {layer!r}.")
    new = copy.deepcopy(layer)  # every argument kept (rotation_init, kernel_3d, ...), parameters and buffers too
    new.spatial_dims = 3
    for name in ("stride", "padding", "dilation", "output_padding"):
        if hasattr(layer, name):
            setattr(new, name, expand(getattr(layer, name)))
    return new


def _factory(m: nn.Module) -> dict:
    """``device``/``dtype`` of ``m``'s first floating tensor, so that weights are copied without rounding."""
    tensors = [t for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)] if t.is_floating_point()]
    return {"device": tensors[0].device, "dtype": tensors[0].dtype} if tensors else {}


def _thin_depth(padding, kernel_h: int, dilation_h: int):
    """Depth padding of a ``(1, K, K)`` kernel that keeps the centre-tap alignment when it can."""
    if isinstance(padding, str):
        return padding
    ph, pw = padding
    return (max(ph - (kernel_h // 2) * dilation_h, 0), ph, pw)


def _conv(conv: nn.Conv2d, method: str, kwargs: dict) -> tuple[nn.Module, str]:
    kh, kw = conv.kernel_size
    if method == "crossd":
        return CrossDConv.from_conv(conv, spatial_dims=3, **kwargs), f"Conv2d -> CrossDConv (spatial_dims=3, kernel {kh})"
    if method == "acs":
        new = ACSConv.from_conv(conv, **kwargs)
        return new, f"Conv2d -> ACSConv (split {new.split})"
    kd = 1 if method == "2.5d" else kh
    dh = conv.dilation[0]
    new = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        (kd, kh, kw),
        stride=expand(conv.stride),
        padding=_thin_depth(conv.padding, kh, dh) if method == "2.5d" else expand(conv.padding),
        dilation=(1, dh, conv.dilation[1]) if method == "2.5d" else expand(conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        **_factory(conv),
    )
    with torch.no_grad():
        new.weight.copy_(_inflate(conv.weight, kd, method, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new, f"Conv2d -> Conv3d ({method}, kernel {(kd, kh, kw)})"


def _inflate(weight: torch.Tensor, depth: int, method: str, scale: float) -> torch.Tensor:
    """``(A, B, kh, kw) -> (A, B, depth, kh, kw)`` by ``method`` (``i3d`` multiplies by ``scale / depth``)."""
    if method == "i3d":
        return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) * (scale / depth)
    out = weight.new_zeros(weight.shape[0], weight.shape[1], depth, *weight.shape[2:])
    out[:, :, depth // 2] = weight
    return out


def _conv_transpose(conv: nn.ConvTranspose2d, method: str, kwargs: dict) -> tuple[nn.Module, str]:
    method = TRANSPOSED[method]
    kh, kw = conv.kernel_size
    if method == "crossd":
        if kh != kw:
            raise ValueError(f"method 'crossd' needs a square kernel, got kernel_size={tuple(conv.kernel_size)}")
        new = CrossDConvTranspose.from_conv(conv, spatial_dims=3, **kwargs)
        return new, f"ConvTranspose2d -> CrossDConvTranspose (spatial_dims=3, kernel {kh})"
    kd, dh = (1 if method == "2.5d" else kh), conv.dilation[0]
    new = nn.ConvTranspose3d(
        conv.in_channels,
        conv.out_channels,
        (kd, kh, kw),
        stride=expand(conv.stride),
        padding=_thin_depth(conv.padding, kh, dh) if method == "2.5d" else expand(conv.padding),
        output_padding=expand(conv.output_padding),
        groups=conv.groups,
        bias=conv.bias is not None,
        dilation=(1, dh, conv.dilation[1]) if method == "2.5d" else expand(conv.dilation),
        **_factory(conv),
    )
    with torch.no_grad():
        # i3d: a depth-constant input meets K / stride taps per output slice on average
        new.weight.copy_(_inflate(conv.weight, kd, method, conv.stride[0]))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    note = "kernel repeated * stride / K" if method == "i3d" else "kernel in the middle depth plane"
    return new, f"ConvTranspose2d -> ConvTranspose3d ({method}: {note})"


def _norm(target: type[nn.Module]) -> Callable[[nn.Module, str, dict], tuple[nn.Module, str]]:
    def convert(m: nn.Module, method: str, kwargs: dict) -> tuple[nn.Module, str]:
        new = target(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, **_factory(m))
        new.load_state_dict(m.state_dict())
        return new, f"{type(m).__name__} -> {target.__name__}"

    return convert


def _simple(target: type[nn.Module], *attrs: str, expanded: tuple[str, ...] = ()):
    def convert(m: nn.Module, method: str, kwargs: dict) -> tuple[nn.Module, str]:
        args = {a: (expand(getattr(m, a)) if a in expanded else getattr(m, a)) for a in attrs}
        return target(**args), f"{type(m).__name__} -> {target.__name__}"

    return convert


def _pad(target: type[nn.Module], with_value: bool = False):
    def convert(m: nn.Module, method: str, kwargs: dict) -> tuple[nn.Module, str]:
        left, right, top, bottom = m.padding
        args = ((left, right, top, bottom, top, bottom),) + ((m.value,) if with_value else ())
        return target(*args), f"{type(m).__name__} -> {target.__name__}"

    return convert


_MODES = {"nearest": "nearest", "nearest-exact": "nearest-exact", "bilinear": "trilinear", "area": "area", "trilinear": "trilinear"}


def _upsample(m: nn.Module, method: str, kwargs: dict) -> tuple[nn.Module, str]:
    if isinstance(m, nn.UpsamplingBilinear2d):
        mode, align = "trilinear", True
    elif isinstance(m, nn.UpsamplingNearest2d):
        mode, align = "nearest", None
    else:
        if m.mode not in _MODES:
            raise ValueError(f"interpolation mode {m.mode!r} has no 3D counterpart; expected one of {tuple(_MODES)}")
        mode, align = _MODES[m.mode], m.align_corners
    new = nn.Upsample(size=expand(m.size), scale_factor=expand(m.scale_factor), mode=mode, align_corners=align)
    if isinstance(m, nn.Upsample) and not isinstance(m, (nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d)):
        new.recompute_scale_factor = m.recompute_scale_factor
    return new, f"{type(m).__name__}({getattr(m, 'mode', mode)}) -> Upsample({mode})"


#: The explicit layer table: exact 2D type -> ``convert(module, method, conv_kwargs) -> (new module, note)``.
LAYERS_3D: dict[type[nn.Module], Callable[[nn.Module, str, dict], tuple[nn.Module, str]]] = {
    nn.Conv2d: _conv,
    nn.ConvTranspose2d: _conv_transpose,
    nn.BatchNorm2d: _norm(nn.BatchNorm3d),
    nn.InstanceNorm2d: _norm(nn.InstanceNorm3d),
    nn.MaxPool2d: _simple(
        nn.MaxPool3d, "kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode",
        expanded=("kernel_size", "stride", "padding", "dilation"),
    ),
    nn.AvgPool2d: _simple(
        nn.AvgPool3d, "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override",
        expanded=("kernel_size", "stride", "padding"),
    ),
    nn.AdaptiveAvgPool2d: _simple(nn.AdaptiveAvgPool3d, "output_size", expanded=("output_size",)),
    nn.AdaptiveMaxPool2d: _simple(nn.AdaptiveMaxPool3d, "output_size", "return_indices", expanded=("output_size",)),
    nn.Dropout2d: _simple(nn.Dropout3d, "p", "inplace"),
    nn.Upsample: _upsample,
    nn.UpsamplingBilinear2d: _upsample,
    nn.UpsamplingNearest2d: _upsample,
    nn.ZeroPad2d: _pad(nn.ZeroPad3d),
    nn.ConstantPad2d: _pad(nn.ConstantPad3d, with_value=True),
    nn.ReflectionPad2d: _pad(nn.ReflectionPad3d),
    nn.ReplicationPad2d: _pad(nn.ReplicationPad3d),
    nn.CircularPad2d: _pad(nn.CircularPad3d),
}

#: Already-3D layers that are kept without looking inside.
KEPT_3D = (ACSConv, nn.Conv3d, nn.ConvTranspose3d)


def _method_kwargs(method: str, conv_kwargs: dict) -> dict:
    if method == "crossd":
        kwargs = dict(conv_kwargs)
        if "depth_init" in kwargs:
            kwargs["depth_init"] = choice(kwargs["depth_init"], DEPTH_INITS, "depth_init")
        rest = check_crossd_kwargs({k: v for k, v in kwargs.items() if k != "depth_init"})
        return {**rest, **({"depth_init": kwargs["depth_init"]} if "depth_init" in kwargs else {})}
    allowed = ("split",) if method == "acs" else ()
    extra = sorted(set(conv_kwargs) - set(allowed))
    if extra:
        raise ValueError(f"`conv_kwargs` {extra} are not used by method {method!r}; it accepts {allowed or 'none'}.")
    return dict(conv_kwargs)


def convert_to_3d(
    model: nn.Module,
    method: str,
    custom: Mapping[type[nn.Module], Callable[[nn.Module], nn.Module]] | None = None,
    **conv_kwargs,
) -> tuple[nn.Module, ConversionReport]:
    """A 3D copy of a 2D model: inputs ``(B, C, H, W)`` become ``(B, C, D, H, W)``.

    See the module docstring for what each ``method`` does with ``nn.Conv2d`` and :data:`LAYERS_3D` for the
    other layers. ``model`` is not modified. Equalities that hold after conversion (tested):

    - ``"center"``, ``"crossd"`` (``depth_init="zeros"``) and ``"2.5d"`` on a depth-1 volume give the 2D
      model's output, when every convolution pads its depth by ``(K // 2) * dilation`` (``"same"`` padding);
    - ``"i3d"`` on a volume constant along depth gives the 2D output on each slice wherever depth padding
      does not reach (everywhere with ``circular``/``replicate`` padding);
    - ``"2.5d"`` equals ``"center"`` under the same padding condition.

    Args:
        model: a 2D ``nn.Module``.
        method: ``"crossd"``, ``"acs"``, ``"i3d"``, ``"center"`` or ``"2.5d"``.
        custom: extra converters ``{type: fn(module) -> 3D module}`` for layers the table does not know;
            they take precedence over the table. Defaults to None.
        conv_kwargs: for ``"crossd"``: :meth:`CrossDConv.from_conv` arguments (``depth_init``, ``rotation``,
            ``kernel_3d``, ``rotation_channels``); for ``"acs"``: ``split``; none for the others.

    Returns:
        ``(converted, report)``: a new module and a :class:`ConversionReport` with every replaced path.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: for an unknown ``method`` (with a did-you-mean hint) or ``conv_kwargs`` key, and for a
            layer that cannot be converted (its dotted path and type in the message).

    Example:
        >>> import torchvision
        >>> net, report = convert_to_3d(torchvision.models.resnet18(), "i3d")
        >>> net.eval()(torch.randn(1, 3, 16, 32, 32)).shape
        torch.Size([1, 1000])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` should be an nn.Module, got {type(model).__name__}.")
    method = choice(method, METHODS, "method")
    kwargs = _method_kwargs(method, conv_kwargs)
    custom = dict(custom or {})
    for key, fn in custom.items():
        if not isinstance(key, type) or not callable(fn):
            raise TypeError(f"`custom` should map module types to callables, got {key!r}: {fn!r}.")
    report = ConversionReport(method=method)

    def fail(module: nn.Module, path: str, why: str) -> None:
        raise ValueError(
            f"cannot convert `{path or '<model>'}` ({type(module).__name__}) to 3D: {why}. "
            "Pass a converter for its type in `custom`."
        )

    def visit(module: nn.Module, path: str) -> nn.Module | None:
        kind = type(module)
        if kind in custom:
            new = custom[kind](module)
            if not isinstance(new, nn.Module):
                raise TypeError(f"`custom[{kind.__name__}]` should return an nn.Module, got {type(new).__name__}.")
            report.replaced[path] = f"{kind.__name__} -> {type(new).__name__} (custom)"
            return new
        if isinstance(module, CrossDConv):
            if module.spatial_dims == 3:
                return module
            name = type(module).__name__
            report.replaced[path] = f"{name}(spatial_dims=2) -> {name}(spatial_dims=3), same state_dict"
            return crossd_conv_to_3d(module)
        if isinstance(module, KEPT_3D):
            return module
        if kind in LAYERS_3D:
            if kind in (nn.Conv2d,) and method in ("crossd", "acs") and module.kernel_size[0] != module.kernel_size[1]:
                fail(module, path, f"method {method!r} needs a square kernel, got kernel_size={tuple(module.kernel_size)}")
            try:
                new, note = LAYERS_3D[kind](module, method, kwargs)
            except ValueError as err:
                fail(module, path, str(err))
            report.replaced[path] = note
            return finish_like(new, module)
        for base in LAYERS_3D:
            if isinstance(module, base):
                fail(module, path, f"a subclass of nn.{base.__name__} whose forward may differ from it")
        if isinstance(module, _2D_SPECIFIC) or _2D_NAME.search(kind.__name__):
            fail(module, path, "a 2D-specific layer type with no entry in the 3D layer table")
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None and tensor.ndim >= 4:
                fail(module, path, f"it holds a spatial tensor {name!r} of shape {tuple(tensor.shape)}")
        return None

    converted = rewrite_modules(copy.deepcopy(model), visit)
    return converted, report
