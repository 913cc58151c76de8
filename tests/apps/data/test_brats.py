"""BraTS / RSNA-MICCAI datalists, DICOM series matching and writing, the synthetic demo, bundle helpers."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_crossd.apps.bundle import (
    ClassificationWriter,
    bundle_root_from_config,
    read_json,
    should_resume,
    trainable_parameters,
)
from monai_crossd.apps.data import (
    BRATS_MODALITIES,
    DEMO_MARKER,
    brats_datalist,
    detect_brats_layout,
    ensure_brats_demo,
    match_series,
    study_datalist,
    synthetic_brats_case,
    write_dicom_series,
)
from monai_crossd.apps.io import atomic_torch_save

STUDY3_SERIES = {
    "FLAIR": "36468-FLAIRreg-58706",
    "T1w": "26401-T1prereg-52906",
    "T1wCE": "11-T1post-18670",
    "T2w": "37830-T2reg-78532",
}


def _labels_csv(path: Path, rows: dict[str, int]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["BraTS21ID", "MGMT_value"])
        writer.writerows((int(k), v) for k, v in rows.items())
    return path


def _rsna(root: Path, cases: dict[str, int], skip: tuple[str, str] | None = None) -> Path:
    for case in cases:
        for modality in BRATS_MODALITIES:
            if skip == (case, modality):
                continue
            series = root / "train" / case / modality
            series.mkdir(parents=True)
            (series / "Image-1.dcm").write_bytes(b"")
    _labels_csv(root / "train_labels.csv", cases)
    return root


def _nifti(root: Path, cases: dict[str, int], skip: tuple[str, str] | None = None) -> Path:
    import nibabel as nib

    suffixes = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}
    for case in cases:
        folder = root / f"BraTS2021_{case}"
        folder.mkdir(parents=True)
        for modality, suffix in suffixes.items():
            if skip == (case, modality):
                continue
            image = nib.Nifti1Image(np.full((8, 8, 8), 100.0 + len(suffix), np.float32), np.eye(4))
            nib.save(image, folder / f"BraTS2021_{case}_{suffix}.nii.gz")
    _labels_csv(root / "train_labels.csv", cases)
    return root


# ---------------------------------------------------------------- datalists


def test_rsna_layout(tmp_path):
    root = _rsna(tmp_path, {"00000": 1, "00002": 0, "00005": 1})
    assert detect_brats_layout(root) == "rsna"
    items = brats_datalist(root)
    assert [i["case_id"] for i in items] == ["00000", "00002", "00005"]
    assert [i["label"] for i in items] == [1, 0, 1]
    for modality in BRATS_MODALITIES:
        assert Path(items[0][modality]).name == modality and Path(items[0][modality]).is_dir()
    assert len(brats_datalist(root, exclude=[2])) == 2


def test_nifti_layout_and_loading(tmp_path):
    from monai.transforms import LoadImaged

    root = _nifti(tmp_path, {"00001": 0, "00003": 1})
    assert detect_brats_layout(root) == "nifti"
    items = brats_datalist(root)
    assert [(i["case_id"], i["label"]) for i in items] == [("00001", 0), ("00003", 1)]
    assert items[0]["T1wCE"].endswith("BraTS2021_00001_t1ce.nii.gz")
    # the bundle's reader setting: PydicomReader, falling back to NibabelReader for .nii.gz
    loaded = LoadImaged(keys=list(BRATS_MODALITIES), reader="PydicomReader")(items[0])
    assert loaded["T1wCE"].shape == (8, 8, 8) and float(loaded["T1wCE"].mean()) == pytest.approx(104.0)


@pytest.mark.parametrize("make", [_rsna, _nifti])
def test_missing_modality_names_case_and_modality(tmp_path, make):
    root = make(tmp_path, {"00007": 1, "00008": 0}, skip=("00008", "T2w"))
    with pytest.raises(ValueError, match=r"00008.*'T2w'"):
        brats_datalist(root)


def test_errors_name_root_and_csv(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        brats_datalist(tmp_path / "nope")
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match=r"neither the RSNA-MICCAI layout.*BraTS NIfTI"):
        brats_datalist(tmp_path / "other")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    _labels_csv(empty / "train_labels.csv", {})
    with pytest.raises(ValueError, match=f"no labelled case found under BraTS dataset root '{empty}'"):
        brats_datalist(empty)
    root = _rsna(tmp_path / "r", {"00001": 1})
    _labels_csv(root / "train_labels.csv", {"00002": 1})
    with pytest.raises(ValueError, match=r"have no label.*\['00001'\]"):
        brats_datalist(root)
    (root / "bad.csv").write_text("id,MGMT_value\n1,1\n")
    with pytest.raises(ValueError, match="has no column 'BraTS21ID'"):
        brats_datalist(root, labels_csv=root / "bad.csv")
    with pytest.raises(ValueError, match="`layout` should be one of"):
        brats_datalist(root, layout="dicom")


# ---------------------------------------------------------------- DICOM


def test_study3_series_mapping(shared_data):
    study = shared_data / "dicom" / "brain_tumor_progression" / "Study3"
    found = match_series(study)
    assert {k: Path(v).name for k, v in found.items()} == STUDY3_SERIES
    (item,) = study_datalist(study)
    assert item["case_id"] == "Study3" and {k: Path(item[k]).name for k in STUDY3_SERIES} == STUDY3_SERIES


def test_match_series_names_and_errors(tmp_path):
    for name in ("T2-FLAIR_ax", "T1_post_gd", "t2w", "T1 pre"):
        (tmp_path / name).mkdir()
    assert {k: Path(v).name for k, v in match_series(tmp_path).items()} == {
        "FLAIR": "T2-FLAIR_ax",
        "T1w": "T1 pre",
        "T1wCE": "T1_post_gd",
        "T2w": "t2w",
    }
    (tmp_path / "t2w").rmdir()
    with pytest.raises(ValueError, match=r"no series found for modality 'T2w'"):
        match_series(tmp_path)
    (tmp_path / "T2a").mkdir()
    (tmp_path / "T2b").mkdir()
    with pytest.raises(ValueError, match=r"'T2w' matches several series"):
        match_series(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        match_series(tmp_path / "missing")


def test_dicom_series_roundtrip(tmp_path):
    from monai.transforms import LoadImaged

    volume = np.arange(5 * 6 * 4, dtype=np.float32).reshape(5, 6, 4)
    paths = write_dicom_series(volume, tmp_path / "s", spacing=(2.0, 3.0, 4.0))
    assert len(paths) == 4
    image = LoadImaged("x", reader="PydicomReader")({"x": str(tmp_path / "s")})["x"]
    np.testing.assert_array_equal(image.numpy(), volume)
    np.testing.assert_allclose(np.abs(np.diag(image.affine.numpy()))[:3], [2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="should be a 3D"):
        write_dicom_series(volume[0], tmp_path / "t")


# ---------------------------------------------------------------- synthetic demo


def test_demo_is_deterministic_labelled_synthetic_and_reused(tmp_path, caplog):
    a = synthetic_brats_case(1, seed=3)
    np.testing.assert_array_equal(a["T1wCE"], synthetic_brats_case(1, seed=3)["T1wCE"])
    assert a["T1wCE"].max() > 2 * synthetic_brats_case(0, seed=3)["T1wCE"].max()
    with pytest.raises(ValueError, match="`label` should be 0 or 1"):
        synthetic_brats_case(2)

    with caplog.at_level("WARNING"):
        root = ensure_brats_demo(tmp_path / "demo", num_cases=4, shape=(8, 8, 8))
    assert "SYNTHETIC" in caplog.text
    marker = json.loads((Path(root) / DEMO_MARKER).read_text())
    assert "SYNTHETIC" in marker["note"]
    items = brats_datalist(root)
    assert sorted(i["label"] for i in items) == [0, 0, 1, 1]
    import pydicom

    first = next(Path(items[0]["FLAIR"]).glob("*.dcm"))
    assert "SYNTHETIC" in pydicom.dcmread(first).ImageComments
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folder left behind
    mtime = os.path.getmtime(Path(root) / DEMO_MARKER)
    assert ensure_brats_demo(tmp_path / "demo", num_cases=4, shape=(8, 8, 8)) == root
    assert os.path.getmtime(Path(root) / DEMO_MARKER) == mtime
    # a demo made with other parameters is regenerated; a folder without the marker is never touched
    assert ensure_brats_demo(tmp_path / "demo", num_cases=6, shape=(8, 8, 8)) == root
    assert len(brats_datalist(root)) == 6 and [p.name for p in tmp_path.iterdir()] == ["demo"]
    (tmp_path / "mine").mkdir()
    with pytest.raises(ValueError, match="exists but is not a synthetic demo"):
        ensure_brats_demo(tmp_path / "mine", num_cases=4, shape=(8, 8, 8))
    with pytest.raises(ValueError, match="`num_cases` should be an even int"):
        ensure_brats_demo(tmp_path / "x", num_cases=3)


# ---------------------------------------------------------------- bundle helpers


def test_bundle_root_from_config(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[3]
    monkeypatch.setattr("sys.argv", ["x"])
    monkeypatch.chdir(repo)
    assert bundle_root_from_config("crossd_brats") == str(repo / "bundles" / "crossd_brats")
    monkeypatch.chdir(repo / "bundles" / "crossd_brats")
    assert bundle_root_from_config("crossd_brats") == str(repo / "bundles" / "crossd_brats")
    monkeypatch.setattr("sys.argv", ["x", "--config_file", str(tmp_path / "b" / "configs" / "train.json")])
    assert bundle_root_from_config() == str(tmp_path / "b")
    monkeypatch.setattr("sys.argv", ["x"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cannot tell the bundle root"):
        bundle_root_from_config("crossd_brats")


def test_checkpoint_helpers(tmp_path, caplog):
    path = atomic_torch_save({"a": torch.ones(2)}, tmp_path / "m" / "x.pt")
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["x.pt"]
    assert not should_resume(False, path) and should_resume(True, path)
    with caplog.at_level("WARNING"):
        assert not should_resume(True, tmp_path / "none.pt")
    assert "from scratch" in caplog.text

    net = torch.nn.Linear(2, 2)
    assert read_json(tmp_path / "no.json", default={"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="not found"):
        read_json(tmp_path / "no.json")
    with pytest.raises(ValueError, match="Did you mean 'weak_probing'"):
        trainable_parameters(net, "weak_probe")


def test_classification_writer_decollated(tmp_path):
    from types import SimpleNamespace

    writer = ClassificationWriter(tmp_path, class_names=["a", "b"])
    batch = [{"case_id": "c1", "label": torch.tensor(1)}, {"case_id": "c2", "label": torch.tensor(0)}]
    output = [{"pred": torch.tensor([0.2, 0.8])}, {"pred": torch.tensor([0.9, 0.1])}]
    engine = SimpleNamespace(state=SimpleNamespace(batch=batch, output=output))
    writer._collect(engine)
    writer._write(engine)
    rows = json.loads((tmp_path / "predictions.json").read_text())["predictions"]
    assert [(r["case_id"], r["pred"], r["label"]) for r in rows] == [("c1", 1, 1), ("c2", 0, 0)]
    assert (tmp_path / "predictions.csv").read_text().splitlines()[0] == "case_id,prob_0,prob_1,pred,label"
