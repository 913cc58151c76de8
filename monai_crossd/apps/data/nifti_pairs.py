"""Segmentation datalists from an image folder and a label folder of NIfTI files with matching names.

The Medical Segmentation Decathlon layout (``<root>/imagesTr/<case>.nii.gz`` and ``<root>/labelsTr/<case>.nii.gz``)
and most nnU-Net-style exports pair an image with its label by file name. :func:`paired_nifti_datalist` turns such a
folder into a MONAI datalist ``[{"image": path, "label": path}, ...]`` with a deterministic train/validation split,
for folders that come without a ``dataset.json``.

Example:
    >>> val = paired_nifti_datalist("/data/Task04_Hippocampus", split="val", val_fraction=0.2)  # doctest: +SKIP
    >>> val[0]  # doctest: +SKIP
    {'image': '/data/Task04_Hippocampus/imagesTr/hippocampus_003.nii.gz',
     'label': '/data/Task04_Hippocampus/labelsTr/hippocampus_003.nii.gz'}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from monai_crossd.apps.data.split import check_train_val, train_val_part

__all__ = ["NIFTI_EXTENSIONS", "paired_nifti_datalist"]

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def paired_nifti_datalist(
    data_dir: str | os.PathLike,
    split: str = "all",
    val_fraction: float = 0.2,
    seed: int = 0,
    images: str = "imagesTr",
    labels: str = "labelsTr",
    exclude: Sequence[str] = (),
    max_cases: int | None = None,
) -> list[dict]:
    """Image/label pairs of ``<data_dir>/<images>`` and ``<data_dir>/<labels>`` matched by file name.

    The cases (sorted by name, minus ``exclude``) are split by :func:`~monai_crossd.apps.data.split.split_datalist`
    into ``"train"`` and ``"val"`` (``val_fraction`` of them; none when it is 0). Hidden files (``._*`` from macOS
    archives included) are ignored.

    Args:
        data_dir: the dataset folder.
        split: ``"train"``, ``"val"`` or ``"all"``. Defaults to ``"all"``.
        val_fraction: share of the cases in ``"val"``, in ``[0, 1)``. Defaults to 0.2.
        seed: of the split. Defaults to 0.
        images: image sub-folder. Defaults to ``"imagesTr"``.
        labels: label sub-folder. Defaults to ``"labelsTr"``.
        exclude: file names (e.g. ``"hippocampus_001.nii.gz"``) or paths to leave out, e.g. cases a model was
            trained on. Defaults to none.
        max_cases: keep at most this many cases of the split (its first ones). Defaults to None (all).

    Returns:
        ``[{"image": path, "label": path}, ...]`` sorted by file name.

    Raises:
        ValueError: for a missing folder, an image without its label, no cases, or a bad argument.
    """
    check_train_val(split, val_fraction)
    if max_cases is not None and (not isinstance(max_cases, int) or max_cases < 1):
        raise ValueError(f"`max_cases` should be a positive int or None, got {max_cases!r}.")
    image_dir, label_dir = os.path.join(data_dir, images), os.path.join(data_dir, labels)
    for name, folder in (("images", image_dir), ("labels", label_dir)):
        if not os.path.isdir(folder):
            raise ValueError(f"`{name}` folder {folder!r} does not exist (data_dir={os.fspath(data_dir)!r}).")
    skip = {os.path.basename(os.fspath(e)) for e in exclude}
    names = sorted(
        f
        for f in os.listdir(image_dir)
        if f.endswith(NIFTI_EXTENSIONS) and not f.startswith(".") and f not in skip
    )
    unlabelled = [f for f in names if not os.path.isfile(os.path.join(label_dir, f))]
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} images in {image_dir!r} have no label of the same name in {label_dir!r}, e.g. "
            f"{unlabelled[:3]}."
        )
    if not names:
        raise ValueError(f"No {NIFTI_EXTENSIONS} images in {image_dir!r} (after excluding {len(skip)} names).")
    chosen = train_val_part(names, split, val_fraction, seed)
    items = [{"image": os.path.join(image_dir, f), "label": os.path.join(label_dir, f)} for f in chosen[:max_cases]]
    logger.info("NIfTI pairs %s[%s]: %d of %d cases (%d excluded).", os.fspath(data_dir), split, len(items), len(names), len(skip))
    return items
