"""Load a 2D checkpoint (torchvision, the authors' Cross-D, RadImageNet) into a Cross-D or 2D model.

One call, as timm's ``load_pretrained``: read a local ``.pt``/``.pth``/``.safetensors`` file, unwrap
``state_dict``/``model`` nestings, match names (``module.``/``backbone.``/``encoder.`` prefixes, the
authors' ``weights_3d``/``rotation_params``, RadImageNet's ``nn.Sequential`` indices and Keras-style names),
adapt values (2D kernels placed into Cross-D knowledge bases as :meth:`CrossDConv.from_conv` does, input
channels, a classifier of another size) and report every key that was renamed, adapted, initialised,
missing or unexpected. Strict by default: nothing is loaded unless every key is accounted for.

The usual path to a 3D network from 2D weights is either this function with a 3D Cross-D network
(``crossd_resnet18(spatial_dims=3, ...)``: one ``state_dict`` for 2D and 3D), or loading into the 2D
model and then :func:`convert_to_3d`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from monai_crossd.converters._utils import choice
from monai_crossd.converters.reference import convert_reference_state_dict
from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import knowledge_base_from_2d

__all__ = [
    "IN_CHANNELS_MODES",
    "LoadReport",
    "adapt_input_channels",
    "inflate_to_crossd",
    "load_pretrained_2d",
    "read_checkpoint",
]

logger = logging.getLogger(__name__)

IN_CHANNELS_MODES = ("auto", "mean", "repeat")
SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
#: Keys under which training scripts nest a ``state_dict``, looked into in this order.
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
#: Wrapper prefixes (DataParallel, RadImageNet/SSL backbones, encoders, ``torch.compile``), stripped when needed.
PREFIXES = ("module.", "backbone.", "encoder.", "model.", "net.", "_orig_mod.")
#: ``nn.Sequential(*list(resnet.children())[:-1])`` indices (RadImageNet PyTorch ResNet50) -> torchvision names.
SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}
#: Keras ResNet50 layer names -> torchvision names (as ``(pattern, replacement)``), and Keras parameter names.
KERAS_LAYERS = (
    (re.compile(r"^conv1_conv\.(.+)$"), r"conv1.\1"),
    (re.compile(r"^conv1_bn\.(.+)$"), r"bn1.\1"),
    (re.compile(r"^conv(\d)_block(\d+)_0_conv\.(.+)$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.0.{m[3]}"),
    (re.compile(r"^conv(\d)_block(\d+)_0_bn\.(.+)$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.1.{m[3]}"),
    (re.compile(r"^conv(\d)_block(\d+)_(\d)_conv\.(.+)$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.conv{m[3]}.{m[4]}"),
    (re.compile(r"^conv(\d)_block(\d+)_(\d)_bn\.(.+)$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.bn{m[3]}.{m[4]}"),
    (re.compile(r"^(?:predictions|probs|fc1000)\.(.+)$"), r"fc.\1"),
)
KERAS_PARAMS = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}

_SHOWN = 5


@dataclass
class LoadReport:
    """What :func:`load_pretrained_2d` did, by the model's ``state_dict`` key.

    Attributes:
        path: the checkpoint file.
        loaded: model keys filled from the checkpoint.
        renamed: model key -> checkpoint key, where the names differ.
        adapted: model key -> how the value was changed to fit (2D kernel placed into a Cross-D knowledge
            base, input channels, Keras layout).
        initialised: model key -> why it keeps a fresh value (classifier of another size or absent, Cross-D
            rotation network reset to ``R = I`` next to a 2D kernel, BatchNorm counters).
        dropped: checkpoint classifier keys with no counterpart in the model.
        missing_keys: model keys that nothing filled.
        unexpected_keys: checkpoint keys that fill nothing.
        mismatched: model key -> ``"checkpoint <shape> vs model <shape>"`` for values that cannot be adapted.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every key is accounted for (nothing missing, unexpected or mismatched)."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched)

    def problems(self) -> str:
        """The missing, unexpected and mismatched keys, the first few of each with counts."""
        parts = []
        for name, keys in (
            ("missing", self.missing_keys),
            ("unexpected", self.unexpected_keys),
            ("mismatched", [f"{k} ({v})" for k, v in self.mismatched.items()]),
        ):
            if keys:
                more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
                parts.append(f"{len(keys)} {name} keys: {', '.join(keys[:_SHOWN])}{more}")
        return "; ".join(parts)

    def __str__(self) -> str:
        head = (
            f"LoadReport({self.path}): {len(self.loaded)} loaded ({len(self.adapted)} adapted, {len(self.renamed)} renamed), "
            f"{len(self.initialised)} initialised, {len(self.dropped)} dropped"
        )
        return head + (f"; {self.problems()}" if not self.ok else "")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` of a local checkpoint file.

    ``.safetensors`` files are read with ``safetensors``; others with ``torch.load(weights_only=True)`` (no code
    runs). ``{"state_dict": ...}``, ``{"model": ...}`` and the other :data:`NESTING_KEYS` are unwrapped.

    Args:
        path: a ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` or ``.safetensors`` file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for another suffix, an unreadable file, or no tensor dictionary inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} is not a file.")
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"`path` should end with one of {SUFFIXES}, got {path.name!r}.")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"`path` {str(path)!r} could not be read as a weights-only checkpoint: {err}") from err
    trail = []
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        key = next((k for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        trail.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"`path` {str(path)!r} holds no state_dict (looked under {trail or 'the top level'}; found {found}); "
            f"expected a mapping of names to tensors, possibly under one of {NESTING_KEYS}."
        )
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def adapt_input_channels(weight: torch.Tensor, in_channels: int, mode: str = "auto") -> torch.Tensor:
    """A first-layer kernel ``(O, I, *k)`` for ``in_channels`` instead of ``I`` input channels (a new tensor).

    - ``"auto"`` (timm's ``adapt_input_conv``): one channel sums the ``I`` channels (a grey image then gives
      the response of the original to that image in every channel); other counts repeat the channels
      cyclically and rescale by ``I / in_channels`` (4-channel BraTS from RGB).
    - ``"mean"``: every channel gets the mean kernel times ``I / in_channels`` (grey-preserving for any count).
    - ``"repeat"``: cyclic repeat times ``I / in_channels`` for every count, one included.

    Args:
        weight: ``(O, I, *kernel)``.
        in_channels: the new ``I``.
        mode: ``"auto"``, ``"mean"`` or ``"repeat"``. Defaults to ``"auto"``.

    Returns:
        ``(O, in_channels, *kernel)`` in ``weight``'s dtype.
    """
    mode = choice(mode, IN_CHANNELS_MODES, "in_channels_mode")
    if weight.ndim < 3:
        raise ValueError(f"`weight` should be (O, I, *kernel), got shape {tuple(weight.shape)}.")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"`in_channels` should be a positive int, got {in_channels!r}.")
    source = weight.shape[1]
    if in_channels == source:
        return weight.clone()
    w = weight.float()
    if mode == "mean" or (mode == "auto" and in_channels == 1):
        out = w.mean(1, keepdim=True).expand(-1, in_channels, *w.shape[2:]) * (source / in_channels)
    else:
        reps = math.ceil(in_channels / source)
        out = w.repeat(1, reps, *(1,) * (w.ndim - 2))[:, :in_channels] * (source / in_channels)
    return out.to(weight.dtype).contiguous()


