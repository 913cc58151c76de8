"""The hippocampus bundle's hybrid 2D+3D training (configs/hybrid.json over train.json) on its embedded cases.

One tiny run (4 training cases: 1 fully labelled, 3 with one labelled slice; channels 4..32; 2 epochs of 2 2D and
2 3D batches) is shared through a module fixture. Its checkpoint is a plain 3D CrossDUNet's: evaluate.json and the
network load it unchanged. A run stopped after its first epoch and resumed (``resume=True``) ends with the weights of
the uninterrupted run (without the 2D stream's EpochSeed it does not).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tests.bundles._helpers import HIPPOCAMPUS_TINY
from tests.bundles._helpers import output_dirs as _dirs
from tests.bundles._helpers import run_workflow as _workflow

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "crossd_hippocampus_segmentation" / "configs"
TINY = {
    **HIPPOCAMPUS_TINY,
    "train_datalist": "$monai.data.load_decathlon_datalist(@datalist_file, True, @train_key, @data_dir)[:4]",
    "num_full": 1,
    "batch_size_2d": 2,
    "epoch_length": 4,
}


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    root = tmp_path_factory.mktemp("hippocampus_hybrid")
    workflow = _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")], max_epochs=2, **_dirs(root), **TINY)
    return root, workflow


def test_hybrid_run_trains_both_dimensions(hybrid):
    root, workflow = hybrid
    parser = workflow.parser
    annotation = parser.get_parsed_content("annotation")
    assert len(annotation["full"]) == 1 and len(annotation["sliced"]) == 3
    loader = parser.get_parsed_content("hybrid_loader")
    assert len(loader) == 4 and loader.schedule(2).count(2) == 2
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 8
    metrics = trainer.state.metrics
    assert math.isfinite(metrics["train_loss_2d"]) and math.isfinite(metrics["train_loss_3d"])
    assert metrics["train_loss_2d"] > 0 and metrics["train_loss_3d"] > 0


def test_the_2d_stream_is_the_labelled_slices(hybrid):
    _, workflow = hybrid
    dataset = workflow.parser.get_parsed_content("train2d#dataset")
    assert len(dataset) == 3
    size = max(workflow.parser.get_parsed_content("spatial_size"))
    for i in range(3):
        item = dataset[i]
        assert tuple(item["image"].shape) == (1, size, size) and tuple(item["label"].shape) == (1, size, size)
        assert int(item["label"].max()) >= 1  # the slice through the labelled structure
    batch = next(iter(workflow.parser.get_parsed_content("train2d#dataloader")))
    assert tuple(batch["image"].shape) == (2, 1, size, size)


def test_checkpoint_is_a_plain_3d_unet_and_evaluates(hybrid):
    root, _ = hybrid
    from monai_crossd.networks.nets import CrossDUNet

    state = torch.load(root / "models" / "model.pt", weights_only=True)
    net = CrossDUNet(3, 1, 3, channels=TINY["channels"], strides=[2, 2, 2], num_res_units=2)
    net.load_state_dict(state)  # strict: the dual network's keys are the 3D network's
    assert json.loads((root / "models" / "model_config.json").read_text())["channels"] == TINY["channels"]
    _workflow([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")], "infer", **_dirs(root), **HIPPOCAMPUS_TINY)
    rows = dict(line.split(",") for line in (root / "eval" / "metrics.csv").read_text().split())
    assert all(0.0 <= float(v) <= 1.0 for v in rows.values()) and "val_mean_dice" in rows


@pytest.mark.parametrize(
    "override, match",
    [
        ({"num_full": 0}, r"fully labelled volumes \(num_full=0\).*is empty"),
        ({"num_full": 4}, r"sliced volumes .*num_full=4.*is empty"),
        ({"num_full": 5}, r"`num_full` should be an int in \[0, 4\]"),
    ],
)
def test_annotation_that_leaves_a_stream_empty_is_refused(tmp_path, override, match):
    from monai_crossd.apps.bundle.errors import error_chain

    with pytest.raises(Exception) as info:  # MONAI wraps it in a RuntimeError of the config expression
        _workflow(
            [str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")], max_epochs=1, **_dirs(tmp_path),
            **{**TINY, **override},
        )  # fmt: skip
    assert any(isinstance(e, ValueError) and re.search(match, str(e)) for e in error_chain(info.value)), info.value
    assert not (tmp_path / "models" / "model.pt").exists()


def test_one_dimension_only_runs_need_only_their_stream(tmp_path):
    _workflow(
        [str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")], max_epochs=1, **_dirs(tmp_path),
        **{**TINY, "num_full": 4, "ratio_2d": 0.0, "epoch_length": 2},
    )  # fmt: skip
    assert (tmp_path / "models" / "model.pt").is_file()


def _hybrid_workflow(root: Path, **override):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "hybrid.json")], workflow_type="train",
        **_dirs(root), **{**TINY, "max_epochs": 2, **override},
    )  # fmt: skip
    workflow.initialize()
    return workflow


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    from ignite.engine import Events

    whole = _hybrid_workflow(tmp_path / "whole")
    whole.run()
    whole.finalize()
    stopped = _hybrid_workflow(tmp_path / "stopped")
    trainer = stopped.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())  # after last.pt
    stopped.run()
    stopped.finalize()
    assert torch.load(tmp_path / "stopped" / "models" / "last.pt", weights_only=True)["trainer"]["iteration"] == 4
    resumed = _hybrid_workflow(tmp_path / "stopped", resume=True)
    resumed.run()
    resumed.finalize()
    assert resumed.parser.get_parsed_content("train#trainer").state.iteration == 8
    a = torch.load(tmp_path / "whole" / "models" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / "models" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
