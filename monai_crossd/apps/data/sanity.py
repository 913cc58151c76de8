"""Input sanity from a bundle's ``metadata.json``: modality, dimensionality, channels, overlap of a study's series, labels.

MONAI's loaders read whatever file they are given, and a wrong input fails late with a message about the network
(``Sequence must have length 2, got 3.`` for a 2D image, ``index 7 is out of bounds for dimension 1 with size 3`` for a
label 7) or not at all (a body CT gets hippocampus masks; four series of different studies are resampled onto one grid
they do not overlap). The transforms here run right after the loader and fail with the key, the file and what the
bundle's ``metadata.json`` expects:

* :class:`CheckInputd`: the modality (the DICOM ``Modality`` tag when the file is DICOM, else an intensity plausibility
  check: an MR model refuses a volume in Hounsfield units), the number of spatial dimensions (a 2D image, a single
  slice), the channels, and that the series of a multi-modality study are of one patient and overlap in world
  space. The modality, patient and overlap checks warn instead of failing with ``allow_unexpected=True`` (the bundles' ``--allow_unexpected_inputs
  True``); a wrong dimensionality or channel count always fails, as the network cannot take it.
* :class:`CheckLabelsd`: label maps hold integers in ``[0, num_classes)``.
* :func:`read_input_format`: the expectations of one input in a bundle's ``metadata.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_crossd.apps.data.checks import _meta, _source

__all__ = [
    "CheckInputd",
    "CheckLabelsd",
    "air_fraction",
    "dicom_tags",
    "overlap_fraction",
    "read_input_format",
    "world_bounds",
]

#: Hounsfield value at or below which a voxel counts as air (air -1000 HU, lung -500 to -900 HU).
AIR_HU = -500.0

_OVERRIDE = "pass allow_unexpected=True (bundles: --allow_unexpected_inputs True) to go on with a warning"


def air_fraction(image: Any, threshold: float = AIR_HU) -> float:
    """Share of the voxels at or below ``threshold`` (air in Hounsfield units).

    A CT in Hounsfield units has air (-1000 HU) around the body, in the airways or as padding (-1024 HU or lower); an
    MR magnitude image has no negative values at all (0 voxels <= -500 in all 208 shared MSD hippocampus MR volumes,
    float32 and uint8, and in the shared TCIA brain MR DICOM series).

    Args:
        image: an array of any shape.
        threshold: the Hounsfield value. Defaults to -500.

    Returns:
        the fraction in ``[0, 1]`` (0 for an empty array).

    Example:
        >>> air_fraction(np.array([-1000.0, -600.0, 40.0, 1200.0]))
        0.5
    """
    array = _tensor(image)
    if not array.is_floating_point():
        array = array.to(torch.float32)  # a uint8 tensor compared with -500 would wrap around
    return float((array <= threshold).float().mean()) if array.numel() else 0.0


def _tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))


def world_bounds(affine: Any, spatial_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box of an image grid: the corners of its voxels mapped through ``affine``.

    Args:
        affine: the ``(r + 1, r + 1)`` voxel-to-world matrix (MONAI's RAS ``affine``).
        spatial_shape: the ``r`` sizes of the grid (fewer than ``r`` are padded with 1).

    Returns:
        ``(low, high)``, each of shape ``(r,)``, in world units (mm).

    Example:
        >>> low, high = world_bounds(np.diag([2.0, 2.0, 1.0, 1.0]), (3, 4, 5))
        >>> low.tolist(), high.tolist()
        ([-1.0, -1.0, -0.5], [5.0, 7.0, 4.5])
    """
    matrix = np.asarray(affine, dtype=float)
    rank = matrix.shape[0] - 1
    sizes = [*map(int, spatial_shape), *[1] * (rank - len(spatial_shape))][:rank]
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in sizes])))  # voxel centres at integers
    world = corners @ matrix[:rank, :rank].T + matrix[:rank, rank]
    return world.min(axis=0), world.max(axis=0)


