"""What the monai_crossd bundles (``bundles/*``) call: checkpoints, writers, metrics, bundle paths, training helpers.

Files are written through :mod:`monai_crossd.apps.io` (atomic, mode 0644).
"""

from __future__ import annotations

from .cases import (
    FAILED_KEY,
    CaseDataset,
    CaseFailures,
    check_output_dir,
    collate_cases,
    output_file,
    tolerant_datalist,
)
from .checkpoints import (
    AtomicDiskSaver,
    BestCheckpointSaver,
    CheckedCheckpointLoader,
    LastCheckpointSaver,
    ResumeCheckpointLoader,
    state_dict_mismatch,
)
from .errors import FailedCasesError, error_chain, error_message
from .metrics import Accuracy, BalancedAccuracy, PerClassMetrics, accuracy, balanced_accuracy
from .model_config import (
    MODEL_SHA256_KEY,
    SHIPPED_DIR,
    check_model_pair,
    checkpoint_file,
    file_sha256,
    model_config_file,
    read_model_config,
    write_model_config,
)
from .paths import bundle_root_from_config, config_path_from_stack, should_resume
from .training import FINETUNE_MODES, EpochSeed, read_json, trainable_parameters, with_pretrained_2d, write_json
from .writers import AtomicNibabelWriter, ClassificationWriter, MetricsHistoryWriter

__all__ = [
    "FAILED_KEY",
    "FINETUNE_MODES",
    "MODEL_SHA256_KEY",
    "SHIPPED_DIR",
    "Accuracy",
    "AtomicNibabelWriter",
    "AtomicDiskSaver",
    "BalancedAccuracy",
    "BestCheckpointSaver",
    "CaseDataset",
    "CaseFailures",
    "CheckedCheckpointLoader",
    "ClassificationWriter",
    "EpochSeed",
    "FailedCasesError",
    "LastCheckpointSaver",
    "MetricsHistoryWriter",
    "PerClassMetrics",
    "ResumeCheckpointLoader",
    "accuracy",
    "balanced_accuracy",
    "check_model_pair",
    "checkpoint_file",
    "check_output_dir",
    "collate_cases",
    "file_sha256",
    "model_config_file",
    "output_file",
    "bundle_root_from_config",
    "config_path_from_stack",
    "error_chain",
    "error_message",
    "read_json",
    "read_model_config",
    "should_resume",
    "state_dict_mismatch",
    "tolerant_datalist",
    "trainable_parameters",
    "with_pretrained_2d",
    "write_json",
    "write_model_config",
]
