"""``monai_crossd.apps.transfer``: metrics, model selection on MONAI's engines, config checks and the command line."""

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

from monai_crossd.apps.transfer import (
    METHODS,
    PROTOCOLS,
    TransferConfig,
    classification_metrics,
    classification_task,
    fit,
)
from monai_crossd.apps.transfer.__main__ import DEFAULT_SOURCES, _default_source, main

ROOT = Path(__file__).resolve().parents[3]


def _binary_logits(p1: list[float]) -> torch.Tensor:
    """Two-class logits whose softmax gives probability ``p1`` to class 1."""
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1).float()


def _write_target(path: Path, sizes=(16, 8, 8), side: int = 8) -> Path:
    """A MedMNIST-format 3D ``.npz``: random uint8 volumes, label 1 = the bright ones (learnable)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        labels = np.arange(n) % 2  # both classes in every split: the AUC is defined
        low = rng.integers(0, 128, (n, side, side, side))
        arrays[f"{split}_images"] = np.where(labels[:, None, None, None] == 1, low + 128, low).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)  # (N, 1) as MedMNIST stores them
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------------- (a) metrics


def test_metrics_binary_hand_computed():
    # labels 0 0 0 1 1, P(class 1) .2 .7 .3 .6 .55 -> predictions 0 1 0 1 1
    m = classification_metrics(_binary_logits([0.2, 0.7, 0.3, 0.6, 0.55]), torch.tensor([0, 0, 0, 1, 1]))
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)  # recall of class 0: 2/3, class 1: 2/2
    # positives {.6, .55} against negatives {.2, .7, .3}: 4 of 6 pairs ordered; the class-0 AUC is the same
    assert m["auc"] == pytest.approx(4 / 6)


@pytest.mark.filterwarnings("ignore:y values can not be all")  # monai, on the absent class
def test_metrics_multiclass_and_absent_class():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 2, 2, 0, 2])
    m = classification_metrics(logits, labels)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    # one-vs-rest, ties count one half: class 0 ranked perfectly (1); class 1: its positive ties with
    # sample 3's equal score (4.5 / 5); class 2: sample 3 ties with the three negatives (7.5 / 9)
    assert m["auc"] == pytest.approx((1 + 4.5 / 5 + 7.5 / 9) / 3)
    assert m["auc"] < 1.0

    # a class absent from the labels: balanced accuracy over the present classes, AUC undefined
    m = classification_metrics(logits[:3], torch.tensor([0, 0, 1]))  # predictions 0 1 2
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 0) / 2)  # class 2 absent: not averaged
    assert math.isnan(m["auc"])


def test_task_metrics_hand_computed(tmp_path):
    """The evaluators' pipeline (post-processing, MONAI ROCAUC, accuracy, balanced accuracy) on known scores."""
    task = classification_task(_write_target(tmp_path / "t.npz"), splits=("val",))
    metrics = task.metrics()
    assert next(iter(metrics)) == "auc"  # the key metric: it picks the epoch
    items = [task.postprocessing({"pred": p, "label": torch.tensor(y)}) for p, y in zip(
        _binary_logits([0.2, 0.7, 0.3, 0.6, 0.55]), [0, 0, 0, 1, 1])]  # fmt: skip
    for metric in metrics.values():
        metric.reset()
        metric.update(([i["pred"] for i in items], [i["label"] for i in items]))
    values = {k: float(m.compute()) for k, m in metrics.items()}
    assert values == pytest.approx({"auc": 4 / 6, "accuracy": 4 / 5, "balanced_accuracy": (2 / 3 + 1) / 2})
    assert task.report == {"kind": "classification", "num_classes": 2, "samples": {"val": 8}}
    assert task.datasets["val"][0]["image"].min() >= -1.0 and task.datasets["val"][0]["image"].max() <= 1.0


def test_fit_tests_the_best_validation_epoch(tmp_path):
    """The test metrics are those of the state of the epoch with the best validation AUC, not of the last epoch."""
    rng, arrays = np.random.default_rng(0), {}
    for split, flip in (("train", 0), ("val", 1), ("test", 1)):  # validation labels contradict training: AUC falls
        labels = np.arange(16) % 2
        arrays[f"{split}_images"] = (rng.integers(0, 200, (16, 8, 8, 8)) + 40 * (labels != flip)[:, None, None, None]).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez(tmp_path / "t.npz", **arrays)
    task = classification_task(tmp_path / "t.npz")
    task.datasets["test"] = task.datasets["val"]  # the kept state, tested on the validation data, gives its metrics
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(512, 2))
    result = fit(model, list(model.parameters()), task, 4, 3e-4, 4, torch.device("cpu"), 0, "tiny")
    history = result["history"]
    aucs = [h["val"]["auc"] for h in history]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and aucs[0] > aucs[-1]  # the last epoch is not the best
    assert result["best_epoch"] == 1 + aucs.index(max(aucs))
    assert result["val"] == history[result["best_epoch"] - 1]["val"]
    assert result["test"] == pytest.approx(result["val"])  # the best state was restored before testing
    assert all(math.isfinite(h["loss"]) for h in history)


# ----------------------------------------------------------------------------- (b) config checks


@pytest.fixture
def target(tmp_path) -> Path:
    return _write_target(tmp_path / "tiny3d.npz")


MISSING = "no_such_file_7f3a.npz"  # relative: absent from any working directory the tests run in


