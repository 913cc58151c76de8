"""Sparse annotation: which volumes are fully labelled, which slice the others keep, and cutting it out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_crossd.apps.data import LabelledSliced, labelled_slice_index, sparse_annotation

ITEMS = [{"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz"} for i in range(30)]


def test_counts_order_and_copies():
    parts = sparse_annotation(ITEMS, 7, seed=3)
    assert len(parts["full"]) == 7 and len(parts["sliced"]) == 23
    names = [d["image"] for d in parts["full"] + parts["sliced"]]
    assert sorted(names) == sorted(d["image"] for d in ITEMS)  # a partition
    order = [d["image"] for d in ITEMS]
    for part in parts.values():  # each part in the datalist's order
        assert [order.index(d["image"]) for d in part] == sorted(order.index(d["image"]) for d in part)
    assert all("slice_axis" not in d for d in parts["full"])
    assert all(d["slice_axis"] in (0, 1, 2) for d in parts["sliced"])
    assert {d["slice_axis"] for d in parts["sliced"]} == {0, 1, 2}  # 23 draws: every axis appears
    parts["full"][0]["image"] = "changed"
    assert all(d["image"] != "changed" for d in ITEMS)  # copies


def test_deterministic_nested_and_axis_per_case():
    a, b = sparse_annotation(ITEMS, 5, seed=1), sparse_annotation(ITEMS, 5, seed=1)
    assert a == b
    small, large = sparse_annotation(ITEMS, 5, seed=1), sparse_annotation(ITEMS, 20, seed=1)
    assert {d["image"] for d in small["full"]} < {d["image"] for d in large["full"]}
    axes_small = {d["image"]: d["slice_axis"] for d in small["sliced"]}
    axes_large = {d["image"]: d["slice_axis"] for d in large["sliced"]}
    assert all(axes_small[k] == v for k, v in axes_large.items())  # a case keeps its axis whatever N is
    other = sparse_annotation(ITEMS, 5, seed=2)
    assert {d["image"] for d in other["full"]} != {d["image"] for d in small["full"]}


def test_edges_and_axes_subset():
    assert sparse_annotation(ITEMS, 0)["full"] == [] and len(sparse_annotation(ITEMS, 30)["sliced"]) == 0
    parts = sparse_annotation(ITEMS, 0, axes=(2,), axis_key="axis")
    assert {d["axis"] for d in parts["sliced"]} == {2}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_full": 31}, "num_full"),
        ({"num_full": -1}, "num_full"),
        ({"num_full": True}, "num_full"),
        ({"num_full": 2, "axes": (3,)}, "axes"),
        ({"num_full": 2, "axes": ()}, "axes"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sparse_annotation(ITEMS, **kwargs)


def test_bad_items_named():
    with pytest.raises(ValueError, match="item 1"):
        sparse_annotation([{"image": "a"}, "b.nii.gz"], 1)


def _label():
    label = torch.zeros(1, 10, 12, 14)
    label[0, 2:7, 5:6, 3:12] = 1  # extent: axis 0 [2, 7), axis 1 [5, 6), axis 2 [3, 12)
    label[0, 4, 5, 4] = 2
    return label


def test_labelled_slice_index_is_the_middle_of_the_extent():
    label = _label()
    assert [labelled_slice_index(label, a) for a in (0, 1, 2)] == [4, 5, 7]
    assert labelled_slice_index(np.asarray(label), 2) == 7
    assert labelled_slice_index(torch.zeros(1, 10, 12, 14), 1) == 6  # no foreground: the middle
    with pytest.raises(ValueError, match="axis"):
        labelled_slice_index(label, 3)
    with pytest.raises(ValueError, match="axis"):
        labelled_slice_index(label[0], 0)


@pytest.mark.parametrize("axis, shape", [(0, (1, 12, 14)), (1, (1, 10, 14)), (2, (1, 10, 12))])
def test_labelled_sliced_cuts_the_slice(axis, shape):
    image = torch.randn(1, 10, 12, 14)
    label = _label()
    out = LabelledSliced(["image", "label"])({"image": image, "label": label, "slice_axis": axis, "case": "x"})
    index = [4, 5, 7][axis]
    assert tuple(out["image"].shape) == shape and tuple(out["label"].shape) == shape
    assert torch.equal(torch.as_tensor(out["image"]), image.select(axis + 1, index))
    assert torch.equal(torch.as_tensor(out["label"]), label.select(axis + 1, index))
    assert out["label"].max() >= 1 and out["case"] == "x"


def test_labelled_sliced_affine_is_the_in_plane_part():
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]))
    image = MetaTensor(torch.randn(1, 10, 12, 14), affine=affine)
    label = MetaTensor(_label(), affine=affine)
    out = LabelledSliced(["image", "label"])({"image": image, "label": label, "slice_axis": 1})
    # MONAI's SqueezeDim keeps the in-plane rows/columns (axes 0 and 2: 2 mm, 4 mm) of the 3D affine
    assert torch.equal(out["image"].affine.float(), torch.diag(torch.tensor([2.0, 4.0, 1.0])))
    assert torch.equal(out["label"].affine.float(), out["image"].affine.float())


def test_labelled_sliced_errors_name_the_key():
    item = {"image": torch.zeros(1, 4, 4, 4), "label": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(KeyError, match="slice_axis"):
        LabelledSliced(["image", "label"])(item)
    with pytest.raises(ValueError, match="slice_axis"):
        LabelledSliced(["image", "label"])({**item, "slice_axis": 5})
    with pytest.raises(ValueError, match="'image'"):
        LabelledSliced(["image", "label"])({**item, "image": torch.zeros(1, 4, 4, 5), "slice_axis": 0})
    with pytest.raises(KeyError, match="'seg'"):
        LabelledSliced(["image"], label_key="seg")({**item, "slice_axis": 0})
