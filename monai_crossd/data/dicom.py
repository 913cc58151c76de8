"""DICOM series helpers: find the series of a study and map them to MR modalities; write a volume as a series.

Reading is left to MONAI's :class:`monai.data.PydicomReader` (``LoadImaged(keys, reader="PydicomReader")`` reads a
series directory, sorts the slices by position and returns a RAS affine), so nothing here reimplements it. This
module adds what MONAI lacks:

* :func:`match_series` maps the series folders (or NIfTI files) of one study to modality keys by name, e.g. the
  TCIA Brain-Tumor-Progression folders ``11-T1post-18670`` -> ``T1wCE`` and ``26401-T1prereg-52906`` -> ``T1w``.
* :func:`write_dicom_series` writes a 3D array as a minimal, valid MR DICOM series (used by the synthetic demo).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_SERIES_PATTERNS", "match_series", "write_dicom_series"]

logger = logging.getLogger(__name__)

#: Name patterns (regular expressions on the lower-cased name with ``-``, ``_``, spaces and dots removed) tried in
#: this order: a series taken by one modality is not offered to the next, so ``T1post`` is never read as ``T1w``
#: and ``T2-FLAIR`` is never read as ``T2w``.
DEFAULT_SERIES_PATTERNS: dict[str, tuple[str, ...]] = {
    "T1wCE": (r"t1wce", r"t1ce", r"t1post", r"t1gd", r"t1c(?!o)", r"postcontrast", r"\bcontrast"),
    "FLAIR": (r"flair",),
    "T2w": (r"t2w", r"t2(?!\*)"),
    "T1w": (r"t1w", r"t1pre", r"t1"),
}


def _normalise(name: str) -> str:
    name = name.lower()
    for suffix in (".nii.gz", ".nii", ".dcm"):
        name = name.removesuffix(suffix)
    return re.sub(r"[\s._\-]+", "", name)


def match_series(
    study_dir: str | os.PathLike,
    modalities: Sequence[str] = ("FLAIR", "T1w", "T1wCE", "T2w"),
    patterns: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Map the series of one study (sub-folders of DICOM files, or NIfTI files) to modality keys by name.

    Patterns are tried modality by modality in the order of ``patterns`` (the most specific first, see
    :data:`DEFAULT_SERIES_PATTERNS`); within a modality, pattern by pattern. A series matched by one modality is not
    offered to the following ones.

    Args:
        study_dir: folder holding one sub-folder per series (or one NIfTI file per modality).
        modalities: the modality keys wanted. Defaults to ``("FLAIR", "T1w", "T1wCE", "T2w")``.
        patterns: modality key -> regular expressions searched in the normalised name (lower case, ``-``, ``_``,
            ``.`` and spaces removed). Defaults to :data:`DEFAULT_SERIES_PATTERNS`.

    Returns:
        modality key -> absolute path of the series folder or file.

    Raises:
        ValueError: ``study_dir`` is not a folder, a modality has no pattern, no series matches a modality, or
            two series match a modality equally well.

    Example:
        >>> match_series("Study3")  # doctest: +SKIP
        {'T1wCE': '.../11-T1post-18670', 'FLAIR': '.../36468-FLAIRreg-58706', ...}
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise ValueError(f"`study_dir` should be a folder of series, got {str(study_dir)!r} (not a directory).")
    patterns = dict(DEFAULT_SERIES_PATTERNS if patterns is None else patterns)
    missing = [m for m in modalities if m not in patterns]
    if missing:
        raise ValueError(f"`patterns` has no entry for modalities {missing}; it has {sorted(patterns)}.")
    entries = sorted(
        p
        for p in root.iterdir()
        if not p.name.startswith(".") and (p.is_dir() or p.name.lower().endswith((".nii", ".nii.gz")))
    )
    free = {p: _normalise(p.name) for p in entries}
    found: dict[str, str] = {}
    for modality in [m for m in patterns if m in modalities]:
        for pattern in patterns[modality]:
            hits = [p for p, name in free.items() if re.search(pattern, name)]
            if len(hits) > 1:
                names = [p.name for p in hits]
                raise ValueError(
                    f"study {str(root)!r}: modality {modality!r} matches several series {names} (pattern "
                    f"{pattern!r}); pass an explicit `patterns` mapping or keep one series per modality."
                )
            if hits:
                found[modality] = str(hits[0].resolve())
                del free[hits[0]]
                break
        else:
            raise ValueError(
                f"study {str(root)!r}: no series found for modality {modality!r} (patterns "
                f"{tuple(patterns[modality])}); available series: {[p.name for p in entries]}."
            )
    logger.info("study %s: series %s", root, {m: Path(p).name for m, p in found.items()})
    return {m: found[m] for m in modalities}


def write_dicom_series(
    volume: np.ndarray,
    out_dir: str | os.PathLike,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    series_description: str = "SYNTHETIC",
    patient_id: str = "SYNTHETIC",
    study_uid: str | None = None,
    series_number: int = 1,
    uid_seed: str = "monai_crossd",
) -> list[str]:
    """Write a 3D array as a minimal MR DICOM series, one file per slice (``IM0000.dcm``, ...).

    The geometry is axial with an identity orientation (``ImageOrientationPatient = 1,0,0,0,1,0``) and slices along
    +z, so reading it back with :class:`monai.data.PydicomReader` gives the array in the same axis order.
    UIDs are derived from ``uid_seed``, ``patient_id`` and ``series_description``, so output is deterministic.

    Args:
        volume: ``(H, W, D)`` array (rows, columns, slices); written as unsigned 16 bit after clipping to
            ``[0, 65535]`` and rounding.
        out_dir: folder to create (parents too) and write the slices into.
        spacing: voxel size in mm along ``(H, W, D)``. Defaults to ``(1, 1, 1)``.
        series_description: ``SeriesDescription`` tag. Defaults to ``"SYNTHETIC"``.
        patient_id: ``PatientID`` and ``PatientName``. Defaults to ``"SYNTHETIC"``.
        study_uid: ``StudyInstanceUID``; derived from ``uid_seed`` and ``patient_id`` when ``None``.
        series_number: ``SeriesNumber``. Defaults to 1.
        uid_seed: entropy source of the generated UIDs. Defaults to ``"monai_crossd"``.

    Returns:
        the written file paths, in slice order.

    Raises:
        ValueError: ``volume`` is not 3D or ``spacing`` does not have three positive values.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"`volume` should be a 3D (H, W, D) array, got shape {volume.shape}.")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"`spacing` should be three positive floats, got {tuple(spacing)}.")
    pydicom_major = int(pydicom.__version__.split(".")[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.rint(volume), 0, 65535).astype(np.uint16)
    study_uid = study_uid or generate_uid(entropy_srcs=[uid_seed, patient_id, "study"])
    series_uid = generate_uid(entropy_srcs=[uid_seed, patient_id, series_description, "series"])
    frame_uid = generate_uid(entropy_srcs=[uid_seed, patient_id, "frame"])
    paths = []
    for k in range(pixels.shape[2]):
        sop_uid = generate_uid(entropy_srcs=[uid_seed, patient_id, series_description, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.PatientName = patient_id
        ds.PatientID = patient_id
        ds.SeriesDescription = series_description
        ds.ImageComments = "SYNTHETIC DATA generated by monai_crossd: not a real patient"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [0.0, 0.0, float(k) * float(spacing[2])]
        ds.SliceLocation = float(k) * float(spacing[2])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # (row spacing = along y, column spacing = along x)
        ds.SliceThickness = float(spacing[2])
        ds.SpacingBetweenSlices = float(spacing[2])
        # MONAI's PydicomReader swaps rows and columns (``swap_ij``): store the transpose so it reads back as is
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = 0.0
        ds.RescaleSlope = 1.0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        path = out / f"IM{k:04d}.dcm"
        if pydicom_major >= 3:
            ds.save_as(path, enforce_file_format=True)
        else:  # pydicom 2.x (the MONAI Label environment): the same DICOM file format, older keyword
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
        paths.append(str(path))
    return paths
