"""Dictionary transforms the MONAI Label app adds around a bundle's own transforms."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_crossd.apps.data import BRATS_MODALITIES

__all__ = ["MODALITIES", "LoadStudyd", "StashImagePathd", "ToProbabilitiesd", "is_dicom_series"]

logger = logging.getLogger(__name__)

#: Default modality order of a multi-modal brain MR study: the channel order of the classifier's input.
MODALITIES = BRATS_MODALITIES

_RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"  # the DICOM file preamble
    except OSError:
        return False


def is_dicom_series(path: str | os.PathLike, probe: int = 8) -> bool:
    """Whether ``path`` is a folder holding DICOM files directly (``*.dcm``, or files with the ``DICM`` preamble).

    Args:
        path: a path.
        probe: how many of its files are looked at. Defaults to 8.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    files = [f for f in sorted(p.iterdir())[: 4 * probe] if f.is_file()][:probe]
    return any(_is_dicom_file(f) for f in files)


class StashImagePathd:
    """Move MONAI Label's string ``image_path`` out of the data dictionary while the bundle transforms run.

    MONAI Label adds ``image_path`` (a ``str``) to every request. MONAI 1.6's ``Spacingd`` treats every
    ``<key>_*`` entry of the dictionary as a metadata dict of ``<key>`` (``d["image_path"].update(...)``) and fails
    with ``AttributeError: 'str' object has no attribute 'update'``. This transform removes it, keeps it under
    ``stash_key`` and sets ``result_extension`` (which MONAI Label's writer otherwise derives from ``image_path``):
    the input's own extension for NIfTI/NRRD inputs, ``.nii.gz`` for anything else (a DICOM series folder).

    Args:
        key: the key to remove. Defaults to ``"image_path"``.
        stash_key: where the value is kept. Defaults to ``"_crossd_image_path"``.
        result_extension_key: MONAI Label's extension key. Defaults to ``"result_extension"``.
        result_dtype: data type of the written label (MONAI Label's ``result_dtype``) unless the request sets one,
            e.g. ``"uint8"``; None keeps MONAI Label's default. Defaults to None.
    """

    def __init__(
        self,
        key: str = "image_path",
        stash_key: str = "_crossd_image_path",
        result_extension_key: str = "result_extension",
        result_dtype: str | None = None,
    ) -> None:
        self.key = key
        self.stash_key = stash_key
        self.result_extension_key = result_extension_key
        self.result_dtype = result_dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.result_dtype and not d.get("result_dtype"):
            d["result_dtype"] = self.result_dtype
        path = d.pop(self.key, None)
        if path is None:
            return d
        d[self.stash_key] = path
        if not d.get(self.result_extension_key):
            name = str(path).lower()
            ext = next((e for e in sorted(_RESULT_EXTENSIONS, key=len, reverse=True) if name.endswith(e)), ".nii.gz")
            d[self.result_extension_key] = ext
        return d


class LoadStudyd:
    """Load a multi-modal study given as one path: a 4D NIfTI, or a folder of DICOM series / NIfTI files.

    Input conventions (``d[key]`` is a path):

    * a 4D NIfTI ``(X, Y, Z, C)`` whose channels are in ``modalities`` order (the MSD BraTS layout);
    * a study folder holding one DICOM series folder (or one NIfTI file) per modality, matched by name with
      :func:`monai_crossd.apps.data.dicom.match_series` (e.g. TCIA ``11-T1post-18670`` -> ``T1wCE``).

    Output: with ``split=True`` one channel-first image per modality under the modality's key (``d["FLAIR"]``, ...),
    for a bundle whose own preprocessing aligns and concatenates the modalities; with ``split=False`` one
    ``(C, X, Y, Z)`` image under ``key``, every modality resampled onto the grid of ``modalities[0]``.

    Args:
        keys: the key holding the study path. Defaults to ``"image"``.
        modalities: modality keys, i.e. the channel order. Defaults to ``("FLAIR", "T1w", "T1wCE", "T2w")``.
        split: one key per modality (True) or one stacked image (False). Defaults to False.

    Raises:
        ValueError: the path is neither a 4D image with ``len(modalities)`` channels nor a study folder whose
            series match every modality.
    """

    def __init__(
        self, keys: str | Sequence[str] = "image", modalities: Sequence[str] = MODALITIES, split: bool = False
    ) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.modalities = tuple(modalities)
        self.split = split

    @staticmethod
    def _load_one(path: str):
        from monai.transforms import EnsureChannelFirst, LoadImage

        reader = "PydicomReader" if Path(path).is_dir() else None
        img = LoadImage(image_only=True, reader=reader)(path)
        return EnsureChannelFirst()(img).float()

    def _load(self, key: str, path: str) -> dict[str, Any]:
        """modality -> channel-first image."""
        from monai.data import MetaTensor

        if Path(path).is_dir():
            from monai_crossd.apps.data.dicom import match_series

            series = match_series(path, modalities=self.modalities)
            logger.info("study %s: %s", path, {m: os.path.basename(series[m]) for m in self.modalities})
            return {m: self._load_one(series[m]) for m in self.modalities}
        img = self._load_one(str(path))
        n = len(self.modalities)
        if img.shape[0] != n:
            raise ValueError(
                f"`{key}` should be a 4D image with {n} channels {list(self.modalities)} or a study folder, "
                f"got {str(path)!r} with {img.shape[0]} channel(s) (shape {tuple(img.shape)})."
            )
        return {m: MetaTensor(img[i : i + 1].as_tensor(), meta=dict(img.meta)) for i, m in enumerate(self.modalities)}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor
        from monai.transforms import ResampleToMatch

        d = dict(data)
        for key in self.keys:
            path = d[key]
            if not isinstance(path, (str, os.PathLike)):
                continue  # already loaded
            images = self._load(key, str(path))
            if self.split:
                d.update(images)
                continue
            first = images[self.modalities[0]]
            channels = [first]
            for m in self.modalities[1:]:
                img = images[m]
                if img.shape[1:] != first.shape[1:] or not np.allclose(img.affine, first.affine, atol=1e-3):
                    img = ResampleToMatch(mode="bilinear")(img, img_dst=first)
                channels.append(img)
            out = MetaTensor(torch.cat([c.as_tensor() for c in channels], dim=0), meta=dict(first.meta))
            out.meta["filename_or_obj"] = str(path)
            d[key] = out
        return d


class ToProbabilitiesd:
    """Turn a classifier's output into a flat vector of class probabilities (softmax unless it already sums to 1).

    Args:
        keys: the prediction key. Defaults to ``"pred"``.
    """

    def __init__(self, keys: str | Sequence[str] = "pred") -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor

        d = dict(data)
        for key in self.keys:
            x = torch.as_tensor(d[key]).float().flatten()
            if x.numel() == 1:
                p = torch.sigmoid(x) if (x.min() < 0 or x.max() > 1) else x
                x = torch.cat([1 - p, p])
            elif not (x.min() >= 0 and torch.isclose(x.sum(), torch.tensor(1.0), atol=1e-3)):
                x = torch.softmax(x, dim=0)
            d[key] = MetaTensor(x.detach().cpu())
        return d
