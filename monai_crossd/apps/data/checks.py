"""Input checks for the bundles' data path: unreadable files, DICOM series, non-finite voxels, datalists.

MONAI's readers fail on a damaged file with messages that do not name it (a truncated ``.nii.gz`` gives
``EOFError: Compressed file ended before the end-of-stream marker was reached``; garbage bytes give "cannot find a
suitable reader ... please install the reader libraries"), and they accept NaN voxels and a folder holding two
DICOM series. The transforms here fail early with the key and the file named:

* :class:`CheckedLoadImaged`: MONAI's ``LoadImaged`` that checks a DICOM series folder first
  (:func:`monai_crossd.apps.data.check_dicom_series`), reads what its reader cannot (``.nrrd``/``.mha``/``.mhd``, a
  DICOM series in a transfer syntax pydicom has no decoder for) with
  :class:`~monai_crossd.apps.data.SimpleITKReader`, and re-raises any read error as a ``ValueError`` naming the key,
  the file, each reader's reason and the likely problem.
* :class:`CheckFinited`: fails on NaN/Inf voxels with the key, the file and the count.
* :func:`check_datalist`: a non-empty list of dicts with the required keys and integer labels in
  ``[0, num_classes)``, the datalist and the item named.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform
from monai.utils import ensure_tuple

from monai_crossd.apps.data.dicom import check_dicom_series
from monai_crossd.apps.data.sitk_reader import SIMPLEITK_ONLY_SUFFIXES, SIMPLEITK_SUFFIXES, SimpleITKReader, has_sitk

__all__ = ["CheckFinited", "CheckedLoadImaged", "check_datalist"]

logger = logging.getLogger(__name__)


def _meta(value: Any, data: Mapping, key: Hashable) -> Mapping:
    """The metadata of a loaded value (MetaTensor meta or the ``<key>_meta_dict``), or ``{}``."""
    meta = getattr(value, "meta", None) or data.get(f"{key}_meta_dict") or {}
    return meta if isinstance(meta, Mapping) else {}


def _source(value: Any, data: Mapping, key: Hashable) -> str:
    """The file a loaded value came from (see ``_meta``), or ``"<unknown file>"``."""
    name = _meta(value, data, key).get("filename_or_obj")
    return str(name) if name else "<unknown file>"


# What a reader's error says, tried in this order by ``_problem``. A truncated file is not handed to SimpleITK: ITK's
# NIfTI reader fills a short read with zeros instead of failing.
_MISSING_DECODER = re.compile(
    r"missing (?:required )?dependencies|no (?:available )?(?:pixel data |image )?(?:decoder|handler)", re.I
)
_TRUNCATED = re.compile(
    r"EOFError|end-of-stream|expected \d+ bytes|could the file be damaged|corrupt|truncated|not read completely|"
    r"fread got only|doesn't match the expected length",
    re.I,
)
_UNRECOGNISED = re.compile(r"cannot find a suitable reader|Unable to determine ImageIO reader|InvalidDicomError", re.I)


def _one_line(err: BaseException, width: int = 300) -> str:
    """``"Type: message"`` on one line: SimpleITK's source locations and MONAI's install advice dropped, cut in the
    middle when longer than ``width``."""
    lines = []
    for line in str(err).splitlines():
        if line.strip().startswith("Please install the reader libraries"):  # MONAI's boilerplate and tracebacks
            break
        if not line.startswith("Exception thrown in SimpleITK"):
            lines.append(re.sub(r"^\s*(?:sitk::ERROR|ITK ERROR: \w+\(0x[0-9a-f]+\)):\s*", "", line))
    text = re.sub(r"\s+", " ", f"{type(err).__name__}: {' '.join(lines)}").strip()
    if len(text) <= width:
        return text
    return f"{text[: width // 3]} ... {text[-(2 * width) // 3 :]}"  # ITK's last line is its most specific


def _without_names(text: str, filename: Any) -> str:
    """``text`` without the file names (a file called ``corrupt.nii`` says nothing about its content)."""
    for name in ensure_tuple(filename):
        text = text.replace(os.fspath(name), "<file>") if isinstance(name, (str, os.PathLike)) else text
    return text


def _problem(reasons: Sequence[str], filename: Any) -> str:
    """What the readers' one-line reasons say is wrong: a missing decoder, an unsupported format, or damage."""
    reasons = [_without_names(r, filename) for r in reasons]
    text = " ".join(reasons)
    if _MISSING_DECODER.search(text):
        return "missing decoder"
    known = all(os.path.isdir(n) or str(n).lower().endswith(SIMPLEITK_SUFFIXES) for n in ensure_tuple(filename))
    if not known and not _TRUNCATED.search(text) and all(_UNRECOGNISED.search(r) for r in reasons):
        return "unsupported format"
    return "truncated or corrupt?"