@pytest.mark.parametrize(
    "name, value",
    [
        ("target", MISSING),
        ("methods", ["crossd", "c3d"]),
        ("methods", []),
        ("protocols", ["linear"]),
        ("seeds", 0),
        ("epochs", -1),
        ("pretrain_epochs", 1.5),
        ("batch_size", "32"),
        ("plain_prior", MISSING),
        ("crossd_prior", MISSING),
        ("source", []),  # no priors given: the 2D source is needed
        ("source", [MISSING]),
        ("crossd_rotation_init", "zeros"),
        ("max_samples", 1),  # one training sample: zero steps, NaN results (was accepted, exit code 0)
        ("max_source_samples", 1),
    ],
)
def test_config_check_names_the_field(target, tmp_path, name, value):
    cfg = TransferConfig(target=str(target), out_dir=str(tmp_path / "out"), source=[str(target)])
    cfg.check()  # the base config is valid
    setattr(cfg, name, value)
    with pytest.raises(ValueError, match=f"`{name}`") as exc:
        cfg.check()
    if value:  # the offending value is shown too
        assert repr(value if name != "source" else value[0]) in str(exc.value)


def test_config_check_given_priors_replace_source(target, tmp_path):
    prior = tmp_path / "prior.pt"
    prior.write_bytes(b"")
    cfg = TransferConfig(
        target=str(target), out_dir=str(tmp_path), source=[], plain_prior=str(prior), crossd_prior=str(prior)
    )
    cfg.check()  # no 2D source needed when both priors are given
    cfg.methods = ["scratch"]
    cfg.plain_prior = cfg.crossd_prior = None
    cfg.check()  # nor for training from scratch


# ------------------------------------------------------------------------------ (c) command line


def test_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["transfer", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--target",
        "--source",
        "--out",
        "--methods",
        "--protocols",
        "--seeds",
        "--epochs",
        "--pretrain-epochs",
        "--max-samples",
        "--max-source-samples",
        "--batch-size",
        "--plain-prior",
        "--crossd-prior",
        "--device",
        "--threads",
    ):
        assert option in text, option
    for name in (*METHODS, *PROTOCOLS):
        assert name in text, name


def test_cli_bad_argument_names_the_field(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["transfer", "--target", str(tmp_path / "missing.npz")])
    assert exc.value.code == 2
    assert "`target`" in capsys.readouterr().err


def test_cli_refuses_settings_that_train_zero_steps(target, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["transfer", "--target", str(target), "--max-samples", "1", "--methods", "scratch"])
    assert exc.value.code == 2
    assert "`max_samples` should be None or an int >= 2 (one training sample trains no step), got 1" in capsys.readouterr().err


def test_cli_transfer_end_to_end(tmp_path):
    """Only ``--target`` and cost bounds: the default 2D source and the default output folder."""
    if not _default_source():
        pytest.skip(f"default 2D source {DEFAULT_SOURCES} not found in ../shared/data/medmnist")
    target = _write_target(tmp_path / "tiny3d.npz")
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    # cost bounds only; one thread: on a loaded 2-core machine two OpenMP threads on these tiny
    # tensors spin against each other (~90 s instead of ~25 s of wall time at load average 9)
    bounds = "--seeds 1 --epochs 1 --pretrain-epochs 1 --max-samples 16 --max-source-samples 16"
    bounds += " --methods crossd i3d --protocols weak --threads 1"
    cmd = [sys.executable, "-m", "monai_crossd.apps.transfer", "transfer", "--target", str(target), *bounds.split()]
    proc = subprocess.run(cmd, check=False, cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    out = run_dir / "transfer_results" / "tiny3d"  # the default --out
    assert {"results.json", "results.md", "results.png", "prior_plain.pt", "prior_crossd.pt"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"config", "environment", "priors", "target", "summary", "runs"}
    assert results["target"] == {"kind": "classification", "num_classes": 2, "samples": {"train": 16, "val": 8, "test": 8}}
    cfg = results["config"]
    assert cfg["target"] == str(target) and cfg["methods"] == ["crossd", "i3d"] and cfg["protocols"] == ["weak"]
    assert [Path(s).name for s in cfg["source"]] == list(DEFAULT_SOURCES)  # the default 2D source was used

    def check_metrics(m):
        assert set(m) == {"accuracy", "balanced_accuracy", "auc"}
        for v in m.values():
            assert math.isfinite(v) and 0.0 <= v <= 1.0, m

    for kind in ("plain", "crossd"):
        prior = results["priors"][kind]
        assert prior["num_classes"] == 4  # breastmnist (2) + pneumoniamnist (2) in one label space
        check_metrics(prior["val_final"])
        assert len(prior["history"]) == 1

    assert [(r["method"], r["protocol"], r["seed"]) for r in results["runs"]] == [
        ("crossd", "weak", 0),
        ("i3d", "weak", 0),
    ]
    for run in results["runs"]:
        assert run["best_epoch"] == 1 and len(run["history"]) == 1
        assert math.isfinite(run["history"][0]["loss"])
        check_metrics(run["val"])
        check_metrics(run["test"])

    assert set(results["summary"]) == {"crossd|weak", "i3d|weak"}
    for entry in results["summary"].values():
        for metric in ("accuracy", "balanced_accuracy", "auc"):
            stats = entry[metric]
            assert stats["n"] == 1 and stats["std"] == 0.0
            assert math.isfinite(stats["mean"]) and 0.0 <= stats["mean"] <= 1.0

    md = (out / "results.md").read_text()
    assert "| method | protocol | accuracy | balanced accuracy | AUC |" in md
    assert "| crossd | weak |" in md and "| i3d | weak |" in md
