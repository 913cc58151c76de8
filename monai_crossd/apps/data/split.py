"""The one train/validation(/test) split every datalist and study uses: MONAI's ``partition_dataset(_classes)``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from monai.data import partition_dataset, partition_dataset_classes

from monai_crossd.utils import look_up

__all__ = ["SPLITS", "check_train_val", "split_datalist", "train_val_part"]

SPLITS = ("train", "val", "all")  #: the parts :func:`train_val_part` returns

T = TypeVar("T")


def split_datalist(
    datalist: Sequence[T], ratios: Sequence[float] = (0.8, 0.2), seed: int = 0, label_key: Hashable | None = None
) -> list[list[T]]:
    """Deterministic random split of ``datalist`` by ``ratios``, stratified by ``label_key`` when given.

    MONAI's ``partition_dataset`` (``partition_dataset_classes`` with ``label_key``) with ``shuffle=True`` and
    ``seed`` chooses the items of each part; each part keeps the order of ``datalist``.

    Args:
        datalist: the items (dicts when ``label_key`` is given).
        ratios: relative size of each part, e.g. ``(0.8, 0.2)`` for train/validation or ``(0.6, 0.2, 0.2)`` for
            train/validation/test. Defaults to ``(0.8, 0.2)``.
        seed: of the shuffle. Defaults to 0.
        label_key: item key holding the class, to split each class by ``ratios``. Defaults to None (not stratified).

    Returns:
        one list per ratio.

    Raises:
        ValueError: a ratio is not positive, ``datalist`` is empty, an item lacks ``label_key``, or a part
            would be empty.

    Example:
        >>> split_datalist(list(range(10)), (0.8, 0.2), seed=0)
        [[1, 2, 3, 4, 6, 7, 8, 9], [0, 5]]
    """
    if not ratios or any(not float(r) > 0 for r in ratios):
        raise ValueError(f"`ratios` should be positive numbers, got {ratios!r}.")
    if not datalist:
        raise ValueError("`datalist` is empty: nothing to split.")
    index = list(range(len(datalist)))
    if label_key is None:
        parts = partition_dataset(index, ratios=list(ratios), shuffle=True, seed=seed)
    else:
        missing = next((i for i, item in enumerate(datalist) if label_key not in item), None)  # type: ignore[operator]
        if missing is not None:
            raise ValueError(f"datalist item {missing} has no {label_key!r} key: {datalist[missing]!r}.")
        classes = [datalist[i][label_key] for i in index]  # type: ignore[index]
        parts = partition_dataset_classes(index, classes, ratios=list(ratios), shuffle=True, seed=seed)
    sizes = [len(p) for p in parts]
    if 0 in sizes:
        raise ValueError(f"splitting {len(datalist)} items by `ratios`={tuple(ratios)} leaves an empty part {sizes}.")
    return [[datalist[i] for i in sorted(p)] for p in parts]


def check_train_val(split: str, val_fraction: float) -> str:
    """``split`` (one of :data:`SPLITS`) after checking it and ``val_fraction`` (in ``[0, 1)``), before any file is read.

    Raises:
        ValueError: naming ``split`` or ``val_fraction``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"`val_fraction` should be in [0, 1), got {val_fraction!r}.")
    return look_up(split, SPLITS, "split")


def train_val_part(
    items: Sequence[T], split: str, val_fraction: float, seed: int = 0, label_key: Hashable | None = None
) -> list[T]:
    """One part of a train/validation split of ``items``: ``"train"``, ``"val"`` or ``"all"`` (every item).

    The parts come from :func:`split_datalist` with ratios ``(1 - val_fraction, val_fraction)``; with
    ``val_fraction=0`` every item is ``"train"`` and ``"val"`` is empty.

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`, or ``val_fraction`` is outside ``[0, 1)``.

    Example:
        >>> train_val_part(list(range(10)), "val", 0.2)
        [0, 5]
    """
    if check_train_val(split, val_fraction) == "all":
        return list(items)
    if not val_fraction:
        return list(items) if split == "train" else []
    train, val = split_datalist(items, (1 - val_fraction, val_fraction), seed, label_key)
    return train if split == "train" else val
