"""Evaluations of Cross-D transfer; ``python -m monai_crossd.apps.transfer --help``."""

from __future__ import annotations

from .segmentation import SegmentationNet, dice_per_class, segmentation_metrics, segmentation_weak_probing
from .study import METHODS, PROTOCOLS, TransferConfig, classification_metrics, run_transfer, target_kind

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "SegmentationNet",
    "TransferConfig",
    "classification_metrics",
    "dice_per_class",
    "run_transfer",
    "segmentation_metrics",
    "segmentation_weak_probing",
    "target_kind",
]
