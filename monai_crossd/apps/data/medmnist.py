"""MedMNIST ``.npz`` files as MONAI datalists (2D and 3D), several files sharing one label space.

MedMNIST v2 (Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification", Scientific Data 2023) ships each dataset as one ``.npz`` with the keys
``{train,val,test}_images`` (``(N, H, W)`` or ``(N, H, W, D)`` uint8) and ``{train,val,test}_labels``
(``(N, 1)`` or ``(N,)``). The functions here turn such files into lists of dictionaries
``{"image": (1, H, W[, D]) array, "label": int, "source": name}`` that any MONAI ``Dataset`` takes, and
combine several files (e.g. BreastMNIST + PneumoniaMNIST) into one label space by offsetting the labels of
each file by the number of classes of the files before it.

Example:
    >>> files = ["breastmnist.npz", "pneumoniamnist.npz"]  # doctest: +SKIP
    >>> medmnist_class_names(files)  # doctest: +SKIP
    ['breastmnist/0', 'breastmnist/1', 'pneumoniamnist/0', 'pneumoniamnist/1']
    >>> train = medmnist_datalist(files, "train", max_samples=500)  # doctest: +SKIP
    >>> train[0]["image"].shape, train[0]["label"]  # doctest: +SKIP
    ((1, 28, 28), 3)
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "MEDMNIST_SPLITS",
    "existing_files",
    "load_medmnist",
    "medmnist_class_names",
    "medmnist_datalist",
    "medmnist_num_classes",
    "write_medmnist_subset",
]

logger = logging.getLogger(__name__)

MEDMNIST_SPLITS = ("train", "val", "test")

PathLike = str | os.PathLike


def _as_paths(paths: PathLike | Sequence[PathLike], name: str = "paths") -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Sequence) or len(paths) == 0:
        raise ValueError(f"`{name}` should be a path or a non-empty sequence of paths, got {paths!r}.")
    return [os.fspath(p) for p in paths]


def _check_split(split: str) -> str:
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"`split` should be one of {MEDMNIST_SPLITS}, got {split!r}.")
    return split


def _source_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def load_medmnist(path: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of a MedMNIST ``.npz``.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        ``images`` ``(N, H, W)`` or ``(N, H, W, D)`` as stored (uint8), and ``labels`` ``(N,)`` int64.

    Raises:
        ValueError: when the file lacks the split's keys or images and labels disagree in length, or the
            labels are multi-label (more than one column).
    """
    split = _check_split(split)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"MedMNIST file {path!r} does not exist.")
    try:
        archive = np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"MedMNIST file {path!r} could not be read (truncated or corrupt?): {err}") from err
    with archive as data:
        keys = (f"{split}_images", f"{split}_labels")
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"MedMNIST file {path!r} should contain keys {keys}, missing {missing}; has {data.files}.")
        images, labels = data[keys[0]], data[keys[1]]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"MedMNIST file {path!r}: `{keys[1]}` should have shape (N,) or (N, 1) (single-label), "
            f"got {labels.shape}."
        )
    if images.ndim not in (3, 4) or len(images) != len(labels):
        raise ValueError(
            f"MedMNIST file {path!r}: `{keys[0]}` should be (N, H, W) or (N, H, W, D) with N = {len(labels)} "
            f"labels, got {images.shape}."
        )
    return images, labels.astype(np.int64)


def _file_num_classes(path: str) -> int:
    """Classes in one file: ``max label + 1`` over every split the file holds."""
    top = -1
    with np.load(path) as data:
        for split in MEDMNIST_SPLITS:
            key = f"{split}_labels"
            if key in data.files and data[key].size:
                top = max(top, int(data[key].max()))
    if top < 0:
        raise ValueError(f"MedMNIST file {path!r} holds no labels in any of the splits {MEDMNIST_SPLITS}.")
    return top + 1


