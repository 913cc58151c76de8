"""The trained weights every bundle ships (``models/shipped/``) work on a clean clone, with nothing trained.

Each test points ``ckpt_dir`` at a temporary ``models`` folder whose ``shipped`` is the repository's, so a checkpoint a
developer trained into ``bundles/*/models/`` does not take part. The measured metrics of ``models/shipped/metrics.json``
(also in each bundle's docs) are reproduced by the bundle's own ``evaluate.json``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
SHARED = REPO.parent / "shared" / "data"
NAMES = ("crossd_brats", "crossd_hippocampus_segmentation", "crossd_pretrain2d", "crossd_vessel_classification")
#: input shape of ``ckpt_export --use_trace`` for each bundle (the shipped model's input)
INPUT_SHAPES = {
    "crossd_brats": [1, 4, 32, 32, 32],
    "crossd_hippocampus_segmentation": [1, 1, 32, 48, 32],
    "crossd_pretrain2d": [1, 1, 28, 28],
    "crossd_vessel_classification": [1, 1, 28, 28, 28],
}
MAX_BYTES = 20 * 1024 * 1024


def _models(tmp_path: Path, name: str) -> Path:
    """A ``models`` folder holding only the repository's shipped weights of bundle ``name``."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "shipped").symlink_to(BUNDLES / name / "models" / "shipped", target_is_directory=True)
    return models


def _bundle(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (args[:2], done.stdout[-3000:], done.stderr[-3000:])
    return done


def _metrics_csv(path: Path) -> dict:
    """``metrics.csv`` of MONAI's ``MetricsSaver``: one ``name,value`` row per metric."""
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f)}


def _shipped_metrics(name: str) -> dict:
    return json.loads((BUNDLES / name / "models" / "shipped" / "metrics.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files(name):
    from monai_crossd.apps.bundle import check_model_pair

    shipped = BUNDLES / name / "models" / "shipped"
    ckpt, config = shipped / "model.pt", shipped / "model_config.json"
    assert ckpt.stat().st_size <= MAX_BYTES, ckpt.stat().st_size
    check_model_pair(config, ckpt, json.loads(config.read_text()))  # the stamp is this checkpoint's SHA-256
    tracked = subprocess.run(["git", "ls-files", str(shipped)], cwd=REPO, capture_output=True, text=True).stdout
    if tracked:  # a git checkout: the shipped files are committed, training outputs are not
        assert {Path(p).name for p in tracked.split()} >= {"model.pt", "model_config.json", "metrics.json"}
    metrics = _shipped_metrics(name)
    docs = (BUNDLES / name / "docs" / "README.md").read_text()
    for key, value in metrics["metrics"].items():  # the docs state the measured numbers
        assert f"{value:.3f}" in docs, (key, value)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_file_prefers_trained_weights(name, tmp_path):
    from monai_crossd.apps.bundle import checkpoint_file

    models = _models(tmp_path, name)
    assert checkpoint_file(models) == str(models / "shipped" / "model.pt")
    (models / "model.pt").write_bytes(b"")  # what a training run writes
    assert checkpoint_file(models) == str(models / "model.pt")


@pytest.mark.parametrize("name", NAMES)
def test_ckpt_export_of_shipped_weights(name, tmp_path):
    from monai.bundle import ConfigParser

    configs = BUNDLES / name / "configs"
    models = _models(tmp_path, name)
    ts = tmp_path / "model.ts"
    _bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(models / "shipped" / "model.pt"),
            "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json"),
            "--ckpt_dir", str(models), "--use_trace", "True", "--input_shape", json.dumps(INPUT_SHAPES[name]))
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update({"bundle_root": str(BUNDLES / name), "ckpt_dir": str(models)})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(models / "shipped" / "model.pt", weights_only=True))
    x = torch.rand(*INPUT_SHAPES[name])
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), network.eval()(x), atol=1e-4, rtol=1e-4)


