"""Transfer protocols of Cross-D Conv (Yavuz & Yang, arXiv 2411.02441): which parameters train.

- weak probing (the paper's protocol for judging transferred 3D features): the normalisation layers
  and the final linear layer train, everything else (the Cross-D knowledge bases and their rotation
  networks included) is frozen. This follows the authors' evaluation code, which leaves the network's
  ``BatchNorm3d`` and ``nn.Linear`` layers trainable and freezes the rest, the rotation networks'
  own ``BatchNorm2d`` included.
- linear probing: only the final linear layer trains.
- full fine-tuning: everything trains.

Each function sets ``requires_grad`` on every parameter of the model (in place) and returns the
trainable parameters, so that it can feed an optimizer directly, also from a MONAI bundle config::

    "imports": ["$import monai_crossd", "$import monai_crossd.apps.probing"],
    "optimizer": {
        "_target_": "torch.optim.Adam",
        "params": "$monai_crossd.apps.probing.weak_probing(@network)",
        "lr": 0.001
    }

Only ``requires_grad`` changes: in ``train()`` mode the running statistics of frozen BatchNorm layers
still update, as in the authors' protocol.
"""

from __future__ import annotations

import logging

import torch.nn as nn

from monai_crossd.networks.blocks.crossd_conv import RotationNetwork
from monai_crossd.utils import look_up

__all__ = ["NORM_TYPES", "PROTOCOLS", "find_classifier", "full_finetuning", "linear_probing", "protocol_parameters", "weak_probing"]

logger = logging.getLogger(__name__)

#: Module types treated as normalisation layers: batch/instance/sync-batch norms, group norm, layer norm.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` should be a torch.nn.Module, got {type(model).__name__}.")


def find_classifier(model: nn.Module, classifier: str | None = None) -> tuple[str, nn.Module]:
    """The final linear layer of ``model`` and its dotted name.

    Looked up, in order: the module named by ``classifier``; ``model.get_classifier()`` (timm's
    convention) if it returns a module; the last ``nn.Linear`` registered in ``model`` (``fc`` of
    :class:`~monai_crossd.networks.nets.CrossDResNet` and torchvision ResNets).

    Args:
        model: the network.
        classifier: dotted path of the final layer in ``model`` (e.g. ``"fc"``, ``"classifier.1"``);
            any module with parameters is accepted when named. Defaults to None (found automatically).

    Returns:
        ``(name, module)``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if ``classifier`` names no module with parameters, or if no final linear layer is found.
    """
    _check_model(model)
    if classifier is not None:
        try:
            module = model.get_submodule(classifier)
        except AttributeError as err:
            raise ValueError(f"`classifier` {classifier!r} is not a submodule of {type(model).__name__}.") from err
        if next(module.parameters(), None) is None:
            raise ValueError(f"`classifier` {classifier!r} of {type(model).__name__} has no parameters to train.")
        return classifier, module
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        module = get_classifier()
        if isinstance(module, nn.Module) and next(module.parameters(), None) is not None:
            for name, candidate in model.named_modules():
                if candidate is module:
                    return name, module
    found: tuple[str, nn.Module] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ValueError(
            f"{type(model).__name__} has no final linear layer (nn.Linear) to train; name the layer to train "
            "with `classifier` (a dotted module path, e.g. 'fc')."
        )
    return found


def _rotation_modules(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, RotationNetwork):
            ids.update(id(m) for m in module.modules())
    return ids


def _train_only(model: nn.Module, trainable: set[int], protocol: str) -> list[nn.Parameter]:
    params = []
    for param in model.parameters():  # shared parameters are visited once
        param.requires_grad_(id(param) in trainable)
        if param.requires_grad:
            params.append(param)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "%s: %d of %d parameters of %s train (%d tensors).",
        protocol, sum(p.numel() for p in params), total, type(model).__name__, len(params),
    )  # fmt: skip
    return params


def weak_probing(
    model: nn.Module, classifier: str | None = None, include_rotation_norm: bool = False
) -> list[nn.Parameter]:
    """Train only the normalisation layers (:data:`NORM_TYPES`) and the final linear layer.

    Args:
        model: the network; modified in place (``requires_grad`` of every parameter).
        classifier: dotted path of the final layer, see :func:`find_classifier`. Defaults to None.
        include_rotation_norm: also train the BatchNorm inside each Cross-D rotation network. Defaults to
            False (the authors' protocol freezes the whole Cross-D layer).

    Returns:
        the trainable parameters, in ``model.parameters()`` order.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if no final linear layer is found (see :func:`find_classifier`).

    Example:
        >>> import torch
        >>> from monai_crossd.networks.nets import crossd_resnet18
        >>> net = crossd_resnet18(spatial_dims=3, in_channels=1, num_classes=2)
        >>> optimizer = torch.optim.Adam(weak_probing(net), lr=1e-3)
        >>> [name for name, p in net.named_parameters() if p.requires_grad][-2:]
        ['fc.weight', 'fc.bias']
    """
    _, head = find_classifier(model, classifier)
    skip = set() if include_rotation_norm else _rotation_modules(model)
    trainable = {id(p) for p in head.parameters()}
    for module in model.modules():
        if isinstance(module, NORM_TYPES) and id(module) not in skip:
            trainable.update(id(p) for p in module.parameters(recurse=False))
    return _train_only(model, trainable, "weak probing")


def linear_probing(model: nn.Module, classifier: str | None = None) -> list[nn.Parameter]:
    """Train only the final linear layer.

    Args:
        model: the network; modified in place (``requires_grad`` of every parameter).
        classifier: dotted path of the final layer, see :func:`find_classifier`. Defaults to None.

    Returns:
        the final layer's parameters.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if no final linear layer is found.
    """
    _, head = find_classifier(model, classifier)
    return _train_only(model, {id(p) for p in head.parameters()}, "linear probing")


def full_finetuning(model: nn.Module) -> list[nn.Parameter]:
    """Train every parameter.

    Args:
        model: the network; modified in place (``requires_grad=True`` everywhere).

    Returns:
        all parameters of ``model``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    _check_model(model)
    return _train_only(model, {id(p) for p in model.parameters()}, "full fine-tuning")


#: transfer protocol -> the function that sets ``requires_grad`` and returns the parameters to train
PROTOCOLS = {"weak_probing": weak_probing, "linear_probing": linear_probing, "full": full_finetuning}


def protocol_parameters(model: nn.Module, protocol: str, classifier: str | None = None) -> list[nn.Parameter]:
    """The parameters to train under ``protocol`` (one of :data:`PROTOCOLS`), ``requires_grad`` set accordingly.

    Args:
        model: the network; modified in place.
        protocol: ``"weak_probing"``, ``"linear_probing"`` or ``"full"``.
        classifier: dotted path of the final layer for the probing protocols (see :func:`find_classifier`).

    Raises:
        ValueError: an unknown ``protocol`` (with a "did you mean").

    Example:
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
        >>> len(protocol_parameters(model, "linear_probing")), len(protocol_parameters(model, "full"))
        (2, 6)
    """
    protocol = look_up(protocol, tuple(PROTOCOLS), "protocol")
    if protocol == "full":
        return full_finetuning(model)
    return PROTOCOLS[protocol](model, classifier)
