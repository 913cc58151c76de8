"""The crossd_vessel_classification bundle end to end on CPU: train, resume, evaluate, inference, 2D prior, verify, export.

One tiny training run (8 real VesselMNIST3D cases, widths 8..64, 1 epoch) is shared through a module fixture; outputs
go to temporary folders (``ckpt_dir``, ``output_dir``, ``log_dir``), the embedded data is read from the bundle.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles._helpers import output_dirs as _dirs
from tests.bundles._helpers import run_workflow as _workflow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "crossd_vessel_classification"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundles" / "schema" / "meta_schema_crossd_20261129.json"
WIDTHS = [8, 16, 32, 64]
TINY = {"max_train_samples": 8, "max_val_samples": 8, "batch_size": 4, "val_batch_size": 8, "widths": WIDTHS}


def _epoch(state: dict) -> int:
    return state["epoch"] if "epoch" in state else state["iteration"] // state["epoch_length"]


def _network(spatial_dims=3, num_classes=2):
    from monai_crossd.networks.nets import crossd_resnet18

    return crossd_resnet18(spatial_dims, 1, num_classes, block_inplanes=WIDTHS, conv1_kernel_size=3, conv1_stride=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossd_vessel")
    _workflow(str(CONFIGS / "train.json"), max_epochs=1, **_dirs(root), **TINY)
    return root


def test_train_outputs(trained):
    models = trained / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt", "model_config.json"]
    _network().load_state_dict(torch.load(models / "model.pt", weights_only=True))  # strict
    last = torch.load(models / "last.pt", weights_only=True)
    assert set(last) == {"model", "optimizer", "lr_scheduler", "best", "trainer"} and _epoch(last["trainer"]) == 1
    assert json.loads((models / "model_config.json").read_text())["widths"] == WIDTHS
    assert list((trained / "runs").glob("events.out.tfevents.*"))
    metrics = json.loads((trained / "eval" / "train_metrics.json").read_text())
    (entry,) = metrics["history"]
    assert metrics["key_metric"] == "val_auc"
    for key in ("val_auc", "val_accuracy", "val_balanced_accuracy"):
        assert 0.0 <= entry[key] <= 1.0, (key, entry)


def test_resume_continues_from_last(trained, tmp_path):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(trained, root)
    _workflow(str(CONFIGS / "train.json"), max_epochs=2, resume=True, **_dirs(root), **TINY)
    assert _epoch(torch.load(root / "models" / "last.pt", weights_only=True)["trainer"]) == 2
    history = json.loads((root / "eval" / "train_metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_evaluate_on_test_split(trained):
    _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], "infer", **_dirs(trained), **TINY)
    rows = dict(line.split(",") for line in (trained / "eval" / "metrics.csv").read_text().split())
    assert set(rows) == {"val_auc", "val_accuracy", "val_balanced_accuracy"}
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values())
    with open(trained / "eval" / "test_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 8 and all(p["case_id"].startswith("vesselmnist3d_test_") for p in preds)
    for p in preds:
        assert float(p["prob_0"]) + float(p["prob_1"]) == pytest.approx(1.0, abs=1e-5)
        assert int(p["pred"]) == int(float(p["prob_1"]) > float(p["prob_0"]))


def test_inference_from_inside_the_bundle(trained, tmp_path):
    """``python -m monai.bundle run`` with a relative config path, run from the bundle folder."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--ckpt_dir", str(trained / "models"), "--output_dir", str(tmp_path), "--max_samples", "5"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "predictions.json").read_text())
    assert result["class_names"] == ["vessel", "aneurysm"] and result["split"] == "test"
    assert len(result["predictions"]) == 5
    for p in result["predictions"]:
        assert p["prob_0"] + p["prob_1"] == pytest.approx(1.0, abs=1e-5) and p["pred"] in (0, 1)


def test_pretrained_2d_prior_loads(tmp_path):
    """A 2D Cross-D ResNet18 checkpoint (another label space) initialises the 3D network (``pretrained_2d``)."""
    from monai.bundle import ConfigParser

    net2d = _network(2, num_classes=4)
    torch.save(net2d.state_dict(), tmp_path / "prior.pt")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"pretrained_2d": str(tmp_path / "prior.pt"), "widths": WIDTHS, "device": "$torch.device('cpu')"})
    net3d = parser.get_parsed_content("network_core")
    state2d = net2d.state_dict()
    for key, value in net3d.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 2
        else:
            assert torch.equal(value, state2d[key]), key


def test_verify_and_export(trained, tmp_path):
    meta, train = str(CONFIGS / "metadata.json"), str(CONFIGS / "train.json")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = [
        ["verify_metadata", "--meta_file", meta, "--filepath", str(SCHEMA)],
        ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", train, "--widths", str(WIDTHS)],
        ["ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file",
         str(trained / "models" / "model.pt"), "--meta_file", meta, "--config_file", train, "--widths", str(WIDTHS),
         "--use_trace", "True", "--input_shape", "[1,1,28,28,28]"],
    ]
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args[0], done.stdout[-2000:], done.stderr[-2000:])
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    net = _network().eval()
    net.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 1, 28, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-4, rtol=1e-4)


def test_multi_gpu_config_with_gloo(tmp_path):
    """``multi_gpu_train.json`` under ``torchrun`` with two CPU processes (gloo): one checkpoint, metrics gathered."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file",
           str([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]), "--max_epochs", "1",
           *[a for k, v in {**TINY, **_dirs(tmp_path)}.items() for a in (f"--{k}", str(v))]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _network().load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    (entry,) = json.loads((tmp_path / "eval" / "train_metrics.json").read_text())["history"]
    assert 0.0 <= entry["val_balanced_accuracy"] <= 1.0
