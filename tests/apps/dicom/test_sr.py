"""write_dicom_sr / read_dicom_sr on the real four-series brain tumour study: values, references, errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pydicom
import pytest
import torch

from monai_crossd.apps.dicom import read_dicom_sr, write_dicom_sr
from monai_crossd.apps.dicom.sr import CODING_SCHEME
from tests.apps.dicom.cases import BRAIN_STUDY_SERIES, HIPPOCAMPUS_SERIES, dicom_files

pytest.importorskip("highdicom")

CLASSES = ["MGMT_unmethylated", "MGMT_methylated"]  # the brats bundle's class_names


@pytest.fixture(scope="module")
def study(shared_data):
    return [shared_data / series for series in BRAIN_STUDY_SERIES]


@pytest.fixture(scope="module")
def study_files(study):
    return [path for series in study for path in dicom_files(series)]


@pytest.fixture(scope="module")
def probabilities():
    return torch.softmax(torch.tensor([[0.2, 1.19]]), dim=1)[0]  # (C,) tensor, as a classifier's softmax gives it


@pytest.fixture(scope="module")
def sr_path(study_files, probabilities, tmp_path_factory):
    path = tmp_path_factory.mktemp("sr") / "sr.dcm"
    assert write_dicom_sr(probabilities, CLASSES, study_files, path, bundle_name="crossd_brats", algorithm_version="0.2.0") == str(path)
    return path


def _content_items(items):
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


def test_read_back_by_highdicom(sr_path, probabilities, study_files):
    result = read_dicom_sr(sr_path)
    assert result["class_names"] == CLASSES
    np.testing.assert_allclose(result["probabilities"], probabilities.numpy(), rtol=1e-6)
    assert result["predicted_class"] == "MGMT_methylated"
    assert result["algorithm"] == ("monai_crossd crossd_brats", "0.2.0")
    first = pydicom.dcmread(study_files[0], stop_before_pixels=True)
    assert result["study_uid"] == first.StudyInstanceUID
    series = {str(pydicom.dcmread(dicom_files(p.parent)[0], stop_before_pixels=True).SeriesInstanceUID) for p in study_files}
    assert set(result["series_uids"]) == series and len(series) == 4


def test_pydicom_values_and_references(sr_path, probabilities, study_files):
    """Read with pydicom alone: one NUM "Probability" per class under its finding type, the study's evidence."""
    sr = pydicom.dcmread(sr_path)
    first = pydicom.dcmread(study_files[0], stop_before_pixels=True)
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage and sr.Modality == "SR"
    assert (sr.StudyInstanceUID, sr.PatientID, sr.CompletionFlag) == (first.StudyInstanceUID, first.PatientID, "COMPLETE")
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    found = {}
    for item in _content_items(sr.ContentSequence):
        children = item.get("ContentSequence", [])
        finding = [c for c in children if c.ConceptNameCodeSequence[0].CodeValue == "121071"]  # DCM "Finding"
        numbers = [c for c in children if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "122157"]
        if finding and numbers:
            concept = finding[0].ConceptCodeSequence[0]
            assert concept.CodingSchemeDesignator == CODING_SCHEME
            measured = numbers[0].MeasuredValueSequence[0]
            assert measured.MeasurementUnitsCodeSequence[0].CodeValue == "1"  # UCUM: no units
            found[int(concept.CodeValue)] = (concept.CodeMeaning, float(measured.NumericValue))
    assert [found[i][0] for i in sorted(found)] == CLASSES
    np.testing.assert_allclose([found[i][1] for i in sorted(found)], probabilities.numpy(), rtol=1e-6)
    predicted = [
        i.ConceptCodeSequence[0].CodeMeaning
        for i in _content_items(sr.ContentSequence)
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Predicted class"
    ]
    assert predicted == ["MGMT_methylated"]
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == first.StudyInstanceUID
    referenced = {str(i.ReferencedSOPInstanceUID) for s in evidence.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert referenced == {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in study_files}
    assert oct(os.stat(sr_path).st_mode & 0o777) == "0o644"


def test_study_folder_numpy_and_batch_of_one(shared_data, tmp_path):
    """A study folder found recursively (its five series), a (1, C) numpy batch, three classes."""
    folder = shared_data / BRAIN_STUDY_SERIES[0].parent
    values = np.array([[0.1, 0.3, 0.6]])
    result = read_dicom_sr(write_dicom_sr(values, ["a", "b", "c"], folder, tmp_path / "sr.dcm"))
    np.testing.assert_allclose(result["probabilities"], values[0])
    assert result["predicted_class"] == "c" and len(result["series_uids"]) == 5


def test_bad_inputs(study_files, shared_data, tmp_path):
    out = tmp_path / "bad" / "sr.dcm"
    with pytest.raises(ValueError, match=re.escape("`probabilities` has shape (3,), expected (2,)")):
        write_dicom_sr([0.2, 0.3, 0.5], CLASSES, study_files, out)
    with pytest.raises(ValueError, match=r"should lie in \[0, 1\]"):
        write_dicom_sr([1.5, -0.5], CLASSES, study_files, out)
    with pytest.raises(ValueError, match=r"should lie in \[0, 1\]"):
        write_dicom_sr([float("nan"), 0.5], CLASSES, study_files, out)
    with pytest.raises(ValueError, match="`class_names` should be a non-empty sequence"):
        write_dicom_sr([], [], study_files, out)
    with pytest.raises(ValueError, match=r"`class_names` should be non-empty strings .* got \[''\]"):
        write_dicom_sr([0.5, 0.5], ["a", ""], study_files, out)
    with pytest.raises(ValueError, match="`source_datasets` holds no DICOM instance"):
        write_dicom_sr([0.3, 0.7], CLASSES, [], out)
    with pytest.raises(ValueError, match="`source_datasets` should belong to one study, got 2"):
        write_dicom_sr([0.3, 0.7], CLASSES, study_files + dicom_files(shared_data / HIPPOCAMPUS_SERIES), out)
    assert not out.parent.exists() or os.listdir(out.parent) == []
    with pytest.raises(ValueError, match="should be a DICOM SR, got Modality 'MR'"):
        read_dicom_sr(study_files[0])
