"""The README's main-job command, exactly as written, run from a temporary copy of the repository.

The copy (sources, bundles, configs; no ``.venv``, ``.git`` or previous outputs) isolates the run from the working
tree: ``python -m`` puts the copy first on ``sys.path``, so its ``monai_crossd`` is the one imported, and the outputs
land in the copy's bundle folder. Only ``python`` is replaced by this interpreter. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python -m monai.bundle run --config_file bundles/crossd_brats/configs/train.json"
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    "models",
    "runs",
    "eval",
    "logs",
    "demo_data",
    "notebooks",
    "benchmarks",
    "apps",
    "tests",
)


def _readme_command() -> str:
    """The README line that runs the brats training bundle, without its trailing comment."""
    for line in (REPO / "README.md").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if re.fullmatch(r"python -m monai\.bundle run --config_file bundles/crossd_brats/configs/train\.json", line):
            return line
    raise AssertionError(f"README.md has no line running `{COMMAND}`")


def test_readme_main_job(tmp_path):
    command = _readme_command()
    assert command == COMMAND
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=IGNORE)
    argv = [sys.executable, *shlex.split(command)[1:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(argv, check=False, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    bundle = copy / "bundles" / "crossd_brats"
    assert "SYNTHETIC demo data" in log  # the log says the default data are synthetic
    assert str(bundle / "models" / "model.pt") in log  # the copy's monai_crossd and bundle were used

    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape[0] == 2
    last = torch.load(bundle / "models" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "best"} <= set(last)
    assert list((bundle / "runs").glob("events.out.tfevents.*"))
    metrics = json.loads((bundle / "eval" / "train_metrics.json").read_text())
    config = json.loads((bundle / "models" / "model_config.json").read_text())
    assert len(metrics["history"]) == 20  # the default max_epochs
    for entry in metrics["history"]:
        assert 0.0 <= entry["val_auc"] <= 1.0 and 0.0 <= entry["val_accuracy"] <= 1.0
    assert config["image_size"] == [32, 32, 32] and "SYNTHETIC" in config["data"]
