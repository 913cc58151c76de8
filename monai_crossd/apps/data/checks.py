"""Input checks for the bundles' data path: unreadable files, DICOM series, non-finite voxels, datalists.

MONAI's readers fail on a damaged file with messages that do not name it (a truncated ``.nii.gz`` gives
``EOFError: Compressed file ended before the end-of-stream marker was reached``; garbage bytes give "cannot find a
suitable reader ... please install the reader libraries"), and they accept NaN voxels and a folder holding two
DICOM series. The transforms here fail early with the key and the file named:

* :class:`CheckedLoadImaged`: MONAI's ``LoadImaged`` that checks a DICOM series folder first
  (:func:`monai_crossd.apps.data.check_dicom_series`) and re-raises any read error as a ``ValueError`` naming the key
  and the file.
* :class:`CheckFinited`: fails on NaN/Inf voxels with the key, the file and the count.
* :func:`check_datalist`: a non-empty list of dicts with the required keys and integer labels in
  ``[0, num_classes)``, the datalist and the item named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform

from monai_crossd.apps.data.dicom import check_dicom_series

__all__ = ["CheckFinited", "CheckedLoadImaged", "check_datalist"]

logger = logging.getLogger(__name__)


def _source(value: Any, data: Mapping, key: Hashable) -> str:
    """The file a loaded value came from (MetaTensor meta or the ``<key>_meta_dict``), or ``"<unknown file>"``."""
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return str(name) if name else "<unknown file>"


class CheckedLoadImaged(LoadImaged):
    """``LoadImaged`` whose read errors name the key and the file, and which checks DICOM series folders first.

    Same arguments as :class:`monai.transforms.LoadImaged`, plus:

    Args:
        check_dicom: run :func:`monai_crossd.apps.data.check_dicom_series` on every value that is a folder (a DICOM
            series: one series, no missing slice, regular spacing). Defaults to ``True``.

    Raises:
        ValueError: a value is neither an existing file nor a folder, a DICOM folder fails its check, or the reader
            fails (truncated or corrupt file); the message names the key and the path.

    Example:
        >>> load = CheckedLoadImaged(keys="image", reader="NibabelReader", image_only=True)
        >>> load({"image": "broken.nii.gz"})  # doctest: +SKIP
        ValueError: could not read key 'image' file 'broken.nii.gz' (truncated or corrupt?): EOFError: ...
    """

    def __init__(self, keys: KeysCollection, *args: Any, check_dicom: bool = True, **kwargs: Any) -> None:
        super().__init__(keys, *args, **kwargs)
        self.check_dicom = check_dicom
        self._loader = _NamedLoader(self._loader)

    def __call__(self, data: Mapping, reader: Any = None) -> dict:
        for key in self.key_iterator(dict(data)):
            paths = data[key] if isinstance(data[key], (list, tuple)) else [data[key]]
            for path in paths:
                if not isinstance(path, (str, os.PathLike)):
                    continue
                if os.path.isdir(path):
                    if self.check_dicom:
                        check_dicom_series(path)
                elif not os.path.isfile(path):
                    raise ValueError(f"key {key!r}: file {os.fspath(path)!r} does not exist.")
        try:
            return super().__call__(data, reader)
        except _ReadError as err:
            cause = err.__cause__
            keys = [k for k in self.keys if k in data and _same(data[k], err.filename)] or ["?"]
            raise ValueError(
                f"could not read key {keys[0]!r} file {_fspath(err.filename)!r} (truncated or corrupt?): "
                f"{type(cause).__name__}: {cause}"
            ) from cause


class _ReadError(Exception):
    def __init__(self, filename: Any) -> None:
        super().__init__(filename)
        self.filename = filename


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else value


def _same(value: Any, filename: Any) -> bool:
    return value is filename or (isinstance(value, (str, os.PathLike)) and _fspath(value) == _fspath(filename))


class _NamedLoader:
    """Calls MONAI's ``LoadImage`` and tags any failure with the file it was reading."""

    def __init__(self, loader: Any) -> None:
        self._inner = loader

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # settings such as ``image_only`` (MONAI Label sets ``_loader.image_only``) belong to the wrapped loader
        if name == "_inner":
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    def __call__(self, filename: Any, reader: Any = None) -> Any:
        try:
            return self._inner(filename, reader)
        except Exception as err:  # noqa: BLE001 - every reader failure is re-raised with the file named
            raise _ReadError(filename) from err