def inflate_to_crossd(weight: torch.Tensor, depth_init: str = "zeros") -> torch.Tensor:
    """A 2D kernel ``(O, I, K, K)`` as a Cross-D knowledge base ``(O, I, K, K, K)``, placed as
    :meth:`CrossDConv.from_conv` places it (see
    :func:`~monai_crossd.networks.layers.fourier_shift.knowledge_base_from_2d`, the one implementation)."""
    return knowledge_base_from_2d(weight, choice(depth_init, ("zeros", "replicate"), "depth_init"))


def _keras_name(key: str) -> str | None:
    key = key.replace("/", ".").split(":")[0]
    head, _, param = key.rpartition(".")
    if not head:
        return None
    key = f"{head}.{KERAS_PARAMS.get(param, param)}"
    for pattern, repl in KERAS_LAYERS:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def _candidates(key: str) -> Iterator[tuple[str, str]]:
    """Names a checkpoint key may have in the model, most literal first, with the transform's name."""
    variants, seen = [key], {key}
    frontier = [key]
    while frontier:
        nxt = []
        for k in frontier:
            for p in PREFIXES:
                if k.startswith(p) and k[len(p) :] not in seen:
                    seen.add(k[len(p) :])
                    nxt.append(k[len(p) :])
        variants += nxt
        frontier = nxt
    for v in variants:
        yield v, "name"
    for v in variants:
        head, _, rest = v.partition(".")
        if head in SEQUENTIAL_RESNET and rest:
            yield f"{SEQUENTIAL_RESNET[head]}.{rest}", "sequential"
    for v in variants:
        k = _keras_name(v)
        if k is not None:
            yield k, "keras"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _owner(model: nn.Module, key: str) -> tuple[str, nn.Module | None]:
    path = key.rpartition(".")[0]
    try:
        return path, model.get_submodule(path)
    except AttributeError:
        return path, None


