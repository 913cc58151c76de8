"""The library (``monai_crossd.networks``, ``monai_crossd.converters``) stands alone: importing it loads no application
module and changes no global MONAI state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _loaded(code: str) -> dict:
    probe = (
        "import json, sys\n" + code + "\nfrom monai.networks.layers import Conv\n"
        "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith('monai_crossd')),"
        " 'registered': 'CROSSD' in Conv.names}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_networks_and_converters_load_no_application_module_and_register_nothing():
    out = _loaded("import monai_crossd.networks, monai_crossd.converters")
    top = {m.split(".")[1] for m in out["modules"] if m.count(".")}
    assert top <= {"networks", "converters", "utils"}, out["modules"]
    assert not out["registered"]  # MONAI's Conv factory is global state: registration is an explicit call


def test_applications_load_on_first_use():
    assert "monai_crossd.apps" not in _loaded("import monai_crossd")["modules"]
    out = _loaded("import monai_crossd\nmonai_crossd.apps.probing.weak_probing")
    assert "monai_crossd.apps.probing" in out["modules"]
    assert "monai_crossd.apps.transfer" not in out["modules"]


def test_old_study_command_still_runs():
    done = subprocess.run([sys.executable, "-m", "monai_crossd.evaluate", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "python -m monai_crossd.apps.transfer" in done.stdout
    assert "moved to `python -m monai_crossd.apps.transfer`" in done.stderr
