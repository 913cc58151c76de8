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

__all__ = ["atomic_open", "atomic_path", "atomic_torch_save", "atomic_write_bytes"]

FILE_MODE = 0o644  #: mode of every file written here (``mkstemp`` creates 0600 files)


def _extension(path: Path) -> str:
    """``.nii.gz`` for ``a.nii.gz``, ``.pt`` for ``b.pt``: what format-from-name writers (nibabel, ITK) look at."""
    return "".join(path.suffixes[-2:]) if path.suffix in (".gz", ".bz2", ".zst") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary file name for a writer that wants a name (nibabel, ITK), moved over ``path`` after the block.

    The temporary name is in the folder of ``path`` (created), hidden, and ends with the extension of ``path``
    (``.nii.gz``...), so writers that choose the format from the name write the same file. After the ``with`` block
    the file is flushed to disk, given mode 0644 and renamed over ``path``; on any error it is removed and ``path``
    is left as it was.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "mask.nii.gz")
        >>> with atomic_path(path) as tmp:
        ...     tmp.endswith(".nii.gz"), os.path.dirname(tmp) == os.path.dirname(path)
        ...     _ = open(tmp, "wb").write(b"written by a library that wants a file name")
        (True, True)
        >>> os.listdir(os.path.dirname(path))
        ['mask.nii.gz']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_extension(path)}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write, which replaces ``path`` only when the ``with`` block completes (see :func:`atomic_path`).

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
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


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
