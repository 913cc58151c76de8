"""A label map on the grid of a DICOM series as a DICOM Segmentation (SEG), and back, with highdicom.

The label map is indexed ``(X, Y, Z)`` as in :mod:`monai_crossd.apps.dicom.series` (the array order of MONAI's
``PydicomReader`` on the series folder): ``label[x, y, z]`` is the voxel of column ``x``, row ``y`` of the ``z``-th
slice along the slice normal. Class ``k > 0`` of the label map becomes segment number ``k``, named
``segment_names[k - 1]``; class 0 is background.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_crossd.apps.dicom.series import (
    load_series,
    save_dataset,
    series_affine,
    series_shape,
    with_type2_attributes,
)

__all__ = ["read_dicom_seg", "segment_names_list", "write_dicom_seg"]

MAX_LO = 64  #: DICOM LO (segment label, description) holds at most 64 characters


def segment_names_list(segment_names: Sequence[str] | Mapping[Any, str]) -> list[str]:
    """The names of classes ``1..N`` from a sequence (class 1 first) or a ``{class: name}`` mapping.

    A mapping is what a bundle's ``metadata.json`` has in ``network_data_format.outputs.pred.channel_def``
    (``{"0": "background", "1": "anterior", "2": "posterior"}``): its keys are class values, ``0`` (background) is
    left out and the others must be ``1..N``.

    Raises:
        ValueError: no name, an empty or over-long (> 64 characters) name, a string instead of a sequence, or mapping
            keys that are not the integers ``1..N`` (besides 0).
    """
    if isinstance(segment_names, str):
        raise ValueError(f"`segment_names` should be a sequence or mapping of names, got the string {segment_names!r}.")
    if isinstance(segment_names, Mapping):
        try:
            by_class = {int(k): v for k, v in segment_names.items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"`segment_names` keys should be class values 0..N, got {list(segment_names)}.") from err
        by_class.pop(0, None)
        if sorted(by_class) != list(range(1, len(by_class) + 1)):
            raise ValueError(f"`segment_names` keys should be the classes 1..N (0 = background), got {sorted(by_class)}.")
        names = [by_class[k] for k in range(1, len(by_class) + 1)]
    else:
        names = list(segment_names)
    if not names:
        raise ValueError("`segment_names` is empty: give one name per non-zero class of the label map.")
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or len(n) > MAX_LO]
    if bad:
        raise ValueError(f"`segment_names` should be non-empty strings of at most {MAX_LO} characters, got {bad}.")
    return names


def _label_array(label: Any, shape: tuple[int, int, int], datasets: Sequence) -> np.ndarray:
    """``label`` as an ``(X, Y, Z)`` integer numpy array, checked against the series' shape and (MetaTensor) affine."""
    affine = getattr(label, "affine", None)
    space = str(getattr(label, "meta", {}).get("space", "RAS"))
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    array = np.asarray(label)
    if array.ndim == 4 and array.shape[0] == 1:  # MONAI's channel-first (1, X, Y, Z)
        array = array[0]
    if array.shape != shape:
        raise ValueError(
            f"`label` has shape {tuple(np.shape(label))}, the source series {shape} (X, Y, Z) = (Columns, Rows, "
            "slices): the label map should be on the series' grid, indexed (X, Y, Z) as MONAI's PydicomReader reads it."
        )
    if affine is not None:
        expected = series_affine(datasets, lps=space.upper() == "LPS")
        got = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=float)
        if got.shape != (4, 4) or not np.allclose(got, expected, atol=1e-3, rtol=1e-4):
            raise ValueError(
                f"`label`'s affine ({space})\n{np.round(got, 4)}\ndiffers from the source series'\n"
                f"{np.round(expected, 4)}\n(a reoriented or resampled label): invert the transforms to the series' grid first."
            )
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise ValueError("`label` should hold integer class values (a label map, e.g. an argmax), got non-integer values.")
    return array.astype(np.int64)


