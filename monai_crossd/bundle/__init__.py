"""Helpers used by the monai_crossd bundles (``bundles/*``): bundle paths, checkpoint and output handlers."""

from __future__ import annotations

from .handlers import (
    BestCheckpointSaver,
    ClassificationWriter,
    LastCheckpointSaver,
    MetricsHistoryWriter,
    atomic_torch_save,
    atomic_write_bytes,
)
from .paths import bundle_root_from_config, config_path_from_stack, should_resume

__all__ = [
    "BestCheckpointSaver",
    "ClassificationWriter",
    "LastCheckpointSaver",
    "MetricsHistoryWriter",
    "atomic_torch_save",
    "atomic_write_bytes",
    "bundle_root_from_config",
    "config_path_from_stack",
    "should_resume",
]
