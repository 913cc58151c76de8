"""The one train/validation(/test) split every datalist and study uses: MONAI's ``partition_dataset(_classes)``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from monai.data import partition_dataset, partition_dataset_classes

__all__ = ["split_datalist"]

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
