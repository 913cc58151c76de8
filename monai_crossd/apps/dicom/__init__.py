"""Results as DICOM objects a PACS keeps: a segmentation as DICOM SEG, class probabilities as a DICOM SR (highdicom).

- :func:`write_dicom_seg` / :func:`read_dicom_seg`: an ``(X, Y, Z)`` label map on the grid of its source series
  (the array order of MONAI's ``PydicomReader``, see :mod:`monai_crossd.apps.dicom.series`) to a BINARY SEG that
  references the series' instances, and back.
- :func:`write_dicom_sr` / :func:`read_dicom_sr`: a classifier's probabilities to a TID 1500 Comprehensive 3D SR in
  the study of the source series, and back.
- :func:`load_series`, :func:`series_affine`, :func:`series_shape`: the source series' instances in grid order, its
  affine and shape.

Needs the ``dicom`` extra (``highdicom``; with pydicom 3 highdicom >= 0.23, with pydicom 2 highdicom 0.22).
"""

from __future__ import annotations

from monai_crossd.apps.dicom.seg import read_dicom_seg, segment_names_list, write_dicom_seg
from monai_crossd.apps.dicom.series import load_series, save_dataset, series_affine, series_shape
from monai_crossd.apps.dicom.sr import read_dicom_sr, write_dicom_sr

__all__ = [
    "load_series",
    "read_dicom_seg",
    "read_dicom_sr",
    "save_dataset",
    "segment_names_list",
    "series_affine",
    "series_shape",
    "write_dicom_seg",
    "write_dicom_sr",
]
