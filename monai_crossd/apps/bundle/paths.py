"""Where a bundle lives, found from the config file being run (MONAI 1.6 gives configs no ``__file__``).

A bundle config says ``"bundle_root": "$monai_crossd.apps.bundle.bundle_root_from_config('crossd_brats')"``. The
function recovers the path of the config file that MONAI is parsing, in this order:

1. a ``monai.bundle.ConfigWorkflow`` being initialised or run up the call stack (``python -m monai.bundle run``,
   ``create_workflow``, ``ConfigWorkflow(...)`` in Python): its ``config_root_path``;
2. a ``config_file`` / ``config_file_`` local variable of a ``monai.bundle`` function up the stack
   (``verify_net_in_out``, ``ckpt_export``, ``onnx_export`` ...);
3. ``--config_file`` on the command line;
4. a ``<cwd>/configs`` folder (running from inside the bundle), then ``<cwd>/bundles/<name>`` (the repository root).

A config file in ``<bundle>/configs/`` gives ``<bundle>``; the result is absolute, so the bundle behaves the same
from the repository root and from inside the bundle. ``--bundle_root <path>`` on the command line replaces the
expression altogether.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["bundle_root_from_config", "config_path_from_stack", "should_resume"]

logger = logging.getLogger(__name__)


def _first(value) -> str | None:
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (str, os.PathLike)):
        return str(value[0])
    return None


def config_path_from_stack() -> Path | None:
    """The config folder (or file) MONAI is parsing, found up the call stack; ``None`` when there is none."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("monai.bundle"):
            owner = frame.f_locals.get("self")
            # read the instance dict: ConfigParser/BundleWorkflow ``__getattr__`` would resolve unknown names as ids
            root = getattr(owner, "__dict__", {}).get("config_root_path")
            if root is not None:
                return Path(root)
            for name in ("config_file_", "config_file"):
                found = _first(frame.f_locals.get(name))
                if found:
                    return Path(found)
        frame = frame.f_back
    return None


def _argv_config() -> Path | None:
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1].strip()
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1].strip()
        else:
            continue
        if value.startswith("["):  # a list given as a python/JSON literal
            value = value.strip("[]").split(",")[0].strip().strip("'\"")
        return Path(value)
    return None


def bundle_root_from_config(name: str | None = None) -> str:
    """The absolute folder of the bundle whose config is being parsed (see the module docstring for how).

    Args:
        name: the bundle folder name, used only by the last fallback ``<cwd>/bundles/<name>``.

    Returns:
        absolute path of the bundle folder (the parent of its ``configs`` folder).

    Raises:
        ValueError: no config path can be found and neither fallback folder exists; pass ``--bundle_root``.
    """
    for found in (config_path_from_stack(), _argv_config()):
        if found is None:
            continue
        folder = found.parent if found.suffix.lower() in (".json", ".yaml", ".yml") else found
        folder = folder.resolve()
        root = folder.parent if folder.name == "configs" else folder
        return str(root)
    cwd = Path.cwd()
    if (cwd / "configs").is_dir():
        return str(cwd)
    if name and (cwd / "bundles" / name / "configs").is_dir():
        return str(cwd / "bundles" / name)
    raise ValueError(
        f"cannot tell the bundle root of {name or 'this bundle'!r}: no config file path found (call stack, "
        f"`--config_file`) and no `configs` folder under {str(cwd)!r}; pass `--bundle_root <path>`."
    )


def should_resume(resume: bool, checkpoint: str | os.PathLike) -> bool:
    """Whether to attach the resume ``CheckpointLoader``: ``resume`` is true and ``checkpoint`` exists.

    A requested resume without a checkpoint logs a warning and starts from scratch.
    """
    if not resume:
        return False
    if os.path.isfile(checkpoint):
        logger.info("resuming training from %s.", checkpoint)
        return True
    logger.warning("`resume` is true but %s does not exist: training from scratch.", checkpoint)
    return False
