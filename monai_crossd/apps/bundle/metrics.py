"""Metrics for the monai_crossd bundles that MONAI lacks or computes differently.

* :func:`balanced_accuracy` / :class:`BalancedAccuracy`: the mean per-class recall (``sklearn``'s
  ``balanced_accuracy_score``). MONAI's ``ConfusionMatrixMetric("balanced accuracy")`` with its default
  ``reduction="mean"`` averages the one-vs-rest confusion matrices of all classes first, which for two
  one-hot classes gives the plain accuracy.
* :func:`accuracy` / :class:`Accuracy`: the fraction of correct argmax predictions, taking MONAI's
  decollated lists of per-case tensors (ignite's ``Accuracy`` wants collated index labels).
* :class:`PerClassMetrics`: splits a per-class metric vector (e.g. ``MeanDice(reduction="mean_batch")``)
  into one scalar metric per class, so that ``StatsHandler``, ``TensorBoardStatsHandler`` and
  ``MetricsSaver`` log ``val_dice_anterior`` and ``val_dice_posterior``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric

__all__ = ["Accuracy", "BalancedAccuracy", "PerClassMetrics", "accuracy", "balanced_accuracy"]

logger = logging.getLogger(__name__)


def _labels(values: torch.Tensor | Sequence, name: str) -> torch.Tensor:
    """Class indices ``(N,)`` from indices ``(N,)``/``(N, 1)`` or scores/one-hot ``(N, C)`` (argmax)."""
    if isinstance(values, (list, tuple)):
        values = torch.stack([torch.as_tensor(v) for v in values]) if len(values) else torch.zeros(0)
    values = torch.as_tensor(values).detach().cpu()
    if values.ndim == 2 and values.shape[1] > 1:
        return values.argmax(1).long()
    if values.ndim == 2 and values.shape[1] == 1 or values.ndim == 1:
        return values.reshape(-1).round().long()
    raise ValueError(
        f"`{name}` should be class indices (N,) or (N, 1), or scores (N, C), got shape {tuple(values.shape)}."
    )


def accuracy(y_pred: torch.Tensor | Sequence, y: torch.Tensor | Sequence) -> float:
    """Fraction of cases whose predicted class (argmax of scores, or the index) equals the true one.

    Args:
        y_pred: predicted class indices ``(N,)`` or scores/one-hot ``(N, C)``.
        y: true class indices ``(N,)``/``(N, 1)`` or one-hot ``(N, C)``.

    Returns:
        the accuracy in ``[0, 1]``; NaN when ``y`` is empty.

    Example:
        >>> accuracy(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
        0.5
    """
    pred, true = _labels(y_pred, "y_pred"), _labels(y, "y")
    if pred.shape != true.shape:
        raise ValueError(
            f"`y_pred` and `y` should hold the same number of cases, got {tuple(pred.shape)} and {tuple(true.shape)}."
        )
    return float((pred == true).float().mean()) if true.numel() else float("nan")


def balanced_accuracy(
    y_pred: torch.Tensor | Sequence, y: torch.Tensor | Sequence, num_classes: int | None = None
) -> float:
    """Mean recall over the classes present in ``y``.

    Args:
        y_pred: predicted class indices ``(N,)`` or scores/one-hot ``(N, C)`` (argmax taken).
        y: true class indices ``(N,)``/``(N, 1)`` or one-hot ``(N, C)``.
        num_classes: size of the label space. Defaults to the largest index seen + 1.

    Returns:
        the balanced accuracy in ``[0, 1]``; NaN when ``y`` is empty.

    Example:
        >>> balanced_accuracy(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]))
        0.75
    """
    pred, true = _labels(y_pred, "y_pred"), _labels(y, "y")
    if pred.shape != true.shape:
        raise ValueError(
            f"`y_pred` and `y` should hold the same number of cases, got {tuple(pred.shape)} and {tuple(true.shape)}."
        )
    if true.numel() == 0:
        return float("nan")
    n = int(num_classes) if num_classes is not None else int(max(pred.max(), true.max())) + 1
    recalls = [(pred[true == c] == c).float().mean() for c in range(n) if (true == c).any()]
    return float(torch.stack(recalls).mean())


class BalancedAccuracy(Metric):
    """Ignite metric: :func:`balanced_accuracy` over an evaluation (attach with a name, like MONAI's handlers).

    Predictions and labels are gathered across processes when ``torch.distributed`` is initialised.

    Args:
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``, e.g.
            ``monai.handlers.from_engine(["pred", "label"])`` (lists of per-case tensors are accepted).
        num_classes: size of the label space. Defaults to None (inferred).
        device: ignite's metric device. Defaults to CPU.
    """

    def __init__(
        self,
        output_transform: Callable = lambda x: x,
        num_classes: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_classes = num_classes
        self._pred: list[torch.Tensor] = []
        self._true: list[torch.Tensor] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._pred, self._true = [], []

    def update(self, output: Sequence[Any]) -> None:
        y_pred, y = output
        self._pred.append(_labels(y_pred, "y_pred"))
        self._true.append(_labels(y, "y"))

    def compute(self) -> float:
        pred = torch.cat(self._pred) if self._pred else torch.zeros(0, dtype=torch.long)
        true = torch.cat(self._true) if self._true else torch.zeros(0, dtype=torch.long)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from monai.utils import evenly_divisible_all_gather

            pred, true = evenly_divisible_all_gather(pred), evenly_divisible_all_gather(true)
        if true.numel() == 0:
            return float("nan")
        return self._score(pred, true)

    def _score(self, pred: torch.Tensor, true: torch.Tensor) -> float:
        return balanced_accuracy(pred, true, self.num_classes)


class Accuracy(BalancedAccuracy):
    """Ignite metric: :func:`accuracy` over an evaluation; same arguments as :class:`BalancedAccuracy`."""

    def _score(self, pred: torch.Tensor, true: torch.Tensor) -> float:
        return accuracy(pred, true)


class PerClassMetrics:
    """Replace a per-class metric vector in ``engine.state.metrics`` by one scalar per class.

    Attach to an evaluator before ``StatsHandler``/``TensorBoardStatsHandler``/``MetricsSaver`` (its metrics
    are computed before any handler in the ``val_handlers`` list runs).

    Args:
        metric_name: the vector metric, e.g. ``"val_dice_per_class"`` from
            ``MeanDice(include_background=False, reduction="mean_batch")``.
        class_names: one name per entry of the vector, e.g. ``["anterior", "posterior"]``.
        prefix: of the new metric names (``prefix + class_name``). Defaults to ``"val_dice_"``.
        keep: keep the vector entry too. Defaults to False (loggers skip non-scalars with a warning).
    """

    def __init__(
        self, metric_name: str, class_names: Sequence[str], prefix: str = "val_dice_", keep: bool = False
    ) -> None:
        if not class_names:
            raise ValueError("`class_names` should name at least one class, got an empty sequence.")
        self.metric_name = metric_name
        self.class_names = list(class_names)
        self.prefix = prefix
        self.keep = keep

    def attach(self, engine: Any) -> None:
        """Run at the end of every evaluation of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        metrics = engine.state.metrics
        if self.metric_name not in metrics:
            raise ValueError(
                f"PerClassMetrics: metric {self.metric_name!r} not in the evaluator metrics {sorted(metrics)}."
            )
        values = torch.as_tensor(metrics[self.metric_name]).detach().cpu().float().reshape(-1)
        if values.numel() != len(self.class_names):
            raise ValueError(
                f"PerClassMetrics: {self.metric_name!r} should hold {len(self.class_names)} values "
                f"(`class_names` {self.class_names}), got {values.numel()}."
            )
        for name, value in zip(self.class_names, values.tolist()):
            metrics[f"{self.prefix}{name}"] = value
        if not self.keep:
            del metrics[self.metric_name]
