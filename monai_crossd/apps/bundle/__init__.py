"""What the monai_crossd bundles (``bundles/*``) call: checkpoints, writers, metrics, bundle paths, training helpers.

Files are written through :mod:`monai_crossd.apps.io` (atomic, mode 0644).
"""

from __future__ import annotations

from .checkpoints import (
    AtomicDiskSaver,
    BestCheckpointSaver,
    CheckedCheckpointLoader,
    LastCheckpointSaver,
    ResumeCheckpointLoader,
    state_dict_mismatch,
)
from .metrics import Accuracy, BalancedAccuracy, PerClassMetrics, accuracy, balanced_accuracy
from .paths import bundle_root_from_config, config_path_from_stack, should_resume
from .training import FINETUNE_MODES, EpochSeed, read_json, trainable_parameters, with_pretrained_2d, write_json
from .writers import ClassificationWriter, MetricsHistoryWriter

__all__ = [
    "FINETUNE_MODES",
    "Accuracy",
    "AtomicDiskSaver",
    "BalancedAccuracy",
    "BestCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClassificationWriter",
    "EpochSeed",
    "LastCheckpointSaver",
    "MetricsHistoryWriter",
    "PerClassMetrics",
    "ResumeCheckpointLoader",
    "accuracy",
    "balanced_accuracy",
    "bundle_root_from_config",
    "config_path_from_stack",
    "read_json",
    "should_resume",
    "state_dict_mismatch",
    "trainable_parameters",
    "with_pretrained_2d",
    "write_json",
]
