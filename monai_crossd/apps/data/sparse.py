"""Sparse annotation: a few fully labelled volumes, and one labelled slice of each other volume.

The annotation-cost case of hybrid 2D+3D training (:mod:`monai_crossd.apps.hybrid`): :func:`sparse_annotation`
decides which training volumes count as fully labelled and along which axis the other ones have their one labelled
slice; :class:`LabelledSliced` cuts that slice out of a loaded volume and its label.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, SpatialCrop, SqueezeDim
from monai.transforms.utils import generate_spatial_bounding_box

__all__ = ["LabelledSliced", "labelled_slice_index", "sparse_annotation"]


def sparse_annotation(
    datalist: Sequence[Mapping[str, Any]], num_full: int, seed: int = 0, axes: Sequence[int] = (0, 1, 2),
    axis_key: str = "slice_axis",
) -> dict[str, list[dict[str, Any]]]:
    """Split training volumes into ``num_full`` fully labelled ones and the rest, each with one labelled slice.

    A NumPy generator seeded with ``seed`` permutes the volumes and draws one axis from ``axes`` per volume; the
    first ``num_full`` volumes of the permutation are fully labelled, the others keep only the slice along their
    axis (``item[axis_key]``). The draws do not depend on ``num_full``, so for one ``seed`` the fully labelled
    volumes of a smaller ``num_full`` are among those of a larger one, and a volume's axis is always the same.

    Args:
        datalist: the training items (dicts, e.g. ``{"image": path, "label": path}``).
        num_full: fully labelled volumes, ``0 <= num_full <= len(datalist)``.
        seed: of the permutation and the axes. Defaults to 0.
        axes: spatial axes to choose from (0, 1, 2 of a ``(C, D, H, W)`` volume). Defaults to all three.
        axis_key: key of the chosen axis in the sliced items. Defaults to ``"slice_axis"``.

    Returns:
        ``{"full": [...], "sliced": [...]}``: copies of the items, each list in the order of ``datalist``.

    Raises:
        ValueError: ``num_full`` out of range, an item not a mapping, or ``axes`` empty or not in ``(0, 1, 2)``.

    Example:
        >>> parts = sparse_annotation([{"image": f"{i}.nii"} for i in range(4)], num_full=1, seed=0)
        >>> len(parts["full"]), len(parts["sliced"]), sorted(parts["sliced"][0])
        (1, 3, ['image', 'slice_axis'])
    """
    if isinstance(num_full, bool) or not isinstance(num_full, (int, np.integer)) or not 0 <= num_full <= len(datalist):
        raise ValueError(f"`num_full` should be an int in [0, {len(datalist)}] (the training volumes), got {num_full!r}.")
    axes = [int(a) for a in axes]
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"`axes` should be spatial axes among (0, 1, 2), got {axes!r}.")
    bad = next((i for i, item in enumerate(datalist) if not isinstance(item, Mapping)), None)
    if bad is not None:
        raise ValueError(f"`datalist` item {bad} should be a dict, got {type(datalist[bad]).__name__}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(datalist))
    drawn = rng.integers(0, len(axes), size=len(datalist))
    full = set(order[: int(num_full)].tolist())
    parts: dict[str, list[dict[str, Any]]] = {"full": [], "sliced": []}
    axis_of = {int(i): axes[int(drawn[rank])] for rank, i in enumerate(order)}
    for i, item in enumerate(datalist):
        if i in full:
            parts["full"].append(dict(item))
        else:
            parts["sliced"].append({**item, axis_key: axis_of[i]})
    return parts


def labelled_slice_index(label: torch.Tensor | np.ndarray, axis: int) -> int:
    """The slice an annotator labels along spatial ``axis``: the middle of the foreground's extent on that axis.

    Args:
        label: ``(C, D, H, W)`` label (foreground: > 0 in any channel).
        axis: spatial axis, 0, 1 or 2.

    Returns:
        the index; the middle of the axis when the label has no foreground.

    Example:
        >>> label = torch.zeros(1, 4, 8, 8); label[0, 1:4, 2, 2] = 1
        >>> labelled_slice_index(label, 0), labelled_slice_index(label, 1)
        (2, 2)
    """
    if axis not in (0, 1, 2) or label.ndim != 4:
        raise ValueError(f"`axis` should be 0, 1 or 2 of a (C, D, H, W) label, got axis {axis!r}, shape {tuple(label.shape)}.")
    start, end = generate_spatial_bounding_box(label, select_fn=lambda x: x > 0)
    if end[axis] <= start[axis]:
        return int(label.shape[axis + 1]) // 2
    return (int(start[axis]) + int(end[axis]) - 1) // 2


class LabelledSliced(MapTransform):
    """Keep the one labelled slice of a volume: ``(C, D, H, W)`` -> ``(C, ., .)`` for every key.

    The axis is the item's ``axis_key`` entry (from :func:`sparse_annotation`), the index
    :func:`labelled_slice_index` of ``item[label_key]``. MONAI's ``SpatialCrop`` and ``SqueezeDim`` cut the slice;
    a ``MetaTensor``'s affine becomes the in-plane part of the volume's (``SqueezeDim`` drops the sliced axis).

    Args:
        keys: keys of the volumes to slice (image and label).
        label_key: key of the label that locates the slice. Defaults to ``"label"``.
        axis_key: key of the axis. Defaults to ``"slice_axis"``.

    Raises:
        KeyError: the item lacks ``axis_key`` or ``label_key`` (named in the message).
        ValueError: a volume is not ``(C, D, H, W)``, the axis is not 0, 1 or 2, or the volumes differ in shape.

    Example:
        >>> item = {"image": torch.arange(8.0).reshape(1, 2, 2, 2), "label": torch.ones(1, 2, 2, 2), "slice_axis": 2}
        >>> LabelledSliced(["image", "label"])(item)["image"].tolist()  # slice 0 of the last axis
        [[[0.0, 2.0], [4.0, 6.0]]]
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", axis_key: str = "slice_axis") -> None:
        super().__init__(keys)
        self.label_key, self.axis_key = label_key, axis_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in (self.axis_key, self.label_key):
            if key not in d:
                raise KeyError(f"{type(self).__name__}: the item has no {key!r} key (keys: {sorted(map(str, d))}).")
        axis, label = d[self.axis_key], d[self.label_key]
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1, 2):
            raise ValueError(f"{type(self).__name__}: `{self.axis_key}` should be 0, 1 or 2, got {axis!r}.")
        index = labelled_slice_index(label, int(axis))
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != tuple(label.shape[1:]):
                raise ValueError(
                    f"{type(self).__name__}: {key!r} {tuple(d[key].shape)} and {self.label_key!r} "
                    f"{tuple(label.shape)} should have the same spatial shape."
                )
            start = [0, 0, 0]
            end = list(label.shape[1:])
            start[axis], end[axis] = index, index + 1
            d[key] = SqueezeDim(dim=int(axis) + 1)(SpatialCrop(roi_start=start, roi_end=end)(d[key]))
        return d
