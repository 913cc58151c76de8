"""Issue #16 item 2 on the classification bundles, through real ``python -m monai_crossd.apps.bundle run`` processes.

* crossd_brats (``--studies_dir``, a folder of real TCIA DICOM studies) and crossd_pretrain2d (``--input_dir``, a
  folder of images) go on past a broken case: the good cases' rows are written, the broken case gets none (it is
  listed under ``failed_cases`` in the JSON and in the log table), ``predictions.{csv,json}`` are replaced whole (no
  row of an earlier run stays), the run exits 1; an output folder overlapping the inputs is refused.
* crossd_vessel_classification reads one npz array (no per-case files): a run that fails leaves the earlier
  predictions byte-identical.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_crossd.apps.bundle import FAILED_KEY, CaseDataset, tolerant_datalist
from tests.apps.bundle.test_safe_outputs import _bundle, _last_line, _snapshot
from tests.bundles._helpers import output_dirs, run_workflow

REPO = Path(__file__).resolve().parents[3]
BUNDLES = REPO / "bundles"
DICOM = REPO.parent / "shared" / "data" / "dicom" / "brain_tumor_progression"
BRATS_TINY = {"demo_num_cases": 8, "demo_spatial_size": [16, 16, 16], "demo_widths": [8, 16, 32, 64]}
WIDTHS = [8, 16, 32, 64]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rows(path: Path) -> dict[str, list[str]]:
    """case_id -> the rest of its CSV line."""
    with open(path) as f:
        return {row[0]: row[1:] for row in list(csv.reader(f))[1:]}


def test_tolerant_datalist_records_the_inputs_it_cannot_list():
    def make(path):
        if path.endswith("bad"):
            raise ValueError(f"study {path!r}: no series found for modality 'FLAIR'")
        return [{"image": f"{path}/img", "case_id": Path(path).name}]

    items = tolerant_datalist(make, ["/in/a", "/in/bad", "/in/c"])
    assert items == [
        {"image": "/in/a/img", "case_id": "a"},
        {FAILED_KEY: [("/in/bad", "ValueError: study '/in/bad': no series found for modality 'FLAIR'")]},
        {"image": "/in/c/img", "case_id": "c"},
    ]
    from monai.data import Dataset

    dataset = CaseDataset(Dataset(items, transform=lambda d: {**d, "loaded": True}), key="case_id")
    assert dataset[1] == items[1]  # passed through, not transformed
    assert dataset[2] == {"image": "/in/c/img", "case_id": "c", "loaded": True}


def test_network_failure_is_named_by_case_id_and_listed_in_the_json(tmp_path):
    """Case ``b`` makes the network raise: rows of ``a`` and ``c`` only, ``b`` under ``failed_cases``, exit by error."""
    import torch
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator

    from monai_crossd.apps.bundle import CaseFailures, ClassificationWriter, FailedCasesError, collate_cases

    data = [{"image": torch.full((2,), v), "case_id": c} for c, v in (("a", 1.0), ("b", -1.0), ("c", 3.0))]

    class Net(torch.nn.Module):
        def forward(self, x):
            if (x < 0).any():
                raise ValueError("negative input")
            return torch.cat([x[:, :1], 2 * x[:, :1]], dim=1)

    failures = CaseFailures(key="case_id")
    writer = ClassificationWriter(tmp_path, failures=failures)
    loader = DataLoader(CaseDataset(Dataset(data), key="case_id"), batch_size=1, collate_fn=collate_cases)
    evaluator = SupervisedEvaluator("cpu", loader, Net(), iteration_update=failures, val_handlers=[writer, failures])
    with pytest.raises(FailedCasesError, match=r"^1 of 3 cases failed.*: b;"):
        evaluator.run()
    result = json.loads((tmp_path / "predictions.json").read_text())
    assert [(p["case_id"], p["prob_0"], p["prob_1"], p["pred"]) for p in result["predictions"]] == [
        ("a", 1.0, 2.0, 1),
        ("c", 3.0, 6.0, 1),
    ]
    assert result["failed_cases"] == [{"case_id": "b", "reason": "ValueError: negative input"}]
    assert (tmp_path / "predictions.csv").read_text().splitlines() == [
        "case_id,prob_0,prob_1,pred",
        "a,1.0,2.0,1",
        "c,3.0,6.0,1",
    ]


@pytest.fixture(scope="module")
def brats_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("brats")
    run_workflow(str(BUNDLES / "crossd_brats" / "configs" / "train.json"), bundle_root=str(root), max_epochs=1,
                 **BRATS_TINY)  # fmt: skip
    return root / "models"


@pytest.fixture
def studies(tmp_path) -> Path:
    """Two copies of the real Study3 (all four modalities), ``good`` and ``broken``."""
    if not (DICOM / "Study3").is_dir():
        pytest.skip(f"shared data not found at {DICOM}")
    folder = tmp_path / "studies"
    for name in ("good", "broken"):
        shutil.copytree(DICOM / "Study3", folder / name)
    return folder


def test_brats_batch_inference_goes_past_broken_studies(brats_models, studies, tmp_path):
    """A truncated DICOM file and a study without a T1wCE series: exit 1, the good study's row only."""
    out = tmp_path / "out"
    args = ["--config_file", str(BUNDLES / "crossd_brats" / "configs" / "inference.json"), "--ckpt_dir",
            str(brats_models), "--studies_dir", str(studies), "--output_dir", str(out)]  # fmt: skip
    first = _bundle(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _rows(out / "predictions.csv")
    assert sorted(before) == ["broken", "good"] and before["broken"] == before["good"]  # same images, same row
    flair = studies / "broken" / "36468-FLAIRreg-58706"
    _truncate(sorted(flair.iterdir())[2])
    shutil.copytree(DICOM / "Study1", studies / "nomod")  # one series only (13_HCropVolume)

    done = _bundle(*args)
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: FailedCasesError: 2 of 3 cases failed") and "broken" in last and "nomod" in last
    assert _rows(out / "predictions.csv") == {"good": before["good"]}  # replaced: no stale "broken" row
    result = json.loads((out / "predictions.json").read_text())
    assert [p["case_id"] for p in result["predictions"]] == ["good"]
    failed = {Path(f["case_id"]).name: f["reason"] for f in result["failed_cases"]}
    assert sorted(failed) == ["broken", "nomod"]
    assert failed["broken"].startswith(f"ValueError: could not read key 'FLAIR' file '{flair}' (truncated or corrupt?)")
    assert "no series found for modality 'T1wCE'" in failed["nomod"]
    log = done.stdout + done.stderr
    assert "failed cases (nothing written for them)" in log and f"'{flair}' (truncated or corrupt?)" in log


@pytest.mark.parametrize("where", ["study", "inside_studies"])
def test_brats_output_dir_overlapping_the_inputs_is_refused(brats_models, studies, where):
    config = str(BUNDLES / "crossd_brats" / "configs" / "inference.json")
    before = _snapshot(studies)
    if where == "study":  # the study's own folder: predictions beside its series folders
        inputs, output_dir = ["--input_dir", str(studies / "good")], studies / "good"
    else:  # a sub-folder of studies_dir would be read as a study by the next run
        inputs, output_dir = ["--studies_dir", str(studies)], studies / "eval"
    done = _bundle("--config_file", config, "--ckpt_dir", str(brats_models), *inputs, "--output_dir", str(output_dir))
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: ValueError: `output_dir` ") and str(output_dir) in last
    assert ("holds the input" if where == "study" else "overlaps the input pattern") in last
    assert _snapshot(studies) == before


@pytest.fixture(scope="module")
def pretrain2d_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain2d")
    run_workflow(str(BUNDLES / "crossd_pretrain2d" / "configs" / "train.json"), max_epochs=1, **output_dirs(root),
                 max_train_samples=8, max_val_samples=4, batch_size=8, widths=WIDTHS, prefer_full_data=False)  # fmt: skip
    return root / "models"


@pytest.fixture
def images(tmp_path) -> Path:
    """Four real BreastMNIST test images as PNG files under ``images/breast/``."""
    with np.load(REPO / "bundles" / "crossd_pretrain2d" / "data" / "breastmnist.npz") as data:
        pixels = data["test_images"][:4]
    folder = tmp_path / "images" / "breast"
    folder.mkdir(parents=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    return tmp_path / "images"


def test_pretrain2d_batch_inference_goes_past_a_broken_image(pretrain2d_models, images, tmp_path):
    out = tmp_path / "out"
    args = ["--config_file", str(BUNDLES / "crossd_pretrain2d" / "configs" / "inference.json"), "--ckpt_dir",
            str(pretrain2d_models), "--input_dir", str(images), "--output_dir", str(out), "--batch_size", "2"]  # fmt: skip
    first = _bundle(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _rows(out / "predictions.csv")
    assert sorted(before) == [f"breast/{i}.png" for i in range(4)]
    broken = images / "breast" / "2.png"
    _truncate(broken)

    done = _bundle(*args)
    assert done.returncode == 1, done.stderr[-3000:]
    assert _last_line(done).startswith("error: FailedCasesError: 1 of 4 cases failed") and "2.png" in _last_line(done)
    assert _rows(out / "predictions.csv") == {k: v for k, v in before.items() if k != "breast/2.png"}
    result = json.loads((out / "predictions.json").read_text())
    assert len(result["predictions"]) == 3
    ((case, reason),) = [(f["case_id"], f["reason"]) for f in result["failed_cases"]]
    assert case == "breast/2.png"
    assert reason.startswith(f"ValueError: could not read key 'image' file '{broken}' (truncated or corrupt?)")
    assert "failed cases (nothing written for them)" in done.stdout + done.stderr


def test_pretrain2d_output_dir_holding_the_images_is_refused(pretrain2d_models, images):
    before = _snapshot(images)
    done = _bundle("--config_file", str(BUNDLES / "crossd_pretrain2d" / "configs" / "inference.json"), "--ckpt_dir",
                   str(pretrain2d_models), "--input_dir", str(images), "--output_dir", str(images / "breast"))  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith("error: ValueError: `output_dir` ") and "holds the input" in last
    assert _snapshot(images) == before


def test_vessel_failed_inference_leaves_earlier_predictions_byte_identical(tmp_path):
    """One npz array, no per-case files: a broken input fails the run before anything is written."""
    root = tmp_path / "vessel"
    # 8 validation cases hold both classes: a finite AUC, so model.pt is saved
    run_workflow(str(BUNDLES / "crossd_vessel_classification" / "configs" / "train.json"), max_epochs=1,
                 **output_dirs(root), max_train_samples=8, max_val_samples=8, batch_size=4, val_batch_size=8,
                 widths=WIDTHS)  # fmt: skip
    out = tmp_path / "out"
    args = ["--config_file", str(BUNDLES / "crossd_vessel_classification" / "configs" / "inference.json"),
            "--ckpt_dir", str(root / "models"), "--output_dir", str(out), "--max_samples", "4"]  # fmt: skip
    first = _bundle(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _snapshot(out)
    assert sorted(before) == ["predictions.csv", "predictions.json"]
    broken = tmp_path / "vesselmnist3d.npz"
    shutil.copy(BUNDLES / "crossd_vessel_classification" / "data" / "vesselmnist3d.npz", broken)
    _truncate(broken)

    done = _bundle(*args, "--input_file", str(broken))
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done)
    assert last.startswith(f"error: ValueError: MedMNIST file {str(broken)!r} could not be read (truncated or corrupt?)")
    assert _snapshot(out) == before
