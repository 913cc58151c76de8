"""Ignite handlers shared by the monai_crossd bundles: atomic checkpoints, metric history, classification outputs.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an interrupted run
leaves either the previous file or the new one, never a truncated checkpoint: MONAI's ``CheckpointSaver`` writes in
place (``atomic=False``) and removes the old best before saving the new one.

* :class:`BestCheckpointSaver` (evaluator): the network weights at the best key metric, ``models/model.pt``
  in model-zoo style (a plain ``state_dict``, what ``ckpt_export`` and ``CheckpointLoader`` expect).
* :class:`LastCheckpointSaver` (trainer): the full training state every epoch, ``models/last.pt``, read back by
  MONAI's ``CheckpointLoader`` to resume. Put the best saver in its ``save_dict`` so the best score resumes too.
* :class:`CheckedCheckpointLoader`: MONAI's ``CheckpointLoader`` whose failures name the file and list the
  missing, unexpected and mismatched keys (a checkpoint of another architecture, class count or key prefix).
* :class:`EpochSeed` (trainer): every random generator reseeded from ``(seed, epoch)`` at the start of each
  epoch, so a run resumed from ``last.pt`` trains exactly as the uninterrupted run.
* :class:`MetricsHistoryWriter` (evaluator): every validation's metrics and the best so far as JSON.
* :class:`ClassificationWriter` (evaluator): per-case class probabilities as CSV and JSON.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointLoader

__all__ = [
    "BestCheckpointSaver",
    "CheckedCheckpointLoader",
    "ClassificationWriter",
    "EpochSeed",
    "LastCheckpointSaver",
    "MetricsHistoryWriter",
    "ResumeCheckpointLoader",
    "atomic_torch_save",
    "atomic_write_bytes",
    "state_dict_problems",
]

logger = logging.getLogger(__name__)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` to ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)


def _state(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    return network.module if hasattr(network, "module") and isinstance(network.module, torch.nn.Module) else network


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class BestCheckpointSaver:
    """Save the network weights whenever the evaluator's key metric improves (attach to the evaluator).

    Args:
        save_dir: folder of the checkpoint.
        network: the model (a ``DistributedDataParallel`` wrapper is unwrapped).
        key_metric_name: metric to compare; the evaluator's key metric when ``None``.
        filename: checkpoint file name. Defaults to ``"model.pt"``.
        greater_or_equal: also save on ties (the later of equal scores wins). Defaults to ``False``.

    The epoch recorded is the evaluator's ``state.epoch``, which MONAI's ``ValidationHandler`` sets to the trainer's.

    ``state_dict()`` / ``load_state_dict()`` carry the best score and epoch, so putting this object in the resume
    checkpoint keeps the comparison going across restarts.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        key_metric_name: str | None = None,
        filename: str = "model.pt",
        greater_or_equal: bool = False,
    ) -> None:
        self.save_dir = str(save_dir)
        self.network = network
        self.key_metric_name = key_metric_name
        self.filename = filename
        self.greater_or_equal = greater_or_equal
        self.best_metric = -math.inf
        self.best_epoch = -1

    @property
    def path(self) -> str:
        """Full path of the best checkpoint."""
        return os.path.join(self.save_dir, self.filename)

    def attach(self, engine: Any) -> None:
        """Run at the end of every evaluation of ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise ValueError(
                f"BestCheckpointSaver: key metric {name!r} not in the evaluator metrics {sorted(engine.state.metrics)}."
            )
        value = _scalar(engine.state.metrics[name])
        if value is None or math.isnan(value):
            logger.warning("BestCheckpointSaver: metric %s=%r is not a number; no checkpoint.", name, value)
            return
        better = value >= self.best_metric if self.greater_or_equal else value > self.best_metric
        if not better:
            return
        self.best_metric = value
        self.best_epoch = int(engine.state.epoch)
        if _is_main_process():
            atomic_torch_save(_unwrap(self.network).state_dict(), self.path)
            logger.info("best %s=%.4f at epoch %d: saved %s", name, value, self.best_epoch, self.path)

    def state_dict(self) -> dict:
        """Best score and epoch, for the resume checkpoint."""
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the best score and epoch from :meth:`state_dict`."""
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])


