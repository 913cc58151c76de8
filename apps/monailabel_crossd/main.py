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
``init_weights`` (``true``: write a bundle's initial weights when it has no ``models/model.pt``; default true),
``modalities`` (channel order of the classifier's input), ``preload``, ``skip_trainers``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib.bundles import bundle_kind, ensure_checkpoint, read_metadata, resolve_models, stage_bundle
from lib.infers import CrossDClassificationInfer, CrossDSegmentationInfer
from lib.trainers import CrossDBundleTrainTask
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
