"""Helpers shared by the bundle tests: run a bundle config through ``ConfigWorkflow``, output folders."""

from __future__ import annotations

from pathlib import Path


def run_workflow(config_file, workflow_type: str = "train", **override):
    """Initialise, run and finalise one bundle workflow with ``override`` (tiny sizes, tmp folders)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=config_file, workflow_type=workflow_type, **override)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


#: overrides of a tiny hippocampus training run (2 real cases each for training and validation, channels 4..32)
HIPPOCAMPUS_TINY = {
    "channels": [4, 8, 16, 32],
    "batch_size": 2,
    "val_interval": 1,
    "train_datalist": "$monai.data.load_decathlon_datalist(@datalist_file, True, @train_key, @data_dir)[:2]",
    "val_datalist": "$monai.data.load_decathlon_datalist(@datalist_file, True, @val_key, @data_dir)[:2]",
}


def output_dirs(root: Path) -> dict:
    """Checkpoint, evaluation and TensorBoard folders of a bundle run under ``root``."""
    return {"ckpt_dir": str(root / "models"), "output_dir": str(root / "eval"), "log_dir": str(root / "runs")}