class CheckFinited(MapTransform):
    """Fail on NaN or infinite values, naming the key, the source file and the number of non-finite voxels.

    Put it right after loading (before normalisation turns one NaN into a NaN image).

    Args:
        keys: keys of the images to check.
        allow_missing_keys: skip keys absent from the data. Defaults to ``False``.

    Raises:
        ValueError: a value holds NaN or Inf.

    Example:
        >>> CheckFinited("image")({"image": torch.tensor([1.0, float("nan")])})  # doctest: +SKIP
        ValueError: key 'image' (file '<unknown file>') has 1 non-finite voxels (NaN or Inf) out of 2.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
            if not (array.is_floating_point() or array.is_complex()):
                continue
            bad = int((~torch.isfinite(array)).sum())
            if bad:
                raise ValueError(
                    f"key {key!r} (file {_source(value, d, key)!r}) has {bad} non-finite voxels (NaN or Inf) out of "
                    f"{array.numel()}."
                )
        return d


def check_datalist(
    datalist: Sequence[Mapping],
    name: str = "datalist",
    keys: Sequence[str] = ("image",),
    num_classes: int | None = None,
    label_key: str = "label",
) -> Sequence[Mapping]:
    """Check a datalist before it reaches a dataset; returns it unchanged (so configs can wrap the expression).

    Args:
        datalist: list of item dicts.
        name: how the datalist is named in errors (e.g. the file and section ``"dataset.json#training"``).
            Defaults to ``"datalist"``.
        keys: keys every item must have. Defaults to ``("image",)``.
        num_classes: when given, integer (or one-hot / multi-label sequence) labels under ``label_key`` must index
            ``[0, num_classes)``; path labels (segmentation masks) are not opened.
        label_key: the label key. Defaults to ``"label"``.

    Raises:
        ValueError: the datalist is empty, or an item is not a dict, misses a key or has a label out of range; the
            message names the datalist, the item index and (when it has one) its image.
        TypeError: ``datalist`` is not a sequence.
    """
    if isinstance(datalist, (str, bytes, Mapping)) or not isinstance(datalist, Sequence):
        raise TypeError(f"{name} should be a list of dicts, got {type(datalist).__name__}.")
    if len(datalist) == 0:
        raise ValueError(f"{name} is empty: no item to read.")
    for index, item in enumerate(datalist):
        if not isinstance(item, Mapping):
            raise ValueError(f"{name} item {index} should be a dict, got {type(item).__name__}: {item!r}.")
        where = f"{name} item {index}" + (f" ({item['image']!r})" if isinstance(item.get("image"), (str, os.PathLike)) else "")
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"{where} has no {missing[0]!r} key; its keys are {sorted(map(str, item))}.")
        if num_classes is None or label_key not in item or isinstance(item[label_key], (str, os.PathLike)):
            continue
        label = np.asarray(item[label_key])
        if label.dtype.kind not in "biuf":
            raise ValueError(f"{where}: {label_key!r} should be a class index, got {item[label_key]!r}.")
        if label.size == 1:  # a (1,) label is a class index
            label = label.reshape(())
        if label.ndim == 0:
            value = float(label)
            if value != int(value) or not 0 <= value < num_classes:
                raise ValueError(
                    f"{where}: {label_key!r} {label.item()!r} is out of range for num_classes={num_classes} "
                    f"(expected an int in [0, {num_classes - 1}])."
                )
        elif label.shape[-1] != num_classes:
            raise ValueError(
                f"{where}: {label_key!r} has {label.shape[-1]} entries, expected one per class (num_classes="
                f"{num_classes})."
            )
    return datalist
