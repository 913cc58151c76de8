"""Two-process data-parallel training (``torchrun``, gloo on CPU) equals one process with the doubled batch.

The crossd_vessel_classification bundle's ``multi_gpu_train.json`` merged with ``train.json`` runs under
``python -m torch.distributed.run --standalone --nproc_per_node=2`` (the ``torchrun`` command of the README) with
batch 2 per process; a plain ``train.json`` run in one process uses batch 4. Both train one epoch on the same 8
real cases.

What is compared: the final weights (``last.pt``'s ``model``, written by rank 0). They agree because each step
sees the same 4 cases: the samplers share one permutation per ``(seed, epoch)`` (rank ``r`` takes every second
case of it, one process takes them in order) and DDP averages the two ranks' mean-loss gradients. To make the two
runs the same function of those cases, a small override config removes what couples the samples of a batch or
depends on the process: group norm (one group) instead of batch norm, Cross-D layers without their rotation
network (whose batch norm would see 2 instead of 4 samples; DDP then needs ``find_unused_parameters``), equal
class weights (a weighted mean is not the mean of per-rank weighted means) and no random augmentation (each rank
draws its own flips). Tolerance: 1e-5 (float reduction order differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "crossd_vessel_classification" / "configs"
OVERRIDE = {
    "max_train_samples": 8,
    "max_val_samples": 8,
    "val_batch_size": 8,
    "widths": [8, 16, 32, 64],
    "max_epochs": 1,
    "class_weights": [1.0, 1.0],
    "conv_kwargs": {"rotation": False},
    "network_def#norm": ["group", {"num_groups": 1}],
    "train#augmentation": [],
}


def _run(cmd: list[str], root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def _dirs(root: Path) -> list[str]:
    return ["--ckpt_dir", str(root / "models"), "--output_dir", str(root / "eval"), "--log_dir", str(root / "runs")]


def test_torchrun_two_processes_match_one_process_with_doubled_batch(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    override = tmp_path / "override.json"
    override.write_text(json.dumps(OVERRIDE))
    ddp = tmp_path / "override_ddp.json"
    ddp.write_text(json.dumps({"batch_size": 2, "network#find_unused_parameters": True}))
    single = tmp_path / "override_single.json"
    single.write_text(json.dumps({"batch_size": 4}))
    train, multi = str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")

    two, one = tmp_path / "two", tmp_path / "one"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
          "run", "--config_file", str([train, multi, str(override), str(ddp)]), *_dirs(two)], two)  # fmt: skip
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", str([train, str(override), str(single)]),
          *_dirs(one)], one)  # fmt: skip

    a = torch.load(two / "models" / "last.pt", weights_only=True)
    b = torch.load(one / "models" / "last.pt", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 2  # 8 cases: 2 steps of 2 x 2 and of 4
    assert not any(k.startswith("module.") for k in a["model"])  # rank 0 saved the unwrapped network
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, atol=1e-5, rtol=1e-4, msg=key)
