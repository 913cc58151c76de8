"""What went wrong, in one line: the useful message out of MONAI's and ignite's wrapped exceptions.

MONAI wraps an error raised while evaluating a config expression or applying a transform in a ``RuntimeError``
(``Failed to evaluate ConfigExpression``, ``applying transform ...``) raised ``from`` it; the message that names the
file or argument is further down the chain. :func:`error_message` finds it; ``python -m monai_crossd.apps.bundle``
prints it as the last line of a failed run.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["FailedCasesError", "error_chain", "error_message"]

_WRAPPERS = ("monai.", "ignite.")  #: packages whose raising frames only wrap the error below them


class FailedCasesError(RuntimeError):
    """Some cases of a batch inference failed (the others were written); the message lists them."""


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__``, else ``__context__``), outermost first."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _raised_in(err: BaseException) -> str:
    tb = err.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", ""))


def error_message(err: BaseException) -> str:
    """One line saying what went wrong: the outermost error of the chain not raised by MONAI or ignite code.

    An error raised by MONAI or ignite themselves (not re-raising one from below) is the innermost one, reported
    when nothing else is found. The line is ``"<ExceptionType>: <first line of its message>"``.

    Example:
        >>> try:
        ...     try:
        ...         raise ValueError("`pixdim` should be 3 positive numbers, got [1.5, 0].")
        ...     except ValueError as inner:
        ...         raise RuntimeError("Failed to evaluate ConfigExpression") from inner
        ... except RuntimeError as outer:
        ...     error_message(outer)
        'ValueError: `pixdim` should be 3 positive numbers, got [1.5, 0].'
    """
    chain = list(error_chain(err))
    found = next(
        (e for e in chain if not _raised_in(e).startswith(_WRAPPERS) and not _is_wrapper_message(e)), chain[-1]
    )
    text = str(found).strip().splitlines()
    return f"{type(found).__name__}: {text[0] if text else '(no message)'}"


def _is_wrapper_message(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, RuntimeError) and (
        text.startswith("Failed to evaluate") or text.startswith("applying transform")
    )
