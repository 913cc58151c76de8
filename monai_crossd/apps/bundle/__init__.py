"""Helpers used by the monai_crossd bundles (``bundles/*``): bundle paths, checkpoint and output handlers."""

from __future__ import annotations

from .handlers import (
    BestCheckpointSaver,
    CheckedCheckpointLoader,
    ClassificationWriter,
    EpochSeed,
    LastCheckpointSaver,
    MetricsHistoryWriter,
    ResumeCheckpointLoader,
    atomic_torch_save,
    atomic_write_bytes,
)
from .metrics import Accuracy, BalancedAccuracy, PerClassMetrics, accuracy, balanced_accuracy
from .paths import bundle_root_from_config, config_path_from_stack, should_resume
from .training import FINETUNE_MODES, read_json, trainable_parameters, with_pretrained_2d, write_json

__all__ = [
    "Accuracy",
    "BalancedAccuracy",
    "PerClassMetrics",
    "accuracy",
    "balanced_accuracy",
    "FINETUNE_MODES",
    "BestCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClassificationWriter",
    "EpochSeed",
    "LastCheckpointSaver",
    "MetricsHistoryWriter",
    "ResumeCheckpointLoader",
    "atomic_torch_save",
    "atomic_write_bytes",
    "bundle_root_from_config",
    "config_path_from_stack",
    "read_json",
    "should_resume",
    "trainable_parameters",
    "with_pretrained_2d",
    "write_json",
]
