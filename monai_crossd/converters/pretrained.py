"""Load a 2D checkpoint (torchvision, RadImageNet, a Keras ResNet50, the authors' Cross-D) into a Cross-D or 2D model.

One call, as timm's ``load_pretrained``: read a local ``.pt``/``.pth``/``.safetensors`` file (or take a
``state_dict``), unwrap ``state_dict``/``model`` nestings, put the checkpoint's key and value conventions into
torchvision-style names with its family's filter function (:mod:`monai_crossd.converters.checkpoint_families`,
detected from the keys or named), match names (``module.``/``backbone.``/``encoder.`` wrappers stripped where
needed), adapt values (2D kernels placed into Cross-D knowledge bases as :meth:`CrossDConv.from_conv` does,
input channels, a classifier of another size) and report every key that was renamed, adapted, initialised,
missing or unexpected. Strict by default: nothing is loaded unless every key is accounted for; what a
checkpoint family carries that the model cannot represent (a Keras ResNet50's stride placement) is refused
whatever ``strict`` says.

The usual path to a 3D network from 2D weights is either this function with a 3D Cross-D network
(``crossd_resnet18(spatial_dims=3, ...)``: one ``state_dict`` for 2D and 3D), or loading into the 2D
model and then :func:`convert_to_3d`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from monai_crossd.converters._utils import choice
from monai_crossd.converters.checkpoint_families import (
    CHECKPOINT_FAMILIES,
    FAMILY_CHECKS,
    INPUT_CONVENTIONS,
    Mapped,
    detect_family,
)
from monai_crossd.converters.report import key_mismatch
from monai_crossd.networks.blocks.crossd_conv import CrossDConv
from monai_crossd.networks.layers.fourier_shift import knowledge_base_from_2d

__all__ = [
    "FAMILIES",
    "IN_CHANNELS_MODES",
    "LoadReport",
    "adapt_input_channels",
    "inflate_to_crossd",
    "load_pretrained_2d",
    "read_checkpoint",
]

logger = logging.getLogger(__name__)

IN_CHANNELS_MODES = ("auto", "mean", "repeat")
#: ``family`` values of :func:`load_pretrained_2d`: detect from the keys, or one of the checkpoint families.
FAMILIES = ("auto", *CHECKPOINT_FAMILIES)
SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
#: Keys under which training scripts nest a ``state_dict``, looked into in this order.
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
#: Wrapper prefixes (DataParallel, SSL backbones, encoders, ``torch.compile``), stripped when needed.
PREFIXES = ("module.", "backbone.", "encoder.", "model.", "net.", "_orig_mod.")


@dataclass
class LoadReport:
    """What :func:`load_pretrained_2d` did, by the model's ``state_dict`` key.

    Attributes:
        path: the checkpoint file (``"<state_dict>"`` for a mapping).
        family: the checkpoint family whose filter function was used (see :data:`CHECKPOINT_FAMILIES`).
        detected: True when ``family`` was detected from the keys, False when the caller named it.
        family_reason: what the detection saw (``"... e.g. 'backbone.0.weight'"``), or ``"named by the caller"``.
        input_convention: what the checkpoint expects of the input where it is not torchvision's RGB
            (``radimagenet_keras``: BGR caffe-style), else ``""``.
        loaded: model keys filled from the checkpoint.
        renamed: model key -> checkpoint key, where the names differ.
        adapted: model key -> how the value was changed to fit (Keras layout, folded conv bias, 2D kernel placed
            into a Cross-D knowledge base, input channels).
        initialised: model key -> why it keeps a fresh value (classifier of another size or absent, Cross-D
            rotation network reset to ``R = I`` next to a 2D kernel, BatchNorm counters).
        dropped: checkpoint classifier keys with no counterpart in the model.
        missing_keys: model keys that nothing filled.
        unexpected_keys: checkpoint keys that fill nothing.
        mismatched: model key -> ``"checkpoint <shape> vs model <shape>"`` for values that cannot be adapted.
    """

    path: str
    family: str = "torchvision"
    detected: bool = False
    family_reason: str = ""
    input_convention: str = ""
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
        return key_mismatch(self.missing_keys, self.unexpected_keys, self.mismatched)

    def __str__(self) -> str:
        how = "detected" if self.detected else "named"
        head = (
            f"LoadReport({self.path}, family={self.family} ({how})): {len(self.loaded)} loaded "
            f"({len(self.adapted)} adapted, {len(self.renamed)} renamed), "
            f"{len(self.initialised)} initialised, {len(self.dropped)} dropped"
        )
        expects = f"; expects {self.input_convention}" if self.input_convention else ""
        return head + expects + (f"; {self.problems()}" if not self.ok else "")


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


def _candidates(key: str) -> Iterator[str]:
    """Names a (family-filtered) checkpoint key may have in the model: itself, then with wrappers stripped."""
    variants, seen, frontier = [key], {key}, [key]
    while frontier:
        nxt = []
        for k in frontier:
            for p in PREFIXES:
                if k.startswith(p) and k[len(p) :] not in seen:
                    seen.add(k[len(p) :])
                    nxt.append(k[len(p) :])
        variants += nxt
        frontier = nxt
    return iter(variants)


def _under(key: str, prefix: str) -> bool:
    return bool(prefix) and key.startswith(prefix + ".")


def _owner(model: nn.Module, key: str) -> tuple[str, nn.Module | None]:
    path = key.rpartition(".")[0]
    try:
        return path, model.get_submodule(path)
    except AttributeError:
        return path, None


def _state_dict_of(path: str | Path | Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    if isinstance(path, Mapping):
        if not path or not all(isinstance(v, torch.Tensor) for v in path.values()):
            raise ValueError("`path` as a state_dict should be a non-empty mapping of names to tensors.")
        return "<state_dict>", {str(k): v for k, v in path.items()}
    return str(path), read_checkpoint(path)


def _family(state_dict: Mapping[str, torch.Tensor], family: str, label: str) -> tuple[str, bool, str]:
    """``(family, detected, why)``."""
    if family != "auto":
        return family, False, "named by the caller"
    try:
        name, why = detect_family(state_dict)
    except ValueError as err:
        raise ValueError(f"`path` {label!r}: {err} Name the family with `family=` if it is one of them.") from None
    return name, True, why


def _match(
    mapped: Mapping[str, Mapped], target: Mapping[str, torch.Tensor], classifiers: Sequence[str], report: LoadReport
) -> tuple[dict[str, str], list[str]]:
    """``(model key -> filtered name, filtered names that fill nothing)``; records dropped and unexpected keys."""
    chosen: dict[str, str] = {}
    unused = []
    for key, entry in mapped.items():
        name = next((n for n in _candidates(key) if n in target and n not in chosen), None)
        if name is not None:
            chosen[name] = key
            continue
        unused.append(key)
        if any(_under(n, c) for c in classifiers for n in _candidates(key)):
            report.dropped.append(entry.source)
        else:
            report.unexpected_keys.append(entry.source)
    return chosen, unused


def _fit(
    value: torch.Tensor,
    want: torch.Tensor,
    owner: nn.Module | None,
    input_conv: bool,
    in_channels_mode: str,
    depth_init: str,
) -> tuple[torch.Tensor, list[str], bool]:
    """``(value adapted towards want's shape, notes, whether a 2D kernel went into a CrossDConv knowledge base)``."""
    notes = []
    same_out = 3 <= value.ndim <= want.ndim and value.shape[0] == want.shape[0]
    if input_conv and same_out and value.shape[1] != want.shape[1]:
        old = value.shape[1]
        value = adapt_input_channels(value, want.shape[1], in_channels_mode)
        notes.append(f"input channels {old} -> {want.shape[1]} ({in_channels_mode})")
    kernel_2d = value.ndim == 4 and want.ndim == 5 and value.shape[:2] == want.shape[:2]
    kernel_2d = kernel_2d and value.shape[2:] == want.shape[3:]
    if kernel_2d and isinstance(owner, CrossDConv):
        notes.append(f"2D kernel placed in the Cross-D knowledge base (depth_init={depth_init})")
        return inflate_to_crossd(value, depth_init), notes, True
    if kernel_2d and want.shape[2] == 1:
        notes.append("2D kernel as a (1, K, K) kernel")
        return value.unsqueeze(2), notes, False
    return value, notes, False


def load_pretrained_2d(
    model: nn.Module,
    path: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    in_channels_mode: str = "auto",
    classifier: str | Sequence[str] | None = "fc",
    first_conv: str | None = None,
    depth_init: str = "zeros",
    family: str = "auto",
) -> LoadReport:
    """Load a 2D checkpoint into ``model`` (a Cross-D network, 2D or 3D, or a 2D network) in place.

    Checkpoint families (:mod:`~monai_crossd.converters.checkpoint_families`): the checkpoint's keys and values are
    first put into torchvision-style names by its family's filter function, detected from the keys
    (``family="auto"``) or named:

    - ``"torchvision"``: PyTorch names as they are (torchvision, monai_crossd, MONAI).
    - ``"radimagenet"``: the official RadImageNet PyTorch ResNet50 (``backbone.0`` conv1, ``backbone.1`` bn1,
      ``backbone.4..7`` layer1..4).
    - ``"radimagenet_keras"``: a Keras ResNet50, with Keras names (``conv2_block1_1_conv/kernel:0``, HWIO kernels
      transposed) or converted to torchvision-like names. Its conv biases are folded exactly into the BatchNorm
      after each conv, its BatchNorm eps 1.001e-5 into ``running_var``; its downsampling blocks stride on the first
      1x1 conv, so a ``model`` that strides elsewhere (torchvision's and our ResNet50 stride on the 3x3) is refused
      with a ``ValueError`` that says what would be lost, whatever ``strict`` says. It expects BGR caffe-style
      input (``LoadReport.input_convention``).
    - ``"authors"``: convergedmachine/Cross-D-Conv (``weights_3d -> weight``, ``rotation_params -> rotation_net``).

    Name matching, for each filtered key, the first that names a model key: the key itself, then with
    :data:`PREFIXES` stripped (``module.conv1.weight -> conv1.weight``).

    Value adaptation: a 2D kernel ``(O, I, K, K)`` into a :class:`CrossDConv` knowledge base by
    :func:`inflate_to_crossd` (the layer's rotation network, if the checkpoint has none, is reset to ``R = I``
    so that the layer applies the 2D kernel); the first convolution's input channels by
    :func:`adapt_input_channels`; a classifier whose shape differs (or that the checkpoint lacks) is
    re-initialised. 5D knowledge bases (the authors' or ours) are copied as they are.

    Args:
        model: the model to fill (modified in place, only if the load goes ahead).
        path: a local ``.pt``/``.pth``/``.bin``/``.ckpt``/``.safetensors`` file, or a ``state_dict`` (a mapping of
            names to tensors, e.g. ``torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict()``).
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
        family: ``"auto"`` or one of :data:`CHECKPOINT_FAMILIES` (``"torchvision"``, ``"radimagenet"``,
            ``"radimagenet_keras"``, ``"authors"``). Defaults to ``"auto"``.

    Returns:
        a :class:`LoadReport`, with the family used and whether it was detected or named.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for a bad option, an unreadable checkpoint, a checkpoint of no known family (the families
            tried and the keys none takes), what the family carries and ``model`` cannot represent, or
            (``strict``) missing, unexpected or mismatched keys, listed in the message (the first few of each,
            with counts).

    Example:
        >>> import torchvision
        >>> from monai_crossd.networks.nets import crossd_resnet18
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r18.pth")
        >>> torch.save(torchvision.models.resnet18().state_dict(), path)
        >>> net = crossd_resnet18(spatial_dims=3, in_channels=1, num_classes=2)
        >>> report = load_pretrained_2d(net, path)
        >>> report.family, report.detected, report.missing_keys
        ('torchvision', True, [])
        >>> sorted(report.initialised)[:2]
        ['conv1.rotation_net.0.bias', 'conv1.rotation_net.0.weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` should be an nn.Module, got {type(model).__name__}.")
    in_channels_mode = choice(in_channels_mode, IN_CHANNELS_MODES, "in_channels_mode")
    depth_init = choice(depth_init, ("zeros", "replicate"), "depth_init")
    family = choice(family, FAMILIES, "family")
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier or [])
    if not all(isinstance(c, str) and c for c in classifiers):
        raise TypeError(f"`classifier` should be a module path, a sequence of them or None, got {classifier!r}.")
    target = model.state_dict()
    if first_conv is None:
        first_conv = next((k.rpartition(".")[0] for k, v in target.items() if v.ndim >= 4), "")
    elif not isinstance(first_conv, str) or not any(k.startswith(first_conv + ".") for k in target):
        raise ValueError(f"`first_conv` should be a module path of `model` with parameters, got {first_conv!r}.")

    label, raw = _state_dict_of(path)
    name, detected, why = _family(raw, family, label)
    report = LoadReport(label, name, detected, why, INPUT_CONVENTIONS.get(name, ""))
    mapped = CHECKPOINT_FAMILIES[name](raw)
    chosen, unused = _match(mapped, target, classifiers, report)

    values: dict[str, torch.Tensor] = {}
    reset_rotation: set[str] = set()
    reinit: set[str] = set()
    for key, want in target.items():
        if key not in chosen:
            continue
        entry = mapped[chosen[key]]
        if entry.source != key:
            report.renamed[key] = entry.source
        owner_path, owner = _owner(model, key)
        value, notes, placed = _fit(entry.value, want, owner, _under(key, first_conv), in_channels_mode, depth_init)
        if placed:
            reset_rotation.add(owner_path)
        if value.shape != want.shape:
            if any(_under(key, c) for c in classifiers):
                reinit.add(key)
                shapes = f"checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}"
                report.initialised[key] = f"classifier re-initialised: {shapes}"
                continue
            kernel_2d = value.ndim == 4 and want.ndim == 5 and value.shape[:2] == want.shape[:2]
            hint = " (a 2D kernel for a 3D layer: load into the 2D model, then convert_to_3d)" if kernel_2d else ""
            shapes = f"{tuple(value.shape)} vs model {tuple(want.shape)}"
            report.mismatched[key] = f"checkpoint {entry.source!r} {shapes}{hint}"
            continue
        notes = ([entry.note] if entry.note else []) + notes
        if notes:
            report.adapted[key] = "; ".join(notes)
        values[key] = value
        report.loaded.append(key)

    # what nothing filled
    for key in target:
        if key in values or key in report.mismatched or key in report.initialised:
            continue
        if any(_under(key, c) for c in classifiers):
            reinit.add(key)
            report.initialised[key] = "classifier re-initialised: not in the checkpoint"
        elif any(_under(key, f"{p}.rotation_net") for p in reset_rotation):
            report.initialised[key] = "Cross-D rotation network reset to R = I (the checkpoint has a 2D kernel)"
        elif key.endswith("num_batches_tracked"):
            report.initialised[key] = "BatchNorm counter kept"
        else:
            report.missing_keys.append(key)

    losses = FAMILY_CHECKS[name](model, chosen, unused) if name in FAMILY_CHECKS else []
    if losses:
        raise ValueError(
            f"`path` {label!r} is a {name} checkpoint ({why}) that `model` cannot represent: loading it would lose "
            f"{' and '.join(losses)}."
        )
    if not report.ok:
        message = f"`path` {label!r} does not fit `model`: {report.problems()}."
        if strict:
            family_note = f"Checkpoint family: {name} ({why})."
            raise ValueError(f"{message} Pass strict=False to load the keys that fit. {family_note}")
        logger.warning(message)
        for kind, keys in (("missing", report.missing_keys), ("unexpected", report.unexpected_keys)):
            if keys:
                logger.warning("%s keys (%d): %s", kind, len(keys), ", ".join(keys))
    if report.input_convention:
        logger.warning("%s: the %s checkpoint expects %s.", label, name, report.input_convention)

    with torch.no_grad():
        model.load_state_dict(values, strict=False)
    for module_path in sorted({k.rpartition(".")[0] for k in reinit}):
        module = model.get_submodule(module_path)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for module_path in reset_rotation:
        if not any(_under(k, f"{module_path}.rotation_net") for k in values):
            model.get_submodule(module_path).rotation_net.reset_to_identity()
    logger.info("%s", report)
    return report
