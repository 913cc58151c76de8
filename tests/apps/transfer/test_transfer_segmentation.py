"""``monai_crossd.apps.transfer`` on segmentation targets: MONAI Dice, preprocessing, the encoder-decoder, weak probing, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_crossd.apps.probing import protocol_parameters
from monai_crossd.apps.transfer import SegmentationNet, TransferConfig, target_kind
from monai_crossd.apps.transfer.__main__ import main
from monai_crossd.apps.transfer.segmentation import CLASSIFIER, class_names, default_size, segmentation_task
from monai_crossd.apps.transfer.study import _build_3d, _plain_resnet18
from monai_crossd.networks.blocks import RotationNetwork
from monai_crossd.networks.nets import CrossDResNet, crossd_resnet18

ROOT = Path(__file__).resolve().parents[3]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "hippocampus"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_priors() -> dict:
    """Random 2D priors with 4 classes, as ``_priors`` returns them."""
    torch.manual_seed(0)
    return {"plain": _plain_resnet18(1, 4).state_dict(), "crossd": crossd_resnet18(2, 1, 4).state_dict()}


def _nifti(path: Path, array: np.ndarray) -> None:
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), path)


def _msd_folder(root: Path, names=("case_1.nii.gz",), labels=True, image=None, label=None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name in names:
        _nifti(root / "imagesTr" / name, np.zeros((4, 4, 4), np.float32) if image is None else image)
        if labels:
            _nifti(root / "labelsTr" / name, np.zeros((4, 4, 4), np.uint8) if label is None else label)
    return root


@pytest.fixture
def five_cases(tmp_path) -> Path:
    """Five 10^3 cases: intensities 0..999 (percentiles 0.5 / 99.5: 4.995 / 994.005), class 1 above 500, 2 above 900."""
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    label = ((image > 500).astype(np.uint8) + (image > 900)).astype(np.uint8)
    return _msd_folder(tmp_path / "task", names=[f"c{i}.nii.gz" for i in range(5)], image=image, label=label)


# ----------------------------------------------------------------------------------- preprocessing


def test_preprocessing_split_and_report(five_cases):
    task = segmentation_task(five_cases, size=(10, 12, 8))
    assert task.report["samples"] == {"train": 3, "val": 1, "test": 1}
    cases = [c for s in ("train", "val", "test") for c in task.report["cases"][s]]
    assert sorted(cases) == [f"c{i}.nii.gz" for i in range(5)]  # disjoint, all used
    assert task.report["num_classes"] == 3 and task.report["class_names"] == {"1": "1", "2": "2"}
    d = task.datasets["train"][0]
    x, y = d["image"], d["label"]
    assert x.shape == y.shape == (1, 10, 12, 8) and x.dtype == torch.float32
    inside = x[0, :, 1:11]  # axis 1 padded by one on each side, axis 2 cropped to [1, 9)
    assert (x[0, :, 0] == -1).all() and (x[0, :, 11] == -1).all() and (y[0, :, 0] == 0).all()  # padding
    full = torch.arange(1000.0).reshape(10, 10, 10)[:, :, 1:9]
    expected = ((full - 4.995) / 989.01 * 2 - 1).clamp(-1, 1)  # linear between the percentiles, clipped beyond
    assert torch.allclose(inside, expected, atol=1e-5)
    assert torch.equal(y[0, :, 1:11], ((full > 500).long() + (full > 900).long()).to(y.dtype))  # not interpolated
    kept = ((torch.arange(1000.0).reshape(10, 10, 10)[:, :, 1:9] > 500).sum() / (torch.arange(1000.0) > 500).sum())
    assert task.report["foreground_kept"] == pytest.approx(float(kept))
    assert default_size([(35, 50, 36), (31, 40, 24), (43, 59, 47)]) == [32, 48, 32]
    assert default_size([(7, 100, 24)]) == [16, 96, 32]  # at least 16; 24 rounds half up
    assert segmentation_task(five_cases, max_samples=1).report["samples"] == {"train": 1, "val": 1, "test": 1}


def test_dice_hand_computed(five_cases):
    """MONAI MeanDice through the task's post-processing: per class and mean, classes absent from a label left out."""
    task = segmentation_task(five_cases, size=(4, 4, 4), max_samples=1)
    metrics = task.metrics()
    assert next(iter(metrics)) == "mean_dice"  # the key metric
    label = torch.tensor([[0, 1, 1, 1, 2, 2, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 0, 2, 1, 2, 2], [0, 1, 0, 0, 2, 0, 0, 0]])
    items = [
        task.postprocessing({"pred": torch.nn.functional.one_hot(p, 3).T.float()[:, None, None], "label": g[None, None, None]})
        for p, g in zip(pred, label)
    ]
    for metric in metrics.values():
        metric.reset()
        metric.update(([i["pred"] for i in items], [i["label"] for i in items]))
    # case 0: class 1 P = {1, 2, 5}, G = {1, 2, 3} -> 4 / 6; class 2 P = {4, 6, 7}, G = {4, 5} -> 2 / 5
    # case 1: class 1 P = {1}, G = {1, 2} -> 2 / 3; class 2 absent from the label: left out
    assert metrics["dice"].compute().tolist() == pytest.approx([(4 / 6 + 2 / 3) / 2, 2 / 5])
    # MONAI's "mean": over each case's scored classes, then over cases
    assert float(metrics["mean_dice"].compute()) == pytest.approx(((4 / 6 + 2 / 5) / 2 + 2 / 3) / 2)
    assert task.columns == {"mean_dice": "mean Dice", "dice_1": "Dice 1", "dice_2": "Dice 2"}


