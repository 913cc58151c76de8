"""The crossd_brats bundle end to end on CPU: train, resume, evaluate, inference (real DICOM), verify, export.

One tiny training run (8 synthetic cases, 16^3 input, widths 8..64, 1 epoch) is shared by the tests through a module
fixture; every output goes to a temporary ``bundle_root``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "crossd_brats"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundles" / "schema" / "meta_schema_crossd_20261129.json"
STUDY3 = REPO.parent / "shared" / "data" / "dicom" / "brain_tumor_progression" / "Study3"
TINY = {"demo_num_cases": 8, "demo_spatial_size": [16, 16, 16], "demo_widths": [8, 16, 32, 64]}


def _workflow(config_file, workflow_type="train", **override):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, **override)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _epoch(state: dict) -> int:
    """Epoch of an ignite ``Engine.state_dict()`` (which stores the iteration)."""
    return state["epoch"] if "epoch" in state else state["iteration"] // state["epoch_length"]


def _network(widths=TINY["demo_widths"]):
    from monai_crossd.networks.nets import crossd_resnet18

    return crossd_resnet18(3, 4, 2, block_inplanes=widths)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossd_brats")
    _workflow(str(CONFIGS / "train.json"), bundle_root=str(root), max_epochs=1, **TINY)
    return root


def test_train_outputs(trained):
    models = trained / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last.pt", "model.pt", "model_config.json"]
    _network().load_state_dict(torch.load(models / "model.pt", weights_only=True))  # strict
    last = torch.load(models / "last.pt", weights_only=True)
    assert set(last) == {"model", "optimizer", "lr_scheduler", "best", "trainer"}
    assert _epoch(last["trainer"]) == 1
    config = json.loads((models / "model_config.json").read_text())
    assert config["image_size"] == [16, 16, 16] and config["network_widths"] == TINY["demo_widths"]
    assert config["data"].startswith("SYNTHETIC demo data")
    assert list((trained / "runs").glob("events.out.tfevents.*"))
    metrics = json.loads((trained / "eval" / "train_metrics.json").read_text())
    assert metrics["key_metric"] == "val_auc" and "SYNTHETIC" in metrics["data"]
    (entry,) = metrics["history"]
    assert entry["epoch"] == 1 and 0.0 <= entry["val_auc"] <= 1.0 and 0.0 <= entry["val_accuracy"] <= 1.0
    assert last["best"] == {"_saved": [(entry["val_auc"], "model.pt")]}  # ignite Checkpoint state: best score, file
    assert (trained / "demo_data" / "SYNTHETIC_DEMO.json").is_file()


def test_main_job_learns_the_demo_label(tmp_path):
    """The README's main job, with every default (48 synthetic cases, 36/12 split, 20 epochs), learns its label."""
    _workflow(str(CONFIGS / "train.json"), bundle_root=str(tmp_path))
    history = json.loads((tmp_path / "eval" / "train_metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 21))
    aucs = [h["val_auc"] for h in history]
    assert max(aucs) >= 0.9, aucs  # chance is 0.5; the label is learnable (measured: 1.0 from epoch 10 on)
    assert min(aucs[-5:]) >= 0.8, aucs  # and stays learnt, not one lucky epoch


def test_resume_continues_from_last(trained, tmp_path):
    import shutil

    root = tmp_path / "b"
    shutil.copytree(trained, root)
    _workflow(str(CONFIGS / "train.json"), bundle_root=str(root), max_epochs=2, resume=True, **TINY)
    last = torch.load(root / "models" / "last.pt", weights_only=True)
    assert _epoch(last["trainer"]) == 2
    history = json.loads((root / "eval" / "train_metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 was not trained again
    assert last["best"]["_saved"][0][0] == max(h["val_auc"] for h in history)  # the best of both runs


def test_evaluate(trained):
    _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], "infer", bundle_root=str(trained), **TINY)
    rows = dict(line.split(",") for line in (trained / "eval" / "metrics.csv").read_text().split())
    assert set(rows) == {"val_auc", "val_accuracy"} and all(0.0 <= float(v) <= 1.0 for v in rows.values())
    with open(trained / "eval" / "val_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 2 and {p["label"] for p in preds} == {"0", "1"}
    for p in preds:
        assert float(p["prob_0"]) + float(p["prob_1"]) == pytest.approx(1.0, abs=1e-5)


def test_inference_on_real_study3(trained, tmp_path):
    if not STUDY3.is_dir():
        pytest.skip(f"shared data not found at {STUDY3}")
    out = tmp_path / "out"
    _workflow(str(CONFIGS / "inference.json"), "infer", ckpt_dir=str(trained / "models"), output_dir=str(out))
    result = json.loads((out / "predictions.json").read_text())
    assert Path(result["input_dir"]).resolve() == STUDY3.resolve()  # the default input, relative to the repository root
    assert Path(result["series"]["T1wCE"]).name == "11-T1post-18670"
    (pred,) = result["predictions"]
    assert pred["case_id"] == "Study3" and pred["pred"] in (0, 1)
    assert pred["prob_0"] + pred["prob_1"] == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= pred[k] <= 1.0 for k in ("prob_0", "prob_1"))
    assert (out / "predictions.csv").read_text().startswith("case_id,prob_0,prob_1,pred\nStudy3,")


def test_cli_from_inside_the_bundle(trained, tmp_path):
    """``python -m monai.bundle run`` with a relative config path, run from the bundle folder."""
    if not STUDY3.is_dir():
        pytest.skip(f"shared data not found at {STUDY3}")
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/inference.json",
        "--ckpt_dir",
        str(trained / "models"),
        "--output_dir",
        str(tmp_path),
        "--output_name",
        "inside",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, check=False, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "inside.json").read_text())["predictions"][0]["case_id"] == "Study3"


