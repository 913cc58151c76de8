"""Checkpoints of the monai_crossd bundles: ignite's ``Checkpoint`` with an atomic ``DiskSaver``, and checked loaders.

* :class:`AtomicDiskSaver`: ignite's ``DiskSaver`` that writes through :func:`monai_crossd.apps.io.atomic_torch_save`
  (temporary file, ``fsync``, mode 0644, ``os.replace``) and deletes a file it replaces only once the new one is
  written. ``Checkpoint`` removes the file it replaces *before* saving the new one, and MONAI's ``CheckpointSaver``
  writes in place (``atomic=False``, because ignite's atomic files used to be mode 0600): with either, a run killed
  while saving can leave no best model or a truncated one.
* :class:`BestCheckpointSaver` (evaluator): the network ``state_dict`` at the best key metric, ``models/model.pt``
  in model-zoo style (what ``ckpt_export`` and ``CheckpointLoader`` expect), and with it ``models/model_config.json``
  stamped with that file's SHA-256 (see :mod:`monai_crossd.apps.bundle.model_config`).
* :class:`LastCheckpointSaver` (trainer): the full training state every epoch, ``models/last.pt``. Put the best saver
  in its ``save_dict`` so the best score resumes too.
* :class:`CheckedCheckpointLoader`: MONAI's ``CheckpointLoader`` whose failures name the file and the missing,
  unexpected and mismatched keys; :class:`ResumeCheckpointLoader` also restores the engine it is attached to.

Under ``torch.distributed`` only rank 0 writes (ignite's ``save_on_rank``); every rank keeps the same best score.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader

from monai_crossd.apps.bundle.model_config import write_model_config
from monai_crossd.apps.io import atomic_torch_save
from monai_crossd.converters.report import key_mismatch

__all__ = [
    "AtomicDiskSaver",
    "BestCheckpointSaver",
    "CheckedCheckpointLoader",
    "LastCheckpointSaver",
    "ResumeCheckpointLoader",
    "state_dict_mismatch",
]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing atomically with mode 0644, removing a replaced file only after the new one is in.

    Args:
        dirname: folder of the checkpoints (created; other ``.pt`` files there are allowed).
        save_on_rank: the process that writes under ``torch.distributed``. Defaults to 0.
        kwargs: ``torch.save`` keyword arguments.
    """

    def __init__(self, dirname: str | os.PathLike, save_on_rank: int = 0, **kwargs: Any) -> None:
        super().__init__(
            dirname, atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank, **kwargs
        )
        self._replaced: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        replaced, self._replaced = set(self._replaced) - {filename}, []
        if idist.get_rank() == self.save_on_rank:
            for name in replaced:
                (self.dirname / name).unlink(missing_ok=True)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        atomic_torch_save(checkpoint, path, **self.kwargs)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` after the next save (``Checkpoint`` calls this just before saving its successor)."""
        self._replaced.append(filename)


class _PairedDiskSaver(AtomicDiskSaver):
    """:class:`AtomicDiskSaver` that writes ``model_config`` stamped with each checkpoint it has just written."""

    def __init__(self, dirname: str | os.PathLike, model_config: Mapping[str, Any], config_name: str) -> None:
        super().__init__(dirname)
        self.model_config, self.config_name = dict(model_config), config_name

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        if idist.get_rank() == self.save_on_rank:
            write_model_config(self.dirname / self.config_name, self.model_config, self.dirname / filename)


class BestCheckpointSaver(Checkpoint):
    """ignite's ``Checkpoint`` of the network at the evaluator's best key metric (attach to the evaluator).

    Args:
        save_dir: folder of the checkpoint.
        network: the model (a ``DistributedDataParallel`` wrapper is unwrapped); the file is its plain ``state_dict``.
        key_metric_name: metric to compare; the evaluator's key metric when ``None``.
        filename: checkpoint file name. Defaults to ``"model.pt"``.
        greater_or_equal: also save on ties (the later of equal scores wins). Defaults to ``False``.
        model_config: settings inference rebuilds the model from; written to ``model_config_name`` beside the
            checkpoint after every save, stamped with the checkpoint's SHA-256, so the two always come from the same
            run (nothing is written before the first save). ``None`` writes no config. Defaults to ``None``.
        model_config_name: file name of the model config. Defaults to ``"model_config.json"``.

    A NaN score saves nothing (with a warning). ``state_dict()`` / ``load_state_dict()`` carry the best score, so
    putting this object in the resume checkpoint keeps the comparison going across restarts.

    Raises:
        ValueError: (when called) the key metric is not among the evaluator's metrics or is not a number.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        key_metric_name: str | None = None,
        filename: str = "model.pt",
        greater_or_equal: bool = False,
        model_config: Mapping[str, Any] | None = None,
        model_config_name: str = "model_config.json",
    ) -> None:
        self.key_metric_name = key_metric_name
        saver = (
            AtomicDiskSaver(save_dir)
            if model_config is None
            else _PairedDiskSaver(save_dir, model_config, model_config_name)
        )
        super().__init__(
            {"model": network},
            saver,
            score_function=self.score,
            n_saved=1,
            filename_pattern=filename,
            greater_or_equal=greater_or_equal,
        )

    def attach(self, engine: Engine) -> None:
        """Run at the end of every evaluation of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _metric_name(self, engine: Engine) -> str:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise ValueError(
                f"BestCheckpointSaver: key metric {name!r} not in the evaluator metrics {sorted(engine.state.metrics)}."
            )
        return name

    def score(self, engine: Engine) -> float:
        """The key metric of ``engine`` as a float."""
        name = self._metric_name(engine)
        try:
            return float(engine.state.metrics[name])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"BestCheckpointSaver: key metric {name!r} should be a number, got {engine.state.metrics[name]!r}."
            ) from err

    def __call__(self, engine: Engine) -> None:
        value = self.score(engine)
        if math.isnan(value):
            logger.warning("BestCheckpointSaver: metric %s is NaN; no checkpoint.", self._metric_name(engine))
            return
        before = list(self._saved)
        super().__call__(engine)
        if self._saved != before:
            name = self._metric_name(engine)
            logger.info("best %s=%.4f at epoch %d: saved %s", name, value, engine.state.epoch, self.last_checkpoint)

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore the best score; also reads ``{"best_metric", "best_epoch"}`` of checkpoints written before ignite."""
        if "best_metric" in state_dict:
            found = int(state_dict.get("best_epoch", -1)) >= 0
            state_dict = {"_saved": [(float(state_dict["best_metric"]), self.filename_pattern)] if found else []}
        super().load_state_dict(state_dict)


class LastCheckpointSaver(Checkpoint):
    """ignite's ``Checkpoint`` of the full training state every ``save_interval`` epochs and at the end (trainer).

    Args:
        save_dir: folder of the checkpoint.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, lr scheduler, best saver...), the
            ``load_dict`` of :class:`ResumeCheckpointLoader`.
        filename: checkpoint file name. Defaults to ``"last.pt"``.
        save_interval: epochs between saves. Defaults to 1.
        engine_key: the attached engine's own state (epoch, iteration) is saved under this key, so configs need
            not reference the trainer from inside its own handler list. Defaults to ``"trainer"``.

    Attach it after the ``ValidationHandler`` so the epoch's validation (and best score) is in the checkpoint.

    Raises:
        ValueError: ``save_dict`` is empty or ``save_interval`` is not a positive int.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "last.pt",
        save_interval: int = 1,
        engine_key: str = "trainer",
    ) -> None:
        if not save_dict:
            raise ValueError("`save_dict` should name at least one object to save, got an empty mapping.")
        if isinstance(save_interval, bool) or not isinstance(save_interval, int) or save_interval < 1:
            raise ValueError(f"`save_interval` should be a positive int, got {save_interval!r}.")
        self.save_interval = save_interval
        self.engine_key = engine_key
        super().__init__(dict(save_dict), AtomicDiskSaver(save_dir), n_saved=1, filename_pattern=filename)

    def attach(self, engine: Engine) -> None:
        """Save on ``engine``'s epoch completions and when it completes."""
        self.to_save.setdefault(self.engine_key, engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)


def state_dict_mismatch(
    model: torch.nn.Module, state: Mapping[str, Any]
) -> tuple[list[str], list[str], dict[str, str]]:
    """The keys of ``state`` that keep it from loading into ``model``, as :func:`key_mismatch` takes them.

    Returns:
        ``(missing, unexpected, mismatched)``: model keys ``state`` lacks, ``state`` keys the model lacks, and
        key -> ``"checkpoint <shape> vs model <shape>"`` for tensors of another shape.
    """
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    mismatched = {
        k: f"checkpoint {tuple(v.shape)} vs model {tuple(want[k].shape)}"
        for k, v in state.items()
        if k in want and isinstance(v, torch.Tensor) and v.shape != want[k].shape
    }
    return missing, unexpected, mismatched


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if isinstance(getattr(network, "module", None), torch.nn.Module) else network


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (same arguments) whose failures name the file and list the keys.

    A missing or unreadable file, or a checkpoint that does not fit a network of ``load_dict`` (another
    architecture, another class count, a ``module.`` prefix...), raises a ``ValueError`` naming ``load_path``
    and the network's missing, unexpected and mismatched keys, instead of torch's ``RuntimeError``.

    Raises:
        ValueError: (when the engine starts) ``load_path`` is not a file, cannot be read, or does not fit ``load_dict``.
    """

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise ValueError(f"`load_path` should be an existing checkpoint, got {self.load_path!r}.")
        try:
            return super().__call__(engine)
        except Exception as err:  # re-raised as a ValueError naming the file and the keys
            raise ValueError(self._explain(err)) from err

    def _explain(self, err: Exception) -> str:
        head = f"checkpoint {self.load_path!r} could not be loaded"
        try:
            checkpoint = torch.load(self.load_path, map_location="cpu", weights_only=True)
        except Exception as read_err:  # noqa: BLE001 - reported in the message
            return f"{head}: not a readable checkpoint (truncated or corrupt?): {type(read_err).__name__}: {read_err}"
        name = next(iter(self.load_dict))
        if len(self.load_dict) == 1 and isinstance(checkpoint, Mapping) and name not in checkpoint:
            checkpoint = {name: checkpoint}
        problems = []
        for key, obj in self.load_dict.items():
            if not isinstance(obj, torch.nn.Module):
                continue
            state = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
            if not isinstance(state, Mapping):
                keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
                problems.append(f"no {key!r} entry (the checkpoint has {keys})")
                continue
            found = key_mismatch(*state_dict_mismatch(_unwrap(obj), state))
            if found:
                problems.append(f"`{key}` ({type(_unwrap(obj)).__name__}) does not fit: {found}")
        detail = "; ".join(problems) or f"{type(err).__name__}: {err}"
        return f"{head}: {detail}."


class ResumeCheckpointLoader(CheckedCheckpointLoader):
    """:class:`CheckedCheckpointLoader` that also restores the engine it is attached to (attach to the trainer).

    A config cannot list ``"trainer": "@train#trainer"`` in the ``load_dict`` of a handler of that same trainer
    (a circular reference), so the attached engine joins ``load_dict`` under ``engine_key`` at attach time,
    matching :class:`LastCheckpointSaver`. The epoch restored is the checkpoint's; ``max_epochs`` stays the
    configured one, so a resumed run trains the remaining epochs.

    Args:
        load_path: checkpoint written by :class:`LastCheckpointSaver`.
        load_dict: name -> object with ``load_state_dict`` (network, optimizer, best saver...).
        engine_key: key of the engine's state in the checkpoint. Defaults to ``"trainer"``.
        kwargs: further ``CheckpointLoader`` arguments (``map_location``, ``strict``...).
    """

    def __init__(
        self, load_path: str | os.PathLike, load_dict: Mapping[str, Any], engine_key: str = "trainer", **kwargs: Any
    ) -> None:
        super().__init__(load_path=str(load_path), load_dict=dict(load_dict), **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Load the checkpoint, ``engine`` included, when ``engine`` starts."""
        self.load_dict[self.engine_key] = engine
        super().attach(engine)
