"""MONAI Label app serving the Cross-D bundles of this repository (arXiv 2411.02441).

Models (each a local bundle of ``<repo>/bundles``; no model hub is queried):

* ``crossd_hippocampus_segmentation``: Cross-D UNet 3D, hippocampus (anterior/posterior) from T1 MR;
  infer (segmentation, label on the input's grid) and train.
* ``crossd_brats``: Cross-D ResNet18 3D classifier of a 4-modality brain MR study; infer (classification). Input: a
  4D NIfTI ``(X, Y, Z, 4)`` with channels ``FLAIR, T1w, T1wCE, T2w``, or a study folder of four DICOM series.

Start (from the repository root, in the ``.venv-label`` environment)::

    monailabel start_server --app apps/monailabel_crossd --studies /path/to/studies --host 127.0.0.1 --port 8000 \
        --conf models all

``--conf`` options: ``models`` (comma-separated bundle names, or ``all``), ``bundles_dir`` (default
``<repo>/bundles``), ``model_dir`` (working copies of the bundles, trained weights; default ``<app>/model``),
``init_weights`` (``true``: write a bundle's initial weights when it has neither trained nor shipped weights; default true),
``modalities`` (channel order of the classifier's input), ``preload``, ``skip_trainers``,
``store_results`` (DICOMweb only: store each result in the PACS; default true).

On a DICOMweb server (``--studies http://127.0.0.1:8042/dicom-web``; credentials in MONAI Label's own settings
``MONAI_LABEL_DICOMWEB_USERNAME`` / ``MONAI_LABEL_DICOMWEB_PASSWORD``), MONAI Label's ``DICOMWebDatastore`` lists
series and fetches them; this app sets three things first:

* ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``: ``{"Modality": "MR"}`` while it has MONAI Label's default
  ``{"Modality": "CT"}`` (which lists no series of an MR study; both bundles read MR); any other value is kept;
* ``MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI``: false: a series reaches the infer task as its DICOM folder, read with
  ``PydicomReader``, so that the label comes back on exactly the grid a DICOM SEG of that series has;
* dcmqi: MONAI Label downloads dcmqi from GitHub at start-up unless ``itkimage2segimage`` is on ``PATH``
  (requirements-label.txt installs the PyPI ``dcmqi`` package into the venv, which puts it there, for MONAI Label's
  own "save label as final" path); this app never downloads it, it only warns when it is missing.

Every infer request on a series of the DICOMweb server then stores its result back into the PACS (STOW-RS), in one
place, :meth:`CrossDApp.infer` with :mod:`lib.pacs`: a segmentation as a DICOM SEG of the source series, a
classification (``image`` = any series of the study; the app fetches the whole study) as a DICOM SR with the class
probabilities. The stored object's UIDs come back in the result JSON under ``"pacs"``. A request with
``{"store_result": false}`` in its params stores nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from lib.bundles import bundle_kind, ensure_checkpoint, read_metadata, resolve_models, stage_bundle
from lib.infers import CrossDClassificationInfer, CrossDSegmentationInfer
from lib.pacs import download_study, output_channel_names, store_seg, store_sr
from lib.trainers import CrossDBundleTrainTask
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import monai_crossd

__all__ = ["CrossDApp"]

logger = logging.getLogger(__name__)

_APP_DIR = Path(__file__).resolve().parent

#: the DICOMweb series filter of this app, used while MONAI Label's setting has its default (``{"Modality": "CT"}``)
DICOMWEB_SEARCH_FILTER: dict[str, Any] = {"Modality": "MR"}


class CrossDApp(MONAILabelApp):
    """MONAI Label app for the Cross-D bundles: segmentation infer + train, classification infer.

    Args:
        app_dir: this folder.
        studies: a local folder of studies (NIfTI files; labels under ``labels/final``) or a DICOMweb URL.
        conf: ``--conf`` key/value options (see the module docstring).

    Raises:
        ValueError: ``bundles_dir`` is missing or ``models`` names a bundle that is not there.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        self.bundles_dir = Path(conf.get("bundles_dir") or _APP_DIR.parent.parent / "bundles").resolve()
        self.model_dir = Path(conf.get("model_dir") or Path(app_dir) / "model").resolve()
        sources = resolve_models(conf.get("models"), self.bundles_dir)
        init_weights = strtobool(conf.get("init_weights", "true"))
        self.models: dict[str, Path] = {}
        self.kinds: dict[str, str] = {}
        for name, src in sources.items():
            path = stage_bundle(src, self.model_dir)
            if init_weights:
                ensure_checkpoint(path)
            self.models[name] = path
            self.kinds[name] = bundle_kind(name, read_metadata(path))
            logger.info("bundle %s (%s): %s -> %s", name, self.kinds[name], src, path)
        self.store_results = strtobool(conf.get("store_results", "true"))
        if studies.startswith(("http://", "https://")):
            # `monailabel start_server` exports every setting to the environment: compare with MONAI Label's default
            default = type(settings).model_fields["MONAI_LABEL_DICOMWEB_SEARCH_FILTER"].default
            if settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER == default:
                settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER = dict(DICOMWEB_SEARCH_FILTER)
            settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI = False
            logger.info("DICOMweb series filter %s", settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"MONAI Label - Cross-D Conv (monai_crossd {monai_crossd.__version__})",
            description="Cross-D Conv (arXiv 2411.02441) bundles of monai_crossd: segmentation and classification",
            version=monai_crossd.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            cls = CrossDClassificationInfer if self.kinds[name] == "classification" else CrossDSegmentationInfer
            task = cls(str(path), self.conf)
            if not task.is_valid():
                raise ValueError(f"bundle {name!r} at {str(path)!r} could not be loaded for inference (see the log).")
            infers[name] = task
            logger.info("+++ infer task %s => %s", name, cls.__name__)
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            if self.kinds[name] != "segmentation":
                continue  # MONAI Label stores segmentation labels; a classifier has none to learn from
            task = CrossDBundleTrainTask(str(path), self.conf)
            if task.is_valid():
                trainers[name] = task
                logger.info("+++ train task %s", name)
            else:
                logger.warning("bundle %s has no configs/train.json: no train task", name)
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def _download_dcmqi_tools(self) -> None:
        # MONAI Label's version downloads dcmqi from GitHub when `itkimage2segimage` is not on PATH; never download
        venv_bin = str(Path(sys.executable).parent)
        if not (shutil.which("itkimage2segimage") or shutil.which("itkimage2segimage", path=venv_bin)):
            logger.warning(
                "itkimage2segimage (dcmqi) not found on PATH: MONAI Label's own 'save label as final' (OHIF) cannot "
                "write DICOM SEG; infer results are still stored (highdicom). Install it: pip install dcmqi"
            )

    def infer(self, request: dict, datastore: Any = None) -> dict:
        """MONAI Label's infer; on a DICOMweb datastore the result is also stored in the PACS (:mod:`lib.pacs`).

        Args:
            request: MONAI Label's infer request (``model``, ``image``: a series id of the datastore or a path, ...).
            datastore: the datastore. Defaults to the app's.

        Returns:
            MONAI Label's result; with a result stored, ``params["pacs"]`` holds the stored object's UIDs.
        """
        datastore = datastore if datastore else self.datastore()
        model, image = request.get("model"), request.get("image")
        store = (
            isinstance(datastore, DICOMWebDatastore)
            and self.store_results
            and strtobool(str(request.get("store_result", "true")))
            and model in self.models
            and isinstance(image, str)
            and not os.path.exists(image)
        )
        if not store:
            return super().infer(request, datastore)
        kind = self.kinds[model]
        bundle = self.models[model]
        metadata = read_metadata(bundle)
        names = output_channel_names(metadata)
        version = str(metadata.get("version", monai_crossd.__version__))
        client = datastore._client  # MONAI Label's DICOMweb client (its credentials and prefixes)
        if kind == "classification":  # a study of several series: fetch it whole, give its folder to the task
            study = download_study(client, image, Path(datastore._datastore.image_path()) / "studies")
            result = super().infer({**request, "image": str(study)}, datastore)
            scores = [p["score"] for p in sorted(result["params"]["prediction"], key=lambda p: p["idx"])]
            stored = store_sr(client, scores, names[: len(scores)], study, model, version)
        else:
            result = super().infer(request, datastore)
            series_dir = datastore.get_image_uri(image)  # the cached DICOM folder the task read
            if not os.path.isdir(series_dir):
                raise ValueError(
                    f"image {image!r} was converted to {series_dir!r}: set MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI=false "
                    "(the app's default) so the label is on the series' grid."
                )
            stored = store_seg(client, result["file"], series_dir, names[1:], model, version)
        result["params"] = {**(result.get("params") or {}), "pacs": stored}
        return result
