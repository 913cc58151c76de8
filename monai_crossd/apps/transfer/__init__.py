"""The 2D -> 3D transfer study on MONAI's engines; ``python -m monai_crossd.apps.transfer --help``."""

from __future__ import annotations

from .classification import classification_metrics, classification_task
from .segmentation import SegmentationNet, segmentation_task
from .study import METHODS, PROTOCOLS, TransferConfig, run_transfer, target_kind
from .training import Task, fit

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "SegmentationNet",
    "Task",
    "TransferConfig",
    "classification_metrics",
    "classification_task",
    "fit",
    "run_transfer",
    "segmentation_task",
    "target_kind",
]
