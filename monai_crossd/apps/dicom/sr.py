"""A classifier's result as a DICOM Structured Report (highdicom Comprehensive 3D SR, TID 1500), and back.

The report is a TID 1500 "Imaging Measurement Report" made by a device observer (the algorithm). It holds one
measurement group (TID 1501) per class, whose finding type is the class and whose one measurement is its
"Probability" (DCM 122157, unit UCUM ``1``), and one last group whose qualitative evaluation "Predicted class" names
the class of highest probability and whose source images are the instances the classifier read. Classes are coded in
the local scheme ``99MONAICROSSD`` (code value: the class index, code meaning: the class name), declared in the
``CodingSchemeIdentificationSequence``. The report belongs to the study of its source series and lists their
instances as evidence (``CurrentRequestedProcedureEvidenceSequence``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_crossd.apps.dicom.series import read_dataset, save_dataset, with_type2_attributes

__all__ = ["CODING_SCHEME", "read_dicom_sr", "write_dicom_sr"]

CODING_SCHEME = "99MONAICROSSD"  #: local coding scheme of the class and "Predicted class" concepts
PREDICTED = "PREDICTED"  #: code value of the "Predicted class" concept
MAX_LO = 64


def _evidence(source: str | os.PathLike | Sequence) -> list:
    """The datasets of a study (headers only when read from files): a folder (searched recursively) or a sequence."""
    import pydicom

    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise ValueError(f"`source_datasets` should be a study or series folder or a sequence of datasets/files, got {str(source)!r}.")
        items: list = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")
    else:
        items = list(source)
    if not items:
        raise ValueError(f"`source_datasets` holds no DICOM instance (got {source!r}): the source study is needed.")
    datasets = [item if isinstance(item, pydicom.Dataset) else read_dataset(item, stop_before_pixels=True) for item in items]
    studies = sorted({str(ds.get("StudyInstanceUID", "")) for ds in datasets})
    if len(studies) != 1:
        raise ValueError(f"`source_datasets` should belong to one study, got {len(studies)}: {studies}.")
    return datasets


def _probabilities(probabilities: Any, class_names: Sequence[str]) -> np.ndarray:
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().cpu().numpy()
    values = np.asarray(probabilities, dtype=float)
    if values.ndim == 2 and values.shape[0] == 1:  # a batch of one
        values = values[0]
    if isinstance(class_names, str) or not class_names:
        raise ValueError(f"`class_names` should be a non-empty sequence of names, got {class_names!r}.")
    bad = [n for n in class_names if not isinstance(n, str) or not n.strip() or len(n) > MAX_LO]
    if bad:
        raise ValueError(f"`class_names` should be non-empty strings of at most {MAX_LO} characters, got {bad}.")
    if values.shape != (len(class_names),):
        raise ValueError(
            f"`probabilities` has shape {np.shape(probabilities)}, expected ({len(class_names)},): one per class of "
            f"`class_names` {list(class_names)}."
        )
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"`probabilities` should lie in [0, 1] (e.g. a softmax), got {values.tolist()}.")
    return values


def write_dicom_sr(
    probabilities: Any,
    class_names: Sequence[str],
    source_datasets: str | os.PathLike | Sequence,
    output_path: str | os.PathLike,
    *,
    bundle_name: str = "",
    algorithm_version: str | None = None,
    series_number: int = 901,
    series_description: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> str:
    """Write class probabilities as a DICOM Comprehensive 3D SR in the study of the source series, atomically.

    Args:
        probabilities: ``(C,)`` (or ``(1, C)``) class probabilities in ``[0, 1]``, numpy, list or tensor.
        class_names: the ``C`` class names (e.g. a bundle's ``class_names``), at most 64 characters each.
        source_datasets: the instances the classifier read, of one study (e.g. its four MR series): a folder (files
            found recursively), or a sequence of files or pydicom datasets.
        output_path: the ``.dcm`` file to write (parent folders are created).
        bundle_name: the bundle that classified; the algorithm and observer device are named
            ``"monai_crossd <bundle_name>"``. Defaults to ``""``.
        algorithm_version: the algorithm (bundle) version. Defaults to ``monai_crossd.__version__``.
        series_number: ``SeriesNumber`` of the SR. Defaults to 901.
        series_description: ``SeriesDescription``. Defaults to ``"<algorithm name> SR"``.
        series_instance_uid: ``SeriesInstanceUID``; a new UID when ``None``.
        sop_instance_uid: ``SOPInstanceUID``; a new UID when ``None``.

    Returns:
        ``output_path`` as a string.

    Raises:
        ValueError: no source instance or several studies, ``probabilities`` not one value in ``[0, 1]`` per class,
            or empty / over-long class names.

    Example:
        >>> write_dicom_sr([0.3, 0.7], ["MGMT_unmethylated", "MGMT_methylated"], "Study3", "sr.dcm",
        ...                bundle_name="crossd_brats")  # doctest: +SKIP
        'sr.dcm'
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    import monai_crossd

    values = _probabilities(probabilities, class_names)
    evidence = _evidence(source_datasets)
    algorithm_name = f"monai_crossd {bundle_name}".strip()[:MAX_LO]
    version = algorithm_version or monai_crossd.__version__
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=version)
    concepts = [hd.sr.CodedConcept(value=str(i), scheme_designator=CODING_SCHEME, meaning=n) for i, n in enumerate(class_names)]
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"class {name}"[:MAX_LO]),
            finding_type=concept,
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=codes.DCM.Probability, value=float(p), unit=codes.UCUM.NoUnits)],
        )
        for name, concept, p in zip(class_names, concepts, values)
    ]
    predicted = hd.sr.CodedConcept(value=PREDICTED, scheme_designator=CODING_SCHEME, meaning="Predicted class")
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="predicted class"),
            algorithm_id=algorithm,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=predicted, value=concepts[int(np.argmax(values))])],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in evidence],
        )
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[algorithm_name, version]), name=algorithm_name
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[with_type2_attributes(evidence[0]), *evidence[1:]],
        content=report,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer="monai_crossd",
        is_complete=True,
        series_description=(series_description or f"{algorithm_name} SR")[:MAX_LO],
        coding_schemes=[CodingSchemeIdentificationItem(designator=CODING_SCHEME, name="monai_crossd classes")],
    )
    return save_dataset(sr, output_path)


