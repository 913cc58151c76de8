"""Bundle checkpoints on ignite's Checkpoint: best / last semantics, atomic 0644 files, resume, checked loading."""

from __future__ import annotations

import math
import os
import re
import stat

import ignite.distributed
import pytest
import torch
from ignite.engine import Engine, Events

from monai_crossd.apps.bundle.checkpoints import (
    AtomicDiskSaver,
    BestCheckpointSaver,
    CheckedCheckpointLoader,
    LastCheckpointSaver,
    ResumeCheckpointLoader,
    state_dict_mismatch,
)


def _load(path):
    return torch.load(path, weights_only=True)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _broken_save(obj, f, **kwargs):
    f.write(b"half a checkpoint")
    raise OSError(28, "No space left on device")


def _evaluator(network: torch.nn.Module, scores) -> Engine:
    """An evaluation per epoch: epoch ``e`` scores ``scores[e - 1]`` and the network's weights are set to that score."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _validate(e):
        score = scores[e.state.epoch - 1]
        with torch.no_grad():
            network.weight.fill_(score if isinstance(score, float) else 0.0)
        e.state.key_metric_name = "auc"
        e.state.metrics = {"auc": score, "loss": 1.0}

    return engine


def _evaluate(saver: BestCheckpointSaver, network, scores) -> None:
    engine = _evaluator(network, scores)
    saver.attach(engine)
    engine.run([0], max_epochs=len(scores))


def _best_weight(saver) -> float:
    return _load(saver.last_checkpoint)["weight"].flatten()[0].item()


# ---- the saver ---------------------------------------------------------------------------------------------


def test_disk_saver_writes_0644_and_removes_a_replaced_file_after_its_successor(tmp_path):
    (tmp_path / "other.pt").write_bytes(b"")  # a folder with checkpoints is fine (ignite's default refuses it)
    old = os.umask(0o077)
    try:
        saver = AtomicDiskSaver(tmp_path / "ckpt")
        saver({"a": 1}, "x.pt")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "ckpt" / "x.pt") == 0o644 and _load(tmp_path / "ckpt" / "x.pt") == {"a": 1}

    saver.remove("x.pt")
    assert (tmp_path / "ckpt" / "x.pt").exists()  # not before the next file is written
    saver({"a": 2}, "y.pt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["y.pt"]

    saver.remove("y.pt")  # ignite replacing a file of the same name: it must not be deleted
    saver({"a": 3}, "y.pt")
    assert _load(tmp_path / "ckpt" / "y.pt") == {"a": 3}


def test_disk_saver_failure_keeps_the_replaced_file(tmp_path, monkeypatch):
    saver = AtomicDiskSaver(tmp_path)
    saver({"a": 1}, "y.pt")
    saver.remove("y.pt")
    monkeypatch.setattr(torch, "save", _broken_save)
    with pytest.raises(OSError, match="No space left on device"):
        saver({"a": 2}, "y.pt")
    monkeypatch.undo()
    assert _load(tmp_path / "y.pt") == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["y.pt"]


# ---- best ----------------------------------------------------------------------------------------------------


def test_best_keeps_the_network_of_the_best_score(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = BestCheckpointSaver(tmp_path, network)
    _evaluate(saver, network, [0.5, 0.7, 0.6])
    state = _load(tmp_path / "model.pt")
    assert set(state) == {"weight", "bias"}  # a plain state_dict, model-zoo style
    assert state["weight"].flatten()[0].item() == pytest.approx(0.7)
    assert saver.state_dict() == {"_saved": [(0.7, "model.pt")]}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"] and _mode(tmp_path / "model.pt") == 0o644


@pytest.mark.parametrize("greater_or_equal, epoch", [(False, 1), (True, 2)])
def test_best_ties_keep_the_earlier_or_the_later_network(tmp_path, greater_or_equal, epoch):
    network = torch.nn.Linear(2, 1)
    saver = BestCheckpointSaver(tmp_path, network, key_metric_name="acc", greater_or_equal=greater_or_equal)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _validate(e):
        with torch.no_grad():
            network.weight.fill_(e.state.epoch)
        e.state.metrics = {"acc": 0.5}

    saver.attach(engine)
    engine.run([0], max_epochs=2)
    assert _best_weight(saver) == epoch


def test_best_unwraps_data_parallel(tmp_path):
    network = torch.nn.Linear(2, 1)
    _evaluate(BestCheckpointSaver(tmp_path, torch.nn.DataParallel(network)), network, [0.5])
    assert set(_load(tmp_path / "model.pt")) == {"weight", "bias"}


def test_best_skips_nan_scores(tmp_path, caplog):
    network = torch.nn.Linear(2, 1)
    saver = BestCheckpointSaver(tmp_path, network)
    with caplog.at_level("WARNING"):
        _evaluate(saver, network, [math.nan])
    assert not (tmp_path / "model.pt").exists() and "metric auc is NaN; no checkpoint" in caplog.text
    _evaluate(saver, network, [0.2])  # a NaN never blocks a later score
    assert _best_weight(saver) == pytest.approx(0.2)


def test_best_failed_write_keeps_the_previous_best(tmp_path, monkeypatch):
    network = torch.nn.Linear(2, 1)
    saver = BestCheckpointSaver(tmp_path, network)
    _evaluate(saver, network, [0.5])
    monkeypatch.setattr(torch, "save", _broken_save)
    with pytest.raises(OSError, match="No space left on device"):
        _evaluate(saver, network, [0.9])
    monkeypatch.undo()
    assert _best_weight(saver) == pytest.approx(0.5) and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_best_needs_a_numeric_key_metric(tmp_path):
    network = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"^BestCheckpointSaver: key metric 'auc' not in the evaluator metrics \['acc'\]\.$"):
        BestCheckpointSaver(tmp_path, network, key_metric_name="auc")(_state_engine({"acc": 1.0}))
    with pytest.raises(ValueError, match=r"^BestCheckpointSaver: key metric 'auc' should be a number, got \[0\.1, 0\.2\]\.$"):
        BestCheckpointSaver(tmp_path, network, key_metric_name="auc")(_state_engine({"auc": [0.1, 0.2]}))
    assert BestCheckpointSaver(tmp_path, network, "auc").score(_state_engine({"auc": torch.tensor(0.25)})) == 0.25


def _state_engine(metrics) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.metrics = metrics
    return engine


@pytest.mark.parametrize(
    "state", [{"_saved": [(0.7, "model.pt")]}, {"best_metric": 0.7, "best_epoch": 2}], ids=["ignite", "before-ignite"]
)
def test_best_score_resumes(tmp_path, state):
    network = torch.nn.Linear(2, 1)
    _evaluate(BestCheckpointSaver(tmp_path, network), network, [0.7])
    resumed = BestCheckpointSaver(tmp_path, network)
    resumed.load_state_dict(state)
    _evaluate(resumed, network, [0.6])
    assert _best_weight(resumed) == pytest.approx(0.7)
    _evaluate(resumed, network, [0.8])
    assert _best_weight(resumed) == pytest.approx(0.8) and resumed.state_dict() == {"_saved": [(0.8, "model.pt")]}


def test_best_of_a_run_without_score_before_ignite(tmp_path):
    saver = BestCheckpointSaver(tmp_path, torch.nn.Linear(2, 1))
    saver.load_state_dict({"best_metric": -math.inf, "best_epoch": -1})
    assert saver.state_dict() == {"_saved": []}


# ---- last and resume -------------------------------------------------------------------------------------------


def _trainer(network) -> Engine:
    def step(engine, batch):
        with torch.no_grad():
            network.weight.add_(1.0)

    return Engine(step)


def test_last_saves_every_interval_and_at_the_end(tmp_path):
    network = torch.nn.Linear(2, 1)
    start = network.weight.detach().clone()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    saver = LastCheckpointSaver(tmp_path, {"model": network, "optimizer": optimizer}, save_interval=2)
    trainer = _trainer(network)
    saver.attach(trainer)
    seen = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: seen.append(_load(saver.last_checkpoint)["trainer"]["iteration"] if saver.last_checkpoint else None)
    )
    trainer.run([0, 1], max_epochs=3)
    assert seen == [None, 4, 4]  # epochs 1, 2, 3 (the third is saved when the run completes)
    state = _load(tmp_path / "last.pt")
    assert set(state) == {"model", "optimizer", "trainer"}
    assert state["trainer"] == {"epoch_length": 2, "max_epochs": 3, "iteration": 6}
    torch.testing.assert_close(state["model"]["weight"], start + 6)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and _mode(tmp_path / "last.pt") == 0o644


def test_last_arguments():
    with pytest.raises(ValueError, match=r"^`save_dict` should name at least one object to save, got an empty mapping\.$"):
        LastCheckpointSaver("unused", {})
    with pytest.raises(ValueError, match=r"^`save_interval` should be a positive int, got 0\.$"):
        LastCheckpointSaver("unused", {"model": torch.nn.Linear(1, 1)}, save_interval=0)


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(ignite.distributed, "get_rank", lambda: 1)
    network = torch.nn.Linear(2, 1)
    saver = LastCheckpointSaver(tmp_path / "models", {"model": network})
    best = BestCheckpointSaver(tmp_path / "models", network)
    trainer = _trainer(network)
    saver.attach(trainer)
    trainer.run([0], max_epochs=2)
    _evaluate(best, network, [0.5])
    assert not (tmp_path / "models").exists()
    assert best.state_dict() == {"_saved": [(0.5, "model.pt")]}  # every rank keeps the best score


def _train(ckpt_dir, network, optimizer, best, max_epochs, resume=False) -> int:
    trainer, steps = _trainer(network), []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: steps.append(e.state.iteration))
    objects = {"model": network, "optimizer": optimizer, "best": best}
    if resume:
        ResumeCheckpointLoader(ckpt_dir / "last.pt", objects).attach(trainer)
    LastCheckpointSaver(ckpt_dir, objects).attach(trainer)
    trainer.run([0, 1], max_epochs=max_epochs)
    return len(steps)


def test_resume_restores_network_optimizer_epoch_and_best_score(tmp_path):
    network = torch.nn.Linear(2, 1)
    start = network.weight.detach().clone()
    best = BestCheckpointSaver(tmp_path, network)
    best.load_state_dict({"_saved": [(0.7, "model.pt")]})
    assert _train(tmp_path, network, torch.optim.SGD(network.parameters(), lr=0.1), best, max_epochs=2) == 4

    network2 = torch.nn.Linear(2, 1)
    optimizer2 = torch.optim.SGD(network2.parameters(), lr=0.5)
    best2 = BestCheckpointSaver(tmp_path, network2)
    assert _train(tmp_path, network2, optimizer2, best2, max_epochs=3, resume=True) == 2  # the remaining epoch
    torch.testing.assert_close(network2.weight.detach(), start + 6)
    assert optimizer2.param_groups[0]["lr"] == 0.1 and best2.state_dict() == {"_saved": [(0.7, "model.pt")]}
    assert _load(tmp_path / "last.pt")["trainer"]["iteration"] == 6


def test_resume_reads_a_last_checkpoint_written_before_ignite(tmp_path):
    network = torch.nn.Linear(2, 1)
    old = {
        "model": network.state_dict(),
        "trainer": {"epoch_length": 2, "max_epochs": 2, "iteration": 4},
        "best": {"best_metric": 0.7, "best_epoch": 2},
    }
    torch.save(old, tmp_path / "last.pt")
    best = BestCheckpointSaver(tmp_path, network)
    trainer = _trainer(network)
    ResumeCheckpointLoader(tmp_path / "last.pt", {"model": network, "best": best}).attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    assert trainer.state.iteration == 6 and best.state_dict() == {"_saved": [(0.7, "model.pt")]}


# ---- checked loading ---------------------------------------------------------------------------------------------


def test_state_dict_mismatch_lists_the_three_kinds():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.zeros(4, 2), "0.bias": torch.zeros(3), "2.weight": torch.zeros(1)}
    assert state_dict_mismatch(model, state) == (
        ["1.weight", "1.bias"],
        ["2.weight"],
        {"0.weight": "checkpoint (4, 2) vs model (3, 2)"},
    )
    assert state_dict_mismatch(model, model.state_dict()) == ([], [], {})


def _engine() -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 1
    return engine


def test_checked_loader_names_the_file_and_the_keys(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 5).state_dict(), path)
    with pytest.raises(ValueError, match=rf"^checkpoint '{re.escape(str(path))}' could not be loaded: `model` \(Linear\) does not fit: 2 mismatched keys: weight \(checkpoint \(5, 2\) vs model \(3, 2\)\), bias \(checkpoint \(5,\) vs model \(3,\)\)\.$"):
        CheckedCheckpointLoader(load_path=str(path), load_dict={"model": torch.nn.Linear(2, 3)})(_engine())

    torch.save({f"module.{k}": v for k, v in torch.nn.Linear(2, 3).state_dict().items()}, path)
    with pytest.raises(ValueError, match=r"does not fit: 2 missing keys: weight, bias; 2 unexpected keys: module.weight, module.bias; every unexpected key starts with 'module.': strip the prefix\.$"):
        CheckedCheckpointLoader(load_path=str(path), load_dict={"model": torch.nn.Linear(2, 3)})(_engine())

    network = torch.nn.Linear(2, 3)
    torch.save({"net": network.state_dict(), "optimizer": {}}, path)
    objects = {"model": network, "optimizer": torch.optim.SGD(network.parameters(), lr=0.1)}
    with pytest.raises(ValueError, match=r": no 'model' entry \(the checkpoint has \['net', 'optimizer'\]\)\.$"):
        CheckedCheckpointLoader(load_path=str(path), load_dict=objects)(_engine())

    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"could not be loaded: not a readable checkpoint \(truncated or corrupt\?\)"):
        CheckedCheckpointLoader(load_path=str(path), load_dict={"model": network})(_engine())
    with pytest.raises(ValueError, match=r"^`load_path` should be an existing checkpoint, got '.*nope\.pt'\.$"):
        CheckedCheckpointLoader(load_path=str(tmp_path / "nope.pt"), load_dict={"model": network})(_engine())


def test_checked_loader_loads_a_fitting_checkpoint(tmp_path):
    source, target = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    CheckedCheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": target})(_engine())
    torch.testing.assert_close(target.weight, source.weight)
