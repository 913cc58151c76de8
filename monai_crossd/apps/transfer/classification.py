"""Classification targets (and the 2D source) of the transfer study: MedMNIST ``.npz`` files on MONAI's machinery.

The files' own train/val/test splits are kept (:func:`~monai_crossd.apps.data.medmnist_datalist`; several files share
one label space); ``ScaleIntensityRanged`` maps the uint8 intensities to ``[-1, 1]``. Metrics, on softmax scores:
MONAI's ``ROCAUC`` (macro one-vs-rest; it picks the epoch), accuracy and balanced accuracy (mean per-class recall)
from :mod:`monai_crossd.apps.bundle.metrics`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.data import CacheDataset
from monai.handlers import ROCAUC, from_engine
from monai.metrics import compute_roc_auc
from monai.transforms import Activationsd, AsDiscreted, Compose, EnsureTyped, ScaleIntensityRanged
from torch import nn

from monai_crossd.apps.bundle.metrics import Accuracy, BalancedAccuracy, accuracy, balanced_accuracy
from monai_crossd.apps.data.medmnist import medmnist_datalist, medmnist_num_classes
from monai_crossd.apps.transfer.training import Task

__all__ = ["COLUMNS", "classification_metrics", "classification_task"]

#: reported metric -> column title (``auc`` picks the epoch).
COLUMNS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "auc": "AUC"}


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC (macro one-vs-rest, NaN when a class is absent) of ``(N, C)`` logits.

    The study computes the same metrics with MONAI/ignite handlers; this is the one-call form for notebooks.

    Args:
        logits: ``(N, C)`` scores.
        labels: ``(N,)`` class indices.
    """
    prob = torch.softmax(logits.float(), dim=1)
    onehot = torch.nn.functional.one_hot(labels, prob.shape[1]).float()
    auc = float(compute_roc_auc(prob, onehot, average="macro")) if prob.shape[1] > 1 else float("nan")
    return {"accuracy": accuracy(prob, labels), "balanced_accuracy": balanced_accuracy(prob, labels), "auc": auc}


def _metrics() -> dict:
    pair = from_engine(["pred", "label"])
    return {"auc": ROCAUC(output_transform=pair), "accuracy": Accuracy(pair), "balanced_accuracy": BalancedAccuracy(pair)}


def classification_task(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    max_samples: int | None = None,
    splits: Sequence[str] = ("train", "val", "test"),
) -> Task:
    """The :class:`~monai_crossd.apps.transfer.training.Task` of MedMNIST files.

    Args:
        paths: one ``.npz`` (a 3D target) or several (the 2D source, one label space).
        max_samples: cap per file and split, a random subset (seed 0). Defaults to None (all).
        splits: the splits to load. Defaults to train, val and test.
    """
    num_classes = medmnist_num_classes(paths)
    transform = Compose(
        [
            ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0),
            EnsureTyped("image", dtype=torch.float32, track_meta=False),
        ]
    )
    datasets = {
        s: CacheDataset(medmnist_datalist(paths, s, max_samples, seed=0), transform, progress=False, copy_cache=False)
        for s in splits
    }
    report = {"kind": "classification", "num_classes": num_classes, "samples": {s: len(d) for s, d in datasets.items()}}
    post = Compose([Activationsd("pred", softmax=True), AsDiscreted("label", to_onehot=num_classes)])
    return Task(datasets, nn.CrossEntropyLoss(), _metrics, post, dict(COLUMNS), report)
