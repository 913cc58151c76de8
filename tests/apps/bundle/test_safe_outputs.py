"""Issue #16 items 1, 2, 4 on the hippocampus bundle, through real ``python -m monai_crossd.apps.bundle run`` processes.

* A failed training run leaves ``models/`` byte-identical; ``model_config.json`` is written with the ``model.pt`` it
  describes (its SHA-256 inside) and inference refuses a pair that does not match, naming both files.
* Batch inference goes on past a broken input: the good masks are written, the broken case's earlier mask is
  removed, the run exits 1 with a table of the failed cases; an output folder holding the inputs is refused.
* Every failure ends with one ``error:`` line naming the file or argument.

Inputs are real MSD hippocampus images from ``../shared/data``, broken by truncation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.bundles._helpers import HIPPOCAMPUS_TINY, output_dirs, run_workflow

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "bundles" / "crossd_hippocampus_segmentation" / "configs"
CHANNELS = HIPPOCAMPUS_TINY["channels"]
TINY = HIPPOCAMPUS_TINY
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]


def _bundle(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "monai_crossd.apps.bundle", "run", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``models/`` of a tiny hippocampus training run (2 real cases, 1 epoch)."""
    root = tmp_path_factory.mktemp("trained")
    run_workflow(str(CONFIGS / "train.json"), max_epochs=1, **output_dirs(root), **TINY)
    return root / "models"


@pytest.fixture
def models(trained, tmp_path) -> Path:
    """A private copy of the trained ``models/`` folder."""
    return Path(shutil.copytree(trained, tmp_path / "models"))


@pytest.fixture
def inputs(shared_data, tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in CASES:
        shutil.copy(shared_data / "hippocampus" / "imagesTr" / f"{name}.nii.gz", folder)
    return folder


def test_model_config_is_stamped_with_its_checkpoint(trained):
    config = json.loads((trained / "model_config.json").read_text())
    assert config["model_sha256"] == hashlib.sha256((trained / "model.pt").read_bytes()).hexdigest()
    assert config["channels"] == CHANNELS and config["pixdim"] == [1.0, 1.0, 1.0]
    state = torch.load(trained / "model.pt", weights_only=True)  # still a plain state_dict
    from monai_crossd.networks.nets import CrossDUNet

    CrossDUNet(3, 1, 3, channels=CHANNELS, strides=[2, 2, 2], num_res_units=2).load_state_dict(state)


def test_failed_training_leaves_the_deployed_model_untouched(models, shared_data, tmp_path):
    """Issue #16 item 1: a run started with another `pixdim` that dies on a missing file writes nothing in models/."""
    before = _snapshot(models)
    missing = tmp_path / "data" / "imagesTr" / "hippocampus_999.nii.gz"
    image = shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    label = shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    datalist = {"training": [{"image": str(missing), "label": str(label)}], "validation": [{"image": str(image),
                "label": str(label)}]}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(datalist))
    done = _bundle("--config_file", str(CONFIGS / "train.json"), "--ckpt_dir", str(models), "--output_dir",
                   str(tmp_path / "eval"), "--log_dir", str(tmp_path / "runs"), "--datalist_file",
                   str(tmp_path / "dataset.json"), "--pixdim", "[1.5,1.5,1.5]", "--max_epochs", "1")  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert _last_line(done).startswith("error: ValueError: ") and str(missing) in _last_line(done)
    assert "Traceback" in done.stderr  # the traceback is still there, above the last line
    assert _snapshot(models) == before


def test_inference_refuses_a_config_of_another_checkpoint(models, inputs, tmp_path):
    """A model_config.json beside a model.pt of another run: exit 1 naming both files, no mask written."""
    from monai_crossd.networks.nets import CrossDUNet

    other = CrossDUNet(3, 1, 3, channels=CHANNELS, strides=[2, 2, 2], up_mode="deconv")
    torch.save(other.state_dict(), models / "model.pt")  # the config now describes weights that are gone
    out = tmp_path / "out"
    done = _bundle("--config_file", str(CONFIGS / "inference.json"), "--ckpt_dir", str(models), "--input_dir",
                   str(inputs), "--output_dir", str(out))  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: ValueError: model config ") and "does not describe checkpoint" in last
    assert str(models / "model_config.json") in last and str(models / "model.pt") in last
    assert not out.exists() or not list(out.iterdir())