class LastCheckpointSaver:
    """Save the full training state every ``save_interval`` trainer epochs and at the end (attach to the trainer).

    Args:
        save_dir: folder of the checkpoint.
        save_dict: name -> object with ``state_dict()`` (network, optimizer, trainer, lr scheduler, best saver...),
            the same ``load_dict`` MONAI's ``CheckpointLoader`` takes to resume.
        filename: checkpoint file name. Defaults to ``"last.pt"``.
        save_interval: epochs between saves. Defaults to 1.
        engine_key: the attached engine's own state (epoch, iteration) is saved under this key, so configs need
            not reference the trainer from inside its own handler list. Defaults to ``"trainer"``.

    Attach it after the ``ValidationHandler`` so the epoch's validation (and best score) is in the checkpoint.
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
        if int(save_interval) < 1:
            raise ValueError(f"`save_interval` should be a positive int, got {save_interval!r}.")
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.save_interval = int(save_interval)
        self.engine_key = engine_key

    @property
    def path(self) -> str:
        """Full path of the last checkpoint."""
        return os.path.join(self.save_dir, self.filename)

    def attach(self, engine: Any) -> None:
        """Save on ``engine``'s epoch completions and when it completes."""
        from ignite.engine import Events

        self.save_dict.setdefault(self.engine_key, engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if not _is_main_process():
            return
        state = {k: _state(_unwrap(v) if isinstance(v, torch.nn.Module) else v) for k, v in self.save_dict.items()}
        atomic_torch_save(state, self.path)
        logger.debug("saved %s at epoch %d", self.path, engine.state.epoch)


_SHOWN_KEYS = 8


def _listed(keys: Sequence[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def state_dict_problems(model: torch.nn.Module, state: Mapping[str, Any]) -> str:
    """The missing, unexpected and shape-mismatched keys of ``state`` for ``model`` ("" when it fits)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    mismatched = [
        f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(want[k].shape)})"
        for k, v in state.items()
        if k in want and isinstance(v, torch.Tensor) and v.shape != want[k].shape
    ]
    parts = [
        f"{len(keys)} {name} keys: {_listed(keys)}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
        if keys
    ]
    prefixes = {k.split(".", 1)[0] + "." for k in unexpected if "." in k}
    if missing and len(prefixes) == 1 and all(k.startswith(next(iter(prefixes))) for k in unexpected):
        parts.append(f"every unexpected key starts with {next(iter(prefixes))!r}: strip the prefix")
    return "; ".join(parts)


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (same arguments) whose failures name the file and list the keys.

    A missing or unreadable file, or a checkpoint that does not fit a network of ``load_dict`` (another
    architecture, another class count, a ``module.`` prefix...), raises a ``ValueError`` naming ``load_path``
    and the network's missing, unexpected and mismatched keys, instead of torch's ``RuntimeError``.

    Raises:
        ValueError: ``load_path`` is not a file, cannot be read, or does not fit ``load_dict``.
    """

    def __call__(self, engine: Any) -> None:
        if not os.path.isfile(self.load_path):
            raise ValueError(f"`load_path` should be an existing checkpoint, got {self.load_path!r}.")
        try:
            return super().__call__(engine)
        except Exception as err:  # noqa: BLE001 - re-raised as a ValueError naming the file and the keys
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
            found = state_dict_problems(_unwrap(obj), state)
            if found:
                problems.append(f"`{key}` ({type(_unwrap(obj)).__name__}) does not fit: {found}")
        detail = "; ".join(problems) or f"{type(err).__name__}: {err}"
        return f"{head}: {detail}."


class EpochSeed:
    """Reseed every random generator from ``(seed, epoch)`` before the first batch of each trainer epoch.

    ``set_determinism`` at start-up fixes one random stream for the whole run: a run resumed from ``last.pt``
    restarts that stream, so its shuffling and augmentations differ from the uninterrupted run's. Reseeding per
    epoch (Python, NumPy and torch generators, and the random transforms of ``transform``) makes epoch ``e`` depend
    on ``seed`` and ``e`` only: killed and resumed, a run ends with the weights of the uninterrupted one.

    The reseed happens on ``GET_BATCH_STARTED`` of an epoch's first batch, before the batch is read. Ignite creates
    the epoch's data iterator before that event in a resumed run but after it in a fresh one, so the shuffling
    must not draw from the global generators: the bundles use a one-replica ``DistributedSampler`` (its order is
    a function of its seed and the epoch, which MONAI's trainers set) and give the ``DataLoader`` its own
    ``generator`` (drawn from when the iterator is created).

    Args:
        seed: base seed; epoch ``e`` uses ``seed + e``. ``None`` disables the handler.
        transform: the training transform (a ``Compose``) whose random transforms are reseeded too; ``None``
            leaves them alone.
    """

    def __init__(self, seed: int | None, transform: Any = None) -> None:
        self.seed = None if seed is None else int(seed)
        self.transform = transform

    def attach(self, engine: Any) -> None:
        """Reseed before the first batch of every epoch of ``engine``."""
        from ignite.engine import Events

        if self.seed is not None:
            engine.add_event_handler(Events.GET_BATCH_STARTED, self)

    def __call__(self, engine: Any) -> None:
        length = engine.state.epoch_length
        if not length or engine.state.iteration % length:
            return
        from monai.data.utils import set_rnd
        from monai.utils import set_determinism

        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed)
        if self.transform is not None:
            set_rnd(self.transform, seed)


class ResumeCheckpointLoader:
    """MONAI's ``CheckpointLoader`` that also restores the engine it is attached to (attach to the trainer).

    A config cannot list ``"trainer": "@train#trainer"`` in the ``load_dict`` of a handler of that same trainer
    (a circular reference), so the attached engine is added to ``load_dict`` under ``engine_key`` at attach time,
    matching :class:`LastCheckpointSaver`. The epoch restored is the checkpoint's; ``max_epochs`` stays the
    configured one, so a resumed run trains the remaining epochs.

    Args:
        load_path: checkpoint written by :class:`LastCheckpointSaver`.
        load_dict: name -> object with ``load_state_dict`` (network, optimizer, best saver...).
        engine_key: key of the engine's state in the checkpoint. Defaults to ``"trainer"``.
        map_location: ``torch.load`` map location.
        strict: strict ``load_state_dict`` for the network. Defaults to ``True``.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        engine_key: str = "trainer",
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        self.load_path = str(load_path)
        self.load_dict = dict(load_dict)
        self.engine_key = engine_key
        self.map_location = map_location
        self.strict = strict

    def attach(self, engine: Any) -> None:
        """Load when ``engine`` starts.

        Raises:
            ValueError: ``load_path`` does not exist.
        """
        if not os.path.isfile(self.load_path):
            raise ValueError(f"`load_path` should be an existing checkpoint, got {self.load_path!r}.")
        loader = CheckedCheckpointLoader(
            load_path=self.load_path,
            load_dict={**self.load_dict, self.engine_key: engine},
            map_location=self.map_location,
            strict=self.strict,
        )
        loader.attach(engine)


class MetricsHistoryWriter:
    """Append each evaluation's scalar metrics to a JSON file (attach to the evaluator).

    The file holds ``{"history": [{"epoch": e, metric: value, ...}, ...], "best": {...}, "key_metric": name}``,
    rewritten atomically after every evaluation.

    Args:
        path: the JSON file.
        extra: constant fields stored at the top level (e.g. ``{"data": "SYNTHETIC demo"}``).
    """

    def __init__(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        self.path = str(path)
        self.extra = dict(extra or {})
        self.history: list[dict] = []

    def attach(self, engine: Any) -> None:
        """Run at the end of every evaluation of ``engine``."""
        from ignite.engine import Events

        if os.path.isfile(self.path):  # resumed runs continue the history
            try:
                self.history = list(json.loads(Path(self.path).read_text()).get("history", []))
            except (OSError, ValueError):
                self.history = []
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        epoch = int(engine.state.epoch)
        entry = {"epoch": epoch}
        entry.update({k: v for k, v in ((k, _scalar(v)) for k, v in engine.state.metrics.items()) if v is not None})
        self.history = [h for h in self.history if h.get("epoch") != epoch] + [entry]
        key = getattr(engine.state, "key_metric_name", None)
        scored = [h for h in self.history if key in h and not math.isnan(h[key])]
        best = max(scored, key=lambda h: h[key]) if scored else None
        if _is_main_process():
            payload = {**self.extra, "key_metric": key, "best": best, "history": self.history}
            atomic_write_bytes((json.dumps(payload, indent=2) + "\n").encode(), self.path)


class ClassificationWriter:
    """Write per-case class probabilities of an evaluator's output as CSV and JSON (attach to the evaluator).

    Rows: ``case_id, prob_0, ..., prob_{C-1}, pred`` (and ``label`` when the batch has one). Probabilities are
    ``engine.state.output[i][pred_key]``, soft-maxed first when ``softmax`` is true (raw logits); both files are
    written atomically when the evaluation completes.

    Args:
        output_dir: folder of the files (created).
        filename: base name; ``<filename>.csv`` and ``<filename>.json`` are written. Defaults to ``"predictions"``.
        class_names: optional names stored in the JSON.
        id_key: batch key of the case ids. Defaults to ``"case_id"``.
        label_key: batch key of the labels, stored when present. Defaults to ``"label"``.
        pred_key: output key of the logits. Defaults to ``"pred"``.
        extra: constant fields stored at the top level of the JSON.
        softmax: apply a softmax to the outputs (they are logits). Defaults to ``False`` (already probabilities).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions",
        class_names: Sequence[str] | None = None,
        id_key: str = "case_id",
        label_key: str = "label",
        pred_key: str = "pred",
        extra: Mapping[str, Any] | None = None,
        softmax: bool = False,
    ) -> None:
        self.output_dir = str(output_dir)
        self.filename = filename
        self.class_names = list(class_names) if class_names is not None else None
        self.id_key, self.label_key, self.pred_key = id_key, label_key, pred_key
        self.extra = dict(extra or {})
        self.softmax = softmax
        self.rows: list[dict] = []

    def attach(self, engine: Any) -> None:
        """Collect at every iteration, write when ``engine`` completes."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Any) -> None:
        output = engine.state.output
        batch = engine.state.batch
        items = output if isinstance(output, list) else [output]
        # MONAI engines decollate: ``batch`` is then a list of per-case dicts, otherwise one collated dict
        if isinstance(batch, Mapping):
            ids, labels = batch.get(self.id_key), batch.get(self.label_key)
        elif isinstance(batch, list) and all(isinstance(b, Mapping) for b in batch):
            ids = [b.get(self.id_key) for b in batch]
            labels = [b.get(self.label_key) for b in batch]
            ids = None if any(i is None for i in ids) else ids
            labels = None if any(v is None for v in labels) else labels
        else:
            ids = labels = None
        for i, item in enumerate(items):
            logits = item[self.pred_key] if isinstance(item, Mapping) else item
            values = torch.as_tensor(logits).detach().cpu().float().flatten()
            probs = (torch.softmax(values, dim=0) if self.softmax else values).tolist()
            row = {"case_id": str(ids[i]) if ids is not None else str(len(self.rows))}
            row.update({f"prob_{c}": float(p) for c, p in enumerate(probs)})
            row["pred"] = int(max(range(len(probs)), key=probs.__getitem__))
            if labels is not None:
                label = torch.as_tensor(labels[i]).flatten()
                row["label"] = int(label.argmax().item()) if label.numel() > 1 else int(label.item())
            self.rows.append(row)

    def _write(self, engine: Any) -> None:
        if not _is_main_process() or not self.rows:
            return
        base = os.path.join(self.output_dir, self.filename)
        fields = list(self.rows[0])
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(text.getvalue().encode(), base + ".csv")
        payload = {**self.extra, "class_names": self.class_names, "predictions": self.rows}
        atomic_write_bytes((json.dumps(payload, indent=2) + "\n").encode(), base + ".json")
        logger.info("wrote %d predictions to %s.{csv,json}", len(self.rows), base)
