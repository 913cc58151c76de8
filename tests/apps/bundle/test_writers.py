"""Evaluator writers: the metrics history (resumable, best by the key metric) and per-case class probabilities."""

from __future__ import annotations

import csv
import json
import math

import ignite.distributed
import pytest
import torch
from ignite.engine import Engine, Events

from monai_crossd.apps.bundle.writers import ClassificationWriter, MetricsHistoryWriter


def _evaluations(writer: MetricsHistoryWriter, metrics: list[dict]) -> None:
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _validate(e):
        e.state.key_metric_name = "auc"
        e.state.metrics = metrics[e.state.epoch - 1]

    writer.attach(engine)
    engine.run([0], max_epochs=len(metrics))


def test_history_keeps_scalars_and_the_best_key_metric(tmp_path):
    path = tmp_path / "eval" / "train_metrics.json"
    metrics = [
        {"auc": 0.6, "acc": torch.tensor(0.5), "per_class": [0.1, 0.2]},
        {"auc": math.nan, "acc": 0.7},
        {"auc": 0.8, "acc": 0.4},
        {"auc": 0.7, "acc": 0.9},
    ]
    _evaluations(MetricsHistoryWriter(path, extra={"data": "SYNTHETIC demo"}), metrics)
    content = json.loads(path.read_text())
    assert content["data"] == "SYNTHETIC demo" and content["key_metric"] == "auc"
    assert content["history"][0] == {"epoch": 1, "auc": 0.6, "acc": 0.5}  # the list is not a scalar: left out
    assert [h["epoch"] for h in content["history"]] == [1, 2, 3, 4]
    assert content["best"] == {"epoch": 3, "auc": 0.8, "acc": 0.4}


def test_history_continues_after_a_resume(tmp_path):
    path = tmp_path / "m.json"
    _evaluations(MetricsHistoryWriter(path), [{"auc": 0.9}, {"auc": 0.5}])
    writer = MetricsHistoryWriter(path)
    engine = Engine(lambda e, b: None)
    writer.attach(engine)  # reads epochs 1 and 2
    engine.state.epoch, engine.state.key_metric_name = 2, "auc"
    engine.state.metrics = {"auc": 0.6}  # epoch 2 evaluated again: replaces the old entry
    writer(engine)
    content = json.loads(path.read_text())
    assert content["history"] == [{"epoch": 1, "auc": 0.9}, {"epoch": 2, "auc": 0.6}]
    assert content["best"] == {"epoch": 1, "auc": 0.9}


def test_history_starts_over_from_an_unreadable_file(tmp_path, caplog):
    path = tmp_path / "m.json"
    path.write_text("{truncated")
    with caplog.at_level("WARNING"):
        _evaluations(MetricsHistoryWriter(path), [{"auc": 0.5}])
    assert "is not a metrics history" in caplog.text
    assert json.loads(path.read_text())["history"] == [{"epoch": 1, "auc": 0.5}]


def _classify(writer: ClassificationWriter, batches: list[tuple[list, list]]) -> None:
    engine = Engine(lambda e, b: None)

    @engine.on(Events.ITERATION_COMPLETED)
    def _decollated(e):  # what a MONAI evaluator leaves in its state: per-case dicts
        e.state.batch, e.state.output = batches[e.state.iteration - 1]

    writer.attach(engine)
    engine.run([0] * len(batches), max_epochs=1)


def test_classification_rows_csv_and_json(tmp_path):
    writer = ClassificationWriter(tmp_path / "out", filename="test_predictions", class_names=["a", "b"], extra={"split": "test"})
    batches = [
        ([{"case_id": "c1", "label": torch.tensor([0.0, 1.0])}, {"case_id": "c2", "label": torch.tensor([0.0, 1.0])}],
         [{"pred": torch.tensor([0.2, 0.8])}, {"pred": torch.tensor([0.9, 0.1])}]),
        ([{"case_id": 7, "label": torch.tensor(0)}], [{"pred": torch.tensor([[0.25], [0.75]])}]),
    ]  # fmt: skip
    _classify(writer, batches)
    content = json.loads((tmp_path / "out" / "test_predictions.json").read_text())
    assert content["split"] == "test" and content["class_names"] == ["a", "b"]
    assert content["predictions"] == [
        {"case_id": "c1", "prob_0": pytest.approx(0.2), "prob_1": pytest.approx(0.8), "pred": 1, "label": 1},
        {"case_id": "c2", "prob_0": pytest.approx(0.9), "prob_1": pytest.approx(0.1), "pred": 0, "label": 1},
        {"case_id": "7", "prob_0": 0.25, "prob_1": 0.75, "pred": 1, "label": 0},
    ]
    with open(tmp_path / "out" / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case_id", "prob_0", "prob_1", "pred", "label"]
    assert [(r["case_id"], r["pred"], r["label"]) for r in rows] == [("c1", "1", "1"), ("c2", "0", "1"), ("7", "1", "0")]


def test_classification_without_ids_or_labels(tmp_path):
    writer = ClassificationWriter(tmp_path)
    _classify(writer, [([{"image": 0}, {"image": 1}], [{"pred": torch.tensor([0.6, 0.4])}, {"pred": torch.tensor([0.3, 0.7])}])])
    assert (tmp_path / "predictions.csv").read_text().splitlines() == ["case_id,prob_0,prob_1,pred", "0,0.6000000238418579,0.4000000059604645,0", "1,0.30000001192092896,0.699999988079071,1"]
    assert json.loads((tmp_path / "predictions.json").read_text())["class_names"] is None


def test_classification_needs_decollated_output(tmp_path):
    engine = Engine(lambda e, b: None)
    engine.state.batch, engine.state.output = {"case_id": ["a"]}, {"pred": torch.zeros(1, 2)}
    with pytest.raises(TypeError, match=r"needs the decollated output of a MONAI engine .* got dict; do not set `decollate=False`\.$"):
        ClassificationWriter(tmp_path)._collect(engine)


def test_writers_write_on_rank_0_only(tmp_path, monkeypatch):
    monkeypatch.setattr(ignite.distributed, "get_rank", lambda: 1)
    _evaluations(MetricsHistoryWriter(tmp_path / "m.json"), [{"auc": 0.5}])
    _classify(ClassificationWriter(tmp_path), [([{"case_id": "a"}], [{"pred": torch.tensor([0.5, 0.5])}])])
    assert list(tmp_path.iterdir()) == []
