"""MONAI Label infer tasks over the repository's Cross-D bundles.

Both tasks run the bundle's own ``network_def`` and ``inferer`` from its ``configs/inference.json``; what they add:

* :class:`CrossDSegmentationInfer`: the bundle's preprocessing and postprocessing (minus ``SaveImaged``), with
  MONAI Label's ``image_path`` string moved out of the way first (:class:`~lib.transforms.StashImagePathd`), then
  MONAI Label's ``Restored`` so the label comes back on the input's grid (shape and affine of the input).
* :class:`CrossDClassificationInfer`: MONAI Label's classification type, without the restore step; the input is a
  multi-modal study (:class:`~lib.transforms.LoadStudyd`: a 4-channel NIfTI or a folder of DICOM series), the
  bundle's preprocessing runs without its loading transforms, and the output is a vector of class probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from monai.transforms import EnsureChannelFirstd, LoadImaged, SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.transforms import MODALITIES, LoadStudyd, StashImagePathd, ToProbabilitiesd

__all__ = ["CrossDClassificationInfer", "CrossDSegmentationInfer"]

logger = logging.getLogger(__name__)


class CrossDSegmentationInfer(BundleInferTask):
    """Segmentation with a Cross-D bundle (e.g. ``crossd_hippocampus_segmentation``).

    Args:
        path: the (working copy of the) bundle folder.
        conf: the app's ``--conf`` options.
        kwargs: further :class:`monailabel.tasks.infer.bundle.BundleInferTask` arguments.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("post_filter", [SaveImaged])
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, type=InferType.SEGMENTATION, **kwargs)

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return [StashImagePathd(result_dtype="uint8"), *super().pre_transforms(data)]


class CrossDClassificationInfer(BundleInferTask):
    """Classification of a multi-modal study with a Cross-D bundle (e.g. ``crossd_brats``).

    Input: ``image`` is a 4D NIfTI ``(X, Y, Z, 4)`` with channels ``FLAIR, T1w, T1wCE, T2w`` or a study folder of
    four DICOM series (or NIfTI files) named after the modalities. Output (``output=json``):
    ``{"prediction": [{"idx": i, "label": name, "score": p}, ...]}``.

    Args:
        path: the (working copy of the) bundle folder.
        conf: the app's ``--conf`` options (``modalities``: comma-separated channel order; defaults to
            ``FLAIR,T1w,T1wCE,T2w``).
        kwargs: further :class:`monailabel.tasks.infer.bundle.BundleInferTask` arguments.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False, **kwargs)
        order = conf.get("modalities")
        self.modalities = tuple(m.strip() for m in order.split(",")) if order else MODALITIES

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        bundle_pre = super().pre_transforms(data)
        # the study is loaded here (4D NIfTI or DICOM study folder); the bundle's loading steps are dropped
        dropped = (LoadImaged, EnsureChannelFirstd)
        kept = [t for t in bundle_pre if not isinstance(t, dropped) and type(t).__name__ != "LoadImageTensord"]
        return [StashImagePathd(), LoadStudyd(keys=self.key_image, modalities=self.modalities), *kept]

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        # the bundle's postprocessing (argmax, saving, inverting) is for files; MONAI Label wants scores
        return [ToProbabilitiesd(keys=self.key_pred)]

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        label_file, result = super().writer(data, extension, dtype)
        result["modalities"] = list(self.modalities)
        return label_file, result

