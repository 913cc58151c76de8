from __future__ import annotations

from pathlib import Path

import pytest
import torch

# the Orthanc session fixtures (one PACS per session for tests/pacs and tests/label)
from tests.pacs.fixtures import brain_study_series, hippocampus_series, orthanc  # noqa: F401

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "crossd_reference_visible.pt"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def reference_cases():
    if not FIXTURE.exists():
        pytest.skip(f"reference fixture not found at {FIXTURE}")
    return torch.load(FIXTURE, weights_only=False)["cases"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
