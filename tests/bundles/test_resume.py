"""Checkpoints are written atomically, and a training process killed mid-run resumes to the uninterrupted result.

* A failed write (the disk fails while the new checkpoint is flushed) leaves the previous ``last.pt`` intact and no
  temporary file behind.
* Kill and resume: the crossd_vessel_classification bundle trains 3 tiny epochs (8 real cases) in a subprocess
  (``python -m monai.bundle run``); a second copy is SIGKILLed as soon as its first ``last.pt`` appears and is
  restarted with ``--resume True``. The resumed run's final weights (``last.pt``'s ``model``) equal the
  uninterrupted run's: the bundle's :class:`monai_crossd.apps.bundle.EpochSeed` reseeds every generator per epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_crossd.apps.bundle import LastCheckpointSaver
from monai_crossd.apps.io import atomic_torch_save

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "bundles" / "crossd_vessel_classification" / "configs" / "train.json"
MAX_EPOCHS = 3
TINY = ["--max_train_samples", "8", "--max_val_samples", "8", "--batch_size", "4", "--val_batch_size", "8",
        "--widths", "[8,16,32,64]", "--max_epochs", str(MAX_EPOCHS)]  # fmt: skip


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: None)
    LastCheckpointSaver(tmp_path, {"model": model}).attach(trainer)
    before = []

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    @trainer.on(Events.EPOCH_STARTED(once=2))
    def _disk_full(engine):  # epoch 1 was saved; epoch 2's save fails while flushing
        before.append((tmp_path / "last.pt").read_bytes())
        with torch.no_grad():
            model.weight.add_(1.0)
        monkeypatch.setattr(os, "fsync", broken_fsync)

    with pytest.raises(OSError, match="No space left on device"):
        trainer.run([0], max_epochs=2)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_torch_save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    assert (tmp_path / "last.pt").read_bytes() == before[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file, no half-written other.pt


def _command(root: Path, *extra: str) -> list[str]:
    dirs = ["--ckpt_dir", str(root / "models"), "--output_dir", str(root / "eval"), "--log_dir", str(root / "runs")]
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(TRAIN), *dirs, *TINY, *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(cmd):
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _final(root: Path) -> dict:
    state = torch.load(root / "models" / "last.pt", weights_only=True)
    trainer = state["trainer"]
    epoch = trainer["epoch"] if "epoch" in trainer else trainer["iteration"] // trainer["epoch_length"]
    return {"epoch": epoch, "model": state["model"]}


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_command(full))

    last = killed / "models" / "last.pt"
    process = subprocess.Popen(_command(killed), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert last.exists(), "no last.pt within 240 s"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    interrupted = _final(killed)  # a complete checkpoint: the write is atomic
    assert 1 <= interrupted["epoch"] < MAX_EPOCHS, interrupted["epoch"]

    _run(_command(killed, "--resume", "True"))
    expected, resumed = _final(full), _final(killed)
    assert expected["epoch"] == resumed["epoch"] == MAX_EPOCHS
    assert expected["model"].keys() == resumed["model"].keys()
    for key, value in expected["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, atol=1e-6, rtol=1e-5, msg=key)