@pytest.mark.parametrize("case", ["shape", "fraction", "negative"])
def test_bad_case_names_it(tmp_path, case):
    image = np.zeros((4, 4, 4), np.float32)
    label = {"shape": np.zeros((4, 4, 5)), "fraction": np.full((4, 4, 4), 0.5), "negative": -np.ones((4, 4, 4))}[case]
    folder = _msd_folder(tmp_path / "task", names=[f"c{i}.nii.gz" for i in range(5)], image=image, label=label.astype(np.float32))
    with pytest.raises(ValueError, match="c0.nii.gz.*(differ in shape|non-negative integer)"):
        segmentation_task(folder)


def test_class_names_from_dataset_json(tmp_path):
    assert class_names(tmp_path, 3) == {"1": "1", "2": "2"}
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}})
    )
    assert class_names(tmp_path, 3) == {"1": "Anterior", "2": "Posterior"}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "Anterior": 1}}))  # nnU-Net v2
    assert class_names(tmp_path, 3) == {"1": "Anterior", "2": "2"}


# ------------------------------------------------------------------------------------------ network


@pytest.mark.parametrize("method", ["crossd", "center"])
def test_encoder_decoder_shape_at_odd_size(method):
    encoder = _build_3d(method, _tiny_priors(), 1, 0)
    # the two module layouts: our Cross-D ResNet, and a torchvision ResNet18 converted by convert_to_3d
    assert isinstance(encoder, CrossDResNet) == (method == "crossd")
    net = SegmentationNet(encoder, 3).eval()
    x = torch.randn(1, 1, 35, 50, 36)
    feats = net.features(x)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512]
    assert [tuple(f.shape[2:]) for f in feats] == [(18, 25, 18), (9, 13, 9), (5, 7, 5), (3, 4, 3), (2, 2, 2)]
    with torch.no_grad():
        assert net(x).shape == (1, 3, 35, 50, 36)


def test_segmentation_net_bad_arguments():
    with pytest.raises(ValueError, match="`encoder`.*layer4"):
        SegmentationNet(torch.nn.Conv3d(1, 1, 1), 3)
    with pytest.raises(ValueError, match="`num_classes`"):
        SegmentationNet(crossd_resnet18(3, 1, 1), 1)
    with pytest.raises(ValueError, match="`decoder_channels`"):
        SegmentationNet(crossd_resnet18(3, 1, 1), 3, decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="`x`"):
        SegmentationNet(crossd_resnet18(3, 1, 1), 3)(torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize("method", ["crossd", "i3d"])
def test_weak_probing_trains_norms_and_decoder_only(method):
    from monai.losses import DiceCELoss

    net = SegmentationNet(_build_3d(method, _tiny_priors(), 1, 0), 3)
    params = protocol_parameters(net, "weak_probing", CLASSIFIER)
    rotation = {id(m) for r in net.modules() if isinstance(r, RotationNetwork) for m in r.modules()}
    assert bool(rotation) == (method == "crossd")
    norms = [m for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm3d) and id(m) not in rotation]
    expected = [*(p for m in norms for p in m.parameters()), *net.decoder.parameters()]
    assert {id(p) for p in params} == {id(p) for p in expected}  # encoder norms (not the rotation nets') + decoder
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(params, lr=1e-2)
    x, y = torch.randn(2, 1, 32, 32, 32), torch.randint(0, 3, (2, 1, 32, 32, 32))
    DiceCELoss(to_onehot_y=True, softmax=True)(net(x), y).backward()
    opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    convs = [n for n, p in net.encoder.named_parameters() if p.ndim >= 4]  # conv weights (2D-shaped for ACS/Cross-D)
    assert convs and not changed & {f"encoder.{n}" for n in convs}  # the transferred convs are frozen
    assert {n for n in before if n.startswith("decoder.")} <= changed  # the whole decoder trains
    assert "encoder.bn1.weight" in changed and "encoder.layer4.1.bn2.bias" in changed
    assert {n for n in changed if n.startswith("encoder.")} == {
        f"encoder.{n}" for n, p in net.encoder.named_parameters() if p.requires_grad
    }


