"""Checkpoint families: the key and value conventions of 2D checkpoints in the wild, as small filter functions.

Each family is a pure function (timm's ``filter_fn``) from a checkpoint's ``state_dict`` to torchvision-style
names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample``, ``fc``; the authors' Cross-D keys become ours),
each with the checkpoint key it comes from and the value that name should get. :func:`detect_family` picks
one by the keys and says why; :func:`~monai_crossd.converters.load_pretrained_2d` is the mechanism that
matches the result against a model.

- ``torchvision``: PyTorch names as they are (torchvision, monai_crossd and MONAI networks); wrappers such as
  ``module.``/``model.`` and ``{"state_dict": ...}`` are the mechanism's business.
- ``radimagenet``: the official RadImageNet PyTorch ResNet50, ``backbone = nn.Sequential(*resnet50.children()[:-1])``:
  ``backbone.0`` conv1, ``backbone.1`` bn1, ``backbone.4..7`` layer1..4, no ``fc``.
- ``radimagenet_keras``: a Keras ResNet50 (RadImageNet's Keras models), with ``keras.applications`` names
  (``conv2_block1_1_conv/kernel:0``, HWIO kernels) or converted to torchvision-like names. Either way a bias
  on every conv, BatchNorm eps ``1.001e-5``, the stride of each downsampling block on its first 1x1 conv
  (ResNet50 v1; torchvision puts it on the 3x3), usually no ``fc``, and BGR caffe-style input. The conv biases
  are folded exactly into the BatchNorm after each conv; the stride placement cannot be carried by weights and
  is checked against the model by :func:`radimagenet_keras_losses`.
- ``authors``: convergedmachine/Cross-D-Conv (``weights_3d``, ``rotation_params``; see
  :func:`~monai_crossd.converters.convert_reference_state_dict`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn

from monai_crossd.converters.reference import convert_reference_state_dict

__all__ = [
    "CHECKPOINT_FAMILIES",
    "FAMILY_CHECKS",
    "INPUT_CONVENTIONS",
    "Mapped",
    "authors",
    "detect_family",
    "radimagenet",
    "radimagenet_keras",
    "radimagenet_keras_losses",
    "torchvision",
]

#: ``nn.Sequential(*list(resnet.children())[:-1])`` indices (RadImageNet PyTorch ResNet50) -> torchvision names.
SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}
_SEQUENTIAL = re.compile(r"^(.*?)backbone\.(\d+)\.(.+)$")
#: Keras ResNet50 layer names -> torchvision names (as ``(pattern, replacement)``), and Keras parameter names.
KERAS_LAYERS = (
    (re.compile(r"^conv1_conv$"), "conv1"),
    (re.compile(r"^conv1_bn$"), "bn1"),
    (re.compile(r"^conv(\d)_block(\d+)_0_conv$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.0"),
    (re.compile(r"^conv(\d)_block(\d+)_0_bn$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.1"),
    (re.compile(r"^conv(\d)_block(\d+)_(\d)_conv$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.conv{m[3]}"),
    (re.compile(r"^conv(\d)_block(\d+)_(\d)_bn$"), lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.bn{m[3]}"),
    (re.compile(r"^(?:predictions|probs|fc1000)$"), "fc"),
)
KERAS_PARAMS = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
KERAS_BN_EPS = 1.001e-5  #: ``keras.applications.ResNet50``'s BatchNorm epsilon
TORCH_BN_EPS = 1e-5  #: ``nn.BatchNorm2d``'s default, the target of the ``radimagenet_keras`` running variances
#: A bias of a ResNet conv that a BatchNorm follows: ``(prefix)conv<n>.bias`` (-> ``bn<n>``), ``downsample.0.bias``.
_CONV_BIAS = re.compile(r"^(.*?)(?:conv(\d+)|downsample\.0)\.bias$")
#: What the families expect of the input, where it is not the torchvision convention (RGB, ImageNet mean/std).
INPUT_CONVENTIONS = {
    "radimagenet_keras": "BGR caffe-style input (Keras ResNet50 preprocess_input: BGR channel order, 0-255 values "
    "minus the ImageNet means 103.939, 116.779, 123.68)",
}


class Mapped(NamedTuple):
    """One entry of a filtered checkpoint.

    Attributes:
        source: the checkpoint's own key.
        value: the value for the torchvision-style name (the checkpoint's tensor, or a new one if changed).
        note: how the value was changed ("" when it is the checkpoint's tensor).
    """

    source: str
    value: torch.Tensor
    note: str = ""


def _renamed(state_dict: Mapping[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, Mapped]:
    out: dict[str, Mapped] = {}
    for key, value in state_dict.items():
        new = rename(key)
        if new in out:
            raise ValueError(f"`state_dict` maps two keys to {new!r}: {out[new].source!r} and {key!r}.")
        out[new] = Mapped(key, value)
    return out


def torchvision(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Mapped]:
    """The ``torchvision`` family: every key and value as it is (also monai_crossd's and MONAI's own checkpoints)."""
    return _renamed(state_dict, str)


def authors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Mapped]:
    """The ``authors`` family (convergedmachine/Cross-D-Conv): ``weights_3d -> weight``,
    ``rotation_params -> rotation_net`` (:func:`convert_reference_state_dict`); 5D knowledge bases as they are."""
    ours = convert_reference_state_dict(state_dict)
    return {new: Mapped(old, value) for (new, value), old in zip(ours.items(), state_dict)}


def _sequential_name(key: str) -> str:
    m = _SEQUENTIAL.match(key)
    return f"{m[1]}{SEQUENTIAL_RESNET[m[2]]}.{m[3]}" if m and m[2] in SEQUENTIAL_RESNET else key


def radimagenet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Mapped]:
    """The ``radimagenet`` family (official PyTorch checkpoints): ``backbone.<i>.`` -> torchvision names
    (``backbone.4.0.conv1.weight -> layer1.0.conv1.weight``, ``backbone.1.running_var -> bn1.running_var``)."""
    return _renamed(state_dict, _sequential_name)


def _keras_name(key: str) -> tuple[str, str] | None:
    """``("layer1.0.conv1.weight", "kernel")`` for ``"conv2_block1_1_conv/kernel:0"`` (or an h5 path ending so);
    None for another name."""
    layer, _, param = key.replace("/", ".").split(":")[0].rpartition(".")
    layer = layer.rpartition(".")[2]
    for pattern, repl in KERAS_LAYERS:
        if pattern.match(layer):
            return f"{pattern.sub(repl, layer)}.{KERAS_PARAMS.get(param, param)}", param
    return None


def _bn_after(conv_bias: str) -> str | None:
    """``"layer1.0.bn1"`` for ``"layer1.0.conv1.bias"``, ``"x.downsample.1"`` for ``"x.downsample.0.bias"``."""
    m = _CONV_BIAS.match(conv_bias)
    if m is None:
        return None
    return f"{m[1]}bn{m[2]}" if m[2] else f"{m[1]}downsample.1"


def _note(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def radimagenet_keras(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Mapped]:
    """The ``radimagenet_keras`` family: a Keras ResNet50 as torchvision names and values.

    - Keras names (``conv2_block1_1_conv/kernel:0 -> layer1.0.conv1.weight``, ``conv3_block1_0_bn/moving_variance:0
      -> layer2.0.downsample.1.running_var``, ``predictions -> fc``); torchvision-like names are kept.
    - ``kernel`` values: HWIO conv kernels -> OIHW, dense ``(in, out)`` -> ``(out, in)``.
    - the bias ``b`` of a conv followed by BatchNorm is folded into that BatchNorm's ``running_mean - b``: exact,
      since BatchNorm removes any constant per channel (batch statistics in training, the running mean in eval).
      A conv bias with no BatchNorm statistics after it is kept under its name.
    - ``running_var + (1.001e-5 - 1e-5)``: Keras' BatchNorm eps in a BatchNorm with torch's default eps (exact
      with running statistics, i.e. in eval mode; batch statistics in training meet an eps 1e-8 smaller).

    The checkpoint expects BGR caffe-style input (:data:`INPUT_CONVENTIONS`), and its downsampling blocks stride
    on their first 1x1 conv, which :func:`radimagenet_keras_losses` checks against the model.
    """
    out = _renamed(state_dict, lambda key: (_keras_name(key) or (key, ""))[0])
    for name, entry in out.items():
        if (_keras_name(entry.source) or ("", ""))[1] == "kernel" and entry.value.ndim in (2, 4):
            value = entry.value.permute(3, 2, 0, 1) if entry.value.ndim == 4 else entry.value.t()
            kind = "HWIO kernel" if entry.value.ndim == 4 else "dense kernel"
            out[name] = Mapped(entry.source, value.contiguous(), f"Keras {kind} transposed")
    for name in list(out):
        bn = _bn_after(name)
        mean = f"{bn}.running_mean"
        if bn is not None and mean in out:
            bias = out.pop(name)
            folded = f"conv bias {bias.source!r} folded in (running_mean - bias, exact)"
            out[mean] = Mapped(out[mean].source, out[mean].value - bias.value, _note(out[mean].note, folded))
    for name, entry in out.items():
        if name.endswith(".running_var"):
            eps = f"BatchNorm eps {KERAS_BN_EPS} as {TORCH_BN_EPS} (running_var + {KERAS_BN_EPS - TORCH_BN_EPS:.0e})"
            out[name] = Mapped(entry.source, entry.value + (KERAS_BN_EPS - TORCH_BN_EPS), _note(entry.note, eps))
    return out


def _strides(module: nn.Module) -> bool:
    return any(s != 1 for s in getattr(module, "stride", (1,)))


def radimagenet_keras_losses(model: nn.Module, loaded: Mapping[str, str], unused: Sequence[str]) -> list[str]:
    """What loading a ``radimagenet_keras`` checkpoint into ``model`` would lose ([] when nothing).

    Args:
        model: the target.
        loaded: model key -> the filtered checkpoint's name it takes.
        unused: filtered names that fill no model key.

    Returns:
        phrases naming the conv biases with nowhere to go (no BatchNorm to fold into, no bias in ``model``) and the
        downsampling blocks whose stride ``model`` has on another conv than the checkpoint's first 1x1 conv.
    """
    losses = []
    biases = [k for k in unused if _bn_after(k) is not None]
    if biases:
        losses.append(
            f"{len(biases)} conv biases with no BatchNorm statistics to fold them into and no bias in `model` "
            f"(first: {biases[0]})"
        )
    moved = {}
    for key in loaded:
        path = key[: -len(".downsample.0.weight")]
        if not key.endswith(".downsample.0.weight") or not _strides(model.get_submodule(f"{path}.downsample.0")):
            continue
        block = model.get_submodule(path)
        if hasattr(block, "conv1") and not _strides(block.conv1):
            moved[path] = next((n for n, m in block.named_children() if n != "downsample" and _strides(m)), "no conv")
    if moved:
        where = ", ".join(f"{b} (model: on {c})" for b, c in moved.items())
        losses.append(
            f"the stride of {where} on conv1 as the checkpoint has it (Keras ResNet50 v1 strides the first 1x1 conv "
            "of each downsampling block; build `model` with its stride there to load it exactly)"
        )
    return losses


#: Family name -> filter function: a checkpoint's ``state_dict`` -> torchvision-style name -> :class:`Mapped`.
CHECKPOINT_FAMILIES: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, Mapped]]] = {
    "torchvision": torchvision,
    "radimagenet": radimagenet,
    "radimagenet_keras": radimagenet_keras,
    "authors": authors,
}
#: Family name -> what the weights cannot say but the model must have (see :func:`radimagenet_keras_losses`).
FAMILY_CHECKS = {"radimagenet_keras": radimagenet_keras_losses}


def _pytorch_name(key: str) -> bool:
    return bool(key) and not any(c in key for c in "/: ")


def _keras_sign(keys: list[str]) -> str | None:
    """The first Keras ResNet50 layer name (a classifier alias alone does not count) or conv bias before BatchNorm."""
    present = set(keys)
    for key in keys:
        keras, bn = _keras_name(key), _bn_after(key)
        if (keras and not keras[0].startswith("fc.")) or (bn and f"{bn}.running_mean" in present):
            return key
    return None


#: Detection order: family, what it looks for, the first key that shows it (or None).
_SIGNS: tuple[tuple[str, str, Callable[[list[str]], str | None]], ...] = (
    ("authors", "the authors' Cross-D keys (weights_3d, rotation_params)",
     lambda keys: next((k for k in keys if {"weights_3d", "rotation_params"} & set(k.split("."))), None)),
    ("radimagenet_keras", "Keras ResNet50 layer names or a ResNet conv bias before BatchNorm",
     _keras_sign),
    ("radimagenet", "nn.Sequential ResNet indices (backbone.0, backbone.1, backbone.4-7)",
     lambda keys: next((k for k in keys if _sequential_name(k) != k), None)),
    ("torchvision", "PyTorch module names only (no '/', ':' or spaces)",
     lambda keys: keys[0] if keys and all(map(_pytorch_name, keys)) else None),
)


def detect_family(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """The family of a checkpoint, from its keys, and why.

    Tried in this order, the first that matches wins: ``authors`` (a ``weights_3d`` or ``rotation_params`` key),
    ``radimagenet_keras`` (a Keras ResNet50 layer name, or a bias on a ResNet conv followed by BatchNorm, which
    torchvision ResNets never have), ``radimagenet`` (``backbone.<index>.`` keys), ``torchvision`` (PyTorch
    module names only).

    Args:
        state_dict: the checkpoint's flat ``{name: tensor}``.

    Returns:
        ``(family, why)``, e.g. ``("radimagenet", "nn.Sequential ResNet indices (...), e.g. 'backbone.0.weight'")``.

    Raises:
        ValueError: if no family matches, with the families tried and keys none of them takes.

    Example:
        >>> detect_family({"conv1.weights_3d": torch.zeros(1), "bn1.weight": torch.zeros(1)})[0]
        'authors'
    """
    keys = [str(k) for k in state_dict]
    for family, wants, sign in _SIGNS:
        found = sign(keys)
        if found is not None:
            return family, f"{wants}, e.g. {found!r}"
    odd = [k for k in keys if not _pytorch_name(k)]
    tried = "; ".join(f"{family} ({wants})" for family, wants, _ in _SIGNS)
    raise ValueError(
        f"`state_dict` matches no checkpoint family: tried {tried}. {len(odd)} keys none of them takes: "
        f"{', '.join(map(repr, odd[:5]))}{', ...' if len(odd) > 5 else ''}."
    )
