"""Real DICOM series and labels on them, shared by the SEG/SR tests and the Orthanc round trip (tests/pacs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
from monai.transforms import LoadImage

REPO = Path(__file__).resolve().parents[3]
HIPPOCAMPUS_METADATA = REPO / "bundles" / "crossd_hippocampus_segmentation" / "configs" / "metadata.json"

#: the hippocampus-crop MR series (patient PGBM-002, 35 x 51 x 32 at 1 mm, axial), a study of its own
HIPPOCAMPUS_SERIES = Path("dicom/brain_tumor_progression/Study1/13_HCropVolume")
#: the four MR series of the brain tumour study (patient PGBM-003: T1 post, T1 pre, T2, FLAIR; 280 x 320 x 22)
BRAIN_STUDY_SERIES = tuple(
    Path("dicom/brain_tumor_progression/Study3") / name
    for name in ("11-T1post-18670", "26401-T1prereg-52906", "37830-T2reg-78532", "36468-FLAIRreg-58706")
)
EMPTY_FROM = 28  #: slices z >= EMPTY_FROM of :func:`hippocampus_label` hold no segment (frames a SEG omits)


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix == ".dcm")


def hippocampus_segment_names() -> dict:
    """The ``channel_def`` of the hippocampus bundle's output: ``{"0": "background", "1": "anterior", ...}``."""
    metadata = json.loads(HIPPOCAMPUS_METADATA.read_text())
    return metadata["network_data_format"]["outputs"]["pred"]["channel_def"]


def hippocampus_label(series: Path):
    """A two-class ``(X, Y, Z)`` label MetaTensor on the series' grid, made from the real image so it is asymmetric.

    Class 1: voxels above the 75th intensity percentile; class 2: those of them in the corner ``x < X/3``,
    ``y >= Y/2``, ``4 <= z < 20``; slices ``z >= EMPTY_FROM`` are cleared. Returns ``(label, threshold)``.
    """
    image = LoadImage(reader="PydicomReader", image_only=True)(str(series))
    threshold = float(np.percentile(image.numpy(), 75))
    label = (image > threshold).long()
    x, y, _ = label.shape
    label[: x // 3, y // 2 :, 4:20] *= 2
    label[:, :, EMPTY_FROM:] = 0
    return label, threshold


def sorted_slices(series: Path) -> list[pydicom.Dataset]:
    """The series' instances sorted by position along the slice normal (the series are axial or near-axial)."""
    datasets = [pydicom.dcmread(p) for p in dicom_files(series)]
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))


def assert_seg_on_series(seg: pydicom.Dataset, source: list[pydicom.Dataset], algorithm_name: str) -> None:
    """``seg`` was written for the series ``source``: its algorithm, grid, frame positions, spacing, orientation and
    references to every source instance."""
    first = source[0]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == algorithm_name
    assert (seg.Rows, seg.Columns, seg.FrameOfReferenceUID) == (first.Rows, first.Columns, first.FrameOfReferenceUID)
    assert (seg.PatientID, seg.StudyInstanceUID) == (first.PatientID, first.StudyInstanceUID)
    positions = {str(ds.SOPInstanceUID): ds.ImagePositionPatient for ds in source}
    for group in seg.PerFrameFunctionalGroupsSequence:  # each frame sits where its source slice sits
        sop = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        np.testing.assert_allclose(group.PlanePositionSequence[0].ImagePositionPatient, positions[sop])
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing)
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, first.ImageOrientationPatient)
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(positions)