# -------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("case", ["no_labels_folder", "no_pairs", "unlabelled", "empty"])
def test_config_check_bad_folder_names_target(tmp_path, case):
    folder = tmp_path / "task"
    if case == "no_labels_folder":
        folder.mkdir()
        (folder / "imagesTr").mkdir()
    elif case == "no_pairs":
        _msd_folder(folder, names=())
    elif case == "unlabelled":
        _msd_folder(folder, labels=False)
    else:
        folder.mkdir()
    assert target_kind(folder) == "segmentation"
    cfg = TransferConfig(target=str(folder), out_dir=str(tmp_path / "out"), methods=["scratch"])
    with pytest.raises(ValueError, match="`target` folder") as exc:
        cfg.check()
    assert repr(str(folder)) in str(exc.value)


def test_config_check_seg_size(tmp_path):
    folder = _msd_folder(tmp_path / "task")
    cfg = TransferConfig(target=str(folder), out_dir=str(tmp_path / "out"), methods=["scratch"], seg_size=[16, 16, 16])
    cfg.check()
    cfg.seg_size = [16, 16]
    with pytest.raises(ValueError, match="`seg_size`"):
        cfg.check()
    npz = tmp_path / "t.npz"
    np.savez(npz, x=np.zeros(1))
    assert target_kind(npz) == "classification"
    with pytest.raises(ValueError, match="`seg_size` applies to segmentation"):
        TransferConfig(target=str(npz), out_dir=str(tmp_path), methods=["scratch"], seg_size=[8, 8, 8]).check()


def test_cli_bad_folder_names_target(tmp_path, capsys):
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["transfer", "--target", str(tmp_path), "--methods", "scratch"])
    assert exc.value.code == 2
    assert "`target` folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real hippocampus data not found at {HIPPOCAMPUS}")
def test_cli_segmentation_end_to_end(tmp_path):
    """Real MSD hippocampus, 6 cases per split, given tiny random priors, one epoch."""
    priors = _tiny_priors()
    torch.save(priors["plain"], tmp_path / "plain.pt")
    torch.save(priors["crossd"], tmp_path / "crossd.pt")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    args = "--max-samples 6 --epochs 1 --seeds 1 --methods crossd center --protocols weak --batch-size 3 --threads 1"
    args += f" --plain-prior {tmp_path / 'plain.pt'} --crossd-prior {tmp_path / 'crossd.pt'} --out {tmp_path / 'out'}"
    cmd = [sys.executable, "-m", "monai_crossd.apps.transfer", "transfer", "--target", str(HIPPOCAMPUS), *args.split()]
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "crossd weak seed 0 epoch 1/1" in proc.stdout and "val mean dice" in proc.stdout  # progress per epoch

    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "results.png"}  # priors were given
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "environment", "priors", "target", "summary", "runs"}
    target = results["target"]
    assert target["kind"] == "segmentation" and target["num_classes"] == 3
    assert target["size"] == [32, 48, 32] and target["class_names"] == {"1": "1", "2": "2"}
    assert target["samples"] == {"train": 6, "val": 6, "test": 6}
    cases = [c for s in ("train", "val", "test") for c in target["cases"][s]]
    assert len(set(cases)) == 18 and all(c.startswith("hippocampus_") for c in cases)  # disjoint splits
    assert 0.98 < target["foreground_kept"] <= 1.0

    dice_keys = {"mean_dice", "dice_1", "dice_2"}
    assert [(r["method"], r["protocol"], r["seed"]) for r in results["runs"]] == [
        ("crossd", "weak", 0),
        ("center", "weak", 0),
    ]
    for run in results["runs"]:
        assert run["best_epoch"] == 1 and len(run["history"]) == 1 and math.isfinite(run["history"][0]["loss"])
        for split in ("val", "test"):
            assert set(run[split]) == dice_keys
            assert all(0.0 <= v <= 1.0 for v in run[split].values()), run[split]
            assert run[split]["mean_dice"] == pytest.approx((run[split]["dice_1"] + run[split]["dice_2"]) / 2)
    assert set(results["summary"]) == {"crossd|weak", "center|weak"}
    for entry in results["summary"].values():
        for key in dice_keys:
            assert entry[key]["n"] == 1 and entry[key]["std"] == 0.0 and 0.0 <= entry[key]["mean"] <= 1.0

    md = (out / "results.md").read_text()
    assert "| method | protocol | mean Dice | Dice 1 | Dice 2 |" in md
    assert "| crossd | weak |" in md and "| center | weak |" in md
    assert "computed on that 32x48x32 grid" in md and "partition_dataset" in md
