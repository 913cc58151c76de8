"""Evaluations of Cross-D transfer; ``python -m monai_crossd.evaluate --help``."""

from __future__ import annotations

from .transfer import METHODS, PROTOCOLS, TransferConfig, classification_metrics, run_transfer

__all__ = ["METHODS", "PROTOCOLS", "TransferConfig", "classification_metrics", "run_transfer"]