def medmnist_class_names(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Names of the combined label space, ``"<file stem>/<label>"``, in label order.

    Args:
        paths: one ``.npz`` or several; their label spaces are concatenated in this order.
    """
    names: list[str] = []
    for path in _as_paths(paths):
        if not os.path.isfile(path):
            raise ValueError(f"MedMNIST file {path!r} does not exist.")
        names += [f"{_source_name(path)}/{i}" for i in range(_file_num_classes(path))]
    return names


def medmnist_num_classes(paths: PathLike | Sequence[PathLike]) -> int:
    """Size of the combined label space of ``paths`` (see :func:`medmnist_class_names`)."""
    return len(medmnist_class_names(paths))


def medmnist_datalist(
    paths: PathLike | Sequence[PathLike],
    split: str,
    max_samples: int | None = None,
    seed: int = 0,
    dtype: str | np.dtype = np.float32,
) -> list[dict]:
    """A MONAI datalist from one split of one or several MedMNIST files, in one label space.

    Args:
        paths: one ``.npz`` or several. The labels of file ``i`` are offset by the number of classes of
            files ``0 .. i-1`` (see :func:`medmnist_class_names`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        max_samples: keep at most this many items per file, chosen at random with ``seed`` (class
            proportions kept on average). Defaults to None (all).
        seed: for ``max_samples``. Defaults to 0.
        dtype: of the returned images (values kept in ``[0, 255]``). Defaults to float32.

    Returns:
        ``[{"image": (1, H, W[, D]) array, "label": int, "source": str, "case_id": str}, ...]``; ``case_id``
        is ``"<file stem>_<split>_<index in the split>"``.

    Raises:
        ValueError: for a missing file or key, a bad ``split`` or ``max_samples``, or files whose images
            differ in number of spatial dimensions.
    """
    paths = _as_paths(paths)
    _check_split(split)
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"`max_samples` should be a positive int or None, got {max_samples!r}.")
    items: list[dict] = []
    offset, ndim = 0, None
    for path in paths:
        images, labels = load_medmnist(path, split)
        if ndim is None:
            ndim = images.ndim
        elif images.ndim != ndim:
            raise ValueError(
                f"MedMNIST files in `paths` should all be 2D or all 3D; {path!r} has images {images.shape[1:]}, "
                f"expected {ndim - 1} spatial dims."
            )
        index = np.arange(len(labels))
        if max_samples is not None and max_samples < len(index):
            index = np.sort(np.random.default_rng(seed).choice(index, size=max_samples, replace=False))
        source = _source_name(path)
        for i in index:
            items.append(
                {
                    "image": images[i][None].astype(dtype),
                    "label": int(labels[i]) + offset,
                    "source": source,
                    "case_id": f"{source}_{split}_{i:05d}",
                }
            )
        logger.info("MedMNIST %s[%s]: %d of %d items, labels offset by %d.", path, split, len(index), len(labels), offset)
        offset += _file_num_classes(path)
    return items


def existing_files(preferred: Sequence[PathLike], fallback: Sequence[PathLike]) -> list[str]:
    """``preferred`` if every file in it exists, else ``fallback`` (e.g. full data when present, else an
    embedded subset). Logs which one was chosen.

    Raises:
        ValueError: when neither list exists in full.
    """
    preferred, fallback = _as_paths(preferred, "preferred"), _as_paths(fallback, "fallback")
    for name, candidate in (("preferred", preferred), ("fallback", fallback)):
        if all(os.path.isfile(p) for p in candidate):
            logger.info("Using the %s data files %s.", name, candidate)
            return candidate
    raise ValueError(f"Neither `preferred` {preferred} nor `fallback` {fallback} files all exist.")


def write_medmnist_subset(
    src: PathLike, dst: PathLike, sizes: Mapping[str, int | None], seed: int = 0
) -> dict[str, int]:
    """Write a MedMNIST ``.npz`` holding a random subset of each split of ``src`` (compressed, same keys;
    labels keep their stored shape). Used to embed small real data in bundles.

    Args:
        src: the original file.
        dst: the file to write (written to a temporary name, then renamed).
        sizes: items per split, e.g. ``{"train": 600, "val": 100, "test": 100}``; None keeps the split whole;
            splits not named are dropped.
        seed: of the random choice. Defaults to 0.

    Returns:
        the number of items written per split.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    out: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    with np.load(src) as data:
        for split, size in sizes.items():
            _check_split(split)
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            index = np.arange(len(images))
            if size is not None and size < len(index):
                index = np.sort(rng.choice(index, size=size, replace=False))
            out[f"{split}_images"], out[f"{split}_labels"] = images[index], labels[index]
            counts[split] = len(index)
    tmp = f"{dst}.tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, dst)
    return counts