def overlap_fraction(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Volume shared by two boxes ``(low, high)`` over the volume of the smaller one.

    Example:
        >>> overlap_fraction((np.zeros(3), np.full(3, 2.0)), (np.ones(3), np.full(3, 5.0)))
        0.125
    """
    (low_a, high_a), (low_b, high_b) = a, b
    shared = np.prod(np.clip(np.minimum(high_a, high_b) - np.maximum(low_a, low_b), 0, None))
    smaller = min(np.prod(high_a - low_a), np.prod(high_b - low_b))
    return float(shared / smaller) if smaller > 0 else 0.0


def dicom_tags(meta: Mapping, keywords: Sequence[str] = ("Modality", "PatientID")) -> dict[str, str | None]:
    """DICOM tags of a loaded image: from its metadata where a reader kept them (``PydicomReader`` with
    ``prune_metadata=False``: ``"00080060"``; ITK: ``"0008|0060"``; or the keyword), else from the header of its file
    (the first DICOM file of a series folder); all ``None`` for a file that is not DICOM (NIfTI, NRRD).

    Args:
        meta: the image's metadata (``MetaTensor.meta`` or the ``<key>_meta_dict``), with ``filename_or_obj``.
        keywords: DICOM keywords. Defaults to ``("Modality", "PatientID")``.

    Returns:
        keyword -> the tag's value as a stripped string, or ``None`` where absent.
    """
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.misc import is_dicom

    found: dict[str, str | None] = {}
    for keyword in keywords:
        tag = f"{tag_for_keyword(keyword):08X}"
        for name in (tag, f"{tag[:4]}|{tag[4:].lower()}", keyword):
            value = meta.get(name)
            if isinstance(value, Mapping):  # PydicomReader's JSON form: {"vr": "CS", "Value": ["MR"]}
                value = (value.get("Value") or [None])[0]
            if value:
                found[keyword] = str(value).strip()
                break
    missing = [k for k in keywords if k not in found]
    name = meta.get("filename_or_obj")
    if missing and isinstance(name, (str, os.PathLike)):
        path = Path(name)
        if path.is_dir():
            path = next((p for p in sorted(path.iterdir()) if p.is_file() and is_dicom(p)), path)
        if path.is_file() and is_dicom(path):
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=missing)
            found.update({k: str(header.get(k)).strip() for k in missing if header.get(k)})
    return {k: found.get(k) for k in keywords}


def read_input_format(metadata_file: str | os.PathLike, key: str = "image") -> dict[str, Any]:
    """What a bundle's ``metadata.json`` says one input should be, as :class:`CheckInputd` arguments.

    Args:
        metadata_file: the bundle's ``configs/metadata.json``.
        key: the input under ``network_data_format.inputs``. Defaults to ``"image"``.

    Returns:
        ``{"modality": str | None, "spatial_dims": int, "num_channels": int}`` (``spatial_dims`` is the length of
        ``spatial_shape``).

    Raises:
        ValueError: the file does not exist, or has no such input or no ``spatial_shape``/``num_channels``; the message
            names the file and the key.
    """
    if not os.path.isfile(metadata_file):
        raise ValueError(f"`metadata_file` {os.fspath(metadata_file)!r} does not exist.")
    with open(metadata_file) as f:
        inputs = json.load(f).get("network_data_format", {}).get("inputs", {})
    where = f"{os.fspath(metadata_file)!r} network_data_format.inputs.{key}"
    if key not in inputs:
        raise ValueError(f"{where} does not exist; inputs are {sorted(inputs)}.")
    missing = [k for k in ("spatial_shape", "num_channels") if k not in inputs[key]]
    if missing:
        raise ValueError(f"{where} has no {missing[0]!r}.")
    return {
        "modality": inputs[key].get("modality"),
        "spatial_dims": len(inputs[key]["spatial_shape"]),
        "num_channels": int(inputs[key]["num_channels"]),
    }


def _layout(value: Any, meta: Mapping) -> tuple[int, tuple[int, ...]]:
    """``(channels, spatial_shape)`` of a loaded image: the reader's ``spatial_shape`` when it recorded one (channels
    are what is left, wherever the channel axis is), else its ``original_channel_dim`` (``nan``: no channel axis)."""
    shape = tuple(int(s) for s in np.shape(value))
    spatial = meta.get("spatial_shape")
    if spatial is not None and len(spatial) and np.prod(spatial) > 0 and np.prod(shape) % np.prod(spatial) == 0:
        spatial = tuple(int(s) for s in np.asarray(spatial).ravel())
        return int(np.prod(shape) // np.prod(spatial)), spatial
    channel_dim = meta.get("original_channel_dim", float("nan"))
    if isinstance(channel_dim, (int, np.integer)) and -len(shape) <= channel_dim < len(shape):
        return shape[channel_dim], tuple(s for i, s in enumerate(shape) if i != channel_dim % len(shape))
    return 1, shape


class CheckInputd(MapTransform):
    """Check loaded images against what the bundle expects: modality, spatial dimensions, channels, overlap.

    Put it right after the loader (``CheckedLoadImaged``), before any transform changes the grid or the intensities.
    For each key:

    * **modality** (when ``modality`` is given): a DICOM image's ``Modality`` tag (from the metadata, or read from the
      file's header: :func:`dicom_tags`) must equal ``modality``. A non-DICOM image (NIfTI, NRRD) has no tag; an
      image expected to be anything but CT is refused when it looks like a CT in Hounsfield units: at least
      ``ct_air_fraction`` of its voxels at or below -500 (:func:`air_fraction`). Measured: 0 % in each of the 208
      shared MSD hippocampus MR volumes (intensities 0 to 1.7e6) and in the TCIA brain MR DICOM series; 7.9 % to 14 %
      in hippocampus MR crops linearly rescaled to -1000..1000 HU (their darkest voxels mapped to air); a body or head
      CT has its air and padding. A CT crop with no air (e.g. inside the skull) is not recognised.
    * **spatial dimensions** (``spatial_dims``): a 2D image, or a 3D one with a single slice (an axis of size 1), is
      refused for a 3D network.
    * **channels** (``num_channels``): the channels of the network input, shared evenly by the keys (``crossd_brats``:
      4 channels, one per modality key); a 2-channel 4D NIfTI for a 1-channel network is refused.
    * **overlap** (several keys, ``min_overlap``): every two series must share at least ``min_overlap`` of the smaller
      one's world bounding box (from the affines), as the series of one study do (100 % for the four shared TCIA
      Study3 series); series of different studies or with shifted origins are refused, naming both. DICOM series of
      different patients (``PatientID``) are refused too: the shared hippocampus crops of three TCIA patients overlap
      by 94 % to 95 %, as crops of different patients may.

    Args:
        keys: keys of the loaded images (one per modality for a multi-modality study).
        modality: the expected modality (DICOM code such as ``"MR"``, ``"CT"``), the ``modality`` of the input in
            ``metadata.json``; ``None`` skips the check. Defaults to ``None``.
        spatial_dims: the expected number of spatial dimensions (the length of ``spatial_shape``); ``None`` skips the
            check. Defaults to ``None``.
        num_channels: the expected channels of the network input, over all keys; ``None`` skips the check. Defaults to
            ``None``.
        min_overlap: the least share of the smaller bounding box that every two keys' images must share; ``None``
            skips the check. Defaults to 0.5.
        ct_air_fraction: the share of voxels at or below -500 from which a non-DICOM image looks like CT. Defaults to
            0.01.
        allow_unexpected: warn instead of failing on an unexpected modality, series of different patients or
            non-overlapping series. Defaults to ``False``.
        allow_missing_keys: skip keys absent from the data. Defaults to ``False``.

    Raises:
        ValueError: an image fails a check; the message names the key, the file (both keys and files for an overlap),
            what was found and what was expected. Also for bad arguments (the argument named).

    Example:
        >>> check = CheckInputd("image", modality="MR", spatial_dims=3, num_channels=1)
        >>> check({"image": LoadImage(image_only=True)("ct_like.nii.gz")})  # doctest: +SKIP
        ValueError: key 'image' file 'ct_like.nii.gz' looks like CT in Hounsfield units, expected MR: 7.9% of its
        voxels are <= -500 (CT-like from 1%; MR has none) ...
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality: str | None = None,
        spatial_dims: int | None = None,
        num_channels: int | None = None,
        min_overlap: float | None = 0.5,
        ct_air_fraction: float = 0.01,
        allow_unexpected: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if modality is not None and (not isinstance(modality, str) or not modality.strip()):
            raise ValueError(f"`modality` should be a DICOM modality code such as 'MR' or None, got {modality!r}.")
        if spatial_dims is not None and spatial_dims not in (1, 2, 3):
            raise ValueError(f"`spatial_dims` should be 1, 2, 3 or None, got {spatial_dims!r}.")
        if num_channels is not None and (num_channels < 1 or num_channels % len(self.keys)):
            raise ValueError(
                f"`num_channels`={num_channels} should be a positive multiple of the number of keys ({len(self.keys)}:"
                f" {list(self.keys)}), which share the channels evenly."
            )
        if min_overlap is not None and not 0 <= min_overlap <= 1:
            raise ValueError(f"`min_overlap` should be in [0, 1] or None, got {min_overlap!r}.")
        if not 0 < ct_air_fraction <= 1:
            raise ValueError(f"`ct_air_fraction` should be in (0, 1], got {ct_air_fraction!r}.")
        self.modality = modality.strip().upper() if modality else None
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.min_overlap = min_overlap
        self.ct_air_fraction = ct_air_fraction
        self.allow_unexpected = allow_unexpected

    def _unexpected(self, message: str) -> None:
        if not self.allow_unexpected:
            raise ValueError(f"{message}; {_OVERRIDE}.")
        warnings.warn(f"{message}; going on (allow_unexpected=True).", UserWarning, stacklevel=3)

    def _check_modality(self, where: str, value: Any, found: str | None) -> None:
        """``found``: the DICOM Modality, ``None`` for a file without one."""
        if found is not None:
            if found.upper() != self.modality:
                self._unexpected(f"{where} is DICOM Modality {found!r}, expected {self.modality!r}")
            return
        if self.modality == "CT":
            return  # without a tag, an image that is not CT-like may still be a CT (a crop without air)
        share = air_fraction(value)
        if share >= self.ct_air_fraction:
            array = _tensor(value)
            self._unexpected(
                f"{where} looks like CT in Hounsfield units, expected {self.modality}: {share:.1%} of its voxels are "
                f"<= {AIR_HU:g} (CT-like from {self.ct_air_fraction:.0%}; MR magnitude images have none), intensity "
                f"range [{float(array.min()):g}, {float(array.max()):g}]"
            )

    def _check_layout(self, where: str, value: Any, meta: Mapping) -> tuple[int, ...]:
        channels, spatial = _layout(value, meta)
        shape = tuple(np.shape(value))
        if self.spatial_dims is not None:
            if len(spatial) != self.spatial_dims:
                raise ValueError(
                    f"{where} has {len(spatial)} spatial dimensions (spatial shape {spatial}, array shape {shape}), "
                    f"expected {self.spatial_dims}" + (": a 2D image or a single slice?" if len(spatial) == 2 else ".")
                )
            if self.spatial_dims > 1 and 1 in spatial:
                raise ValueError(
                    f"{where} has spatial shape {spatial}: a single slice, expected a {self.spatial_dims}D volume."
                )
        expected = None if self.num_channels is None else self.num_channels // len(self.keys)
        if expected is not None and channels != expected:
            raise ValueError(
                f"{where} has {channels} channels (array shape {shape}, spatial shape {spatial}), expected {expected}"
                + (f" ({self.num_channels} over {len(self.keys)} keys)." if len(self.keys) > 1 else ".")
            )
        return spatial

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        seen: list[tuple[str, Any, str | None]] = []  # (where, world bounds or None, PatientID) per key
        for key in self.key_iterator(d):
            value, meta = d[key], _meta(d[key], d, key)
            where = f"key {key!r} file {_source(value, d, key)!r}"
            spatial = self._check_layout(where, value, meta)
            tags = dicom_tags(meta)
            if self.modality is not None:
                self._check_modality(where, value, tags["Modality"])
            affine = getattr(value, "affine", None)
            affine = meta.get("affine") if affine is None else affine
            seen.append(
                (where, None if affine is None else world_bounds(np.asarray(affine), spatial), tags["PatientID"])
            )
        for (where_a, box_a, patient_a), (where_b, box_b, patient_b) in itertools.combinations(seen, 2):
            if patient_a is not None and patient_b is not None and patient_a != patient_b:
                self._unexpected(
                    f"{where_a} and {where_b} are of different patients (DICOM PatientID {patient_a!r} and "
                    f"{patient_b!r}), expected the series of one study"
                )
            if self.min_overlap is None or box_a is None or box_b is None:
                continue
            share = overlap_fraction(box_a, box_b)
            if share < self.min_overlap:
                bounds = " and ".join(
                    f"{np.round(lo, 1).tolist()} to {np.round(hi, 1).tolist()}" for lo, hi in (box_a, box_b)
                )
                self._unexpected(
                    f"{where_a} and {where_b} do not overlap in space: their world bounding boxes (RAS, mm) {bounds} "
                    f"share {share:.0%} of the smaller one, expected at least {self.min_overlap:.0%} (series of one "
                    "study overlap)"
                )
        return d


