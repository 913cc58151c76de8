"""MONAI Label train task over a Cross-D bundle's ``configs/train.json``.

MONAI Label's :class:`~monailabel.tasks.train.bundle.BundleTrainTask` runs the bundle's ``train`` workflow with the
datastore's labelled images as ``train#dataset#data``. This subclass adds:

* the trained weights always land in ``<bundle>/models/model.pt`` (a ``CheckpointSaver`` with ``save_final``), the
  file the infer task reloads, even when a short run never reaches the bundle's own best-metric saver;
* MONAI Label's ``CheckpointLoader`` (start from the current weights) and that saver are added around the bundle's
  own ``train#trainer#train_handlers``, whether the bundle writes them as a list or as an expression;
* overrides whose section the bundle does not have (e.g. ``validate#dataset#data`` for a bundle without a
  ``validate`` section) are dropped instead of failing;
* request options ``train_batch_size``, ``val_interval`` and ``num_workers`` reach the bundle's keys when it has them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.tasks.train.bundle import BundleTrainTask

__all__ = ["CrossDBundleTrainTask"]

logger = logging.getLogger(__name__)

#: request option -> bundle config ids tried in order (first found wins)
_OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {
    "train_batch_size": ("train#dataloader#batch_size", "batch_size"),
    "val_interval": ("val_interval", "train#val_interval"),
    "num_workers": ("train#dataloader#num_workers", "num_workers"),
}


class CrossDBundleTrainTask(BundleTrainTask):
    """Train a Cross-D bundle from MONAI Label (``POST /train/<model>``).

    Args:
        path: the (working copy of the) bundle folder.
        conf: the app's ``--conf`` options.
        kwargs: further :class:`monailabel.tasks.train.bundle.BundleTrainTask` arguments.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        self._request: dict = {}

    def config(self) -> dict[str, Any]:
        c = super().config()
        c.update({"max_epochs": 10, "val_split": 0.2, "multi_gpu": False, "tracking": ["None", "mlflow"]})
        return c

    def __call__(self, request: dict, datastore: Any) -> dict:
        self._request = dict(request)
        return super().__call__(request, datastore)

    def _has(self, key: str) -> bool:
        try:
            self.bundle_config[key]
        except (KeyError, IndexError, ValueError, TypeError):
            return False
        return True

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: Any) -> None:
        # MONAI Label inserts a CheckpointLoader into ``train#handlers`` assumed to be a list; a bundle may define it
        # as an expression ("$[...] + @train#handlers_base"). Keep the loader aside; _update_overrides places it.
        self._loader = None
        if pretrained and model_pytorch and os.path.exists(model_pytorch):
            logger.info("training starts from %s", model_pytorch)
            self._loader = {
                "_target_": "CheckpointLoader",
                "load_path": model_pytorch,
                "load_dict": {self.model_dict_key: f"@{self.const.key_network()}"},
                "strict": self.load_strict,
            }

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # the bundle's own train handlers stay as they are (a list or an expression)
        overrides.pop(self.const.key_train_handlers(), None)
        for key in list(overrides):
            parent = key.rsplit("#", 1)[0] if "#" in key else None
            if parent and not self._has(parent):
                logger.info("bundle has no %r: dropping the override %r", parent, key)
                del overrides[key]
        for option, keys in _OPTIONAL_KEYS.items():
            if option in self._request:
                for k in keys:
                    if self._has(k):
                        overrides[k] = self._request[option]
                        break
        saver = {
            "_target_": "CheckpointSaver",
            "save_dir": "$@bundle_root + '/models'",
            "save_dict": {self.model_dict_key: f"@{self.const.key_network()}"},
            "save_final": True,
            "final_filename": self.const.model_pytorch(),
            "save_key_metric": False,
        }
        trainer_handlers = "train#trainer#train_handlers"
        if not self._has("train#trainer"):
            raise ValueError(f"bundle {self.bundle_path!r}: its train config has no `train#trainer` to run.")
        bundle_handlers = self.bundle_config.config["train"]["trainer"].get("train_handlers")  # type: ignore[index]
        overrides["monailabel"] = {
            "pre_handlers": [self._loader] if getattr(self, "_loader", None) else [],
            "bundle_handlers": bundle_handlers,
            "post_handlers": [saver],
        }
        overrides[trainer_handlers] = (
            "$@monailabel#pre_handlers + list(@monailabel#bundle_handlers or []) + @monailabel#post_handlers"
        )
        return overrides
