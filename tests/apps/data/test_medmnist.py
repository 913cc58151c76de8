"""MedMNIST npz datalists: one label space over several files, subsets, errors (synthetic npz + the embedded real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_crossd.apps.data import (
    existing_files,
    load_medmnist,
    medmnist_class_names,
    medmnist_datalist,
    medmnist_num_classes,
    write_medmnist_subset,
)

REPO = Path(__file__).resolve().parents[3]
EMBEDDED = REPO / "bundles" / "crossd_pretrain2d" / "data"
VESSEL = REPO / "bundles" / "crossd_vessel_classification" / "data" / "vesselmnist3d.npz"


def _npz(path: Path, n_classes: int, shape=(28, 28), sizes=(6, 3, 3), column=True) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % n_classes
        arrays[f"{split}_labels"] = labels[:, None] if column else labels
    np.savez(path, **arrays)
    return path


def test_load_medmnist_flattens_label_column(tmp_path):
    images, labels = load_medmnist(_npz(tmp_path / "a.npz", 3), "val")
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (3,) and labels.dtype == np.int64 and labels.tolist() == [0, 1, 2]


def test_combined_label_space(tmp_path):
    a = _npz(tmp_path / "a.npz", 2)
    b = _npz(tmp_path / "b.npz", 3, column=False)
    assert medmnist_class_names([a, b]) == ["a/0", "a/1", "b/0", "b/1", "b/2"]
    assert medmnist_num_classes([a, b]) == 5
    items = medmnist_datalist([a, b], "train")
    assert len(items) == 12
    assert [i["label"] for i in items if i["source"] == "a"] == [0, 1, 0, 1, 0, 1]
    assert [i["label"] for i in items if i["source"] == "b"] == [2, 3, 4, 2, 3, 4]
    first = items[0]
    assert first["image"].shape == (1, 28, 28) and first["image"].dtype == np.float32
    assert first["case_id"] == "a_train_00000" and 0 <= first["image"].min() and first["image"].max() <= 255


def test_max_samples_is_a_seeded_subset(tmp_path):
    a = _npz(tmp_path / "a.npz", 2, sizes=(20, 3, 3))
    one = medmnist_datalist(a, "train", max_samples=5, seed=1)
    two = medmnist_datalist(a, "train", max_samples=5, seed=1)
    assert len(one) == 5 and [i["case_id"] for i in one] == [i["case_id"] for i in two]
    assert len({i["case_id"] for i in one}) == 5
    assert len(medmnist_datalist(a, "train", max_samples=100)) == 20


def test_3d_volumes(tmp_path):
    v = _npz(tmp_path / "v.npz", 2, shape=(8, 8, 8))
    (item, *_) = medmnist_datalist(v, "test")
    assert item["image"].shape == (1, 8, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "training"}, "`split` should be one of"),
        ({"split": "train", "max_samples": 0}, "`max_samples` should be a positive int"),
        ({"split": "train", "paths": []}, "`paths` should be a path or a non-empty sequence"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    kwargs.setdefault("paths", _npz(tmp_path / "a.npz", 2))
    with pytest.raises(ValueError, match=match):
        medmnist_datalist(**kwargs)


def test_missing_file_and_key_and_mixed_dims(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        medmnist_datalist(tmp_path / "nope.npz", "train")
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"missing \['train_labels'\]"):
        load_medmnist(tmp_path / "bad.npz", "train")
    np.savez(tmp_path / "multi.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="single-label"):
        load_medmnist(tmp_path / "multi.npz", "train")
    a, v = _npz(tmp_path / "a.npz", 2), _npz(tmp_path / "v.npz", 2, shape=(8, 8, 8))
    with pytest.raises(ValueError, match="should all be 2D or all 3D"):
        medmnist_datalist([a, v], "train")


def test_write_subset_and_existing_files(tmp_path):
    src = _npz(tmp_path / "a.npz", 2, sizes=(20, 10, 10))
    counts = write_medmnist_subset(src, tmp_path / "s.npz", {"train": 5, "val": None})
    assert counts == {"train": 5, "val": 10}
    with np.load(tmp_path / "s.npz") as data:
        assert sorted(data.files) == ["train_images", "train_labels", "val_images", "val_labels"]
        assert data["train_labels"].shape == (5, 1)
    assert not list(tmp_path.glob("*.tmp*"))
    assert existing_files([tmp_path / "missing.npz"], [src]) == [str(src)]
    assert existing_files([src], [tmp_path / "missing.npz"]) == [str(src)]
    with pytest.raises(ValueError, match="Neither"):
        existing_files([tmp_path / "x.npz"], [tmp_path / "y.npz"])


def test_embedded_real_files():
    files = [EMBEDDED / "breastmnist.npz", EMBEDDED / "pneumoniamnist_subset.npz"]
    assert medmnist_class_names(files) == [
        "breastmnist/0",
        "breastmnist/1",
        "pneumoniamnist_subset/0",
        "pneumoniamnist_subset/1",
    ]
    val = medmnist_datalist(files, "val")
    assert len(val) == 78 + 150 and {i["label"] for i in val} == {0, 1, 2, 3}
    vessel = medmnist_datalist(VESSEL, "val")
    assert len(vessel) == 191 and vessel[0]["image"].shape == (1, 28, 28, 28)
    assert sum(i["label"] for i in vessel) == 22
