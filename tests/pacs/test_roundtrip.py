"""Results back into the PACS: a SEG and an SR stored over STOW-RS, found over QIDO-RS, read back over WADO-RS."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from monai_crossd.apps.dicom import read_dicom_seg, read_dicom_sr, write_dicom_seg, write_dicom_sr
from tests.apps.dicom.cases import assert_seg_on_series, dicom_files, hippocampus_label, hippocampus_segment_names

pytest.importorskip("dicomweb_client")
pytest.importorskip("highdicom")


def _value(item: dict, tag: str):
    return item[tag]["Value"][0]


def _store_and_find(client, path, study: str, modality: str) -> pydicom.Dataset:
    """STOW-RS ``path``, find its series by QIDO-RS (study + modality), retrieve it by WADO-RS."""
    written = pydicom.dcmread(path)
    client.store_instances([written])
    series = client.search_for_series(study_instance_uid=study, search_filters={"Modality": modality})
    # the session's Orthanc is shared (tests/label stores its results there too): ours is one of the study's
    assert written.SeriesInstanceUID in [_value(s, "0020000E") for s in series]
    (retrieved,) = client.retrieve_series(study, written.SeriesInstanceUID)
    assert retrieved.SOPInstanceUID == written.SOPInstanceUID
    return retrieved


def test_seg_roundtrip(orthanc, hippocampus_series, tmp_path):
    client = orthanc.dicomweb_client()
    first = pydicom.dcmread(dicom_files(hippocampus_series)[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    source = client.retrieve_series(study, series)  # the grid, as a DICOMweb application sees it
    label, _ = hippocampus_label(hippocampus_series)
    path = write_dicom_seg(label, source, hippocampus_segment_names(), tmp_path / "seg.dcm", bundle_name="crossd_hippocampus_segmentation")
    seg = _store_and_find(client, path, study, "SEG")
    back, names = read_dicom_seg(seg, source)
    np.testing.assert_array_equal(back, label.numpy())
    assert names == {1: "anterior", 2: "posterior"}
    assert_seg_on_series(seg, source, "monai_crossd crossd_hippocampus_segmentation")


def test_sr_roundtrip(orthanc, brain_study_series, tmp_path):
    client = orthanc.dicomweb_client()
    study = str(pydicom.dcmread(dicom_files(brain_study_series[0])[0], stop_before_pixels=True).StudyInstanceUID)
    files = [p for folder in brain_study_series for p in dicom_files(folder)]
    probabilities = np.array([0.62, 0.38])
    path = write_dicom_sr(probabilities, ["MGMT_unmethylated", "MGMT_methylated"], files, tmp_path / "sr.dcm", bundle_name="crossd_brats")
    sr = _store_and_find(client, path, study, "SR")
    result = read_dicom_sr(sr)
    np.testing.assert_allclose(result["probabilities"], probabilities)
    assert result["class_names"] == ["MGMT_unmethylated", "MGMT_methylated"]
    assert result["predicted_class"] == "MGMT_unmethylated" and result["study_uid"] == study
    mr = client.search_for_series(study_instance_uid=study, search_filters={"Modality": "MR"})
    assert set(result["series_uids"]) == {_value(s, "0020000E") for s in mr}