class CheckLabelsd(MapTransform):
    """Check that label maps hold integer class indices in ``[0, num_classes)``, naming the file and the values.

    Put it right after the loader: a label 7 for a 3-class network otherwise fails in the loss with ``index 7 is out
    of bounds for dimension 1 with size 3`` (no file named), or is resampled into values that look valid.

    Args:
        keys: keys of the loaded label maps.
        num_classes: the number of classes (background included).
        allow_missing_keys: skip keys absent from the data. Defaults to ``False``.

    Raises:
        ValueError: a label map holds a value outside ``[0, num_classes)`` or a non-integer value; the message names
            the key, the file, up to 5 offending values and their voxel count. Also for ``num_classes`` < 1.

    Example:
        >>> CheckLabelsd("label", num_classes=3)({"label": torch.tensor([0, 1, 7])})  # doctest: +SKIP
        ValueError: key 'label' file '<unknown file>' has values [7] that are not class indices in [0, 2] ...
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` should be a positive int, got {num_classes!r}.")
        self.num_classes = int(num_classes)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = _tensor(value)
            array = array.double() if array.is_floating_point() else array.long()
            bad = (array < 0) | (array >= self.num_classes) | (array != torch.round(array))
            count = int(bad.sum())
            if count:
                values = [int(v) if float(v).is_integer() else v for v in torch.unique(array[bad])[:5].tolist()]
                raise ValueError(
                    f"key {key!r} file {_source(value, d, key)!r} has values {values} that are not class indices in "
                    f"[0, {self.num_classes - 1}] (num_classes={self.num_classes}), in {count} of {array.numel()} "
                    "voxels."
                )
        return d