def write_dicom_seg(
    label: np.ndarray | torch.Tensor,
    source_datasets: str | os.PathLike | Sequence,
    segment_names: Sequence[str] | Mapping[Any, str],
    output_path: str | os.PathLike,
    *,
    bundle_name: str = "",
    algorithm_version: str | None = None,
    segmented_property_category: Any = None,
    segmented_property_types: Any = None,
    series_number: int = 900,
    series_description: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> str:
    """Write a label map as a BINARY DICOM SEG referencing the instances of its source series, atomically.

    One segment per non-zero class ``k`` (segment number ``k``, label ``segment_names[k - 1]``), algorithm type
    AUTOMATIC with algorithm identification ``"monai_crossd <bundle_name>"`` and ``algorithm_version`` (family
    "Artificial Intelligence"). Patient and study attributes are those of the source series; slices without any
    segment get no frame (highdicom's default), :func:`read_dicom_seg` gives them back as zeros.

    Args:
        label: ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) integer label map on the grid of the source series (see the module
            docstring), a numpy array, tensor or MONAI ``MetaTensor``. A MetaTensor's affine (RAS, or LPS when its
            ``meta["space"]`` says so) must be the series' one: a label left in another orientation is refused.
        source_datasets: the source series: its folder, or a sequence of its files or pydicom datasets (any order).
        segment_names: the names of classes ``1..N``: a sequence, or a ``{class: name}`` mapping such as a bundle's
            ``channel_def`` (class 0 left out), see :func:`segment_names_list`.
        output_path: the ``.dcm`` file to write (parent folders are created).
        bundle_name: the bundle that made the label; the algorithm is named ``"monai_crossd <bundle_name>"``.
            Defaults to ``""`` (``"monai_crossd"``).
        algorithm_version: the algorithm (bundle) version. Defaults to ``monai_crossd.__version__``.
        segmented_property_category: a pydicom/highdicom code for every segment. Defaults to SCT "Tissue".
        segmented_property_types: one code for all segments or one per segment. Defaults to SCT "Tissue".
        series_number: ``SeriesNumber`` of the SEG. Defaults to 900.
        series_description: ``SeriesDescription``. Defaults to ``"<algorithm name> SEG"``.
        series_instance_uid: ``SeriesInstanceUID``; a new UID when ``None``.
        sop_instance_uid: ``SOPInstanceUID``; a new UID when ``None``.

    Returns:
        ``output_path`` as a string.

    Raises:
        ValueError: no source instance or several series (see :func:`~monai_crossd.apps.dicom.series.load_series`),
            a label whose shape or affine is not the series', non-integer values or classes outside ``0..N``, or bad
            ``segment_names`` / ``segmented_property_types``.

    Example:
        >>> from monai.transforms import LoadImage
        >>> image = LoadImage(reader="PydicomReader", image_only=True)("Study1/13_HCropVolume")  # doctest: +SKIP
        >>> label = (image > 200).long() + (image > 400).long()  # (X, Y, Z) MetaTensor on the series' grid  # doctest: +SKIP
        >>> write_dicom_seg(label, "Study1/13_HCropVolume", {"1": "anterior", "2": "posterior"}, "seg.dcm",
        ...                 bundle_name="crossd_hippocampus_segmentation")  # doctest: +SKIP
        'seg.dcm'
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import monai_crossd

    names = segment_names_list(segment_names)
    datasets = load_series(source_datasets)
    array = _label_array(label, series_shape(datasets), datasets)
    unknown = sorted(set(np.unique(array).tolist()) - set(range(len(names) + 1)))
    if unknown:
        raise ValueError(f"`label` has classes {unknown} without a name: `segment_names` names classes 1..{len(names)} ({names}).")
    category = segmented_property_category or codes.SCT.Tissue
    types = segmented_property_types or codes.SCT.Tissue
    types = [types] * len(names) if hasattr(types, "scheme_designator") else list(types)  # one code, or one per segment
    if len(types) != len(names):
        raise ValueError(f"`segmented_property_types` has {len(types)} codes for {len(names)} segments {names}.")
    algorithm_name = f"monai_crossd {bundle_name}".strip()
    version = algorithm_version or monai_crossd.__version__
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.DCM.ArtificialIntelligence, version=version
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=types[k - 1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(names, start=1)
    ]
    dtype = np.uint8 if len(names) < 256 else np.uint16
    seg = hd.seg.Segmentation(
        source_images=[with_type2_attributes(datasets[0]), *datasets[1:]],
        pixel_array=np.ascontiguousarray(array.transpose(2, 1, 0).astype(dtype)),  # (frames = Z, rows = Y, columns = X)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer="monai_crossd",
        manufacturer_model_name=algorithm_name[:MAX_LO],
        software_versions=version,
        device_serial_number="0",
        content_description=algorithm_name[:MAX_LO],
        series_description=(series_description or f"{algorithm_name} SEG")[:MAX_LO],
    )
    return save_dataset(seg, output_path)


def read_dicom_seg(
    seg: str | os.PathLike | Any, source_datasets: str | os.PathLike | Sequence
) -> tuple[np.ndarray, dict[int, str]]:
    """Read a DICOM SEG back into an ``(X, Y, Z)`` label map on the grid of its source series (highdicom's reader).

    Args:
        seg: the SEG file, or its pydicom dataset (e.g. from a WADO-RS retrieval).
        source_datasets: the source series (folder, files or datasets, any order), which gives the grid.

    Returns:
        ``(label, names)``: the ``(X, Y, Z)`` ``uint8``/``uint16`` label map (segment numbers as values, 0 where no
        segment) and ``{segment number: segment label}``.

    Raises:
        ValueError: ``seg`` is not a SEG, does not reference the source series, or its segments overlap.
    """
    import highdicom as hd
    import pydicom

    dataset = seg if isinstance(seg, pydicom.Dataset) else pydicom.dcmread(seg)
    if dataset.get("Modality") != "SEG":
        raise ValueError(f"`seg` should be a DICOM SEG, got Modality {dataset.get('Modality')!r} ({seg if not isinstance(seg, pydicom.Dataset) else 'dataset'}).")
    segmentation = hd.seg.Segmentation.from_dataset(dataset)
    datasets = load_series(source_datasets)
    referenced = {str(item.SeriesInstanceUID) for item in dataset.get("ReferencedSeriesSequence", [])}
    if str(datasets[0].SeriesInstanceUID) not in referenced:
        raise ValueError(
            f"`seg` references the series {sorted(referenced)}, not the source series {datasets[0].SeriesInstanceUID}."
        )
    frames = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in datasets], combine_segments=True
    )  # (Z, rows = Y, columns = X)
    names = {int(item.SegmentNumber): str(item.SegmentLabel) for item in dataset.SegmentSequence}
    return np.ascontiguousarray(frames.transpose(2, 1, 0)), names