def load_pretrained_2d(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    in_channels_mode: str = "auto",
    classifier: str | Sequence[str] | None = "fc",
    first_conv: str | None = None,
    depth_init: str = "zeros",
) -> LoadReport:
    """Load a 2D checkpoint into ``model`` (a Cross-D network, 2D or 3D, or a 2D network) in place.

    Name matching, for each checkpoint key, the first that names a model key: the key itself (after the
    authors' ``weights_3d -> weight``, ``rotation_params -> rotation_net``, see
    :func:`convert_reference_state_dict`); with :data:`PREFIXES` stripped; :data:`SEQUENTIAL_RESNET` indices
    (``backbone.4.0.conv1.weight -> layer1.0.conv1.weight``); Keras ResNet50 names
    (``conv2_block1_1_conv.kernel -> layer1.0.conv1.weight``, HWIO kernels transposed).

    Value adaptation: a 2D kernel ``(O, I, K, K)`` into a :class:`CrossDConv` knowledge base by
    :func:`inflate_to_crossd` (the layer's rotation network, if the checkpoint has none, is reset to ``R = I``
    so that the layer applies the 2D kernel); the first convolution's input channels by
    :func:`adapt_input_channels`; a classifier whose shape differs (or that the checkpoint lacks) is
    re-initialised. 5D knowledge bases (the authors' or ours) are copied as they are.

    Args:
        model: the model to fill (modified in place, only if the load goes ahead).
        path: a local ``.pt``/``.pth``/``.bin``/``.ckpt``/``.safetensors`` file.
        strict: raise unless every model key is filled or accounted for (re-initialised classifier, reset
            rotation networks, BatchNorm counters) and every checkpoint key is used. ``False`` loads what
            matches and reports the rest (also logged as warnings). Defaults to True.
        in_channels_mode: ``"auto"``, ``"mean"`` or ``"repeat"``, see :func:`adapt_input_channels`.
            Defaults to ``"auto"``.
        classifier: module path(s) of the classifier (``"fc"`` for torchvision ResNets), or None.
            Defaults to ``"fc"``.
        first_conv: module path of the first convolution, whose input channels may be adapted. Defaults to
            the owner of the first parameter with 4 or more dimensions.
        depth_init: the knowledge base outside the 2D plane, ``"zeros"`` or ``"replicate"``. Defaults to
            ``"zeros"``.

    Returns:
        a :class:`LoadReport`.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for a bad option, an unreadable checkpoint, or (``strict``) missing, unexpected or
            mismatched keys, listed in the message (the first few of each, with counts).

    Example:
        >>> import torchvision
        >>> from monai_crossd.networks.nets import crossd_resnet18
        >>> torch.save(torchvision.models.resnet18().state_dict(), "r18.pth")
        >>> net = crossd_resnet18(spatial_dims=3, in_channels=1, num_classes=2)
        >>> report = load_pretrained_2d(net, "r18.pth")
        >>> sorted(report.initialised)[:2], report.missing_keys
        (['conv1.rotation_net.0.bias', 'conv1.rotation_net.0.weight'], [])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` should be an nn.Module, got {type(model).__name__}.")
    in_channels_mode = choice(in_channels_mode, IN_CHANNELS_MODES, "in_channels_mode")
    depth_init = choice(depth_init, ("zeros", "replicate"), "depth_init")
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier or [])
    if not all(isinstance(c, str) and c for c in classifiers):
        raise TypeError(f"`classifier` should be a module path, a sequence of them or None, got {classifier!r}.")
    target = model.state_dict()
    if first_conv is None:
        first_conv = next((k.rpartition(".")[0] for k, v in target.items() if v.ndim >= 4), "")
    elif not isinstance(first_conv, str) or not any(k.startswith(first_conv + ".") for k in target):
        raise ValueError(f"`first_conv` should be a module path of `model` with parameters, got {first_conv!r}.")

    def under(key: str, prefix: str) -> bool:
        return bool(prefix) and key.startswith(prefix + ".")

    raw = read_checkpoint(path)
    source = convert_reference_state_dict(raw)
    original = dict(zip(source, raw))  # renamed key -> the checkpoint's own name, for the report
    report = LoadReport(path=str(path))

    # names
    chosen: dict[str, tuple[str, str]] = {}  # model key -> (checkpoint key, transform)
    for key in source:
        for name, how in _candidates(key):
            if name in target and name not in chosen:
                chosen[name] = (key, how)
                break
        else:
            if any(under(name, c) for c in classifiers for name, _ in _candidates(key)):
                report.dropped.append(original[key])
            else:
                report.unexpected_keys.append(original[key])

    # values
    values: dict[str, torch.Tensor] = {}
    reset_rotation: set[str] = set()
    reinit: set[str] = set()
    for key, want in target.items():
        if key not in chosen:
            continue
        src_key, how = chosen[key]
        value = source[src_key]
        src_key = original[src_key]
        if src_key != key:
            report.renamed[key] = src_key
        notes = []
        if how == "keras" and value.shape != want.shape:
            if value.ndim == 4 and value.shape[3] == want.shape[0]:
                value = value.permute(3, 2, 0, 1).contiguous()
                notes.append("Keras HWIO kernel transposed")
            elif value.ndim == 2:
                value = value.t().contiguous()
                notes.append("Keras dense kernel transposed")
        owner_path, owner = _owner(model, key)
        is_input = under(key, first_conv) and 3 <= value.ndim <= want.ndim and value.shape[0] == want.shape[0]
        if is_input and value.shape[1] != want.shape[1]:
            old = value.shape[1]
            value = adapt_input_channels(value, want.shape[1], in_channels_mode)
            notes.append(f"input channels {old} -> {want.shape[1]} ({in_channels_mode})")
        kernel_2d = value.ndim == 4 and want.ndim == 5 and value.shape[:2] == want.shape[:2]
        if kernel_2d and isinstance(owner, CrossDConv) and key == _join(owner_path, "weight"):
            if value.shape[2:] == want.shape[3:]:
                value = inflate_to_crossd(value, depth_init)
                notes.append(f"2D kernel placed in the Cross-D knowledge base (depth_init={depth_init})")
                reset_rotation.add(owner_path)
        elif kernel_2d and want.shape[2] == 1 and value.shape[2:] == want.shape[3:]:
            value = value.unsqueeze(2)
            notes.append("2D kernel as a (1, K, K) kernel")
        if value.shape != want.shape:
            if any(under(key, c) for c in classifiers):
                reinit.add(key)
                report.initialised[key] = f"classifier re-initialised: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}"
                continue
            hint = " (a 2D kernel for a 3D layer: load into the 2D model, then convert_to_3d)" if kernel_2d else ""
            report.mismatched[key] = f"checkpoint {src_key!r} {tuple(value.shape)} vs model {tuple(want.shape)}{hint}"
            continue
        if notes:
            report.adapted[key] = "; ".join(notes)
        values[key] = value
        report.loaded.append(key)

    # what nothing filled
    for key in target:
        if key in values or key in report.mismatched or key in report.initialised:
            continue
        if any(under(key, c) for c in classifiers):
            reinit.add(key)
            report.initialised[key] = "classifier re-initialised: not in the checkpoint"
        elif any(under(key, _join(p, "rotation_net")) for p in reset_rotation):
            report.initialised[key] = "Cross-D rotation network reset to R = I (the checkpoint has a 2D kernel)"
        elif key.endswith("num_batches_tracked"):
            report.initialised[key] = "BatchNorm counter kept"
        else:
            report.missing_keys.append(key)

    if not report.ok:
        message = f"`path` {str(path)!r} does not fit `model`: {report.problems()}."
        if strict:
            raise ValueError(message + " Pass strict=False to load the keys that fit.")
        logger.warning(message)
        for name, keys in (("missing", report.missing_keys), ("unexpected", report.unexpected_keys)):
            if keys:
                logger.warning("%s keys (%d): %s", name, len(keys), ", ".join(keys))

    with torch.no_grad():
        model.load_state_dict(values, strict=False)
    for module_path in sorted({k.rpartition(".")[0] for k in reinit}):
        module = model.get_submodule(module_path)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for module_path in reset_rotation:
        if not any(under(k, _join(module_path, "rotation_net")) for k in values):
            model.get_submodule(module_path).rotation_net.reset_to_identity()
    logger.info("%s", report)
    return report
