"""Training helpers for bundles and evaluations: which parameters train under each transfer protocol."""

from __future__ import annotations

from .probing import NORM_TYPES, find_classifier, full_finetuning, linear_probing, weak_probing

__all__ = ["NORM_TYPES", "find_classifier", "full_finetuning", "linear_probing", "weak_probing"]
