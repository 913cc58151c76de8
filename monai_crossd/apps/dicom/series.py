"""The source series of a DICOM result: load and order its instances, its grid and affine, and save a result file.

A DICOM SEG or SR written by :mod:`monai_crossd.apps.dicom` refers to the instances of the series (or study) it was
computed from. This module puts those instances in one order, the order of the label maps this package writes:

**Axis convention.** A volume on the grid of a series is indexed ``(X, Y, Z)``: ``X`` runs along a row of a slice
(the column index, direction ``ImageOrientationPatient[:3]``), ``Y`` down a column (the row index, direction
``ImageOrientationPatient[3:]``) and ``Z`` over the slices sorted by position along the slice normal. That is the
array order of :class:`monai.data.PydicomReader` (``LoadImage(reader="PydicomReader")`` on the series folder) and of
:class:`monai_crossd.apps.data.sitk_reader.SimpleITKReader`, so a model's prediction on a series loaded by MONAI is
already on this grid: ``volume[x, y, z] == slices[z].pixel_array[y, x]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_crossd.apps.io import atomic_open

__all__ = ["load_series", "read_dataset", "save_dataset", "series_affine", "series_shape", "with_type2_attributes"]

#: Patient and study attributes of type 2 (present, possibly empty) that highdicom copies from the first source
#: instance into a SEG or SR; some real series lack a few of them (``PatientBirthDate``, ``PatientSex``).
TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)


def _normal(ds) -> np.ndarray:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def read_dataset(path: str | os.PathLike, stop_before_pixels: bool = False):
    """``pydicom.dcmread(path)``, with a ``ValueError`` naming the file when it is not a readable DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError) as err:
        raise ValueError(f"`source_datasets`: {str(path)!r} is not a readable DICOM file ({err}).") from err


def load_series(source: str | os.PathLike | Sequence) -> list:
    """The instances of one image series, sorted along the slice normal (the ``Z`` order of the module docstring).

    Args:
        source: a folder of DICOM files, or a sequence of file paths and/or :class:`pydicom.dataset.Dataset` (e.g.
            the datasets of a WADO-RS retrieval). Datasets are used as they are, never modified.

    Returns:
        the datasets, sorted by position along the normal of their common ``ImageOrientationPatient``.

    Raises:
        ValueError: no instance is given; the instances belong to several series; an instance has no
            ``ImagePositionPatient``/``ImageOrientationPatient``; orientations or ``Rows``/``Columns`` differ; or two
            instances share a position.

    Example:
        >>> slices = load_series("Study1/13_HCropVolume")  # doctest: +SKIP
        >>> series_shape(slices)  # (X, Y, Z) = (Columns, Rows, number of slices)  # doctest: +SKIP
        (35, 51, 32)
    """
    import pydicom

    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"`source_datasets` should be a series folder or a sequence of datasets/files, got {str(source)!r}.")
        items: list = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")
    else:
        items = list(source)
    if not items:
        raise ValueError(f"`source_datasets` holds no DICOM instance (got {source!r}): the source series is needed.")
    datasets = [item if isinstance(item, pydicom.Dataset) else read_dataset(item) for item in items]
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
    if len(series) != 1:
        raise ValueError(f"`source_datasets` should hold one series, got {len(series)}: {series}.")
    missing = [i for i, ds in enumerate(datasets) if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    if missing:
        raise ValueError(
            f"`source_datasets`: instances {missing[:5]} have no ImagePositionPatient/ImageOrientationPatient; a "
            "label map needs the geometry of every slice."
        )
    first = datasets[0]
    for ds in datasets[1:]:
        if not np.allclose(ds.ImageOrientationPatient, first.ImageOrientationPatient, atol=1e-4):
            raise ValueError(f"`source_datasets` mix orientations {list(first.ImageOrientationPatient)} and {list(ds.ImageOrientationPatient)}.")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ValueError(f"`source_datasets` mix slice sizes {(first.Rows, first.Columns)} and {(ds.Rows, ds.Columns)} (Rows, Columns).")
    normal = _normal(first)
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))
    positions = [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))) for ds in datasets]
    if len(positions) > 1 and np.min(np.diff(positions)) < 1e-3:
        raise ValueError(f"`source_datasets`: two instances share a slice position (positions {np.round(positions, 3).tolist()}).")
    return datasets


def series_shape(datasets: Sequence) -> tuple[int, int, int]:
    """``(X, Y, Z)`` = ``(Columns, Rows, number of slices)`` of a series sorted by :func:`load_series`."""
    return int(datasets[0].Columns), int(datasets[0].Rows), len(datasets)


def series_affine(datasets: Sequence, lps: bool = False) -> np.ndarray:
    """The ``(4, 4)`` affine from ``(X, Y, Z)`` voxel indices to patient coordinates in mm, RAS as MONAI's readers.

    Columns are ``ImageOrientationPatient[:3] * column spacing``, ``ImageOrientationPatient[3:] * row spacing``,
    the step between the first and last slice divided by the number of steps (the slice normal times the spacing
    for one slice, which needs ``SpacingBetweenSlices`` or ``SliceThickness``) and the first slice's position.

    Args:
        datasets: the instances sorted by :func:`load_series`.
        lps: return DICOM's LPS coordinates instead of RAS. Defaults to ``False``.

    Returns:
        the affine, ``float64``.
    """
    first, last = datasets[0], datasets[-1]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(s) for s in first.PixelSpacing)
    origin = np.asarray(first.ImagePositionPatient, dtype=float)
    if len(datasets) > 1:
        step = (np.asarray(last.ImagePositionPatient, dtype=float) - origin) / (len(datasets) - 1)
    else:
        step = _normal(first) * float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * column_spacing
    affine[:3, 1] = orientation[3:] * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return affine if lps else np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def with_type2_attributes(ds):
    """A copy of ``ds`` (the element dictionary, not the values) with the missing :data:`TYPE2_ATTRIBUTES` empty.

    highdicom copies patient and study attributes from the first source instance and fails on a missing one; DICOM
    allows a type 2 attribute to be empty, so an empty value is what the result carries. ``ds`` is not modified.
    """
    import pydicom

    missing = [name for name in TYPE2_ATTRIBUTES if name not in ds]
    if not missing:
        return ds
    out = pydicom.Dataset()  # copy.copy(ds) would share the element dictionary with ds
    out.update(ds)
    for name in missing:
        setattr(out, name, "")
    return out


def save_dataset(ds, path: str | os.PathLike) -> str:
    """Write a DICOM dataset with its file meta information to ``path`` atomically; returns the path as a string."""
    import pydicom

    with atomic_open(path) as f:
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(f, enforce_file_format=True)
        else:  # pydicom 2.x (the MONAI Label environment)
            ds.save_as(f, write_like_original=False)
    return str(path)