@pytest.mark.parametrize("cwd", ["repo", "bundle", "copy"])
def test_bundle_root_follows_the_config_file(cwd, tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    if cwd == "copy":
        import shutil

        shutil.copytree(CONFIGS, tmp_path / "mybundle" / "configs")
        monkeypatch.chdir(tmp_path)
        config, expected = "mybundle/configs/train.json", tmp_path / "mybundle"
    else:
        monkeypatch.chdir(REPO if cwd == "repo" else BUNDLE)
        config = "bundles/crossd_brats/configs/train.json" if cwd == "repo" else "configs/train.json"
        expected = BUNDLE
    # evaluate only the paths, inside the workflow (as ``monai.bundle run`` does), not the whole training set-up
    workflow = ConfigWorkflow(config_file=config, workflow_type="train", initialize=["$@bundle_root", "$@ckpt_dir"])
    assert workflow.initialize() == [str(expected), str(expected / "models")]


def test_verify_metadata():
    import hashlib

    from monai.bundle import verify_metadata

    md5 = hashlib.md5(SCHEMA.read_bytes()).hexdigest()
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA), hash_val=md5)
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["synthetic_default_data"] is True and "SYNTHETIC" in meta["description"]


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "train.json"),
        device="cpu",
        demo_widths=TINY["demo_widths"],
    )


def test_ckpt_export_torchscript(trained, tmp_path):
    from monai.bundle import ckpt_export

    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(trained / "models" / "model.pt"),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "train.json"),
        use_trace=True,
        input_shape=[1, 4, 16, 16, 16],
        demo_widths=TINY["demo_widths"],
    )
    exported = torch.jit.load(str(ts))
    network = _network()
    network.load_state_dict(torch.load(trained / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, 4, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), network.eval()(x), atol=1e-4, rtol=1e-4)


def test_multi_gpu_config_on_cpu_gloo(tmp_path, monkeypatch):
    """multi_gpu_train.json merged with train.json, as one gloo process (the code path torchrun takes per GPU)."""
    import torch.distributed as dist

    if torch.cuda.is_available() or not dist.is_available():
        pytest.skip("CPU/gloo check")
    import socket

    with socket.socket() as sock:  # a free port for the gloo rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}.items():
        monkeypatch.setenv(key, value)
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
    _workflow(configs, bundle_root=str(tmp_path), max_epochs=1, **TINY)
    assert not dist.is_initialized()
    assert _epoch(torch.load(tmp_path / "models" / "last.pt", weights_only=True)["trainer"]) == 1
    assert not any(k.startswith("module.") for k in torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    assert math.isfinite(json.loads((tmp_path / "eval" / "train_metrics.json").read_text())["history"][0]["val_auc"])


def test_pretrained_2d_and_weak_probing(tmp_path):
    """``pretrained_2d`` + ``finetune=weak_probing`` wire up: a torchvision ResNet18 loads, only norms and fc train."""
    torchvision = pytest.importorskip("torchvision")
    from monai.bundle import ConfigWorkflow

    path = tmp_path / "resnet18_2d.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # random 2D weights, no download
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        bundle_root=str(tmp_path),
        pretrained_2d=str(path),
        finetune="weak_probing",
        demo_widths=[64, 128, 256, 512],
        initialize=["$@network_core", "$@optimizer"],
    )
    network, optimizer = workflow.initialize()
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(torch.load(path, weights_only=True))
    # the 2D kernel is the middle depth plane of the 3D kernel at R = I (depth_init="zeros")
    middle = network.layer1[0].conv1.static_kernel()[:, :, 1]
    torch.testing.assert_close(middle, reference.layer1[0].conv1.weight)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = [n for n, p in network.named_parameters() if id(p) in trained]
    assert names and "fc.weight" in names and "layer1.0.conv1.weight" not in names
    assert all(
        n.startswith(("fc.", "bn1")) or ".bn" in n or "norm" in n or "rotation" in n or "downsample.1" in n
        for n in names
    ), names


def test_mri_artefact_augmentation_only_in_training():
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor
    from monai.transforms import RandTorchIOd
    from monai.transforms.transform import RandomizableTrait

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    train = parser.get_parsed_content("train#preprocessing").transforms
    val = parser.get_parsed_content("validate#preprocessing").transforms
    torchio = [t for t in train if isinstance(t, RandTorchIOd)]
    assert [t.name for t in torchio] == ["RandomBiasField", "RandomGhosting"]
    assert not [t for t in val if isinstance(t, RandomizableTrait)]
    assert type(train[-1]).__name__ == type(val[-1]).__name__ == "NormalizeIntensityd"  # after the artefacts
    image = MetaTensor(torch.rand(4, 16, 16, 16) + 1.0, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    for transform in torchio:
        transform.trans.trans.probability = 1.0  # force the artefact
        out = transform({"image": image, "label": 1})
        assert isinstance(out["image"], MetaTensor) and out["image"].shape == image.shape and out["label"] == 1
        torch.testing.assert_close(out["image"].affine, image.affine)
        assert not torch.equal(out["image"].as_tensor(), image.as_tensor())
