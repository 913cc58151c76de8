"""The annotation-cost study on real MSD hippocampus cases: every arm runs the bundle, results resume and summarise.

A tiny study (4 training, 2 validation, 2 test cases; N in {1, 2}; one seed; 2 steps per stage; channels 4..32)
shared through a module fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_crossd.apps.hybrid import study
from monai_crossd.apps.hybrid.__main__ import main
from monai_crossd.apps.hybrid.study import ARMS, HybridStudyConfig, run_name, run_study, summarize

REPO = Path(__file__).resolve().parents[3]
BUNDLE = REPO / "bundles" / "crossd_hippocampus_segmentation"
TINY = {"channels": [4, 8, 16, 32], "batch_size": 2, "batch_size_2d": 2}


def _datalist(path: Path, data: Path) -> Path:
    cases = sorted(p.name for p in (data / "imagesTr").glob("hippocampus_*.nii.gz"))[:8]
    items = [{"image": f"imagesTr/{c}", "label": f"labelsTr/{c}"} for c in cases]
    assert len(items) == 8, f"the shared hippocampus cases should be in {data}"
    path.write_text(json.dumps({"training": items[:4], "validation": items[4:6], "test": items[6:]}))
    return path


def _config(tmp: Path, data: Path, **kwargs) -> HybridStudyConfig:
    settings = {
        "bundle": str(BUNDLE), "data_dir": str(data), "datalist_file": str(_datalist(tmp / "split.json", data)),
        "out_dir": str(tmp / "out"), "sizes": [1, 2], "seeds": [0], "steps": 2, "epoch_length": 1,
        "overrides": TINY, **kwargs,
    }  # fmt: skip
    return HybridStudyConfig(**settings)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("hybrid_study")
    cfg = _config(tmp, shared_data / "hippocampus")
    return cfg, run_study(cfg)


def test_every_arm_and_size_ran(tiny_study):
    cfg, results = tiny_study
    runs = sorted(p.stem for p in (Path(cfg.out_dir) / "runs").glob("*.json"))
    expected = [run_name(a, n, 0) for a in ("3d", "pretrain", "hybrid") for n in (1, 2)] + ["reference_s0"]
    assert runs == sorted(expected)
    assert [(r["arm"], r["num_full"]) for r in results["rows"]] == [
        ("3d", 1), ("3d", 2), ("pretrain", 1), ("pretrain", 2), ("hybrid", 1), ("hybrid", 2), ("reference", 4)
    ]  # fmt: skip
    for row in results["rows"]:
        for m in ("mean_dice", "dice_anterior", "dice_posterior"):
            assert 0.0 <= row[m]["mean"] <= 1.0 and row[m]["std"] == 0.0  # one seed


def test_runs_record_what_each_arm_trained_on(tiny_study):
    cfg, _ = tiny_study
    run = {p.stem: json.loads(p.read_text()) for p in (Path(cfg.out_dir) / "runs").glob("*.json")}
    (only3d,) = run["3d_n1_s0"]["stages"]
    assert only3d["batches_per_epoch"] == {"2d": 0, "3d": 1} and only3d["full_volumes"] == 1 and only3d["epochs"] == 2
    first, second = run["pretrain_n2_s0"]["stages"]
    assert first["batches_per_epoch"] == {"2d": 1, "3d": 0} and first["sliced_volumes"] == 2
    assert second["batches_per_epoch"] == {"2d": 0, "3d": 1} and second["full_volumes"] == 2
    (hybrid,) = run["hybrid_n1_s0"]["stages"]
    assert hybrid["batches_per_epoch"] == {"2d": 1, "3d": 1} and hybrid["sliced_volumes"] == 3
    (reference,) = run["reference_s0"]["stages"]
    assert reference["full_volumes"] == 4 and reference["sliced_volumes"] == 0
    t = run["hybrid_n2_s0"]["test"]
    assert t["mean_dice"] == pytest.approx((t["dice_anterior"] + t["dice_posterior"]) / 2, abs=1e-4)


def test_outputs_and_plot(tiny_study):
    cfg, _ = tiny_study
    out = Path(cfg.out_dir)
    table = (out / "results.md").read_text()
    assert all(f"| {arm} |" in table for arm in ARMS)
    assert (out / "dice_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["runs"] == 7
    assert [(r["arm"], r["num_full"]) for r in results["paired_vs_3d"]] == [("pretrain", 1), ("pretrain", 2), ("hybrid", 1), ("hybrid", 2)]
    runs = {p.stem: json.loads(p.read_text())["test"]["mean_dice"] for p in (out / "runs").glob("*.json")}
    hybrid1 = next(r for r in results["paired_vs_3d"] if r["arm"] == "hybrid" and r["num_full"] == 1)
    assert hybrid1["mean"] == pytest.approx(runs["hybrid_n1_s0"] - runs["3d_n1_s0"])
    assert hybrid1["better"] == int(runs["hybrid_n1_s0"] > runs["3d_n1_s0"]) and "difference to 3d" in table


def test_a_second_call_resumes_without_training(tiny_study, monkeypatch):
    cfg, results = tiny_study

    def _fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "_one_run", _fail)
    assert run_study(cfg)["rows"] == results["rows"]
    summary = summarize(cfg.out_dir, command="python -m monai_crossd.apps.hybrid study ...")
    assert "python -m monai_crossd.apps.hybrid study ..." in (Path(cfg.out_dir) / "results.md").read_text()
    assert summary["rows"] == results["rows"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arms": ["3d", "bogus"]}, "arms"),
        ({"steps": 3, "epoch_length": 2}, "multiple of `epoch_length`"),
        ({"sizes": [0]}, "sizes"),
        ({"ratio_2d": 1.0}, "ratio_2d"),
        ({"bundle": "/nonexistent"}, "configs/train.json"),
        ({"data_dir": "/nonexistent"}, "data_dir"),
    ],
)
def test_bad_settings_are_named(tmp_path, shared_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_study(_config(tmp_path, shared_data / "hippocampus", **kwargs))
    assert not (tmp_path / "out").exists()


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["study", "--data_dir", str(tmp_path), "--datalist_file", str(tmp_path / "missing.json")])
    assert info.value.code == 2 and "datalist_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summarize", "--out", str(tmp_path)])
    assert "no run in" in capsys.readouterr().err
