"""The test PACS: a real Orthanc with the real studies, read over DICOMweb (QIDO-RS, WADO-RS) with basic auth."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest

from tests.apps.dicom.cases import dicom_files
from tests.pacs.orthanc import Orthanc, missing_orthanc

pytest.importorskip("dicomweb_client")
requests = pytest.importorskip("requests")


def _uids(folder) -> tuple[str, str, str]:
    ds = pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.PatientID)


def _value(item: dict, tag: str):
    return item[tag]["Value"][0]


def test_qido_needs_credentials(orthanc):
    url = f"{orthanc.dicomweb_url}/studies"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=(orthanc.auth[0], "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=orthanc.auth, timeout=10).status_code == 200


def test_studies_listed(orthanc, hippocampus_series, brain_study_series):
    studies = orthanc.dicomweb_client().search_for_studies()
    found = {_value(s, "0020000D"): _value(s, "00100020") for s in studies}  # StudyInstanceUID -> PatientID
    hippocampus, brain = _uids(hippocampus_series), _uids(brain_study_series[0])
    assert found == {hippocampus[0]: hippocampus[2], brain[0]: brain[2]}


def test_series_count_and_modality(orthanc, hippocampus_series, brain_study_series):
    client = orthanc.dicomweb_client()
    for folders in ([hippocampus_series], brain_study_series):
        study = _uids(folders[0])[0]
        series = client.search_for_series(study_instance_uid=study, search_filters={"Modality": "MR"})
        assert {_value(s, "0020000E") for s in series} == {_uids(f)[1] for f in folders}
        assert {_value(s, "00080060") for s in series} == {"MR"}
        for s in series:  # NumberOfSeriesRelatedInstances: all files stored
            folder = next(f for f in folders if _uids(f)[1] == _value(s, "0020000E"))
            assert int(_value(s, "00201209")) == len(dicom_files(folder))


@pytest.mark.parametrize("which", ["hippocampus", "t1post"])
def test_wado_series_pixels_equal_files(orthanc, hippocampus_series, brain_study_series, which):
    folder = hippocampus_series if which == "hippocampus" else brain_study_series[0]
    study, series, _ = _uids(folder)
    retrieved = {str(ds.SOPInstanceUID): ds for ds in orthanc.dicomweb_client().retrieve_series(study, series)}
    on_disk = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in dicom_files(folder))}
    assert retrieved.keys() == on_disk.keys()
    for uid, ds in on_disk.items():
        np.testing.assert_array_equal(retrieved[uid].pixel_array, ds.pixel_array)
        np.testing.assert_allclose(retrieved[uid].ImagePositionPatient, ds.ImagePositionPatient)


def test_server_config_and_stop(tmp_path):
    """A second server: local-only, authenticated, its storage in its folder; after stop no process, no port."""
    reason = missing_orthanc()
    if reason:
        pytest.skip(reason)
    with Orthanc(tmp_path, user="u", password="p") as pacs:
        pid, port = pacs.process.pid, pacs.port
        system = requests.get(f"{pacs.url}/system", auth=("u", "p"), timeout=10).json()
        assert system["Name"] == "monai_crossd-tests" and system["Version"].startswith("1.")
        plugins = requests.get(f"{pacs.url}/plugins", auth=("u", "p"), timeout=10).json()
        assert "dicom-web" in plugins
        assert (tmp_path / "index").is_dir() and (tmp_path / "storage").is_dir()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped: no orphan, no zombie
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/system", timeout=5)