def read_dicom_sr(sr: str | os.PathLike | Any) -> dict:
    """Read back what :func:`write_dicom_sr` wrote (highdicom's SR reader).

    Args:
        sr: the SR file, or its pydicom dataset (e.g. from a WADO-RS retrieval).

    Returns:
        ``{"class_names": [...], "probabilities": (C,) float64 array, "predicted_class": name,
        "algorithm": (name, version), "study_uid": ..., "series_uids": [referenced series]}``.

    Raises:
        ValueError: ``sr`` is not an SR written by :func:`write_dicom_sr` (no class probability groups).
    """
    import highdicom as hd
    import pydicom
    from highdicom.sr.utils import find_content_items
    from pydicom.sr.codedict import codes

    dataset = sr if isinstance(sr, pydicom.Dataset) else pydicom.dcmread(sr)
    if dataset.get("Modality") != "SR":
        raise ValueError(f"`sr` should be a DICOM SR, got Modality {dataset.get('Modality')!r}.")
    report = hd.sr.Comprehensive3DSR.from_dataset(dataset).content
    by_index: dict[int, tuple[str, float]] = {}
    predicted = None
    for group in report.get_image_measurement_groups():
        finding = group.finding_type
        if finding is not None and finding.scheme_designator == CODING_SCHEME:
            (probability,) = group.get_measurements(name=codes.DCM.Probability)
            by_index[int(finding.value)] = (finding.meaning, float(probability.value))
        for evaluation in group.get_qualitative_evaluations():
            if evaluation.name.scheme_designator == CODING_SCHEME and evaluation.name.value == PREDICTED:
                predicted = evaluation.value.meaning
    if not by_index:
        raise ValueError("`sr` holds no class probability (no measurement group with a class finding type).")
    order = sorted(by_index)
    names, versions = (
        find_content_items(dataset, name=code, recursive=True) for code in (codes.DCM.AlgorithmName, codes.DCM.AlgorithmVersion)
    )
    evidence = dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
    return {
        "class_names": [by_index[i][0] for i in order],
        "probabilities": np.array([by_index[i][1] for i in order]),
        "predicted_class": predicted,
        "algorithm": (str(names[0].TextValue), str(versions[0].TextValue)) if names and versions else None,
        "study_uid": str(dataset.StudyInstanceUID),
        "series_uids": [str(s.SeriesInstanceUID) for study in evidence for s in study.ReferencedSeriesSequence],
    }
