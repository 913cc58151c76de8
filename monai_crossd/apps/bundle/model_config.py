"""``models/model_config.json`` and the ``models/model.pt`` it describes, as one checked pair.

Training writes ``model_config.json`` (the settings inference rebuilds the network and preprocessing from) only
when :class:`~monai_crossd.apps.bundle.BestCheckpointSaver` writes ``model.pt``, with the SHA-256 of that file's
bytes under :data:`MODEL_SHA256_KEY`. The checkpoint format is unchanged (a plain ``state_dict``, what MONAI's
``CheckpointLoader`` and ``ckpt_export`` read). Inference and evaluation read the config through
:func:`read_model_config`, which refuses a config whose stamp is not the checkpoint's: a config written by another
training run (or a run killed between the two renames) is never paired silently with the wrong weights.
A config written before the stamp existed is read with a warning.

A bundle ships trained weights as ``models/shipped/model.pt`` (with their ``model_config.json``), tracked in the
repository. Training writes ``models/model.pt`` and never touches them; :func:`checkpoint_file` gives inference and
evaluation the trained checkpoint when there is one and the shipped one otherwise, so deleting ``models/model.pt``
(and its ``model_config.json``) goes back to the shipped weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from monai_crossd.apps.bundle.training import read_json, write_json

__all__ = [
    "MODEL_SHA256_KEY",
    "SHIPPED_DIR",
    "check_model_pair",
    "checkpoint_file",
    "file_sha256",
    "model_config_file",
    "read_model_config",
    "write_model_config",
]

logger = logging.getLogger(__name__)

MODEL_SHA256_KEY = "model_sha256"  #: key of ``model_config.json`` holding the SHA-256 of the checkpoint it describes
SHIPPED_DIR = "shipped"  #: sub-folder of ``models/`` holding the weights a bundle ships


def checkpoint_file(ckpt_dir: str | os.PathLike, filename: str = "model.pt") -> str:
    """The checkpoint inference uses: ``ckpt_dir/filename`` when training wrote it, else the shipped one.

    Args:
        ckpt_dir: the bundle's ``models`` folder (``ckpt_dir`` of its configs).
        filename: the checkpoint's name. Defaults to ``"model.pt"``.

    Returns:
        ``ckpt_dir/filename`` if it is a file; else ``ckpt_dir/shipped/filename`` if that is a file (logged);
        else ``ckpt_dir/filename`` (missing: the checkpoint loader reports it).

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(d, "shipped")); open(os.path.join(d, "shipped", "model.pt"), "wb").close()
        >>> os.path.relpath(checkpoint_file(d), d)
        'shipped/model.pt'
        >>> open(os.path.join(d, "model.pt"), "wb").close()
        >>> os.path.relpath(checkpoint_file(d), d)
        'model.pt'
    """
    trained = os.path.join(os.fspath(ckpt_dir), filename)
    shipped = os.path.join(os.fspath(ckpt_dir), SHIPPED_DIR, filename)
    if os.path.isfile(trained) or not os.path.isfile(shipped):
        return trained
    logger.info("no trained %s in %s: using the shipped weights %s.", filename, ckpt_dir, shipped)
    return shipped


def model_config_file(ckpt_file: str | os.PathLike) -> str:
    """The ``model_config.json`` that belongs to ``ckpt_file`` (the file beside it)."""
    return os.path.join(os.path.dirname(os.fspath(ckpt_file)), "model_config.json")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the bytes of ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_config(
    config_file: str | os.PathLike, model_config: Mapping[str, Any], ckpt_file: str | os.PathLike
) -> str:
    """Write ``model_config`` (atomically) stamped with the SHA-256 of ``ckpt_file``, which must exist; returns the path."""
    return write_json(config_file, {**dict(model_config), MODEL_SHA256_KEY: file_sha256(ckpt_file)})


def check_model_pair(config_file: str | os.PathLike, ckpt_file: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Raise when ``config`` (read from ``config_file``) was not written with ``ckpt_file``.

    Nothing is checked when ``ckpt_file`` does not exist (the checkpoint loader reports that); a config without a
    stamp (written before stamps) logs a warning.

    Raises:
        ValueError: the stamp of ``config`` is not the SHA-256 of ``ckpt_file``; names both files.
    """
    if not os.path.isfile(ckpt_file):
        return
    stamp = config.get(MODEL_SHA256_KEY)
    if stamp is None:
        logger.warning(
            "%s has no `%s` stamp (written before stamps): cannot check that it describes %s.",
            config_file,
            MODEL_SHA256_KEY,
            ckpt_file,
        )
        return
    actual = file_sha256(ckpt_file)
    if stamp != actual:
        raise ValueError(
            f"model config {str(config_file)!r} does not describe checkpoint {str(ckpt_file)!r}: its `{MODEL_SHA256_KEY}`"
            f" is {str(stamp)[:12]}..., the checkpoint's is {actual[:12]}... (written by different training runs); "
            "retrain, or restore the model_config.json saved with this model.pt."
        )


def read_model_config(
    config_file: str | os.PathLike, ckpt_file: str | os.PathLike, default: Mapping[str, Any] | None = None
) -> dict:
    """The model config of ``config_file`` (``default`` when the file does not exist), checked against ``ckpt_file``.

    Args:
        config_file: ``model_config.json``.
        ckpt_file: the ``model.pt`` it should describe.
        default: settings used when ``config_file`` does not exist (and to fill in keys it lacks).

    Raises:
        ValueError: ``config_file`` is missing and there is no ``default``, or it was written with another
            checkpoint (see :func:`check_model_pair`).
    """
    config = read_json(config_file, default)
    if os.path.isfile(config_file):
        check_model_pair(config_file, ckpt_file, config)
    return config
