"""MONAI Label infer tasks over the repository's Cross-D bundles.

Both tasks run the bundle's own ``network_def`` and ``inferer`` from its ``configs/inference.json``; what they add:

* :class:`CrossDSegmentationInfer`: the bundle's preprocessing and postprocessing (minus ``SaveImaged``), with
  MONAI Label's ``image_path`` string moved out of the way first (:class:`~lib.transforms.StashImagePathd`), then
  MONAI Label's ``Restored`` so the label comes back on the input's grid (shape and affine of the input). A DICOM
  series folder given as the image is read with ``PydicomReader`` whatever reader the bundle names.
* :class:`CrossDClassificationInfer`: MONAI Label's classification type, without the restore step; the input is a
  multi-modal study (:class:`~lib.transforms.LoadStudyd`: a 4-channel NIfTI or a folder of DICOM series), the
  bundle's preprocessing runs without its loading transforms, and the output is a vector of class probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from lib.bundles import read_metadata
from lib.transforms import LoadStudyd, StashImagePathd, ToProbabilitiesd, is_dicom_series
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.transform.pre import LoadImageTensord

from monai_crossd.apps.data.checks import CheckedLoadImaged

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
        pre = list(super().pre_transforms(data))
        image = (data or {}).get(self.key_image)
        if isinstance(image, str) and is_dicom_series(image):
            # a DICOM series folder: the bundle's loader may name a file reader (NibabelReader); read with pydicom
            pre = [_dicom_loader(t) for t in pre]
        return [StashImagePathd(result_dtype="uint8"), *pre]


def _dicom_loader(t: Callable) -> Callable:
    """``t`` itself, or for a loading transform the same transform reading DICOM series with ``PydicomReader``."""
    if isinstance(t, LoadImaged):  # checked: one series, no missing slice, regular spacing (names the folder)
        return CheckedLoadImaged(keys=t.keys, reader="PydicomReader", image_only=False)
    if isinstance(t, LoadImageTensord):
        return LoadImageTensord(keys=t.keys, load_image_d=_dicom_loader(t.load_image_d))
    return t


class CrossDClassificationInfer(BundleInferTask):
    """Classification of a multi-modal study with a Cross-D bundle (e.g. ``crossd_brats``).

    Input: ``image`` is a 4D NIfTI ``(X, Y, Z, C)`` whose channels are the bundle's modalities in order
    (``crossd_brats``: ``FLAIR, T1w, T1wCE, T2w``, as its ``metadata.json`` ``channel_def``), or a study folder holding
    one DICOM series (or NIfTI file) per modality, matched by name. The bundle's preprocessing runs as is, except its
    loading steps (``LoadImaged``, ``EnsureChannelFirstd``), which :class:`~lib.transforms.LoadStudyd` replaces: it
    fills the same keys (one per modality when the bundle loads modality keys, else the stacked ``image``). Output
    (``output=json``): ``{"prediction": [{"idx": i, "label": name, "score": p}, ...], "modalities": [...]}``; no
    restore step (MONAI Label's classification type).

    Args:
        path: the (working copy of the) bundle folder.
        conf: the app's ``--conf`` options (``modalities``: comma-separated channel order, for a bundle that loads
            one stacked ``image``; defaults to the ``channel_def`` of its input in ``metadata.json``).
        kwargs: further :class:`monailabel.tasks.infer.bundle.BundleInferTask` arguments.

    Raises:
        ValueError: the bundle's preprocessing has no ``LoadImaged`` or its input has no channel names.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("load_strict", True)
        kwargs.setdefault("extend_load_image", False)
        super().__init__(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False, **kwargs)
        if not self.valid:
            return
        loaders = [t for t in self._bundle_pre() if isinstance(t, LoadImaged)]
        if not loaders:
            raise ValueError(f"bundle {path!r}: its `preprocessing` has no LoadImaged to replace with a study loader.")
        load_keys = [str(k) for k in loaders[0].keys]
        self.split = load_keys != [self.key_image]
        if self.split:
            self.modalities = tuple(load_keys)
        elif conf.get("modalities"):
            self.modalities = tuple(m.strip() for m in conf["modalities"].split(","))
        else:
            meta = read_metadata(path)["network_data_format"]["inputs"][self.key_image]
            names = [v for _, v in sorted(meta.get("channel_def", {}).items(), key=lambda kv: int(kv[0]))]
            if not names:
                raise ValueError(
                    f"bundle {path!r}: input {self.key_image!r} has no channel_def; set --conf modalities."
                )
            self.modalities = tuple(names)
        self.load_keys = set(load_keys)

    def _bundle_pre(self) -> list:
        c = self.bundle_config.get_parsed_content("preprocessing", instantiate=True)
        return list(c.transforms) if isinstance(c, Compose) else list(c)

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        bundle_pre = super().pre_transforms(data)
        kept = [
            t
            for t in bundle_pre
            if not (isinstance(t, (LoadImaged, EnsureChannelFirstd)) and set(map(str, t.keys)) <= self.load_keys)
        ]
        loader = LoadStudyd(keys=self.key_image, modalities=self.modalities, split=self.split)
        return [StashImagePathd(), loader, *kept]

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        # the bundle's postprocessing is for its own writer; MONAI Label wants one vector of class scores
        return [ToProbabilitiesd(keys=self.key_pred)]

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        label_file, result = super().writer(data, extension, dtype)
        result["modalities"] = list(self.modalities)
        return label_file, result
