"""Local MONAI bundles for the MONAI Label app: find them, stage a working copy, make sure a checkpoint exists.

MONAI Label's own bundle app (``monaibundle``) downloads bundles from the MONAI model zoo. This app never queries a
hub: it serves the bundles of this repository (``<repo>/bundles/<name>``). Each bundle is *staged*: its configs and
docs are copied into the app's model folder (``conf model_dir``, default ``<app>/model``) at every start, while the
working copy's ``models/`` is kept, so that training from MONAI Label updates the working copy and never writes into
the repository.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["BUNDLE_KINDS", "bundle_kind", "ensure_checkpoint", "read_metadata", "resolve_models", "stage_bundle"]

logger = logging.getLogger(__name__)

#: Bundles served by default and the kind of MONAI Label task each gets.
BUNDLE_KINDS: dict[str, str] = {
    "crossd_hippocampus_segmentation": "segmentation",
    "crossd_brats": "classification",
}

#: folders of a bundle not copied into the working copy (``models/`` is handled on its own)
_SKIP_DIRS = ("models", "eval", "runs", "logs", "demo_data", "__pycache__")


def bundle_kind(name: str, metadata: Mapping | None = None) -> str:
    """Task kind of a bundle: ``"segmentation"`` or ``"classification"``.

    Args:
        name: bundle folder name.
        metadata: the bundle's ``metadata.json`` content, used for bundles not in :data:`BUNDLE_KINDS`
            (an output of type ``"probabilities"`` or a name with ``classif`` means classification). Defaults to None.

    Returns:
        ``"segmentation"`` or ``"classification"``.
    """
    if name in BUNDLE_KINDS:
        return BUNDLE_KINDS[name]
    outputs = ((metadata or {}).get("network_data_format") or {}).get("outputs") or {}
    types = {str(v.get("type", "")).lower() for v in outputs.values() if isinstance(v, Mapping)}
    if "classif" in name.lower() or "probabilities" in types:
        return "classification"
    return "segmentation"


def resolve_models(conf_models: str | None, bundles_dir: str | os.PathLike) -> dict[str, Path]:
    """The bundles to serve: ``name -> source folder``.

    Args:
        conf_models: comma-separated bundle names (``--conf models a,b``), ``"all"`` or None for every bundle of
            :data:`BUNDLE_KINDS` that exists in ``bundles_dir``.
        bundles_dir: folder holding the bundles (``<repo>/bundles``).

    Returns:
        bundle name -> bundle folder, in the requested order.

    Raises:
        ValueError: ``bundles_dir`` is not a folder, or a requested bundle is not in it or has no
            ``configs/metadata.json``.
    """
    root = Path(bundles_dir)
    if not root.is_dir():
        raise ValueError(f"`bundles_dir` should be the folder of the repository's bundles, got {str(root)!r}.")
    if not conf_models or conf_models.strip().lower() == "all":
        names = [n for n in BUNDLE_KINDS if (root / n / "configs" / "metadata.json").is_file()]
        if not names:
            raise ValueError(f"no bundle of {sorted(BUNDLE_KINDS)} with configs/metadata.json found in {str(root)!r}.")
    else:
        names = [n.strip() for n in conf_models.split(",") if n.strip()]
    models: dict[str, Path] = {}
    for name in names:
        path = root / name
        if not (path / "configs" / "metadata.json").is_file():
            available = sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())
            raise ValueError(
                f"`models` names bundle {name!r}, but {str(path)!r} has no configs/metadata.json; "
                f"bundles available in {str(root)!r}: {available}."
            )
        models[name] = path
    return models


def stage_bundle(src: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """Copy a bundle into ``model_dir`` (configs and docs refreshed each time, ``models/`` kept).

    The source bundle's checkpoint and its companions (such as ``model_config.json``) are copied into the working
    copy's ``models/`` only when it has no ``models/model.pt``, so weights trained from MONAI Label survive a restart.
    The checkpoint is the bundle's trained ``models/model.pt`` if there is one, else the weights it ships
    (``models/shipped/``; :func:`monai_crossd.apps.bundle.checkpoint_file`). Outputs and demo
    data (``eval``, ``runs``, ``logs``, ``demo_data``) are not copied.

    Args:
        src: the bundle folder in the repository.
        model_dir: the app's folder of working copies.

    Returns:
        the working copy's folder, ``model_dir/<bundle name>``.
    """
    from monai_crossd.apps.bundle import checkpoint_file

    src = Path(src)
    dst = Path(model_dir) / src.name
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in _SKIP_DIRS:
            continue
        target = dst / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(item, target)
    src_models, dst_models = src / "models", dst / "models"
    dst_models.mkdir(exist_ok=True)
    # the checkpoint and its companions (e.g. model_config.json) travel together: only into a copy without one
    source = Path(checkpoint_file(src_models))  # trained models/model.pt, else the shipped models/shipped/model.pt
    if source.is_file() and not (dst_models / "model.pt").exists():
        copied = [f for f in source.parent.iterdir() if f.is_file() and (f.name == "model.pt" or f.suffix != ".pt")]
        for f in copied:
            shutil.copy2(f, dst_models / f.name)
        logger.info("bundle %s: copied %s into the working copy", src.name, sorted(f.name for f in copied))
    return dst


def _read_config(path: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(path))
    parser.config.update({"bundle_root": str(path.parent.parent)})  # type: ignore[union-attr]
    return parser


def ensure_checkpoint(
    bundle: str | os.PathLike, config_names: Sequence[str] = ("inference.json", "inference.yaml")
) -> Path:
    """Make sure ``bundle/models/model.pt`` exists; write the network's initial weights when it does not.

    A bundle whose weights are not in the repository (``bundles/*/models/`` is not committed) would otherwise be
    skipped by MONAI Label. Its initial weights are whatever the bundle's ``network_def`` builds (e.g. Cross-D weights
    converted from a 2D network), with the random generator seeded (0) so that they are the same on every start; the
    app logs a warning, and a ``POST /train/<model>`` replaces them.

    Args:
        bundle: the working copy of a bundle.
        config_names: inference configs tried in order. Defaults to ``("inference.json", "inference.yaml")``.

    Returns:
        the checkpoint path.

    Raises:
        ValueError: the bundle has no inference config or its config has no ``network_def``.
    """
    import torch

    from monai_crossd.apps.io import atomic_torch_save

    bundle = Path(bundle)
    ckpt = bundle / "models" / "model.pt"
    if ckpt.is_file():
        return ckpt
    configs = [bundle / "configs" / c for c in config_names if (bundle / "configs" / c).is_file()]
    if not configs:
        raise ValueError(f"bundle {str(bundle)!r} has no inference config {list(config_names)} in configs/.")
    parser = _read_config(configs[0])
    if "network_def" not in parser.config:  # type: ignore[operator]
        raise ValueError(f"{str(configs[0])!r} has no `network_def`; keys: {sorted(parser.config)}.")  # type: ignore[arg-type]
    with torch.random.fork_rng():  # the same initial weights on every start: results reproducible until trained
        torch.manual_seed(0)
        net = parser.get_parsed_content("network_def", instantiate=True)
    atomic_torch_save(net.state_dict(), ckpt)  # a start killed while saving leaves no truncated model.pt
    logger.warning(
        "bundle %s has no trained checkpoint: wrote the initial weights of its network_def to %s; "
        "train it (POST /train/%s) before trusting its results.",
        bundle.name,
        ckpt,
        bundle.name,
    )
    return ckpt


def read_metadata(bundle: str | os.PathLike) -> dict:
    """The bundle's ``configs/metadata.json``."""
    with open(Path(bundle) / "configs" / "metadata.json") as f:
        return json.load(f)
