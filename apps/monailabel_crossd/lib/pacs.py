"""Results back into the PACS when the app runs on a DICOMweb server (``--studies http://.../dicom-web``).

The one place where the app turns an inference result into a DICOM object and stores it (STOW-RS), called by
:meth:`main.CrossDApp.infer` after the infer task ran:

* segmentation: the label (on the grid of the source series, as the infer task returns it) becomes a DICOM SEG
  (:func:`monai_crossd.apps.dicom.write_dicom_seg`) referencing the source series' instances, one segment per class
  of the bundle's output ``channel_def``;
* classification: the class probabilities become a DICOM Comprehensive 3D SR
  (:func:`monai_crossd.apps.dicom.write_dicom_sr`) in the study, referencing every instance the classifier read.

Series are fetched with MONAI Label's own DICOMweb helpers (its datastore's client and
``dicom_web_download_series``); this module adds what a multi-series classifier needs, one folder per study
(:func:`download_study`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monailabel.datastore.utils.dicom import dicom_web_download_series

__all__ = ["download_study", "output_channel_names", "store_seg", "store_sr"]

logger = logging.getLogger(__name__)

#: series of these modalities are results, not images: never inputs of a model
RESULT_MODALITIES = ("SEG", "SR", "RTSTRUCT", "PR", "KO")


def _value(item: Mapping, tag: str, default: Any = None) -> Any:
    values = (item.get(tag) or {}).get("Value") or [default]
    return values[0]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def output_channel_names(metadata: Mapping, key: str = "pred") -> list[str]:
    """Names of a bundle output's channels ``0..C-1``, from its ``metadata.json`` ``channel_def``.

    Args:
        metadata: the bundle's ``metadata.json`` content.
        key: the output. Defaults to ``"pred"``.

    Raises:
        ValueError: the output or its ``channel_def`` is missing.
    """
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    channel_def = (outputs.get(key) or {}).get("channel_def")
    if not channel_def:
        raise ValueError(
            f"bundle metadata has no network_data_format.outputs.{key}.channel_def; outputs: {sorted(outputs)}."
        )
    return [name for _, name in sorted(channel_def.items(), key=lambda kv: int(kv[0]))]


def download_study(client: Any, series_uid: str, cache_dir: str | os.PathLike) -> Path:
    """Fetch every image series of the study holding ``series_uid`` into one study folder (cached).

    The folder holds one sub-folder per series named ``<SeriesNumber>-<SeriesDescription>`` (the names
    :func:`monai_crossd.apps.data.dicom.match_series` matches to modalities, as in a TCIA download); result series
    (SEG, SR, ...) are left out. A study already fetched is reused; a new one is written to a temporary folder first
    and moved into place, so an interrupted fetch leaves no partial study.

    Args:
        client: a ``dicomweb_client.DICOMwebClient`` (MONAI Label's datastore client).
        series_uid: ``SeriesInstanceUID`` of any series of the study (what MONAI Label's datastore lists).
        cache_dir: where study folders are kept (``<cache_dir>/<StudyInstanceUID>``).

    Returns:
        the study folder.

    Raises:
        ValueError: the DICOMweb server has no series ``series_uid``.
    """
    found = client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
    found = [s for s in found if _value(s, "0020000E") == series_uid]
    if not found:
        raise ValueError(f"`image` {series_uid!r}: no such SeriesInstanceUID on the DICOMweb server {client.base_url}.")
    study_uid = str(_value(found[0], "0020000D"))
    target = Path(cache_dir) / study_uid
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{study_uid}.", dir=target.parent))
    try:
        for series in client.search_for_series(study_instance_uid=study_uid):
            if _value(series, "00080060", "") in RESULT_MODALITIES:
                continue
            uid = str(_value(series, "0020000E"))
            name = _safe(f"{_value(series, '00200011', '')}-{_value(series, '0008103E', uid)}")
            dicom_web_download_series(study_uid, uid, str(tmp / name), client)
        try:
            tmp.rename(target)
        except OSError:  # a concurrent request fetched the same study first: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("study %s (series %s): %s", study_uid, series_uid, sorted(p.name for p in target.iterdir()))
    return target


def _stow(client: Any, path: str) -> dict[str, str]:
    import pydicom

    ds = pydicom.dcmread(path)
    client.store_instances([ds])
    return {
        "StudyInstanceUID": str(ds.StudyInstanceUID),
        "SeriesInstanceUID": str(ds.SeriesInstanceUID),
        "SOPInstanceUID": str(ds.SOPInstanceUID),
        "Modality": str(ds.Modality),
    }


def store_seg(
    client: Any, label_file: str, series_dir: str, segment_names: Sequence[str], bundle_name: str, version: str
) -> dict[str, str]:
    """Write the label as a DICOM SEG on the source series and store it over STOW-RS.

    Args:
        client: the DICOMweb client.
        label_file: the infer task's label (NIfTI), on the grid of the series in ``series_dir``.
        series_dir: the source series' DICOM files (MONAI Label's datastore cache).
        segment_names: names of the label's classes ``1..N`` (class 0, background, left out).
        bundle_name: the bundle that made the label.
        version: the bundle's version.

    Returns:
        the SEG's ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` and ``Modality``.

    Raises:
        ValueError: the label is not on the series' grid (:func:`~monai_crossd.apps.dicom.write_dicom_seg`).
    """
    from monai.transforms import LoadImage

    from monai_crossd.apps.dicom import write_dicom_seg

    label = LoadImage(image_only=True)(label_file)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dicom_seg(
            label,
            series_dir,
            list(segment_names),
            Path(tmp) / "seg.dcm",
            bundle_name=bundle_name,
            algorithm_version=version,
        )
        stored = _stow(client, path)
    logger.info("%s: DICOM SEG %s stored", bundle_name, stored)
    return stored


def store_sr(
    client: Any,
    probabilities: Sequence[float],
    class_names: Sequence[str],
    study_dir: str | os.PathLike,
    bundle_name: str,
    version: str,
) -> dict[str, str]:
    """Write class probabilities as a DICOM SR in the study and store it over STOW-RS.

    Args:
        client: the DICOMweb client.
        probabilities: one probability per class.
        class_names: the class names.
        study_dir: the study folder the classifier read (:func:`download_study`); the SR references its instances.
        bundle_name: the classifier bundle.
        version: the bundle's version.

    Returns:
        the SR's ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` and ``Modality``.
    """
    from monai_crossd.apps.dicom import write_dicom_sr

    with tempfile.TemporaryDirectory() as tmp:
        path = write_dicom_sr(
            list(probabilities), list(class_names), str(study_dir), Path(tmp) / "sr.dcm",
            bundle_name=bundle_name, algorithm_version=version,
        )  # fmt: skip
        stored = _stow(client, path)
    logger.info("%s: DICOM SR %s stored", bundle_name, stored)
    return stored
