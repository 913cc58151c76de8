"""Pieces of safe batch inference: atomic masks, the failure-tolerant iteration, the one-line error, stale outputs."""

from __future__ import annotations

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_crossd.apps.bundle import (
    FAILED_KEY,
    AtomicNibabelWriter,
    CaseDataset,
    CaseFailures,
    ClassificationWriter,
    FailedCasesError,
    collate_cases,
    error_message,
    output_file,
    read_model_config,
    write_model_config,
)


@pytest.fixture
def image(shared_data):
    return shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


def test_atomic_mask_writer_keeps_the_old_mask_when_writing_fails(image, tmp_path, monkeypatch):
    target = tmp_path / "case_seg.nii.gz"
    values = np.asarray(nib.load(image).dataobj).astype(np.uint8)

    def write():  # a writer object writes once (MONAI's NibabelWriter replaces its data by the nibabel image)
        writer = AtomicNibabelWriter(output_dtype=np.uint8)
        writer.set_data_array(torch.as_tensor(values)[None], channel_dim=0)
        writer.set_metadata({"affine": np.eye(4), "original_affine": np.eye(4)}, resample=False)
        writer.write(target)

    write()
    before = target.read_bytes()
    np.testing.assert_array_equal(np.asarray(nib.load(target).dataobj), values)

    def half_then_fail(img, filename):
        open(filename, "wb").write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["case_seg.nii.gz"]


def test_error_message_finds_the_error_under_monai_wrappers(tmp_path):
    config = {"x": "$bundle.read_json(@path)", "path": str(tmp_path / "absent.json")}
    parser = ConfigParser(config, globals={"bundle": "monai_crossd.apps.bundle"})
    with pytest.raises(RuntimeError, match="Failed to evaluate") as info:
        parser.get_parsed_content("x")
    assert error_message(info.value) == f"ValueError: JSON file {str(tmp_path / 'absent.json')!r} not found."


def test_a_failing_case_is_recorded_and_the_others_run(image, tmp_path):
    """Case 2 of 3 is truncated: cases 1 and 3 go through the network, case 2's earlier output is removed."""
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(image.read_bytes()[:3000])
    stale = tmp_path / "out" / "broken_seg.nii.gz"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier mask")
    data = [{"image": str(image)}, {"image": str(broken)}, {"image": str(image)}]
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    loader = torch.utils.data.DataLoader(CaseDataset(Dataset(data, load)), batch_size=2, collate_fn=collate_cases)
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x

    failures = CaseFailures(outputs=lambda case: output_file(tmp_path / "out", case))
    evaluator = SupervisedEvaluator("cpu", loader, Net(), iteration_update=failures, val_handlers=[failures])
    with pytest.raises(FailedCasesError, match=r"^1 of 3 cases failed.*: broken\.nii\.gz;"):
        evaluator.run()
    assert seen == [1, 1]  # batch 1 = case 1 (case 2 set aside), batch 2 = case 3
    assert [case for case, _ in failures.failed] == [str(broken)]
    assert failures.failed[0][1].startswith("EOFError: Compressed file ended")  # under MONAI's RuntimeError
    assert not stale.exists()


def test_collate_sets_failed_cases_aside():
    good = {"image": MetaTensor(torch.zeros(1, 2, 2))}
    batch = collate_cases([good, {FAILED_KEY: [("b.nii.gz", "ValueError: bad")]}, good])
    assert batch["image"].shape == (2, 1, 2, 2) and batch[FAILED_KEY] == [("b.nii.gz", "ValueError: bad")]
    assert collate_cases([{FAILED_KEY: [("c", "r")]}]) == {FAILED_KEY: [("c", "r")]}


def test_classification_writer_removes_predictions_of_an_earlier_run_when_none_are_left(tmp_path):
    from ignite.engine import Engine

    for ext in ("csv", "json"):
        (tmp_path / f"predictions.{ext}").write_text("earlier")
    writer = ClassificationWriter(tmp_path)
    engine = Engine(lambda e, b: [])
    writer.attach(engine)
    engine.run([[]], max_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_model_pair_check_names_both_files(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights of run A")
    write_model_config(tmp_path / "model_config.json", {"pixdim": [1.5, 1.5, 1.5]}, tmp_path / "model.pt")
    assert read_model_config(tmp_path / "model_config.json", tmp_path / "model.pt")["pixdim"] == [1.5, 1.5, 1.5]
    shutil.copy(tmp_path / "model_config.json", tmp_path / "kept.json")
    (tmp_path / "model.pt").write_bytes(b"weights of run B")
    with pytest.raises(
        ValueError, match=r"model config '.*model_config\.json' does not describe checkpoint '.*model\.pt'"
    ):
        read_model_config(tmp_path / "model_config.json", tmp_path / "model.pt")
    assert (
        json.loads((tmp_path / "kept.json").read_text())["model_sha256"]
        == hashlib.sha256(b"weights of run A").hexdigest()
    )
