"""Hybrid 2D+3D training of one Cross-D network (:class:`~monai_crossd.networks.nets.DualDimNet`) on MONAI's engines.

A MONAI ``SupervisedTrainer`` runs it unchanged: :class:`HybridLoader` is its ``train_data_loader`` (and one of its
``train_handlers``, to follow the epoch), :class:`DimensionWeightedLoss` its ``loss_function``, and
:class:`DimensionLossLogger` reports ``train_loss_2d`` / ``train_loss_3d`` per epoch. Checkpoints and resume
are the bundles' (:mod:`monai_crossd.apps.bundle`). The hippocampus bundle's ``configs/hybrid.json`` puts them
together; :mod:`~monai_crossd.apps.hybrid.study` (``python -m monai_crossd.apps.hybrid study``) measures what that
buys when only a few volumes are fully labelled.
"""

from __future__ import annotations

from .handlers import DimensionLossLogger
from .loader import HybridLoader, hybrid_schedule
from .loss import DimensionWeightedLoss

__all__ = ["DimensionLossLogger", "DimensionWeightedLoss", "HybridLoader", "hybrid_schedule"]
