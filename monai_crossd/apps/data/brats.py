"""Datalists for four-modality brain tumour MR classification (e.g. MGMT promoter methylation status).

Two on-disk layouts are read, both giving items with one path per modality key, the integer label and the case id::

    {"FLAIR": ..., "T1w": ..., "T1wCE": ..., "T2w": ..., "label": 1, "case_id": "00012"}

* ``"rsna"``: RSNA-MICCAI Brain Tumor Radiogenomic Classification 2021,
  ``<root>/train/<id>/{FLAIR,T1w,T1wCE,T2w}/*.dcm`` (one DICOM series folder per modality) and
  ``<root>/train_labels.csv`` with columns ``BraTS21ID,MGMT_value``.
* ``"nifti"``: BraTS 2021 NIfTI, ``<root>/BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2}.nii.gz`` and a labels
  csv (default ``<root>/train_labels.csv``, same columns).

The paths are read by ``monai.transforms.LoadImaged(keys=BRATS_MODALITIES, reader="PydicomReader")``: a DICOM
series folder goes to MONAI's PydicomReader, a ``.nii.gz`` file falls back to MONAI's NibabelReader, so one
transform chain serves both layouts. :func:`study_datalist` makes the one-item datalist of a single study whose
series folders are named freely (e.g. ``11-T1post-18670``), for inference.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai_crossd.apps.data.dicom import match_series

__all__ = [
    "BRATS_LAYOUTS",
    "BRATS_MODALITIES",
    "NIFTI_SUFFIXES",
    "brats_datalist",
    "detect_brats_layout",
    "study_datalist",
]

logger = logging.getLogger(__name__)

BRATS_MODALITIES = ("FLAIR", "T1w", "T1wCE", "T2w")
BRATS_LAYOUTS = ("auto", "rsna", "nifti")
#: modality key -> file name suffix of the BraTS 2021 NIfTI layout
NIFTI_SUFFIXES = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}
_NIFTI_PREFIX = "BraTS2021_"


def _case_key(case_id: str) -> str:
    """Case ids compare as integers when numeric (``"00012"`` in a folder name is ``12`` in the RSNA csv)."""
    case_id = str(case_id).strip()
    return str(int(case_id)) if case_id.isdigit() else case_id


def detect_brats_layout(root: str | os.PathLike) -> str:
    """``"rsna"`` when ``root/train`` holds case folders, ``"nifti"`` when ``root`` holds ``BraTS2021_*`` folders.

    Raises:
        ValueError: ``root`` is not a folder, or neither layout is found (the message names ``root``).
    """
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"BraTS dataset root {str(root)!r} is not a directory.")
    if (path / "train").is_dir():
        return "rsna"
    if any(p.is_dir() and p.name.startswith(_NIFTI_PREFIX) for p in path.iterdir()):
        return "nifti"
    raise ValueError(
        f"BraTS dataset root {str(root)!r} has neither the RSNA-MICCAI layout (`train/<id>/FLAIR/*.dcm`) nor the "
        f"BraTS NIfTI layout (`{_NIFTI_PREFIX}<id>/{_NIFTI_PREFIX}<id>_flair.nii.gz`)."
    )


def _read_labels(path: Path, id_column: str, label_column: str) -> dict[str, int]:
    if not path.is_file():
        raise ValueError(f"labels csv {str(path)!r} not found (expected columns {id_column!r},{label_column!r}).")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in (id_column, label_column):
            if column not in columns:
                raise ValueError(f"labels csv {str(path)!r} has no column {column!r}; its columns are {columns}.")
        labels = {}
        for line, row in enumerate(reader, start=2):
            try:
                labels[_case_key(row[id_column])] = int(float(row[label_column]))
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"labels csv {str(path)!r} line {line}: {label_column!r} should be an integer class, "
                    f"got {row[label_column]!r}."
                ) from e
    return labels


def _rsna_case(case_dir: Path, modalities: Sequence[str]) -> dict[str, str]:
    item = {}
    for modality in modalities:
        series = case_dir / modality
        if not series.is_dir():
            raise ValueError(f"case {case_dir.name!r} ({str(case_dir)!r}) is missing the {modality!r} series folder.")
        if not any(p.suffix.lower() == ".dcm" for p in series.iterdir()):
            raise ValueError(
                f"case {case_dir.name!r}: the {modality!r} series folder {str(series)!r} has no .dcm file."
            )
        item[modality] = str(series.resolve())
    return item


def _nifti_case(case_dir: Path, modalities: Sequence[str]) -> dict[str, str]:
    item = {}
    for modality in modalities:
        if modality not in NIFTI_SUFFIXES:
            raise ValueError(f"modality {modality!r} has no BraTS NIfTI suffix; known: {sorted(NIFTI_SUFFIXES)}.")
        for ext in (".nii.gz", ".nii"):
            path = case_dir / f"{case_dir.name}_{NIFTI_SUFFIXES[modality]}{ext}"
            if path.is_file():
                item[modality] = str(path.resolve())
                break
        else:
            raise ValueError(
                f"case {case_dir.name!r} ({str(case_dir)!r}) is missing the {modality!r} image "
                f"`{case_dir.name}_{NIFTI_SUFFIXES[modality]}.nii.gz`."
            )
    return item


def brats_datalist(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    layout: str = "auto",
    modalities: Sequence[str] = BRATS_MODALITIES,
    id_column: str = "BraTS21ID",
    label_column: str = "MGMT_value",
    exclude: Sequence[str | int] = (),
) -> list[dict]:
    """List the labelled cases under ``root`` (RSNA-MICCAI DICOM or BraTS NIfTI layout, see the module docstring).

    Args:
        root: dataset folder.
        labels_csv: labels file; ``<root>/train_labels.csv`` when ``None``.
        layout: ``"auto"``, ``"rsna"`` or ``"nifti"``. Defaults to ``"auto"`` (:func:`detect_brats_layout`).
        modalities: modality keys to list, each a series folder name (RSNA) or a key of :data:`NIFTI_SUFFIXES`.
            Defaults to :data:`BRATS_MODALITIES`.
        id_column: case id column of the csv. Defaults to ``"BraTS21ID"``.
        label_column: label column of the csv. Defaults to ``"MGMT_value"``.
        exclude: case ids to leave out (e.g. the RSNA cases with known problems ``109, 123, 709``).

    Returns:
        items ``{modality: path, ..., "label": int, "case_id": str}`` sorted by case id.

    Raises:
        ValueError: unknown layout; ``root`` holds no case (the message names ``root``); a case misses a modality
            (naming the case and the modality); a case has no label in the csv; a csv problem.
    """
    if layout not in BRATS_LAYOUTS:
        raise ValueError(f"`layout` should be one of {BRATS_LAYOUTS}, got {layout!r}.")
    path = Path(root)
    layout = detect_brats_layout(path) if layout == "auto" else layout
    if not path.is_dir():
        raise ValueError(f"BraTS dataset root {str(root)!r} is not a directory.")
    if labels_csv is None:
        labels_csv = path / "train_labels.csv"
    labels = _read_labels(Path(labels_csv), id_column, label_column)
    excluded = {_case_key(str(e)) for e in exclude}
    if layout == "rsna":
        base = path / "train"
        cases = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        ids = [p.name for p in cases]
    else:
        cases = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith(_NIFTI_PREFIX))
        ids = [p.name[len(_NIFTI_PREFIX) :] for p in cases]
    datalist, unlabelled = [], []
    for case_dir, case_id in zip(cases, ids):
        if _case_key(case_id) in excluded:
            continue
        item = (_rsna_case if layout == "rsna" else _nifti_case)(case_dir, modalities)
        if _case_key(case_id) not in labels:
            unlabelled.append(case_id)
            continue
        datalist.append({**item, "label": labels[_case_key(case_id)], "case_id": case_id})
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} case(s) under {str(root)!r} have no label in {str(labels_csv)!r}: {unlabelled[:10]}."
        )
    if not datalist:
        raise ValueError(f"no labelled case found under BraTS dataset root {str(root)!r} (layout {layout!r}).")
    logger.info("BraTS datalist: %d cases from %s (layout %s).", len(datalist), root, layout)
    return datalist


def study_datalist(
    input_dir: str | os.PathLike,
    modalities: Sequence[str] = BRATS_MODALITIES,
    patterns: Mapping[str, Sequence[str]] | None = None,
    case_id: str | None = None,
) -> list[dict]:
    """The one-item datalist of a single study, its series mapped to modalities by name (:func:`match_series`).

    ``input_dir`` may also be one case of either dataset layout (series folders named ``FLAIR``, ``T1w``, ... or
    ``BraTS2021_<id>_flair.nii.gz`` files): the default patterns match those names too.

    Args:
        input_dir: folder of one study, one sub-folder (DICOM series) or NIfTI file per modality.
        modalities: modality keys wanted. Defaults to :data:`BRATS_MODALITIES`.
        patterns: name patterns per modality; :data:`monai_crossd.apps.data.dicom.DEFAULT_SERIES_PATTERNS` when ``None``.
        case_id: id written with the predictions; the folder name when ``None``.

    Returns:
        ``[{modality: path, ..., "case_id": str}]``.

    Raises:
        ValueError: ``input_dir`` is not a folder, or a modality has no (or more than one) matching series.
    """
    series = match_series(input_dir, modalities=modalities, patterns=patterns)
    return [{**series, "case_id": case_id or Path(input_dir).resolve().name}]