class CheckedLoadImaged(LoadImaged):
    """``LoadImaged`` whose read errors name the key and the file, which checks DICOM series folders first and falls
    back to :class:`~monai_crossd.apps.data.SimpleITKReader` where its reader cannot read a file.

    ``.nrrd``, ``.nhdr``, ``.mha`` and ``.mhd`` files go to ``SimpleITKReader`` directly. Any other file the configured
    reader fails on (e.g. ``PydicomReader`` on a DICOM series in a compressed transfer syntax it has no decoder for,
    such as JPEG 2000 without Pillow) is read again with ``SimpleITKReader`` (GDCM decodes JPEG 2000, JPEG-LS and
    RLE), which gives the same array and RAS affine; the reader used is logged. A file the configured reader reports
    truncated is not read again (ITK's NIfTI reader fills a short file with zeros).

    Same arguments as :class:`monai.transforms.LoadImaged`, plus:

    Args:
        check_dicom: run :func:`monai_crossd.apps.data.check_dicom_series` on every value that is a folder (a DICOM
            series: one series, no missing slice, regular spacing). Defaults to ``True``.
        fallback: read with ``SimpleITKReader`` what the configured reader cannot (needs SimpleITK). Defaults to
            ``True``.

    Raises:
        ValueError: a value is neither an existing file nor a folder, a DICOM folder fails its check, or no reader
            reads it; the message names the key, the path, the likely problem (``unsupported format``, ``missing
            decoder`` or ``truncated or corrupt?``) and each reader's reason on one line.

    Example:
        >>> load = CheckedLoadImaged(keys="image", reader="NibabelReader", image_only=True)
        >>> load({"image": "broken.nii.gz"})  # doctest: +SKIP
        ValueError: could not read key 'image' file 'broken.nii.gz' (truncated or corrupt?): EOFError: ...
    """

    def __init__(
        self, keys: KeysCollection, *args: Any, check_dicom: bool = True, fallback: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(keys, *args, **kwargs)
        self.check_dicom = check_dicom
        self._loader = _NamedLoader(self._loader, SimpleITKReader() if fallback and has_sitk else None)

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
            keys = [k for k in self.keys if k in data and _same(data[k], err.filename)] or ["?"]
            reasons = [f"{reason} ({name})" for name, reason in err.reasons]
            raise ValueError(
                f"could not read key {keys[0]!r} file {_fspath(err.filename)!r} "
                f"({_problem([r for _, r in err.reasons], err.filename)}): {'; '.join(reasons)}"
            ) from err.__cause__


class _ReadError(Exception):
    def __init__(self, filename: Any, reasons: Sequence[tuple[str, str]]) -> None:
        super().__init__(filename)
        self.filename = filename
        self.reasons = list(reasons)  # (reader name, one-line reason)


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else value


def _same(value: Any, filename: Any) -> bool:
    return value is filename or (isinstance(value, (str, os.PathLike)) and _fspath(value) == _fspath(filename))


class _NamedLoader:
    """Calls MONAI's ``LoadImage``, falls back to ``fallback`` where it fails, and tags a failure with the file."""

    _own = ("_inner", "_fallback")

    def __init__(self, loader: Any, fallback: Any = None) -> None:
        self._inner = loader
        self._fallback = fallback

    def __getattr__(self, name: str) -> Any:
        if name in self._own:  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # settings such as ``image_only`` (MONAI Label sets ``_loader.image_only``) belong to the wrapped loader
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    def _name(self, reader: Any) -> str:
        if reader is not None:
            return type(reader).__name__
        return "LoadImage" if self._inner.auto_select else type(self._inner.readers[-1]).__name__

    def __call__(self, filename: Any, reader: Any = None) -> Any:
        sitk_only = all(str(n).lower().endswith(SIMPLEITK_ONLY_SUFFIXES) for n in ensure_tuple(filename))
        if reader is None and self._fallback is not None and sitk_only:
            reader = self._fallback
            logger.info("reading %s with SimpleITKReader (suffix)", filename)
        try:
            return self._inner(filename, reader)
        except Exception as err:  # noqa: BLE001 - every reader failure is re-raised with the file named
            first = (self._name(reader), _one_line(err))
            truncated = _TRUNCATED.search(_without_names(first[1], filename))
            if self._fallback is None or first[0] == type(self._fallback).__name__ or truncated:
                raise _ReadError(filename, [first]) from err
            cause = err
        try:
            image = self._inner(filename, self._fallback)
        except Exception as err:  # noqa: BLE001
            raise _ReadError(filename, [first, ("SimpleITKReader", _one_line(err))]) from cause
        logger.info("read %s with SimpleITKReader: %s could not (%s)", filename, *first)
        return image


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
