"""RadImageNet-layout image folders: classes, stratified deterministic splits, wrong depths, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_crossd.apps.data import image_folder_classes, image_folder_datalist, scan_image_folder

LAYOUT = {"CT/abdomen/normal": 10, "CT/abdomen/cyst": 5, "MR/brain/glioma": 2, "US/thyroid/nodule": 1}


@pytest.fixture
def root(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for name, n in LAYOUT.items():
        folder = tmp_path / name
        folder.mkdir(parents=True)
        for i in range(n):
            suffix = (".png", ".jpg", ".JPEG")[i % 3]
            Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(folder / f"img{i}{suffix}")
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.png").write_bytes(b"")
    return tmp_path


def test_classes_are_sorted_paths(root):
    assert image_folder_classes(root) == sorted(LAYOUT)
    found = scan_image_folder(root)
    assert {k: len(v) for k, v in found.items()} == LAYOUT


def test_split_is_stratified_disjoint_and_deterministic(root):
    classes = image_folder_classes(root)
    train = image_folder_datalist(root, "train", val_fraction=0.2)
    val = image_folder_datalist(root, "val", val_fraction=0.2)
    everything = image_folder_datalist(root, "all")
    assert len(everything) == sum(LAYOUT.values())
    assert {i["image"] for i in train} | {i["image"] for i in val} == {i["image"] for i in everything}
    assert not {i["image"] for i in train} & {i["image"] for i in val}
    per_class = {c: sum(i["class_name"] == c for i in val) for c in LAYOUT}
    assert per_class == {"CT/abdomen/normal": 2, "CT/abdomen/cyst": 1, "MR/brain/glioma": 0, "US/thyroid/nodule": 0}
    assert all(classes[i["label"]] == i["class_name"] for i in train + val)
    assert image_folder_datalist(root, "val", val_fraction=0.2) == val
    assert len(image_folder_datalist(root, "train", max_per_class=1)) == len(LAYOUT)


def test_given_classes_and_unknown_class(root):
    wider = ["AAA/x/y"] + sorted(LAYOUT)
    items = image_folder_datalist(root, classes=wider)
    assert min(i["label"] for i in items) == 1
    with pytest.raises(ValueError, match="classes not in `classes`"):
        image_folder_datalist(root, classes=["CT/abdomen/normal"])


def test_wrong_depth_is_skipped_with_a_warning(root, caplog):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "CT" / "stray.png")
    with caplog.at_level(logging.WARNING, logger="monai_crossd.apps.data.image_folder"):
        assert image_folder_classes(root) == sorted(LAYOUT)
    assert "Skipped 1 image files" in caplog.text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "`split` should be one of"),
        ({"val_fraction": 1.0}, r"`val_fraction` should be in \[0, 1\)"),
        ({"max_per_class": 0}, "`max_per_class` should be a positive int"),
    ],
)
def test_bad_arguments(root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_folder_datalist(root, **kwargs)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(ValueError, match="should be an existing directory"):
        image_folder_classes(tmp_path / "nope")
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no"):
        image_folder_classes(tmp_path)
