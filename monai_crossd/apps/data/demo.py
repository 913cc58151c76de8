"""A SYNTHETIC brain-MR classification demo in the RSNA-MICCAI 2021 (BraTS MGMT) DICOM layout.

No real labelled BraTS data can ship with the project, so the ``crossd_brats`` bundle trains by default on this
generated stand-in: a few tiny four-series studies (FLAIR, T1w, T1wCE, T2w) whose label is the presence (1) or absence
(0) of an enhancing blob in the post-contrast series. It checks that the pipeline runs end to end (DICOM reading,
orientation, spacing, augmentation, training, checkpoints, metrics); its metrics say nothing about MGMT prediction.

Every series carries ``ImageComments = "SYNTHETIC DATA ..."`` and ``PatientName = "SYNTHETIC^DEMO..."``, and the
folder holds a ``SYNTHETIC_DEMO.json`` marker with the generation parameters. Generation is deterministic (fixed
seed) and atomic: the data are written to a temporary sibling folder which is then renamed into place, so an
interrupted run never leaves a half-written demo behind, and concurrent runs agree on one copy.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_crossd.apps.data.brats import BRATS_MODALITIES
from monai_crossd.apps.data.dicom import write_dicom_series

__all__ = ["DEMO_MARKER", "ensure_brats_demo", "synthetic_brats_case"]

logger = logging.getLogger(__name__)

DEMO_MARKER = "SYNTHETIC_DEMO.json"
_DEMO_FORMAT = 1
# mean tissue intensity per modality: (background brain, oedema, enhancing blob)
_INTENSITIES = {
    "FLAIR": (300.0, 700.0, 350.0),
    "T1w": (500.0, 380.0, 520.0),
    "T1wCE": (500.0, 380.0, 1400.0),
    "T2w": (400.0, 900.0, 500.0),
}


def synthetic_brats_case(label: int, shape: Sequence[int] = (32, 32, 16), seed: int = 0) -> dict[str, np.ndarray]:
    """One synthetic four-modality study: a noisy ellipsoidal "brain" with a bright oedema region in FLAIR/T2w and,
    when ``label == 1``, an enhancing blob inside it in T1wCE.

    Args:
        label: 1 draws the enhancing blob, 0 does not.
        shape: ``(H, W, D)`` voxel grid. Defaults to ``(32, 32, 16)``.
        seed: seed of this case's random generator.

    Returns:
        modality -> ``(H, W, D)`` float array of non-negative intensities.

    Raises:
        ValueError: ``label`` is not 0 or 1, or ``shape`` is not three ints >= 8.
    """
    if label not in (0, 1):
        raise ValueError(f"`label` should be 0 or 1, got {label!r}.")
    if len(shape) != 3 or any(int(s) < 8 for s in shape):
        raise ValueError(f"`shape` should be three ints >= 8, got {tuple(shape)}.")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, int(s)) for s in shape], indexing="ij"))
    brain = ((grid / np.array([0.85, 0.9, 0.85])[:, None, None, None]) ** 2).sum(0) < 1
    centre = rng.uniform(-0.35, 0.35, size=3)
    dist = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    oedema = (dist < rng.uniform(0.3, 0.4)) & brain
    blob = (dist < rng.uniform(0.17, 0.22)) & brain if label == 1 else np.zeros_like(brain)
    out = {}
    for modality in BRATS_MODALITIES:
        base, oed, enh = _INTENSITIES[modality]
        img = np.where(brain, base, 0.0)
        img = np.where(oedema, oed, img)
        img = np.where(blob, enh, img)
        img = img * rng.uniform(0.9, 1.1) + rng.normal(0.0, 30.0, size=img.shape) * brain
        out[modality] = np.clip(img, 0, None)
    return out


def _params(num_cases: int, shape: Sequence[int], spacing: Sequence[float], seed: int) -> dict:
    return {
        "format": _DEMO_FORMAT,
        "num_cases": int(num_cases),
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "seed": int(seed),
    }


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_brats_demo(
    out_dir: str | os.PathLike,
    num_cases: int = 16,
    shape: Sequence[int] = (32, 32, 16),
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
    seed: int = 0,
) -> str:
    """Generate the SYNTHETIC demo in the RSNA-MICCAI 2021 layout into ``out_dir`` unless it is already there.

    Layout: ``<out_dir>/train/<id:05d>/{FLAIR,T1w,T1wCE,T2w}/IM*.dcm`` and ``<out_dir>/train_labels.csv``
    (``BraTS21ID,MGMT_value``), half of the cases labelled 1, plus the ``SYNTHETIC_DEMO.json`` marker.

    Args:
        out_dir: the demo folder (created with its parents; written through a temporary sibling and a rename).
        num_cases: number of studies, at least 4 and even (balanced labels). Defaults to 16.
        shape: ``(H, W, D)`` voxels of every series. Defaults to ``(32, 32, 16)``.
        spacing: voxel size in mm. Defaults to ``(1, 1, 2)`` (cheap to resample to 1 mm).
        seed: generation seed. Defaults to 0.

    Returns:
        ``out_dir`` as a string, to use as the dataset root.

    Raises:
        ValueError: bad ``num_cases``; or ``out_dir`` exists without the demo marker (it is never overwritten).
            A demo made with other parameters (marker present) is regenerated in its place.
    """
    if int(num_cases) < 4 or int(num_cases) % 2:
        raise ValueError(f"`num_cases` should be an even int >= 4, got {num_cases!r}.")
    out = Path(out_dir)
    params = _params(num_cases, shape, spacing, seed)
    stale = None
    if out.exists():
        found = _read_marker(out)
        if found is not None and _same(found, params):
            logger.warning("using the SYNTHETIC demo data in %s (not real patients; a pipeline check only).", out)
            return str(out)
        if found is None:
            raise ValueError(
                f"`out_dir` {str(out)!r} exists but is not a synthetic demo (no {DEMO_MARKER}); it is never "
                "overwritten: delete it or choose another folder."
            )
        logger.warning("the SYNTHETIC demo in %s was made with other parameters %s: regenerating it.", out, found)
        stale = found
    logger.warning(
        "generating SYNTHETIC demo data (%d cases, not real patients; a pipeline check only) in %s.", num_cases, out
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the demo is ordinary shared data
    try:
        labels = np.tile([0, 1], int(num_cases) // 2)
        np.random.default_rng(seed).shuffle(labels)
        rows = []
        for i, label in enumerate(labels.tolist()):
            case_id = f"{i:05d}"
            images = synthetic_brats_case(label, shape=shape, seed=seed * 100003 + i)
            study_uid = None
            for number, modality in enumerate(BRATS_MODALITIES, start=1):
                write_dicom_series(
                    images[modality],
                    tmp / "train" / case_id / modality,
                    spacing=spacing,
                    series_description=f"SYNTHETIC {modality}",
                    patient_id=f"SYNTHETIC^DEMO{case_id}",
                    study_uid=study_uid,
                    series_number=number,
                    uid_seed=f"monai_crossd-demo-{seed}",
                )
            rows.append((i, label))
        with open(tmp / "train_labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["BraTS21ID", "MGMT_value"])
            writer.writerows(rows)
        marker = {**params, "note": "SYNTHETIC demo data generated by monai_crossd.apps.data.demo: not real patients."}
        (tmp / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if stale is not None:  # our own demo made with other parameters: move it aside, then replace it
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            try:
                os.rename(out, trash / out.name)
            except OSError:
                pass  # another process moved it already
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, out)
        except OSError:
            # another process renamed its copy first: keep it if it is the same demo
            if not (out.exists() and _same(_read_marker(out) or {}, params)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


def _same(found: dict, params: dict) -> bool:
    return all(found.get(k) == v for k, v in params.items())
