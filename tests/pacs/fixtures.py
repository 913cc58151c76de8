"""Session fixtures shared by tests/pacs and tests/label (imported by tests/conftest.py): one Orthanc (tests/pacs/orthanc.py)
holding the real DICOM studies of ../shared/data/dicom."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.dicom.cases import BRAIN_STUDY_SERIES, HIPPOCAMPUS_SERIES, dicom_files
from tests.pacs.orthanc import Orthanc, missing_orthanc


@pytest.fixture(scope="session")
def hippocampus_series(shared_data) -> Path:
    """The hippocampus-crop MR series folder (a study of its own)."""
    return shared_data / HIPPOCAMPUS_SERIES


@pytest.fixture(scope="session")
def brain_study_series(shared_data) -> list[Path]:
    """The four series folders of the brain tumour study."""
    return [shared_data / series for series in BRAIN_STUDY_SERIES]


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory, hippocampus_series, brain_study_series):
    """A running Orthanc (DICOMweb at ``orthanc.dicomweb_url``, basic auth ``orthanc.auth``) holding both studies.

    Skips when the ``Orthanc`` binary or its DICOMweb plugin is missing; stopped at the end of the session.
    """
    reason = missing_orthanc()
    if reason:
        pytest.skip(reason)
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        for folder in (hippocampus_series, *brain_study_series):
            pacs.upload(dicom_files(folder))
        yield pacs
