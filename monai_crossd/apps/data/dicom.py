"""DICOM series helpers: find the series of a study and map them to MR modalities; write a volume as a series.

Reading is left to MONAI's :class:`monai.data.PydicomReader` (``LoadImaged(keys, reader="PydicomReader")`` reads a
series directory, sorts the slices by position and returns a RAS affine), so nothing here reimplements it. This
module adds what MONAI lacks:

* :func:`match_series` maps the series folders (or NIfTI files) of one study to modality keys by name, e.g. the
  TCIA Brain-Tumor-Progression folders ``11-T1post-18670`` -> ``T1wCE`` and ``26401-T1prereg-52906`` -> ``T1w``.
* :func:`check_dicom_series` checks that a folder holds one series with regular slices (PydicomReader stacks
  whatever it finds), naming the folder when it does not.
* :func:`write_dicom_series` writes a 3D array as a minimal, valid MR DICOM series (used by the synthetic demo).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_crossd.apps.data.sitk_reader import SIMPLEITK_ONLY_SUFFIXES

__all__ = ["DEFAULT_SERIES_PATTERNS", "check_dicom_series", "match_series", "write_dicom_series"]

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
        ValueError: ``study_dir`` is not a folder, a modality has no pattern, no series matches a modality (the
            message also lists any ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` files of the folder, which are not matched),
            or two series match a modality equally well.

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
            others = sorted(
                p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(SIMPLEITK_ONLY_SUFFIXES)
            )
            hint = (
                f" The folder also holds image files that are not matched (a series is a sub-folder of DICOM files or "
                f"a .nii/.nii.gz file): {others[:10]}{' ...' if len(others) > 10 else ''}."
                if others
                else ""
            )
            raise ValueError(
                f"study {str(root)!r}: no series found for modality {modality!r} (patterns "
                f"{tuple(patterns[modality])}); available series: {[p.name for p in entries]}.{hint}"
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


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")


def check_dicom_series(folder: str | os.PathLike, rtol: float = 0.05) -> dict:
    """Check that a folder holds exactly one DICOM series with regular, gap-free slices, before it is read.

    MONAI's :class:`monai.data.PydicomReader` stacks whatever files a folder holds: two series are mixed into one
    volume, and a missing slice or irregular spacing silently distorts the geometry. This check reads the headers
    only (``stop_before_pixels``) and fails with the folder named.

    Slices are ordered by their position along the slice normal (``ImagePositionPatient`` projected on the cross
    product of the ``ImageOrientationPatient`` rows), or by ``InstanceNumber`` when a file has no position.

    Args:
        folder: the series folder.
        rtol: relative tolerance on the distance between neighbouring slices. Defaults to 0.05.

    Returns:
        ``{"folder", "num_slices", "series_uid", "slice_spacing"}`` (``slice_spacing`` is ``None`` for one slice or
        without positions).

    Raises:
        ValueError: ``folder`` is not a folder or holds no file, a file is not DICOM, the folder holds several
            series, two slices share a position, a slice is missing (a gap of about twice the spacing, or a gap in
            ``InstanceNumber`` without positions) or the spacing is inconsistent. The message names ``folder``.

    Example:
        >>> check_dicom_series("Study3/11-T1post-18670")  # doctest: +SKIP
        {'folder': '...', 'num_slices': 22, 'series_uid': '1.3.6...', 'slice_spacing': 6.5}
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"DICOM series folder {str(folder)!r} is not a directory.")
    files = _dicom_files(root)
    if not files:
        raise ValueError(f"DICOM series folder {str(folder)!r} holds no file.")
    headers = []
    for path in files:
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except (InvalidDicomError, OSError, EOFError, ValueError) as err:
            raise ValueError(f"DICOM series folder {str(folder)!r}: {path.name!r} is not a readable DICOM file ({err}).") from err
    series: dict[str, list[str]] = {}
    for path, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path.name)
    if len(series) > 1:
        summary = ", ".join(f"{uid or '<no SeriesInstanceUID>'} ({len(names)} files, e.g. {names[0]!r})" for uid, names in series.items())
        raise ValueError(
            f"DICOM series folder {str(folder)!r} holds {len(series)} series, expected one: {summary}. "
            "Move each series to its own folder."
        )
    (series_uid,) = series
    result = {"folder": str(root), "num_slices": len(headers), "series_uid": series_uid, "slice_spacing": None}
    if len(headers) < 2:
        return result
    positioned = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers)
    if positioned:
        orientation = np.asarray(headers[0][1].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        where = sorted(
            (float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))), path.name, ds.get("InstanceNumber"))
            for path, ds in headers
        )
        positions = np.array([w[0] for w in where])
        steps = np.diff(positions)
        spacing = float(np.median(steps))
        for i, step in enumerate(steps):
            if step <= rtol * max(abs(spacing), 1e-6):
                raise ValueError(
                    f"DICOM series folder {str(folder)!r}: slices {where[i][1]!r} and {where[i + 1][1]!r} share the "
                    f"position {where[i][0]:.4g} mm along the slice normal (duplicate slices or several series)."
                )
        for i, step in enumerate(steps):
            if abs(step - spacing) > rtol * spacing:
                (p0, n0, i0), (p1, n1, i1) = where[i], where[i + 1]
                if step > 1.5 * spacing:
                    missing = round(step / spacing) - 1
                    raise ValueError(
                        f"DICOM series folder {str(folder)!r}: {missing} slice(s) missing between {n0!r} "
                        f"(InstanceNumber {i0}, {p0:.4g} mm) and {n1!r} (InstanceNumber {i1}, {p1:.4g} mm): a gap of "
                        f"{step:.4g} mm where the slice spacing is {spacing:.4g} mm."
                    )
                raise ValueError(
                    f"DICOM series folder {str(folder)!r}: inconsistent slice spacing, {float(steps.min()):.4g} to "
                    f"{float(steps.max()):.4g} mm (median {spacing:.4g} mm, rtol {rtol}); first irregular step "
                    f"between {n0!r} and {n1!r}."
                )
        result["slice_spacing"] = spacing
        return result
    numbers = sorted(int(ds.InstanceNumber) for _, ds in headers if "InstanceNumber" in ds)
    if len(numbers) == len(headers):
        gaps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b - a != 1]
        if gaps:
            raise ValueError(
                f"DICOM series folder {str(folder)!r}: InstanceNumber is not consecutive (no ImagePositionPatient "
                f"to order by): gaps {gaps[:5]}, i.e. missing or duplicate slices."
            )
    return result
