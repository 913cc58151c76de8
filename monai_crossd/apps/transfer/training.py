"""One run of the transfer study on MONAI's engines: ``SupervisedTrainer`` validated each epoch by a
``SupervisedEvaluator``, the state of the best validation epoch kept and tested.

A :class:`Task` is what a target kind (:mod:`~monai_crossd.apps.transfer.classification`,
:mod:`~monai_crossd.apps.transfer.segmentation`) gives the training: MONAI datasets, a loss, ignite/MONAI metrics
(the first one picks the epoch), the evaluators' post-processing and how the results are reported.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import torch
from ignite.engine import Events
from ignite.metrics import Average, Metric
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler, ValidationHandler
from monai.transforms import Transform
from monai.utils import CommonKeys
from torch import nn

__all__ = ["Task", "fit"]

logger = logging.getLogger(__name__)
_quiet = logging.getLogger(f"{__name__}.engines")  # the engines' own per-epoch lines; the study logs its own
_quiet.setLevel(logging.WARNING)


@dataclass
class Task:
    """What a target kind gives :func:`fit` and the report.

    Attributes:
        datasets: ``{"train", "val"[, "test"]}`` MONAI datasets of ``{"image", "label"}`` items.
        loss: the training loss of ``(pred, label)`` batches.
        metrics: returns fresh ``{name: ignite metric}`` for one evaluator; the first is the key metric that picks
            the epoch (larger is better).
        postprocessing: applied by the evaluators to each decollated ``{"pred", "label"}`` before the metrics.
        columns: reported metric -> its title; the keys are read from the evaluators' metrics.
        report: the target's description, saved with the results.
        handlers: returns extra evaluator handlers, run after the metrics (e.g. a per-class split). Defaults to none.
    """

    datasets: dict[str, Dataset]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Callable[[], dict[str, Metric]]
    postprocessing: Transform
    columns: dict[str, str]
    report: dict
    handlers: Callable[[], list] = field(default=list)


class _KeepBest:
    """Evaluator handler: a copy of the model state and the metrics of the epoch with the best key metric.

    MONAI's workflow updates ``best_metric_epoch`` before this runs; until the key metric is first finite (an AUC
    with one class absent is NaN), the first epoch is kept.
    """

    def __init__(self, model: nn.Module, columns: Mapping[str, str]) -> None:
        self.model, self.columns = model, columns
        self.state: dict | None = None
        self.epoch, self.metrics = 0, {}

    def attach(self, engine: SupervisedEvaluator) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: SupervisedEvaluator) -> None:
        if self.state is None or engine.state.best_metric_epoch == engine.state.epoch:
            self.state = copy.deepcopy(self.model.state_dict())
            self.epoch, self.metrics = engine.state.epoch, _values(engine.state.metrics, self.columns)


def _values(metrics: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in columns}


def _evaluator(model: nn.Module, task: Task, split: str, batch_size: int, device: torch.device) -> SupervisedEvaluator:
    metrics = task.metrics()
    key = next(iter(metrics))
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=DataLoader(task.datasets[split], batch_size=batch_size),
        network=model,
        postprocessing=task.postprocessing,
        key_val_metric={key: metrics.pop(key)},
        additional_metrics=metrics,
        val_handlers=task.handlers(),
    )
    evaluator.logger = _quiet
    return evaluator


def fit(
    model: nn.Module,
    params: list[nn.Parameter],
    task: Task,
    epochs: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int,
    label: str,
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
) -> dict:
    """Train ``params`` of ``model`` (cosine schedule), validate every epoch, test the best validation epoch's state.

    Args:
        model: on ``device``.
        params: the parameters to optimise (a transfer protocol of :mod:`monai_crossd.apps.probing`).
        task: data, loss and metrics.
        epochs: training epochs.
        lr: learning rate of ``optimizer``.
        batch_size: of every loader; a last training batch of one sample is dropped (BatchNorm needs two).
        device: where the batches go.
        seed: of the training loader's shuffle.
        label: prefix of the progress log lines.
        optimizer: its class. Defaults to ``torch.optim.Adam``.

    Returns:
        ``{"history": [{"epoch", "loss", "val", "seconds"}, ...]}``, plus ``"best_epoch"``, ``"val"`` and
        ``"test"`` (metrics of the best validation epoch's state) when ``task`` has a test split.

    Raises:
        ValueError: the training split has fewer than 2 samples (zero training steps).
    """
    opt = optimizer(params, lr=lr)
    train = task.datasets["train"]
    if len(train) < 2:  # one sample: its batch is dropped (BatchNorm needs two) and nothing would train
        raise ValueError(f"{label}: the training split has {len(train)} sample(s); at least 2 are needed to train a step.")
    loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), drop_last=len(train) % batch_size == 1
    )
    validator = _evaluator(model, task, "val", batch_size, device)
    best = _KeepBest(model, task.columns)
    best.attach(validator)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=loader,
        network=model,
        optimizer=opt,
        loss_function=task.loss,
        decollate=False,
        key_train_metric={"loss": Average(output_transform=itemgetter(CommonKeys.LOSS))},
        train_handlers=[
            LrScheduleHandler(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), print_lr=False),
            ValidationHandler(interval=1, validator=validator, epoch_level=True),
        ],
    )
    trainer.logger = _quiet
    history: list[dict] = []

    @trainer.on(Events.EPOCH_STARTED)
    def _start(engine: SupervisedTrainer) -> None:
        engine.state.started = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _log(engine: SupervisedTrainer) -> None:
        val = _values(validator.state.metrics, task.columns)
        row = {"epoch": engine.state.epoch, "loss": float(engine.state.metrics["loss"]), "val": val}
        row["seconds"] = time.perf_counter() - engine.state.started
        history.append(row)
        shown = " ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in val.items())
        logger.info("%s epoch %d/%d loss %.4f val %s (%.1fs)", label, row["epoch"], epochs, row["loss"], shown, row["seconds"])

    trainer.run()
    result: dict = {"history": history}
    if "test" in task.datasets:
        model.load_state_dict(best.state)
        tester = _evaluator(model, task, "test", batch_size, device)
        tester.run()
        result.update(best_epoch=best.epoch, val=best.metrics, test=_values(tester.state.metrics, task.columns))
    return result
