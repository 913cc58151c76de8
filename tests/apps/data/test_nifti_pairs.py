"""Image/label NIfTI pairs matched by name (Decathlon layout without dataset.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_crossd.apps.data import paired_nifti_datalist


@pytest.fixture
def root(tmp_path) -> Path:
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
        for i in range(10):
            (tmp_path / sub / f"case_{i:03d}.nii.gz").write_bytes(b"")
    (tmp_path / "imagesTr" / "._case_000.nii.gz").write_bytes(b"")  # macOS resource fork: ignored
    (tmp_path / "imagesTr" / "readme.txt").write_text("x")
    return tmp_path


def test_split_is_disjoint_deterministic_and_paired(root):
    train = paired_nifti_datalist(root, "train", val_fraction=0.3)
    val = paired_nifti_datalist(root, "val", val_fraction=0.3)
    assert len(train) == 7 and len(val) == 3 and len(paired_nifti_datalist(root)) == 10
    assert not {d["image"] for d in train} & {d["image"] for d in val}
    assert paired_nifti_datalist(root, "val", val_fraction=0.3) == val
    for item in train + val:
        assert Path(item["image"]).name == Path(item["label"]).name
        assert Path(item["image"]).parent.name == "imagesTr" and Path(item["label"]).parent.name == "labelsTr"


def test_exclude_and_max_cases(root):
    items = paired_nifti_datalist(root, exclude=["case_000.nii.gz", str(root / "imagesTr" / "case_001.nii.gz")])
    assert [Path(d["image"]).name for d in items][:2] == ["case_002.nii.gz", "case_003.nii.gz"]
    assert len(paired_nifti_datalist(root, max_cases=4)) == 4


def test_errors(root, tmp_path):
    (root / "imagesTr" / "orphan.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="have no label of the same name"):
        paired_nifti_datalist(root)
    with pytest.raises(ValueError, match="folder .* does not exist"):
        paired_nifti_datalist(tmp_path / "nope")
    with pytest.raises(ValueError, match="`split` should be one of"):
        paired_nifti_datalist(root, split="test")
    with pytest.raises(ValueError, match=r"`val_fraction` should be in \[0, 1\)"):
        paired_nifti_datalist(root, val_fraction=1)


def test_shared_hippocampus(shared_data):
    items = paired_nifti_datalist(shared_data / "hippocampus")
    assert len(items) == 208
