"""Evaluator outputs of the monai_crossd bundles, written atomically by the main process.

* :class:`AtomicNibabelWriter`: MONAI's ``NibabelWriter`` writing through a temporary file and a rename (for
  ``SaveImaged(writer=...)``): a mask is complete or absent, never half-written, and replaces an earlier one only
  once it is complete.

* :class:`MetricsHistoryWriter`: every validation's scalar metrics and the best so far, as JSON (MONAI's
  ``MetricsSaver`` writes one evaluation's metrics, not their history across training).
* :class:`ClassificationWriter`: per-case class probabilities as CSV and JSON. MONAI's ``ClassificationSaver`` is
  not enough for the bundles: its CSV has no header, names a case by its image meta data (``filename_or_obj``; the
  MedMNIST cases are arrays with a ``case_id``), holds no label column, no class names and no JSON, and appends to
  the file in place.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.data import NibabelWriter

from monai_crossd.apps.bundle.cases import CaseFailures
from monai_crossd.apps.bundle.training import write_json
from monai_crossd.apps.io import atomic_path, atomic_write_bytes

__all__ = ["AtomicNibabelWriter", "ClassificationWriter", "MetricsHistoryWriter"]

logger = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` that writes to a temporary file in the target folder and renames it over the target.

    See :func:`monai_crossd.apps.io.atomic_path` (``fsync``, mode 0644, ``os.replace``). Use as
    ``SaveImaged(..., writer="monai_crossd.apps.bundle.AtomicNibabelWriter")``.
    """

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        """Write the image set by ``set_data_array``/``set_metadata`` to ``filename`` atomically."""
        with atomic_path(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)
        if verbose:
            logger.info("writing: %s", filename)


class MetricsHistoryWriter:
    """Append each evaluation's scalar metrics to a JSON file (attach to the evaluator).

    The file holds ``{**extra, "key_metric": name, "best": {...}, "history": [{"epoch": e, metric: value, ...}]}``,
    rewritten after every evaluation; a resumed run continues the history found in the file.

    Args:
        path: the JSON file.
        extra: constant fields stored at the top level (e.g. ``{"data": "SYNTHETIC demo"}``).
    """

    def __init__(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        self.path = str(path)
        self.extra = dict(extra or {})
        self.history: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Read the history of a previous run, then run at the end of every evaluation of ``engine``."""
        if os.path.isfile(self.path):
            try:
                self.history = list(json.loads(Path(self.path).read_text()).get("history", []))
            except (OSError, ValueError, AttributeError):
                logger.warning("%s is not a metrics history: starting a new one.", self.path)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        entry = {"epoch": epoch}
        entry.update({k: v for k, v in ((k, _scalar(v)) for k, v in engine.state.metrics.items()) if v is not None})
        self.history = [h for h in self.history if h.get("epoch") != epoch] + [entry]
        key = getattr(engine.state, "key_metric_name", None)
        scored = [h for h in self.history if key in h and not math.isnan(h[key])]
        best = max(scored, key=lambda h: h[key]) if scored else None
        if idist.get_rank() == 0:
            write_json(self.path, {**self.extra, "key_metric": key, "best": best, "history": self.history})


class ClassificationWriter:
    """Write per-case class probabilities of an evaluator's output as CSV and JSON (attach to the evaluator).

    Rows: ``case_id, prob_0, ..., prob_{C-1}, pred`` (and ``label`` when the cases have one), where the probabilities
    are each case's ``pred`` of the decollated output (MONAI's engines decollate by default; apply
    ``Activationsd(softmax=True)`` in the postprocessing) and ``pred`` is their argmax. A one-hot label is stored as
    its class index. ``<filename>.csv`` and ``<filename>.json`` (``{**extra, "class_names", "predictions"}``) are
    written when the evaluation completes (each replaced atomically); an evaluation without a single prediction
    (every case failed) removes those of an earlier run instead of leaving them looking current.

    With ``failures`` (the run's :class:`~monai_crossd.apps.bundle.CaseFailures`), a failed case gets no row: the files
    hold the good cases only (no row of an earlier run survives the atomic replacement) and the JSON lists the failed
    ones as ``"failed_cases": [{"case_id", "reason"}]``; ``CaseFailures`` then ends the run with its table and error.

    Args:
        output_dir: folder of the files (created).
        filename: base name of the files. Defaults to ``"predictions"``.
        class_names: optional names stored in the JSON.
        id_key: key of the case ids in the batch; cases without one are numbered. Defaults to ``"case_id"``.
        label_key: key of the labels in the batch, stored when present. Defaults to ``"label"``.
        pred_key: key of the probabilities in the output. Defaults to ``"pred"``.
        extra: constant fields stored at the top level of the JSON.
        failures: the ``CaseFailures`` of the evaluator, whose failed cases are listed in the JSON. Defaults to
            ``None`` (no ``failed_cases`` field).

    Raises:
        TypeError: (when collecting) the engine's output is not decollated (a list of per-case dicts).
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
        failures: CaseFailures | None = None,
    ) -> None:
        self.output_dir = str(output_dir)
        self.filename = filename
        self.class_names = list(class_names) if class_names is not None else None
        self.id_key, self.label_key, self.pred_key = id_key, label_key, pred_key
        self.extra = dict(extra or {})
        self.failures = failures
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Collect at every iteration, write when the evaluation of ``engine`` completes."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        outputs, cases = engine.state.output, engine.state.batch
        if not isinstance(outputs, list) or not isinstance(cases, list):
            raise TypeError(
                "ClassificationWriter needs the decollated output of a MONAI engine (a list of per-case dicts), got "
                f"{type(outputs).__name__}; do not set `decollate=False`."
            )
        for output, case in zip(outputs, cases):
            probs = torch.as_tensor(output[self.pred_key]).detach().cpu().float().flatten()
            row = {"case_id": str(case.get(self.id_key, len(self.rows)))}
            row.update({f"prob_{c}": float(p) for c, p in enumerate(probs)})
            row["pred"] = int(probs.argmax())
            if self.label_key in case:
                label = torch.as_tensor(case[self.label_key]).flatten()
                row["label"] = int(label.argmax() if label.numel() > 1 else label.item())
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        if idist.get_rank() != 0:
            return
        base = os.path.join(self.output_dir, self.filename)
        if not self.rows:
            for stale in (base + ".csv", base + ".json"):
                if os.path.isfile(stale):
                    os.unlink(stale)
                    logger.warning("no predictions: removed %s of an earlier run.", stale)
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(text.getvalue().encode(), base + ".csv")
        result = {**self.extra, "class_names": self.class_names, "predictions": self.rows}
        if self.failures is not None:
            result["failed_cases"] = [{"case_id": case, "reason": reason} for case, reason in self.failures.failed]
        write_json(base + ".json", result)
        logger.info("wrote %d predictions to %s.{csv,json}", len(self.rows), base)
