"""The annotation-cost study: N fully labelled volumes plus one labelled slice of every other training volume.

Every run is a run of the hippocampus bundle (``configs/train.json`` + ``configs/hybrid.json``, MONAI's
``ConfigWorkflow``), tested with its ``configs/evaluate.json`` on the test split, so the study measures exactly what
a bundle user trains. Arms, for each number ``N`` of fully labelled volumes and each seed (the seed also draws which
volumes are fully labelled and each other volume's slice axis, :func:`~monai_crossd.apps.data.sparse_annotation`):

- ``3d``: 3D training on the N volumes only (``ratio_2d=0``): ``steps`` 3D batches.
- ``pretrain``: 2D training on the slices (``ratio_2d=1``, ``steps`` 2D batches), then 3D fine-tuning on the N
  volumes from its last weights (``pretrained_2d``; ``steps`` 3D batches). The 2D stage's best 3D validation Dice
  is recorded too: how well a network trained on slices alone segments volumes.
- ``hybrid``: both at once (``ratio_2d`` share of 2D batches), as many 3D batches as ``3d`` (``steps``) and as many
  2D batches as ``pretrain``'s first stage when ``ratio_2d=0.5``.
- ``reference``: 3D on every training volume fully labelled (``steps`` 3D batches); it does not depend on N.

Each run keeps the epoch with the best validation mean Dice (3D, validation split), as the bundle does, and reports
its test Dice. Runs are written to ``<out>/runs/<arm>_n<N>_s<seed>.json`` as they finish and skipped when present,
so a stopped study resumes, and two processes (e.g. one per seed) can share ``<out>``; :func:`summarize` writes
``results.json``, ``results.md`` and ``dice_vs_n.png`` from the runs found: mean +- std over seeds per arm and N, and
each arm's difference to ``3d`` paired by seed (the same annotation).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_crossd.apps.io import atomic_open, atomic_write_bytes

__all__ = ["ARMS", "HybridStudyConfig", "run_name", "run_study", "summarize"]

logger = logging.getLogger(__name__)

#: the study's arms, in report order
ARMS = ("3d", "pretrain", "hybrid", "reference")
_METRICS = ("mean_dice", "dice_anterior", "dice_posterior")


@dataclass
class HybridStudyConfig:
    """Settings of :func:`run_study`.

    Attributes:
        bundle: the hippocampus bundle folder (with ``configs/train.json``, ``hybrid.json``, ``evaluate.json``).
        data_dir: folder the datalist's paths are relative to (``../shared/data/hippocampus``).
        datalist_file: MSD-style JSON with ``training``, ``validation`` and ``test`` lists.
        out_dir: where runs and results go.
        sizes: numbers N of fully labelled volumes.
        seeds: one run per seed, arm and N.
        arms: a subset of :data:`ARMS`.
        steps: 3D batches of a 3D run (and 2D batches of the pretraining stage).
        epoch_length: 3D batches per epoch (validation after each epoch); a hybrid epoch also holds its 2D batches.
        ratio_2d: share of 2D batches of the hybrid arm.
        overrides: further bundle config overrides for every run (e.g. ``{"channels": [8, 16, 32, 64]}``).
        threads: torch intra-op threads (None: torch's default).
    """

    bundle: str
    data_dir: str
    datalist_file: str
    out_dir: str
    sizes: Sequence[int] = (5, 10, 20)
    seeds: Sequence[int] = (0, 1, 2)
    arms: Sequence[str] = ARMS
    steps: int = 300
    epoch_length: int = 25
    ratio_2d: float = 0.5
    overrides: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        configs = Path(self.bundle) / "configs"
        for name in ("train.json", "hybrid.json", "evaluate.json"):
            if not (configs / name).is_file():
                raise ValueError(f"`bundle` should hold configs/{name}: {configs / name} not found.")
        if not Path(self.datalist_file).is_file():
            raise ValueError(f"`datalist_file` not found: {self.datalist_file}.")
        if not Path(self.data_dir).is_dir():
            raise ValueError(f"`data_dir` should be a folder: {self.data_dir}.")
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"`arms` should be among {ARMS}, got {list(self.arms)}.")
        if not self.seeds or not self.sizes or any(int(n) < 1 for n in self.sizes):
            raise ValueError(f"`sizes` should be positive and `seeds` non-empty, got {list(self.sizes)}, {list(self.seeds)}.")
        if self.steps < self.epoch_length or self.steps % self.epoch_length:
            raise ValueError(f"`steps` should be a multiple of `epoch_length`, got {self.steps} and {self.epoch_length}.")
        if not 0.0 < self.ratio_2d < 1.0:
            raise ValueError(f"`ratio_2d` should be in (0, 1) for the hybrid arm, got {self.ratio_2d}.")


def run_name(arm: str, num_full: int | None, seed: int) -> str:
    """File stem of one run, e.g. ``hybrid_n5_s0`` (``reference_s0``: the reference does not depend on N)."""
    return f"{arm}_s{seed}" if arm == "reference" else f"{arm}_n{num_full}_s{seed}"


def _configs(cfg: HybridStudyConfig, *names: str) -> list[str]:
    return [str(Path(cfg.bundle) / "configs" / n) for n in names]


def _workflow(files: list[str], **override: Any) -> Any:
    """A parsed, initialised bundle workflow (MONAI's ``ConfigWorkflow``)."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=files, workflow_type=None, logging_file=False, **override)
    workflow.initialize()
    return workflow


def _run_override(cfg: HybridStudyConfig, work: Path, seed: int, output: str) -> dict[str, Any]:
    """The overrides every bundle run of the study shares: data, seed, and output folders under ``work``."""
    return {
        "bundle_root": str(Path(cfg.bundle).resolve()),
        "data_dir": cfg.data_dir,
        "datalist_file": cfg.datalist_file,
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / output),
        "log_dir": str(work / "runs"),
        "seed": seed,
    }


def _train(cfg: HybridStudyConfig, work: Path, seed: int, ratio_2d: float, num_full: int, pretrained: str | None) -> dict:
    """One bundle training run into ``work``; the selected checkpoint is ``work/models/model.pt``."""
    length = cfg.epoch_length if ratio_2d in (0.0, 1.0) else round(cfg.epoch_length / (1.0 - ratio_2d))
    override = {
        **cfg.overrides,
        **_run_override(cfg, work, seed, "eval"),
        "num_full": num_full,
        "ratio_2d": ratio_2d,
        "epoch_length": length,
        "max_epochs": cfg.steps // cfg.epoch_length,
        "val_interval": 1,
        "pretrained_2d": pretrained,
    }
    workflow = _workflow(_configs(cfg, "train.json", "hybrid.json"), **override)
    started = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - started
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    loader = workflow.parser.get_parsed_content("hybrid_loader")
    result = {
        "val_mean_dice": float(evaluator.state.best_metric),
        "best_epoch": int(evaluator.state.best_metric_epoch),
        "epochs": override["max_epochs"],
        "batches_per_epoch": {"2d": loader.schedule(1).count(2), "3d": loader.schedule(1).count(3)},
        "full_volumes": len(workflow.parser.get_parsed_content("annotation")["full"]),
        "sliced_volumes": len(workflow.parser.get_parsed_content("annotation")["sliced"]),
        "seconds": seconds,
    }
    workflow.finalize()
    return result


def _test(cfg: HybridStudyConfig, work: Path, seed: int) -> dict[str, float]:
    """Test Dice of ``work/models/model.pt`` by the bundle's ``evaluate.json`` (a plain 3D ``CrossDUNet``)."""
    # network settings would override what evaluate.json reads from the checkpoint's model_config.json
    network_keys = ("channels", "strides", "num_res_units", "up_mode", "conv_kwargs")
    override = {
        **{k: v for k, v in cfg.overrides.items() if k not in network_keys},
        **_run_override(cfg, work, seed, "test"),
        "val_key": "test",
    }
    workflow = _workflow(_configs(cfg, "train.json", "evaluate.json"), **override)
    workflow.run()
    metrics = workflow.parser.get_parsed_content("validate#evaluator").state.metrics
    workflow.finalize()
    return {m: float(metrics[f"val_{m}"]) for m in _METRICS}


def _one_run(cfg: HybridStudyConfig, arm: str, num_full: int, seed: int, scratch: Path) -> dict:
    """Train (both stages for ``pretrain``) and test one run."""
    work = scratch / run_name(arm, num_full, seed)
    stages = []
    if arm == "pretrain":
        stages.append(("2d", _train(cfg, work / "stage1", seed, 1.0, num_full, None)))
        # the 2D stage's last weights: its 3D validation Dice is near zero throughout, so selecting by it would
        # pick an almost untrained early epoch
        pretrained = work / "stage1" / "pretrained_2d.pt"
        torch.save(torch.load(work / "stage1" / "models" / "last.pt", weights_only=True)["model"], pretrained)
        stages.append(("3d", _train(cfg, work / "stage2", seed, 0.0, num_full, str(pretrained))))
        final = work / "stage2"
    else:
        ratio = {"3d": 0.0, "hybrid": cfg.ratio_2d, "reference": 0.0}[arm]
        stages.append((arm, _train(cfg, work, seed, ratio, num_full, None)))
        final = work
    test = _test(cfg, final, seed)
    return {
        "arm": arm,
        "num_full": num_full,
        "seed": seed,
        "test": test,
        "stages": [{"stage": s, **r} for s, r in stages],
        "seconds": sum(r["seconds"] for _, r in stages),
    }


def _training_volumes(datalist_file: str) -> int:
    with open(datalist_file) as f:
        return len(json.load(f)["training"])


def run_study(cfg: HybridStudyConfig, command: str | None = None) -> dict:
    """Run every missing run of ``cfg`` (progress logged), then :func:`summarize` ``cfg.out_dir`` with ``command``.

    Raises:
        ValueError: a bad setting (see :meth:`HybridStudyConfig.check`).
    """
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    total = _training_volumes(cfg.datalist_file)
    plan = []
    for seed in cfg.seeds:
        for arm in cfg.arms:
            sizes = [total] if arm == "reference" else [int(n) for n in cfg.sizes]
            plan += [(arm, n, int(seed)) for n in sizes]
    for i, (arm, n, seed) in enumerate(plan, 1):
        path = out / "runs" / f"{run_name(arm, n, seed)}.json"
        if path.is_file():
            logger.info("[%d/%d] %s: done before, kept", i, len(plan), path.name)
            continue
        logger.info("[%d/%d] %s N=%d seed %d: training", i, len(plan), arm, n, seed)
        with tempfile.TemporaryDirectory(prefix="hybrid_study_") as scratch:
            result = _one_run(cfg, arm, n, seed, Path(scratch))
        result["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("sizes", "seeds", "arms", "out_dir")}
        atomic_write_bytes(json.dumps(result, indent=1).encode(), path)
        t = result["test"]
        logger.info(
            "[%d/%d] %s N=%d seed %d: test mean Dice %.3f (anterior %.3f, posterior %.3f), %.0f s",
            i, len(plan), arm, n, seed, t["mean_dice"], t["dice_anterior"], t["dice_posterior"], result["seconds"],
        )  # fmt: skip
    return summarize(out, command=command)


def _table(runs: list[dict]) -> list[dict]:
    """Mean and std (over seeds) of every metric per arm and N."""
    rows = []
    for arm in ARMS:
        for n in sorted({r["num_full"] for r in runs if r["arm"] == arm}):
            group = [r for r in runs if r["arm"] == arm and r["num_full"] == n]
            row = {"arm": arm, "num_full": n, "seeds": sorted(r["seed"] for r in group)}
            for m in _METRICS:
                values = np.array([r["test"][m] for r in group])
                row[m] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
            row["seconds"] = float(np.mean([r["seconds"] for r in group]))
            rows.append(row)
    return rows


def _paired(runs: list[dict]) -> list[dict]:
    """Per arm and N, the test mean Dice minus the ``3d`` arm's of the same seed (same annotation), over seeds."""
    by_key = {(r["arm"], r["num_full"], r["seed"]): r["test"]["mean_dice"] for r in runs}
    rows = []
    for arm in ("pretrain", "hybrid"):
        for n in sorted({r["num_full"] for r in runs if r["arm"] == arm}):
            seeds = sorted(s for (a, m, s) in by_key if a == arm and m == n and ("3d", n, s) in by_key)
            if not seeds:
                continue
            diff = np.array([by_key[(arm, n, s)] - by_key[("3d", n, s)] for s in seeds])
            std = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
            rows.append({"arm": arm, "num_full": n, "seeds": seeds, "mean": float(diff.mean()), "std": std,
                         "better": int((diff > 0).sum())})  # fmt: skip
    return rows


def _markdown(rows: list[dict], paired: list[dict], command: str | None) -> str:
    lines = [
        "# Annotation cost: N fully labelled volumes + one labelled slice of each other volume",
        "",
        "Test mean Dice (anterior, posterior) on the held-out test split, mean +- std over seeds (runs in `runs/`).",
        "",
        "| arm | N full volumes | seeds | mean Dice | anterior | posterior | training s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[m]['mean']:.3f} +- {r[m]['std']:.3f}" for m in _METRICS]
        lines.append(
            f"| {r['arm']} | {r['num_full']} | {len(r['seeds'])} | {' | '.join(cells)} | {r['seconds']:.0f} |"
        )
    if paired:
        lines += [
            "",
            "Paired by seed (same annotation): test mean Dice minus that of `3d` at the same N and seed.",
            "",
            "| arm | N full volumes | seeds | difference to 3d | better than 3d in |",
            "|---|---|---|---|---|",
        ]
        for r in paired:
            lines.append(
                f"| {r['arm']} | {r['num_full']} | {len(r['seeds'])} | {r['mean']:+.4f} +- {r['std']:.4f} | "
                f"{r['better']} of {len(r['seeds'])} seeds |"
            )
    if command:
        lines += ["", "Command:", "", "```bash", command, "```"]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, style, shift in (("3d", "o-", 0.97), ("pretrain", "s-", 1.0), ("hybrid", "^-", 1.03)):
        data = [r for r in rows if r["arm"] == arm]
        if data:
            x = [r["num_full"] * shift for r in data]  # side by side on the log axis
            ax.errorbar(x, [r["mean_dice"]["mean"] for r in data], yerr=[r["mean_dice"]["std"] for r in data],
                        fmt=style, capsize=3, label={"3d": "3D only (N volumes)", "pretrain": "2D pretrain -> 3D",
                                                     "hybrid": "hybrid 2D+3D"}[arm])  # fmt: skip
    for r in (r for r in rows if r["arm"] == "reference"):
        ax.axhline(r["mean_dice"]["mean"], color="grey", ls="--", label=f"3D, all {r['num_full']} volumes labelled")
    ax.set_xlabel("N fully labelled training volumes (the others: one labelled slice)")
    ax.set_ylabel("test mean Dice")
    ax.set_xscale("log")
    ticks = sorted({r["num_full"] for r in rows if r["arm"] != "reference"})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("MSD hippocampus: Dice against annotation cost", fontsize=10)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def summarize(out_dir: str | os.PathLike, command: str | None = None) -> dict:
    """Write ``results.json``, ``results.md`` and ``dice_vs_n.png`` of the runs in ``<out_dir>/runs``.

    Raises:
        ValueError: ``<out_dir>/runs`` holds no run.
    """
    out = Path(out_dir)
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    if not runs:
        raise ValueError(f"no run in {out / 'runs'}: nothing to summarise.")
    rows, paired = _table(runs), _paired(runs)
    results = {
        "rows": rows,
        "paired_vs_3d": paired,
        "runs": len(runs),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    if command:
        results["command"] = command
    atomic_write_bytes(json.dumps(results, indent=1).encode(), out / "results.json")
    atomic_write_bytes(_markdown(rows, paired, command).encode(), out / "results.md")
    _plot(rows, out / "dice_vs_n.png")
    return results
