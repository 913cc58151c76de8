"""write_dicom_seg / read_dicom_seg on the real hippocampus-crop MR series: voxels, references, segments, errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Orientation

from monai_crossd.apps.dicom import load_series, read_dicom_seg, series_affine, write_dicom_seg
from tests.apps.dicom.cases import (
    BRAIN_STUDY_SERIES,
    EMPTY_FROM,
    HIPPOCAMPUS_SERIES,
    dicom_files,
    hippocampus_label,
    hippocampus_segment_names,
    sorted_slices,
)

hd = pytest.importorskip("highdicom")
from pydicom.sr.codedict import codes  # noqa: E402

ANATOMICAL_STRUCTURE = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")  # pydicom 2 has two such codes
BUNDLE = "crossd_hippocampus_segmentation"
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@pytest.fixture(scope="module")
def series(shared_data):
    return shared_data / HIPPOCAMPUS_SERIES


@pytest.fixture(scope="module")
def case(series):
    return hippocampus_label(series)


@pytest.fixture(scope="module")
def seg_path(series, case, tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "out" / "seg.dcm"
    written = write_dicom_seg(
        case[0],
        series,
        hippocampus_segment_names(),
        path,
        bundle_name=BUNDLE,
        algorithm_version="0.2.0",
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_types=codes.SCT.Hippocampus,
    )
    assert written == str(path)
    return path


def test_label_is_a_real_asymmetric_case(case):
    label = case[0].numpy()
    assert label.shape == (35, 51, 32)
    counts = np.bincount(label.ravel(), minlength=3)
    assert counts[1] > 500 and counts[2] > 100
    assert not np.array_equal(label, label[::-1]) and not np.array_equal(label, label[:, ::-1])
    assert not label[:, :, EMPTY_FROM:].any() and label[:, :, :EMPTY_FROM].any(axis=(0, 1)).all()


def test_read_back_by_highdicom_equals_label(seg_path, series, case):
    label, names = read_dicom_seg(seg_path, series)
    np.testing.assert_array_equal(label, case[0].numpy())
    assert names == {1: "anterior", 2: "posterior"}
    shuffled = [pydicom.dcmread(p) for p in dicom_files(series)][::-1]  # any order of the source datasets
    np.testing.assert_array_equal(read_dicom_seg(pydicom.dcmread(seg_path), shuffled)[0], case[0].numpy())


def test_pydicom_frames_match_source_pixels(seg_path, series, case):
    """Each frame, decoded by pydicom alone, is the threshold of its own source slice (no axis can be flipped)."""
    label, threshold = case
    seg = pydicom.dcmread(seg_path)
    assert (seg.Modality, seg.SegmentationType, seg.SOPClassUID) == ("SEG", "BINARY", pydicom.uid.SegmentationStorage)
    slices = {str(ds.SOPInstanceUID): ds for ds in sorted_slices(series)}
    order = list(slices)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    assert frames.shape[0] == seg.NumberOfFrames
    seen = set()
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        sop = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        source = slices[sop]
        np.testing.assert_allclose(group.PlanePositionSequence[0].ImagePositionPatient, source.ImagePositionPatient)
        z = order.index(sop)
        np.testing.assert_array_equal(frame, label.numpy()[:, :, z].T == number)
        if number == 1 and z >= 20:  # outside the class 2 block: class 1 is the source slice's own threshold
            np.testing.assert_array_equal(frame, source.pixel_array.astype(float) > threshold)
        seen.add((z, number))
    expected = {(z, k) for z in range(label.shape[2]) for k in (1, 2) if (label.numpy()[:, :, z] == k).any()}
    assert seen == expected  # one frame per slice and segment present, none for empty ones


def test_references_geometry_and_segments(seg_path, series):
    seg = pydicom.dcmread(seg_path)
    source = sorted_slices(series)
    first = source[0]
    assert (seg.StudyInstanceUID, seg.PatientID, seg.FrameOfReferenceUID) == (
        first.StudyInstanceUID, first.PatientID, first.FrameOfReferenceUID
    )  # fmt: skip
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == {
        str(ds.SOPInstanceUID) for ds in source
    }
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, first.ImageOrientationPatient)
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing)
    assert (seg.Rows, seg.Columns) == (first.Rows, first.Columns)
    segments = seg.SegmentSequence
    assert [(s.SegmentNumber, s.SegmentLabel, s.SegmentAlgorithmType) for s in segments] == [
        (1, "anterior", "AUTOMATIC"), (2, "posterior", "AUTOMATIC")
    ]  # fmt: skip
    for s in segments:
        algorithm = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (f"monai_crossd {BUNDLE}", "0.2.0")
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "5366008"  # SCT hippocampus
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # SCT anatomical structure
    assert oct(os.stat(seg_path).st_mode & 0o777) == "0o644" and os.listdir(seg_path.parent) == ["seg.dcm"]


def test_defaults_numpy_sequence_names_and_empty_segment(series, case, tmp_path):
    """A numpy label, names as a list, a named class without voxels; default codes and algorithm version."""
    import monai_crossd

    label = np.where(case[0].numpy() == 2, 0, case[0].numpy()).astype(np.uint8)  # class 2 absent
    path = write_dicom_seg(label, series, ["head", "tail"], tmp_path / "seg.dcm")
    back, names = read_dicom_seg(path, series)
    np.testing.assert_array_equal(back, label)
    assert names == {1: "head", 2: "tail"}
    seg = pydicom.dcmread(path)
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("monai_crossd", monai_crossd.__version__)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # SCT tissue


def test_series_affine_is_monais(series, case):
    np.testing.assert_allclose(series_affine(load_series(series)), case[0].affine.numpy(), atol=1e-5)


def test_bad_inputs(series, case, tmp_path, shared_data):
    label = case[0]
    out = tmp_path / "bad" / "seg.dcm"
    names = ["anterior", "posterior"]
    with pytest.raises(ValueError, match=re.escape("`label` has shape (51, 35, 32), the source series (35, 51, 32)")):
        write_dicom_seg(label.numpy().transpose(1, 0, 2), series, names, out)
    with pytest.raises(ValueError, match=r"(?s)`label`'s affine \(RAS\).*differs from the source series'"):
        write_dicom_seg(Orientation(axcodes="RAS", labels=RAS_LABELS)(label[None])[0], series, names, out)  # same shape, flipped x, y
    with pytest.raises(ValueError, match=r"`segment_names` is empty"):
        write_dicom_seg(label, series, [], out)
    with pytest.raises(ValueError, match=r"`segment_names` is empty"):
        write_dicom_seg(label, series, {"0": "background"}, out)
    with pytest.raises(ValueError, match=r"non-empty strings .* got \[''\]"):
        write_dicom_seg(label, series, ["anterior", ""], out)
    with pytest.raises(ValueError, match="got the string .anterior."):
        write_dicom_seg(label, series, "anterior", out)
    with pytest.raises(ValueError, match=re.escape("`label` has classes [2] without a name")):
        write_dicom_seg(label, series, ["anterior"], out)
    with pytest.raises(ValueError, match="integer class values"):
        write_dicom_seg(label.float() * 0.5, series, names, out)
    with pytest.raises(ValueError, match="`source_datasets` holds no DICOM instance"):
        write_dicom_seg(label, [], names, out)
    with pytest.raises(ValueError, match="`source_datasets` should hold one series, got 2"):
        write_dicom_seg(label, dicom_files(series) + dicom_files(shared_data / BRAIN_STUDY_SERIES[0])[:1], names, out)
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not DICOM")
    with pytest.raises(ValueError, match=r"`source_datasets`: '.*notes.txt' is not a readable DICOM file"):
        write_dicom_seg(label, [*dicom_files(series), not_dicom], names, out)
    with pytest.raises(ValueError, match="`source_datasets` should be a series folder .* got '.*missing'"):
        write_dicom_seg(label, tmp_path / "missing", names, out)
    with pytest.raises(ValueError, match="`segmented_property_types` has 3 codes for 2 segments"):
        write_dicom_seg(label, series, names, out, segmented_property_types=[codes.SCT.Hippocampus] * 3)
    assert not out.parent.exists() or os.listdir(out.parent) == []  # nothing written, no temporary file left
    with pytest.raises(ValueError, match="should be a DICOM SEG, got Modality 'MR'"):
        read_dicom_seg(dicom_files(series)[0], series)


def test_read_refuses_another_series(seg_path, shared_data):
    with pytest.raises(ValueError, match="not the source series"):
        read_dicom_seg(seg_path, shared_data / BRAIN_STUDY_SERIES[0])


def test_tensor_label_with_channel(series, case, tmp_path):
    label = torch.as_tensor(case[0].numpy())[None]  # (1, X, Y, Z) plain tensor, no affine
    path = write_dicom_seg(label, series, hippocampus_segment_names(), tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_dicom_seg(path, series)[0], case[0].numpy())
