"""Atomic file writes: the one place where the applications (bundles, MONAI Label app, transfer study) write files.

A file is written to a temporary file in its own folder, flushed to disk (``fsync``), given mode 0644 and renamed
over the target (``os.replace``, atomic on POSIX). A failed or interrupted write leaves the previous file (or none)
and no temporary file behind, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["atomic_open", "atomic_torch_save", "atomic_write_bytes"]

FILE_MODE = 0o644  #: mode of every file written here (``mkstemp`` creates 0600 files)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write, which replaces ``path`` only when the ``with`` block completes.

    The parent folder is created. On any error (raised in the block or while flushing), the temporary file is removed
    and ``path`` is left as it was.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "data.bin")
        >>> with atomic_open(path) as f:
        ...     _ = f.write(b"complete or absent")
        >>> open(path, "rb").read()
        b'complete or absent'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> str:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); returns the path."""
    with atomic_open(path) as f:
        f.write(data)
    return str(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """``torch.save(obj, ..., **kwargs)`` to ``path`` atomically (see :func:`atomic_open`); returns the path."""
    with atomic_open(path) as f:
        torch.save(obj, f, **kwargs)
    return str(path)