def test_hippocampus_inference_on_msd_images(tmp_path):
    """A folder of MSD-format images (held-out cases of the shipped split) -> masks on each input's grid."""
    name = "crossd_hippocampus_segmentation"
    data = BUNDLES / name / "data"
    cases = [d["image"] for d in json.loads((data / "dataset.json").read_text())["validation"]]
    split = json.loads((data / "shared_split.json").read_text())
    assert set(cases) <= {d["image"] for d in split["test"]}  # never trained on nor used for selection
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in cases:
        (inputs / Path(case).name).symlink_to(data / case)
    out = tmp_path / "out"
    _bundle("run", "--config_file", str(BUNDLES / name / "configs" / "inference.json"), "--input_dir", str(inputs),
            "--ckpt_dir", str(_models(tmp_path, name)), "--output_dir", str(out))
    dice = []
    for case in cases:
        image, label = nib.load(data / case), nib.load(data / case.replace("imagesTr", "labelsTr"))
        mask = nib.load(out / Path(case).name.replace(".nii.gz", "_seg.nii.gz"))
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-5)
        pred, truth = np.asarray(mask.dataobj), np.asarray(label.dataobj)
        assert set(np.unique(pred)) <= {0, 1, 2}
        dice += [2 * ((pred == c) & (truth == c)).sum() / ((pred == c).sum() + (truth == c).sum()) for c in (1, 2)]
    assert np.mean(dice) >= 0.8, dice  # the shipped model segments both parts on cases it never saw


def test_vessel_evaluate_reproduces_documented_test_auc(tmp_path):
    """On the embedded npz (the official VesselMNIST3D file, all 382 test volumes)."""
    name = "crossd_vessel_classification"
    out = tmp_path / "eval"
    configs = BUNDLES / name / "configs"
    _bundle("run", "--config_file", str([str(configs / "train.json"), str(configs / "evaluate.json")]),
            "--ckpt_dir", str(_models(tmp_path, name)),
            "--output_dir", str(out), "--log_dir", str(tmp_path / "runs"))
    measured = _metrics_csv(out / "metrics.csv")
    expected = _shipped_metrics(name)
    assert expected["split"].startswith("test")
    for key in ("auc", "accuracy", "balanced_accuracy"):
        assert measured[f"val_{key}"] == pytest.approx(expected["metrics"][f"test_{key}"], abs=2e-3), key


@pytest.mark.skipif(not (SHARED / "hippocampus").is_dir(), reason="needs ../shared/data")
def test_hippocampus_evaluate_reproduces_documented_test_dice(tmp_path):
    name = "crossd_hippocampus_segmentation"
    out = tmp_path / "eval"
    configs = BUNDLES / name / "configs"
    _bundle("run", "--config_file", str([str(configs / "train.json"), str(configs / "evaluate.json")]),
            "--data_dir", str(SHARED / "hippocampus"), "--datalist_file",
            str(BUNDLES / name / "data" / "shared_split.json"), "--val_key", "test",
            "--ckpt_dir", str(_models(tmp_path, name)), "--output_dir", str(out), "--log_dir", str(tmp_path / "runs"))
    measured = _metrics_csv(out / "metrics.csv")
    expected = _shipped_metrics(name)["metrics"]
    for key in ("test_mean_dice", "test_dice_anterior", "test_dice_posterior"):
        assert measured[key.replace("test_", "val_")] == pytest.approx(expected[key], abs=2e-3), key


@pytest.mark.skipif(not (SHARED / "medmnist" / "breastmnist.npz").is_file(), reason="needs ../shared/data")
def test_pretrain2d_evaluate_reproduces_documented_test_metrics(tmp_path):
    """On the test splits of the shared BreastMNIST + PneumoniaMNIST files (what the bundle reads when present)."""
    name = "crossd_pretrain2d"
    out = tmp_path / "eval"
    configs = BUNDLES / name / "configs"
    _bundle("run", "--config_file", str([str(configs / "train.json"), str(configs / "evaluate.json")]),
            "--ckpt_dir", str(_models(tmp_path, name)), "--output_dir", str(out), "--log_dir", str(tmp_path / "runs"))
    measured = _metrics_csv(out / "metrics.csv")
    expected = _shipped_metrics(name)["metrics"]
    for key in ("auc", "accuracy", "balanced_accuracy"):
        assert measured[f"val_{key}"] == pytest.approx(expected[f"test_{key}"], abs=2e-3), key


def test_brats_evaluate_reproduces_documented_demo_metrics(tmp_path):
    """On the 12 validation cases of the synthetic demo (generated deterministically on a fresh clone)."""
    name = "crossd_brats"
    out = tmp_path / "eval"
    configs = BUNDLES / name / "configs"
    _bundle("run", "--config_file", str([str(configs / "train.json"), str(configs / "evaluate.json")]),
            "--bundle_root", str(tmp_path), "--ckpt_dir", str(_models(tmp_path, name)), "--output_dir", str(out))
    measured = _metrics_csv(out / "metrics.csv")
    expected = _shipped_metrics(name)["metrics"]
    for key in ("auc", "accuracy"):
        assert measured[f"val_{key}"] == pytest.approx(expected[f"val_{key}"], abs=2e-3), key
