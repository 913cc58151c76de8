"""The crossd_pretrain2d bundle end to end on CPU: MedMNIST and image-folder sources, evaluate, inference, the 2D
checkpoint loading into a 3D Cross-D ResNet18 (what the 3D bundles do with ``pretrained_2d``), verify, export.

One tiny training run (8 + 8 embedded real MedMNIST images, widths 8..64, 1 epoch) is shared through a module fixture.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bundles._helpers import output_dirs as _dirs
from tests.bundles._helpers import run_workflow as _workflow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "crossd_pretrain2d"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundles" / "schema" / "meta_schema_crossd_20261129.json"
WIDTHS = [8, 16, 32, 64]
TINY = {"max_train_samples": 8, "max_val_samples": 4, "batch_size": 8, "widths": WIDTHS, "prefer_full_data": False}
CLASSES = ["breastmnist/0", "breastmnist/1", "pneumoniamnist_subset/0", "pneumoniamnist_subset/1"]


def _network(spatial_dims=2, num_classes=4):
    from monai_crossd.networks.nets import crossd_resnet18

    return crossd_resnet18(spatial_dims, 1, num_classes, block_inplanes=WIDTHS, conv1_kernel_size=3, conv1_stride=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossd_pretrain2d")
    _workflow(str(CONFIGS / "train.json"), max_epochs=1, **_dirs(root), **TINY)
    return root


@pytest.fixture
def image_root(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("CT/abdomen/normal", "CT/abdomen/cyst", "MR/brain/glioma"):
        folder = tmp_path / "radimagenet" / name
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (40, 36), dtype=np.uint8)
            if i % 2:
                Image.fromarray(pixels).save(folder / f"{i}.png")
            else:  # RGB jpg: read as grayscale
                Image.fromarray(np.stack([pixels] * 3, -1)).save(folder / f"{i}.jpg")
    return tmp_path / "radimagenet"


def test_train_outputs(trained):
    models = trained / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt", "model_config.json"]
    _network().load_state_dict(torch.load(models / "model.pt", weights_only=True))  # strict
    config = json.loads((models / "model_config.json").read_text())
    assert config["class_names"] == CLASSES and config["num_classes"] == 4 and config["widths"] == WIDTHS
    assert all(Path(p).parent == BUNDLE / "data" for p in config["data"])  # the embedded subset
    (entry,) = json.loads((trained / "eval" / "train_metrics.json").read_text())["history"]
    for key in ("val_accuracy", "val_balanced_accuracy", "val_auc"):
        assert 0.0 <= entry[key] <= 1.0, (key, entry)


def test_checkpoint_initialises_the_3d_network(trained):
    """The contract with the 3D bundles: every weight but ``fc`` of the 2D prior lands unchanged in the 3D network."""
    from monai_crossd.converters import load_pretrained_2d

    net3d = _network(3, num_classes=2)
    report = load_pretrained_2d(net3d, trained / "models" / "model.pt", strict=True)
    state2d = torch.load(trained / "models" / "model.pt", weights_only=True)
    for key, value in net3d.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, state2d[key]), key
    assert sorted(report.initialised) == ["fc.bias", "fc.weight"] and not report.dropped and not report.missing_keys
    assert net3d(torch.rand(2, 1, 28, 28, 28)).shape == (2, 2)


def test_evaluate_and_inference(trained, tmp_path):
    _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], "infer", **_dirs(trained), **TINY)
    rows = dict(line.split(",") for line in (trained / "eval" / "metrics.csv").read_text().split())
    assert set(rows) == {"val_accuracy", "val_balanced_accuracy", "val_auc"}
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values())
    with open(trained / "eval" / "test_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 8 and {int(p["label"]) for p in preds} <= set(range(4))
    for p in preds:
        assert sum(float(p[f"prob_{c}"]) for c in range(4)) == pytest.approx(1.0, abs=1e-5)
    out = tmp_path / "out"
    _workflow(str(CONFIGS / "inference.json"), "infer", ckpt_dir=str(trained / "models"), output_dir=str(out),
              max_samples=6)
    result = json.loads((out / "predictions.json").read_text())
    assert result["class_names"] == CLASSES and len(result["predictions"]) == 6


def test_image_folder_source_and_file_inference(image_root, tmp_path):
    root = tmp_path / "run"
    _workflow(str(CONFIGS / "train.json"), max_epochs=1, data_source="image_folder", image_root=str(image_root),
              val_fraction=0.25, batch_size=4, widths=WIDTHS, **_dirs(root))
    config = json.loads((root / "models" / "model_config.json").read_text())
    assert config["class_names"] == ["CT/abdomen/cyst", "CT/abdomen/normal", "MR/brain/glioma"]
    _network(num_classes=3).load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--input_dir",
           str(image_root / "MR"), "--ckpt_dir", str(root / "models"), "--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(p["case_id"] for p in result["predictions"]) == [f"brain/glioma/{i}.{e}" for i, e in
                                                                   ((0, "jpg"), (1, "png"), (2, "jpg"), (3, "png"))]
    for p in result["predictions"]:
        assert sum(p[f"prob_{c}"] for c in range(3)) == pytest.approx(1.0, abs=1e-5) and "label" not in p


def test_unknown_data_source():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["data_source"] = "image_folders"
    with pytest.raises(RuntimeError) as info:
        parser.get_parsed_content("num_classes")
    assert isinstance(info.value.__cause__, ValueError)
    assert "did you mean 'image_folder'?" in str(info.value.__cause__)


def test_verify_and_export(trained, tmp_path):
    meta, train = str(CONFIGS / "metadata.json"), str(CONFIGS / "train.json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tiny = ["--widths", str(WIDTHS), "--prefer_full_data", "False"]
    commands = [
        ["verify_metadata", "--meta_file", meta, "--filepath", str(SCHEMA)],
        ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", train, *tiny],
        ["ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file",
         str(trained / "models" / "model.pt"), "--meta_file", meta, "--config_file", train, *tiny,
         "--use_trace", "True", "--input_shape", "[1,1,28,28]"],
    ]
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args[0], done.stdout[-2000:], done.stderr[-2000:])
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    net = _network().eval()
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-4, rtol=1e-4)
