from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _serial_ignite():
    """A bundle run under a (gloo) process group leaves ignite's distributed model set; reset it so
    that every bundle test starts in the serial state whatever ran before."""
    yield
    from ignite.distributed import utils as idist_utils
    from ignite.distributed.comp_models import _SerialModel

    idist_utils._set_model(_SerialModel())
