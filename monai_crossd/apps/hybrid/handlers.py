"""The training loss per spatial dimension of a hybrid 2D+3D run, as trainer metrics (``train_loss_2d``/``_3d``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events
from monai.utils import CommonKeys

from .loader import HybridLoader

__all__ = ["DimensionLossLogger"]


class DimensionLossLogger:
    """Mean training loss of the 2D and of the 3D iterations of each epoch, in ``engine.state.metrics`` (trainer).

    On ``EPOCH_COMPLETED`` it sets ``{prefix}_2d`` and ``{prefix}_3d`` (NaN for a dimension without iterations in
    the epoch), where MONAI's ``StatsHandler`` and the bundles' writers read metrics. The dimension of an iteration
    is the loader's :attr:`~HybridLoader.last_dims`; the loss is the trainer output's ``loss`` (the weighted loss
    the trainer optimised; the first item's when the output is decollated).

    Args:
        loader: the trainer's :class:`HybridLoader`.
        prefix: metric name prefix. Defaults to ``"train_loss"``.

    Raises:
        TypeError: ``loader`` is not a :class:`HybridLoader`.
    """

    def __init__(self, loader: HybridLoader, prefix: str = "train_loss") -> None:
        if not isinstance(loader, HybridLoader):
            raise TypeError(f"`loader` should be a HybridLoader, got {type(loader).__name__}.")
        self.loader, self.prefix = loader, prefix
        self.losses: dict[int, list[float]] = {2: [], 3: []}

    def attach(self, engine: Engine) -> None:
        """Reset on ``EPOCH_STARTED``, collect on ``ITERATION_COMPLETED``, report on ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.report)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the losses collected so far."""
        self.losses = {2: [], 3: []}

    def collect(self, engine: Engine) -> None:
        """Add the loss of the iteration just completed to its dimension's list."""
        output = engine.state.output
        output = output[0] if isinstance(output, list) else output  # MONAI's decollated output
        if isinstance(output, Mapping) and CommonKeys.LOSS in output and self.loader.last_dims in self.losses:
            loss = output[CommonKeys.LOSS]
            self.losses[self.loader.last_dims].append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))

    def report(self, engine: Engine) -> None:
        """Write the epoch's means to ``engine.state.metrics``."""
        for dims, values in self.losses.items():
            engine.state.metrics[f"{self.prefix}_{dims}d"] = sum(values) / len(values) if values else math.nan
