"""What the bundle configs call to train: transfer protocol, 2D-pretrained loading, per-epoch seeding, model settings."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism
from torch import nn

from monai_crossd.apps import probing
from monai_crossd.apps.io import atomic_write_bytes
from monai_crossd.utils import look_up

__all__ = ["FINETUNE_MODES", "EpochSeed", "read_json", "trainable_parameters", "with_pretrained_2d", "write_json"]

logger = logging.getLogger(__name__)

#: ``finetune`` values: the transfer protocols of :mod:`monai_crossd.apps.probing`
FINETUNE_MODES = tuple(probing.PROTOCOLS)


def trainable_parameters(network: nn.Module, finetune: str = "full") -> list[nn.Parameter]:
    """The parameters to optimise under a transfer protocol (and ``requires_grad`` set accordingly).

    Args:
        network: the model.
        finetune: ``"weak_probing"`` (norm layers and ``fc``), ``"linear_probing"`` (``fc``) or ``"full"``.
            Defaults to ``"full"``.

    Raises:
        ValueError: unknown ``finetune`` (with a "did you mean").
    """
    finetune = look_up(finetune, FINETUNE_MODES, "finetune")
    params = probing.protocol_parameters(network, finetune)
    logger.info(
        "finetune=%s: %d of %d parameters train.",
        finetune,
        sum(p.numel() for p in params),
        sum(p.numel() for p in network.parameters()),
    )
    return params


def with_pretrained_2d(network: nn.Module, path: str | os.PathLike | None, strict: bool = True, **kwargs: Any):
    """Load 2D-pretrained weights into ``network`` (no-op when ``path`` is ``None``) and return ``network``.

    Uses :func:`monai_crossd.converters.load_pretrained_2d` (``strict``, ``kwargs`` passed on); its report is logged.

    Raises:
        ValueError: ``path`` is given but is not a file.
    """
    if path is None or path == "":
        return network
    if not os.path.isfile(path):
        raise ValueError(f"`pretrained_2d` should be a checkpoint file, got {str(path)!r} (not found).")
    from monai_crossd.converters import load_pretrained_2d

    report = load_pretrained_2d(network, path, strict=strict, **kwargs)
    logger.info("loaded 2D-pretrained weights from %s: %s", path, report)
    return network


class EpochSeed:
    """Reseed every random generator from ``(seed, epoch)`` before the first batch of each trainer epoch.

    ``set_determinism`` at start-up fixes one random stream for the whole run: a run resumed from ``last.pt``
    restarts that stream, so its shuffling and augmentations differ from the uninterrupted run's. Reseeding per
    epoch (Python, NumPy and torch generators, and the random transforms of ``transform``) makes epoch ``e`` depend
    on ``seed`` and ``e`` only: killed and resumed, a run ends with the weights of the uninterrupted one.

    The reseed happens on ``GET_BATCH_STARTED`` of an epoch's first batch, before the batch is read. Ignite creates
    the epoch's data iterator before that event in a resumed run but after it in a fresh one, so the shuffling
    must not draw from the global generators: the bundles use a one-replica ``DistributedSampler`` (its order is
    a function of its seed and the epoch, which MONAI's trainers set) and give the ``DataLoader`` its own
    ``generator`` (drawn from when the iterator is created).

    Args:
        seed: base seed; epoch ``e`` uses ``seed + e``. ``None`` disables the handler.
        transform: the training transform (a ``Compose``) whose random transforms are reseeded too; ``None``
            leaves them alone.
    """

    def __init__(self, seed: int | None, transform: Any = None) -> None:
        self.seed = None if seed is None else int(seed)
        self.transform = transform

    def attach(self, engine: Engine) -> None:
        """Reseed before the first batch of every epoch of ``engine``."""
        if self.seed is not None:
            engine.add_event_handler(Events.GET_BATCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        if not length or engine.state.iteration % length:
            return
        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed)
        if self.transform is not None:
            set_rnd(self.transform, seed)


def write_json(path: str | os.PathLike, content: Mapping[str, Any]) -> str:
    """Write ``content`` as indented JSON, atomically; returns the path."""
    return atomic_write_bytes((json.dumps(dict(content), indent=2, default=str) + "\n").encode(), path)


def read_json(path: str | os.PathLike, default: Mapping[str, Any] | None = None) -> dict:
    """Read a JSON object; ``default`` (a copy) when the file does not exist.

    Values of ``default`` missing from the file are filled in.

    Raises:
        ValueError: the file does not exist and no ``default`` is given.
        TypeError: the file does not hold a JSON object.
    """
    if not os.path.isfile(path):
        if default is None:
            raise ValueError(f"JSON file {str(path)!r} not found.")
        logger.info("%s not found: using defaults %s", path, dict(default))
        return dict(default)
    with open(path) as f:
        content = json.load(f)
    if not isinstance(content, dict):
        raise TypeError(f"JSON file {str(path)!r} should hold an object, got {type(content).__name__}.")
    return {**dict(default or {}), **content}
