"""Batch inference that goes on past a bad case, on MONAI's ``SupervisedEvaluator``.

One unreadable or corrupt input should not stop the other cases of a batch, nor leave an earlier output of the bad
case behind looking current. The pieces, wired in a bundle's ``inference.json``:

* :func:`tolerant_datalist` builds a datalist input by input (e.g. one study folder after another): an input that
  cannot be listed (a study without a FLAIR series) becomes a failure record instead of stopping the run.
* :class:`CaseDataset` wraps the dataset: a case whose preprocessing raises becomes a failure record (file, reason)
  instead of an exception in the data loader; :func:`collate_cases` (the ``DataLoader``'s ``collate_fn``) moves the
  failure records of a batch aside under :data:`FAILED_KEY`.
* :class:`CaseFailures` is the evaluator's ``iteration_update`` (it runs the evaluator's own iteration on the good
  cases of the batch, catching what fails in the network or the postprocessing, saving included) and a handler
  (in ``val_handlers``) that, when the run completes, logs a table of the failed cases and raises
  :class:`~monai_crossd.apps.bundle.errors.FailedCasesError`. The previous output of every failed case is removed,
  so no output is older than the run. Where the run writes one file for all cases (``ClassificationWriter``'s
  ``predictions.csv``/``.json``), that file is the previous output of the failed cases: it is replaced atomically
  with the rows of the good cases, so no row of a failed case from an earlier run remains.
* :func:`check_output_dir` refuses an output folder whose files would be read back as inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.data import FolderLayout, list_data_collate
from monai.utils import ImageMetaKey
from torch.utils.data import Dataset

from monai_crossd.apps.bundle.errors import FailedCasesError, error_message

__all__ = [
    "FAILED_KEY",
    "CaseDataset",
    "CaseFailures",
    "check_output_dir",
    "collate_cases",
    "output_file",
    "tolerant_datalist",
]

logger = logging.getLogger(__name__)

FAILED_KEY = "failed_cases"  #: batch key of the ``(case, reason)`` records of the cases that failed to load


def _case_name(item: Any, key: str, default: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    meta = getattr(value, "meta", None) or {}
    return str(meta.get(ImageMetaKey.FILENAME_OR_OBJ, default))


def tolerant_datalist(make: Callable[[str], list[dict]], inputs: Sequence[str | os.PathLike]) -> list[dict]:
    """The datalists ``make(input)`` of all ``inputs``, joined; an input ``make`` raises on becomes a failure record.

    Args:
        make: input -> its datalist, e.g. ``functools.partial(monai_crossd.apps.data.study_datalist, modalities=...)``.
        inputs: the inputs, e.g. the study folders of a batch.

    Returns:
        the items of the good inputs and ``{FAILED_KEY: [(input, reason)]}`` for each other, in input order;
        :class:`CaseDataset` passes the records through, :class:`CaseFailures` reports them.
    """
    items: list[dict] = []
    for path in inputs:
        try:
            items.extend(make(str(path)))
        except Exception as err:  # noqa: BLE001 - recorded, reported when the run completes
            items.append({FAILED_KEY: [(str(path), error_message(err))]})
    return items


class CaseDataset(Dataset):
    """A dataset whose cases that fail to load or preprocess come out as failure records, not exceptions.

    Args:
        dataset: a MONAI ``Dataset`` (its ``data`` names the cases in the records).
        key: key of the case's input file in the data dicts. Defaults to ``"image"``.

    A failed case is ``{FAILED_KEY: [(case, reason)]}``, where ``reason`` is the line of
    :func:`~monai_crossd.apps.bundle.errors.error_message` (``ValueError: could not read key 'image' file ...``);
    ``case`` is the item's ``key`` value when it is a string (a file, or a case id), else the file name in the meta
    data of that key. Failure records of the datalist itself (:func:`tolerant_datalist`) come out as they are.
    """

    def __init__(self, dataset: Any, key: str = "image") -> None:
        self.dataset, self.key = dataset, key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        data = getattr(self.dataset, "data", None)
        if data is not None and isinstance(data[index], dict) and FAILED_KEY in data[index]:
            return data[index]
        try:
            return self.dataset[index]
        except Exception as err:  # noqa: BLE001 - recorded, reported when the run completes
            case = _case_name(data[index], self.key, f"case {index}") if data is not None else f"case {index}"
            return {FAILED_KEY: [(case, error_message(err))]}


def collate_cases(items: Sequence[Any]) -> dict:
    """MONAI's ``list_data_collate`` of the good cases, with the failure records of the others under ``FAILED_KEY``.

    A batch of failed cases only is ``{FAILED_KEY: [...]}``.
    """
    failed = [record for item in items if isinstance(item, dict) for record in item.get(FAILED_KEY, ())]
    good = [item for item in items if not (isinstance(item, dict) and FAILED_KEY in item)]
    batch = list_data_collate(good) if good else {}
    batch[FAILED_KEY] = failed
    return batch


def output_file(
    output_dir: str | os.PathLike, case: str, output_postfix: str = "seg", output_ext: str = ".nii.gz"
) -> str:
    """The file MONAI's ``SaveImage(output_dir, output_postfix, output_ext, separate_folder=False)`` writes for ``case``."""
    layout = FolderLayout(str(output_dir), postfix=output_postfix, extension=output_ext, parent=False, makedirs=False)
    return layout.filename(subject=case)