def test_config_without_stamp_loads_with_a_warning(trained, tmp_path, caplog):
    from monai_crossd.apps.bundle import read_model_config

    config = json.loads((trained / "model_config.json").read_text())
    del config["model_sha256"]
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    shutil.copy(trained / "model.pt", tmp_path / "model.pt")
    with caplog.at_level("WARNING"):
        read = read_model_config(tmp_path / "model_config.json", tmp_path / "model.pt")
    assert read["channels"] == CHANNELS
    assert "has no `model_sha256` stamp" in caplog.text and str(tmp_path / "model.pt") in caplog.text


def test_batch_inference_goes_past_a_broken_case(trained, inputs, tmp_path):
    """Issue #16 item 2: 4 cases, case 3 truncated after a first run: 3 masks rewritten, case 3's removed, exit 1."""
    out = tmp_path / "out"
    args = ["--config_file", str(CONFIGS / "inference.json"), "--ckpt_dir", str(trained), "--input_dir", str(inputs),
            "--output_dir", str(out)]  # fmt: skip
    first = _bundle(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    masks = {name: np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj) for name in CASES}
    (out / "notes.txt").write_text("an unrelated earlier file")
    inputs_before = _snapshot(inputs)
    broken = inputs / f"{CASES[2]}.nii.gz"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])

    done = _bundle(*args)
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: FailedCasesError: 1 of 4 cases failed") and broken.name in last
    table = done.stdout + done.stderr
    assert "failed cases (nothing written for them)" in table
    assert f"could not read key 'image' file '{broken}' (truncated or corrupt?)" in table
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}_seg.nii.gz" for n in CASES if n != CASES[2]] +
                                                           ["notes.txt"])  # fmt: skip
    for name in CASES[:2] + CASES[3:]:
        np.testing.assert_array_equal(np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj), masks[name])
    assert (out / "notes.txt").read_text() == "an unrelated earlier file"
    assert {k: v for k, v in _snapshot(inputs).items() if k != broken.name} == {
        k: v for k, v in inputs_before.items() if k != broken.name
    }


@pytest.mark.parametrize("where", ["same", "matched"])
def test_output_dir_overlapping_the_inputs_is_refused(trained, inputs, where):
    output_dir = inputs if where == "same" else inputs / "seg"  # "*/*.nii.gz" would read seg/ back as inputs
    pattern = "*.nii.gz" if where == "same" else "*/*.nii.gz"
    if where == "matched":
        (inputs / "cases").mkdir()
        for name in CASES:
            shutil.move(inputs / f"{name}.nii.gz", inputs / "cases" / f"{name}.nii.gz")
    before = _snapshot(inputs)
    done = _bundle("--config_file", str(CONFIGS / "inference.json"), "--ckpt_dir", str(trained), "--input_dir",
                   str(inputs), "--input_pattern", pattern, "--output_dir", str(output_dir))  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: ValueError: `output_dir` ") and str(output_dir) in last
    assert ("holds the input" if where == "same" else "overlaps the input pattern") in last
    assert _snapshot(inputs) == before


def test_plain_monai_runner_still_works_and_still_fails(trained, inputs, tmp_path):
    """``python -m monai.bundle run`` keeps working; its failures carry the same message down the chain."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--config_file", str(CONFIGS / "inference.json"), "--ckpt_dir", str(trained), "--input_dir", str(inputs)]
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args, "--output_dir", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("*_seg.nii.gz"))) == len(CASES)
    cmd[-1] = str(inputs)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "`output_dir`" in done.stderr and "holds the input" in done.stderr
