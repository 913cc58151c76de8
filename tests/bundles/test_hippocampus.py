"""The crossd_hippocampus_segmentation bundle end to end on CPU: train, evaluate (per-class Dice), inference (NIfTI masks
on the input grid, real MSD hippocampus images), verify, export.

One tiny training run (2 real cases, channels 4..32, 1 epoch) is shared through a module fixture; outputs go to
temporary folders, the embedded data is read from the bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.bundles._helpers import HIPPOCAMPUS_TINY
from tests.bundles._helpers import output_dirs as _dirs
from tests.bundles._helpers import run_workflow as _workflow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "crossd_hippocampus_segmentation"
CONFIGS = BUNDLE / "configs"
DATA = BUNDLE / "data"
SCHEMA = REPO / "bundles" / "schema" / "meta_schema_crossd_20261129.json"
CHANNELS = HIPPOCAMPUS_TINY["channels"]
TINY = HIPPOCAMPUS_TINY


def _network():
    from monai_crossd.networks.nets import CrossDUNet

    return CrossDUNet(3, 1, 3, channels=CHANNELS, strides=[2, 2, 2], num_res_units=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossd_hippocampus")
    _workflow(str(CONFIGS / "train.json"), max_epochs=1, **_dirs(root), **TINY)
    return root


def test_embedded_data_is_real_and_small():
    datalist = json.loads((DATA / "dataset.json").read_text())
    assert len(datalist["training"]) == 12 and len(datalist["validation"]) == 4
    size = sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file())
    assert size < 1_000_000
    item = datalist["validation"][0]
    image, label = nib.load(DATA / item["image"]), nib.load(DATA / item["label"])
    assert image.shape == label.shape and set(np.unique(np.asarray(label.dataobj))) == {0, 1, 2}


def test_train_outputs(trained):
    models = trained / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt", "model_config.json"]
    _network().load_state_dict(torch.load(models / "model.pt", weights_only=True))  # strict
    assert set(torch.load(models / "last.pt", weights_only=True)) == {"model", "optimizer", "lr_scheduler", "best", "trainer"}
    assert json.loads((models / "model_config.json").read_text())["channels"] == CHANNELS
    assert list((trained / "runs").glob("events.out.tfevents.*"))
    metrics = json.loads((trained / "eval" / "train_metrics.json").read_text())
    (entry,) = metrics["history"]
    assert metrics["key_metric"] == "val_mean_dice" and "val_dice_per_class" not in entry
    for key in ("val_mean_dice", "val_dice_anterior", "val_dice_posterior"):
        assert 0.0 <= entry[key] <= 1.0, (key, entry)
    assert entry["val_mean_dice"] == pytest.approx((entry["val_dice_anterior"] + entry["val_dice_posterior"]) / 2, abs=1e-5)


def test_evaluate_per_class_dice(trained):
    _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], "infer", **_dirs(trained), **TINY)
    rows = dict(line.split(",") for line in (trained / "eval" / "metrics.csv").read_text().split())
    assert set(rows) == {"val_mean_dice", "val_dice_anterior", "val_dice_posterior"}
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values())
    raw = (trained / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0] == "filename,class0,class1,mean" and len(raw) == 3


def _resampled_copy(src: Path, dst: Path) -> nib.Nifti1Image:
    """The image flipped along x, with anisotropic spacing, an oblique-free LPS-like affine and an origin offset."""
    image = nib.load(src)
    data = np.asarray(image.dataobj)[::-1].astype(np.float32)
    affine = np.diag([-1.2, 1.0, 0.9, 1.0])
    affine[:3, 3] = [20.0, -7.5, 3.0]
    out = nib.Nifti1Image(data, affine)
    nib.save(out, dst)
    return nib.load(dst)


def test_inference_masks_on_the_input_grid(trained, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    real = DATA / "imagesTr" / "hippocampus_099.nii.gz"
    (inputs / real.name).write_bytes(real.read_bytes())
    _resampled_copy(DATA / "imagesTr" / "hippocampus_141.nii.gz", inputs / "oblique_141.nii.gz")
    out = tmp_path / "out"
    _workflow(str(CONFIGS / "inference.json"), "infer", input_dir=str(inputs), ckpt_dir=str(trained / "models"),
              output_dir=str(out))
    for name in ("hippocampus_099", "oblique_141"):
        source = nib.load(inputs / f"{name}.nii.gz")
        mask = nib.load(out / f"{name}_seg.nii.gz")
        assert mask.shape == source.shape, name
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4, err_msg=name)
        values = np.asarray(mask.dataobj)
        assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1, 2}
    assert not list(out.glob("*.tmp*"))


def test_default_inference_from_inside_the_bundle(trained, tmp_path):
    """Default input (the embedded validation images), relative config path, run from the bundle folder."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--ckpt_dir", str(trained / "models"), "--output_dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validation = json.loads((DATA / "dataset.json").read_text())["validation"]
    assert sorted(p.name for p in tmp_path.glob("*_seg.nii.gz")) == sorted(
        Path(v["image"]).name.replace(".nii.gz", "_seg.nii.gz") for v in validation
    )


def test_verify_and_export(trained, tmp_path):
    meta, train = str(CONFIGS / "metadata.json"), str(CONFIGS / "train.json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = [
        ["verify_metadata", "--meta_file", meta, "--filepath", str(SCHEMA)],
        ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", train, "--n", "4",
         "--channels", str(CHANNELS)],
        ["ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file",
         str(trained / "models" / "model.pt"), "--meta_file", meta, "--config_file", train, "--channels",
         str(CHANNELS), "--use_trace", "True", "--input_shape", "[1,1,32,48,32]"],
    ]
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args[0], done.stdout[-2000:], done.stderr[-2000:])
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    net = _network().eval()
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, 1, 32, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config, up_mode", [({"channels": CHANNELS}, "resize"), (None, "deconv")])
def test_inference_builds_the_up_path_the_checkpoint_was_trained_with(tmp_path, config, up_mode):
    """A model_config.json without `up_mode` (trained before the transposed layer) gives the resize network; no
    model_config.json gives the current default."""
    from monai.bundle import ConfigParser

    if config is not None:
        full = {"pixdim": [1.0] * 3, "spatial_size": [32, 48, 32], "strides": [2, 2, 2], "num_res_units": 0,
                "conv_kwargs": None, "num_classes": 3, **config}  # fmt: skip
        (tmp_path / "model_config.json").write_text(json.dumps(full))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["ckpt_dir"] = str(tmp_path)
    assert parser.get_parsed_content("network_def").up_mode == up_mode