class CaseFailures:
    """The evaluator's iteration, tolerant of bad cases, and the failure report at the end of the run.

    Use one object twice in the evaluator: as ``iteration_update`` and in ``val_handlers``.

    Args:
        outputs: case -> the files the run writes for it (e.g. ``functools.partial(output_file, output_dir)``);
            those of a failed case are removed. ``None`` removes nothing (outputs rewritten as a whole, such as
            ``predictions.csv``, hold the good cases only). Defaults to ``None``.
        key: key naming the cases in the batch: a list of names (``"case_id"``) or an image whose meta data holds
            the file names. Defaults to ``"image"``.

    Raises:
        FailedCasesError: (when the run completes) some cases failed; the message names them and their reasons.
    """

    def __init__(self, outputs: Callable[[str], str | Sequence[str]] | None = None, key: str = "image") -> None:
        self.outputs, self.key = outputs, key
        self.failed: list[tuple[str, str]] = []
        self.done = 0

    def attach(self, engine: Engine) -> None:
        """Start each run with no failures, report them when ``engine`` completes."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.COMPLETED, self.report)

    def _reset(self, engine: Engine) -> None:
        self.failed, self.done = [], 0

    def __call__(self, engine: Engine, batch: Any) -> Any:
        """Run ``engine``'s own iteration on the good cases of ``batch``; record the failed ones."""
        if isinstance(batch, dict):
            for case, reason in batch.pop(FAILED_KEY, ()):
                self._fail(case, reason)
            if not batch:
                engine.state.batch = []
                return []
        names = self._names(batch)
        try:
            output = engine._iteration(engine, batch)  # MONAI's documented default for `iteration_update`
        except Exception as err:  # noqa: BLE001 - recorded, reported when the run completes
            reason = error_message(err)
            for case in names:
                self._fail(case, reason)
            engine.state.batch = []
            return []
        self.done += len(names)
        return output

    def _names(self, batch: Any) -> list[str]:
        value = batch.get(self.key) if isinstance(batch, dict) else None
        files = (
            value
            if isinstance(value, (list, tuple))
            else (getattr(value, "meta", None) or {}).get(ImageMetaKey.FILENAME_OR_OBJ)
        )
        if isinstance(files, (list, tuple)):
            return [str(f) for f in files]
        return [str(files)] if files is not None else ["<batch without file names>"]

    def _fail(self, case: str, reason: str) -> None:
        self.failed.append((case, reason))
        removed = []
        if self.outputs is not None:
            found = self.outputs(case)
            for path in [found] if isinstance(found, (str, os.PathLike)) else found:
                if os.path.isfile(path):
                    os.unlink(path)
                    removed.append(str(path))
        logger.error(
            "case %s failed: %s%s", case, reason, f" (removed its earlier output {removed})" if removed else ""
        )

    def report(self, engine: Engine) -> None:
        """Log the table of failed cases and raise, if any failed."""
        if not self.failed:
            return
        width = max(len(case) for case, _ in self.failed)
        table = "\n".join(f"  {case:<{width}}  {reason}" for case, reason in self.failed)
        logger.error("failed cases (nothing written for them):\n  %-*s  reason\n%s", width, "case", table)
        names = ", ".join(Path(case).name for case, _ in self.failed)
        raise FailedCasesError(
            f"{len(self.failed)} of {len(self.failed) + self.done} cases failed, nothing written for them (no earlier "
            f"output of theirs left; the other cases were written): {names}; see the table above for why."
        )


def check_output_dir(
    output_dir: str | os.PathLike,
    input_files: Sequence[str | os.PathLike],
    input_glob: str | None = None,
    output_ext: str = ".nii.gz",
) -> str:
    """``output_dir``, after checking that its files cannot be taken for inputs; returns it.

    Args:
        output_dir: the folder the outputs are written to.
        input_files: the input files of the run.
        input_glob: the pattern the inputs were found with (``<input_dir>/<input_pattern>``, ``glob`` syntax
            without ``**``), if any.
        output_ext: extension of the output files. Defaults to ``".nii.gz"``.

    Raises:
        ValueError: ``output_dir`` holds input files, or ``input_glob`` matches the files written there (a later
            run would segment the outputs of this one); names both.
    """
    out = os.path.realpath(output_dir)
    for path in input_files:
        if os.path.dirname(os.path.realpath(path)) == out:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds the input {str(path)!r}: outputs would mix with inputs and "
                "be read as inputs by a later run; choose another `output_dir`."
            )
    if input_glob is not None:
        pattern = os.path.join(os.path.realpath(os.path.dirname(input_glob)), os.path.basename(input_glob))
        if Path(out, f"case_output{output_ext}").match(pattern) or Path(out).match(pattern):
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} overlaps the input pattern {input_glob!r}: its outputs would be "
                "read as inputs by a later run; choose an `output_dir` outside it."
            )
    return str(output_dir)
