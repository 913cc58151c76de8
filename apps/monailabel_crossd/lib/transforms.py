"""Dictionary transforms the MONAI Label app adds around a bundle's own transforms."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["LoadStudyd", "StashImagePathd", "ToProbabilitiesd", "is_dicom_series", "is_dicom_study"]

logger = logging.getLogger(__name__)

#: Default modality order of a multi-modal brain MR study: the channel order of the classifier's input.
MODALITIES: tuple[str, ...] = ("FLAIR", "T1w", "T1wCE", "T2w")

_RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")


def is_dicom_series(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding DICOM files (``*.dcm``) directly."""
    p = Path(path)
    return p.is_dir() and any(f.suffix.lower() == ".dcm" for f in p.iterdir() if f.is_file())


def is_dicom_study(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of DICOM series folders (one study)."""
    p = Path(path)
    return p.is_dir() and any(is_dicom_series(s) for s in p.iterdir() if s.is_dir())


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
    """Load a multi-modal study as one channel-first image: a 4D NIfTI, or a folder of DICOM series / NIfTI files.

    Input conventions (``d[key]`` is a path):

    * a 4D NIfTI ``(X, Y, Z, C)`` whose channels are already in ``modalities`` order (MSD BraTS layout);
    * a study folder holding one DICOM series folder (or one NIfTI file) per modality, matched by name with
      :func:`monai_crossd.data.dicom.match_series` (e.g. TCIA ``11-T1post-18670`` -> ``T1wCE``). Every modality is
      resampled onto the grid of the first one (``modalities[0]``) so that series of different geometry stack.

    Args:
        keys: the image key. Defaults to ``"image"``.
        modalities: modality keys, i.e. the channel order. Defaults to ``("FLAIR", "T1w", "T1wCE", "T2w")``.

    Raises:
        ValueError: the path is neither a 4D NIfTI with ``len(modalities)`` channels nor a study folder whose
            series match every modality.
    """

    def __init__(self, keys: str | Sequence[str] = "image", modalities: Sequence[str] = MODALITIES) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.modalities = tuple(modalities)

    def _load_one(self, path: str):
        from monai.transforms import EnsureChannelFirst, LoadImage

        reader = "PydicomReader" if Path(path).is_dir() else None
        img = LoadImage(image_only=True, reader=reader)(path)
        return EnsureChannelFirst()(img)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor
        from monai.transforms import ResampleToMatch

        d = dict(data)
        for key in self.keys:
            path = d[key]
            if not isinstance(path, (str, os.PathLike)):
                continue  # already loaded
            n = len(self.modalities)
            if Path(path).is_dir():
                from monai_crossd.data.dicom import match_series

                series = match_series(path, modalities=self.modalities)
                first = self._load_one(series[self.modalities[0]])
                channels = [first]
                for m in self.modalities[1:]:
                    img = self._load_one(series[m])
                    if img.shape[1:] != first.shape[1:] or not np.allclose(img.affine, first.affine, atol=1e-3):
                        img = ResampleToMatch(mode="bilinear")(img, img_dst=first)
                    channels.append(img)
                stacked = torch.cat([torch.as_tensor(c, dtype=torch.float32) for c in channels], dim=0)
                out = MetaTensor(stacked, affine=first.affine, meta=dict(first.meta))
                out.meta["filename_or_obj"] = str(path)
                out.meta["modalities"] = list(self.modalities)
                logger.info("study %s: %s", path, {m: os.path.basename(series[m]) for m in self.modalities})
            else:
                out = self._load_one(str(path))
                if out.shape[0] != n:
                    raise ValueError(
                        f"`{key}` should be a 4D image with {n} channels {list(self.modalities)} or a study folder, "
                        f"got {str(path)!r} with {out.shape[0]} channel(s) (shape {tuple(out.shape)})."
                    )
                out = out.float()
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
