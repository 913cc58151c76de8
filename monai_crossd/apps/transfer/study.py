"""Does 2D knowledge transfer to 3D? The paper's Table II protocol on data you have.

1. Pretrain a 2D ResNet18 prior twice on real 2D images (a plain torchvision ResNet18 and a Cross-D
   ResNet18), or take priors you give.
2. Transfer to a 3D target with each method: ``crossd`` (Cross-D prior, our 3D path: the shifted
   knowledge base), ``crossd-authors`` (Cross-D prior, the authors' 3D protocol: raw ``U`` as a
   ``Conv3d`` weight), ``acs``, ``i3d``, ``center`` (plain prior through
   :func:`~monai_crossd.converters.convert_to_3d`) and ``scratch`` (the same 3D ResNet18, randomly
   initialised).
3. Fine-tune under weak probing (normalisation layers + final linear layer, the paper's protocol) and
   full fine-tuning, for several seeds, each run a MONAI ``SupervisedTrainer`` validated every epoch
   (:func:`~monai_crossd.apps.transfer.training.fit`); test the state of the best validation epoch.
4. Report mean +- std per method and protocol (JSON, markdown, PNG).

Targets, told apart by :func:`target_kind`:

- classification: a MedMNIST-format 3D ``.npz`` file (``{train,val,test}_{images,labels}``, its own splits);
  accuracy, balanced accuracy and AUC, the epoch picked by validation AUC
  (:mod:`~monai_crossd.apps.transfer.classification`).
- segmentation: a folder in the MSD layout (``imagesTr/*.nii.gz`` + ``labelsTr/*.nii.gz``, e.g. Task04
  hippocampus), split 60/20/20 and centre-cropped/padded to one size; the transferred 3D ResNet18 becomes the
  encoder of a UNet-style network whose decoder trains from scratch. Per-class and mean Dice, the epoch picked by
  validation mean Dice (:mod:`~monai_crossd.apps.transfer.segmentation`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.utils import set_determinism
from torch import nn

from monai_crossd.apps.data.nifti_pairs import paired_nifti_datalist
from monai_crossd.apps.io import atomic_open, atomic_torch_save, atomic_write_bytes
from monai_crossd.apps.probing import protocol_parameters
from monai_crossd.apps.transfer import segmentation
from monai_crossd.apps.transfer.classification import classification_task
from monai_crossd.apps.transfer.training import fit
from monai_crossd.converters import convert_to_3d
from monai_crossd.networks.blocks.crossd_conv import ROTATION_INITS
from monai_crossd.networks.nets import crossd_resnet18

__all__ = ["METHODS", "PROTOCOLS", "TransferConfig", "run_transfer", "target_kind"]

logger = logging.getLogger(__name__)

METHODS = ("crossd", "crossd-authors", "acs", "i3d", "center", "scratch")
PROTOCOLS = ("weak", "full")
_PROTOCOL = {"weak": "weak_probing", "full": "full"}  #: the study's short names of the probing protocols


def target_kind(target: str | os.PathLike) -> str:
    """``"segmentation"`` for a folder (MSD layout), ``"classification"`` otherwise (a MedMNIST 3D ``.npz``)."""
    return "segmentation" if os.path.isdir(target) else "classification"


@dataclass
class TransferConfig:
    """Everything a transfer study depends on; saved with its results.

    Args:
        target: a MedMNIST-format 3D ``.npz`` (classification) or a folder with ``imagesTr/`` and ``labelsTr/``
            NIfTI files of matching names (segmentation, MSD layout).
        out_dir: where results (JSON, markdown, PNG) and priors are written.
        source: 2D MedMNIST ``.npz`` files pretraining the priors, combined as one label space.
        methods: subset of :data:`METHODS`.
        protocols: subset of :data:`PROTOCOLS`.
        seeds: number of fine-tuning seeds (``0 .. seeds - 1``).
        pretrain_epochs: epochs of 2D pretraining for each prior.
        epochs: epochs of 3D fine-tuning per run.
        max_samples: cap on samples (cases) per split of the target; None for all.
        max_source_samples: cap on samples per file and split of the 2D source; None for all.
        batch_size: for pretraining and fine-tuning.
        lr_pretrain: AdamW learning rate of the 2D pretraining.
        lr_full: Adam learning rate of full fine-tuning.
        lr_weak: Adam learning rate of weak probing.
        plain_prior, crossd_prior: checkpoints (``state_dict``) of priors to use instead of pretraining.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        threads: torch CPU threads (None: torch's default).
        seg_size: ``(D, H, W)`` every segmentation volume is centre-cropped/padded to; None: the per-axis
            median of the cases' shapes rounded to the nearest multiple of 16 (32x48x32 for hippocampus).
            Segmentation targets only.
        crossd_rotation_init: ``rotation_init`` of the Cross-D convs of the pretrained 2D Cross-D prior:
            ``"identity"`` (start at ``R = I``; default: a prior as good as the plain one on the default
            source data) or ``"random"`` (the authors' initialisation; a markedly weaker prior after the same
            epochs, see :class:`~monai_crossd.networks.blocks.CrossDConv`).
    """

    target: str
    out_dir: str
    source: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    seeds: int = 3
    pretrain_epochs: int = 3
    epochs: int = 5
    max_samples: int | None = None
    max_source_samples: int | None = None
    batch_size: int = 32
    lr_pretrain: float = 1e-3
    lr_full: float = 1e-3
    lr_weak: float = 1e-2
    plain_prior: str | None = None
    crossd_prior: str | None = None
    device: str = "auto"
    threads: int | None = None
    seg_size: list[int] | None = None
    crossd_rotation_init: str = "identity"

    def priors_needed(self) -> list[str]:
        """The 2D priors :attr:`methods` transfer from: ``"plain"`` and/or ``"crossd"``."""
        return [k for k, ms in (("plain", ("acs", "i3d", "center")), ("crossd", ("crossd", "crossd-authors"))) if set(ms) & set(self.methods)]

    def check(self) -> None:
        """Raise ``ValueError`` naming the field for anything that cannot run."""
        if target_kind(self.target) == "segmentation":
            try:
                paired_nifti_datalist(self.target)
            except ValueError as e:
                raise ValueError(f"`target` folder {self.target!r} should hold imagesTr/ and labelsTr/ NIfTI pairs: {e}") from e
            size = self.seg_size
            if size is not None and (len(size) != 3 or not all(isinstance(s, int) and s >= 1 for s in size)):
                raise ValueError(f"`seg_size` should be three positive ints (D, H, W) or None, got {size!r}.")
        elif not os.path.isfile(self.target):
            raise ValueError(
                f"`target` should be an existing .npz file or a folder with imagesTr/ and labelsTr/, got {self.target!r}."
            )
        elif self.seg_size is not None:
            raise ValueError(f"`seg_size` applies to segmentation targets (a folder), not to {self.target!r}.")
        for name, values, allowed in (("methods", self.methods, METHODS), ("protocols", self.protocols, PROTOCOLS)):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"`{name}` should be a non-empty subset of {allowed}, got {values!r}.")
        if self.crossd_rotation_init not in ROTATION_INITS:
            raise ValueError(f"`crossd_rotation_init` should be one of {ROTATION_INITS}, got {self.crossd_rotation_init!r}.")
        for name in ("seeds", "pretrain_epochs", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` should be a positive int, got {value!r}.")
        for name in ("max_samples", "max_source_samples"):  # a one-sample training split trains zero steps
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"`{name}` should be None or an int >= 2 (one training sample trains no step), got {value!r}.")
        for kind in ("plain", "crossd"):
            path = getattr(self, f"{kind}_prior")
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"`{kind}_prior` should be an existing checkpoint file, got {path!r}.")
            if kind in self.priors_needed() and path is None and not self.source:
                raise ValueError(f"`source` 2D .npz files are needed to pretrain the {kind} prior.")
        for path in self.source:
            if not os.path.isfile(path):
                raise ValueError(f"`source` file {path!r} does not exist.")


# ------------------------------------------------------------------------------------------ networks


def _plain_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    try:
        from torchvision.models import resnet18
    except ImportError as e:  # pragma: no cover - an install without the vision extra
        raise ImportError("the plain prior needs torchvision: pip install 'monai-crossd[vision]'") from e
    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net


def _priors(cfg: TransferConfig, device: torch.device, out: Path) -> tuple[dict, dict]:
    """``({"plain": state_dict, "crossd": state_dict}, report)``: given or pretrained on ``cfg.source``."""
    priors, report, source = {}, {}, None
    for kind in cfg.priors_needed():
        given = getattr(cfg, f"{kind}_prior")
        if given is not None:
            state = torch.load(given, map_location="cpu", weights_only=True)
            priors[kind], report[kind] = state.get("state_dict", state), {"checkpoint": given}
            continue
        source = source or classification_task(cfg.source, cfg.max_source_samples, splits=("train", "val"))
        classes = source.report["num_classes"]
        set_determinism(seed=1234)
        net = _plain_resnet18(1, classes) if kind == "plain" else crossd_resnet18(
            2, 1, classes, conv_kwargs={"rotation_init": cfg.crossd_rotation_init}
        )
        net = net.to(device)
        history = fit(
            net, list(net.parameters()), source, cfg.pretrain_epochs, cfg.lr_pretrain, cfg.batch_size, device, 0,
            f"pretrain {kind}", optimizer=torch.optim.AdamW,
        )["history"]  # fmt: skip
        val = history[-1]["val"]
        report[kind] = {"num_classes": classes, "val_final": val, "history": history}
        logger.info("2D %s prior: validation accuracy %.3f, balanced %.3f", kind, val["accuracy"], val["balanced_accuracy"])
        priors[kind] = {k: v.cpu() for k, v in net.state_dict().items()}
        atomic_torch_save(priors[kind], out / f"prior_{kind}.pt")
    return priors, report


def _build_3d(method: str, priors: dict, num_classes: int, seed: int) -> nn.Module:
    """The 3D ResNet18 of ``method`` initialised from the priors, with a fresh ``num_classes`` head."""
    torch.manual_seed(seed)
    if method in ("crossd", "crossd-authors"):
        state = priors["crossd"]
        net = crossd_resnet18(3, 1, state["fc.weight"].shape[0], conv_kwargs={"kernel_3d": "raw"} if method == "crossd-authors" else {})
        net.load_state_dict(state, strict=True)
    elif method == "scratch":
        net, _ = convert_to_3d(_plain_resnet18(1, num_classes), "i3d")
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    else:
        plain = _plain_resnet18(1, priors["plain"]["fc.weight"].shape[0])
        plain.load_state_dict(priors["plain"], strict=True)
        net, _ = convert_to_3d(plain, method)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


# ------------------------------------------------------------------------------------------- report


def _summary(runs: list[dict], columns: Sequence[str]) -> dict:
    out: dict = {}
    for r in runs:
        key = f"{r['method']}|{r['protocol']}"
        out.setdefault(key, {"method": r["method"], "protocol": r["protocol"], "runs": []})["runs"].append(r["test"])
    for entry in out.values():
        for metric in columns:
            values = np.array([t[metric] for t in entry["runs"]], dtype=float)
            finite = values[~np.isnan(values)]
            mean, std = (float(finite.mean()), float(finite.std())) if len(finite) else (float("nan"), float("nan"))
            entry[metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def _target_lines(cfg: TransferConfig, target: dict) -> list[str]:
    if target["kind"] == "classification":
        return [
            f"Test metrics at the epoch of best validation AUC, mean +- std over {cfg.seeds} seeds. "
            + f"{cfg.epochs} fine-tuning epochs, {cfg.pretrain_epochs} pretraining epochs, "
            + f"max_samples={cfg.max_samples} (target), max_source_samples={cfg.max_source_samples}."
        ]
    n, size = target["samples"], "x".join(str(s) for s in target["size"])
    setup = (
        f"Segmentation: test Dice at the epoch of best validation mean Dice, mean +- std over {cfg.seeds} seeds. "
        f"{cfg.epochs} fine-tuning epochs, {cfg.pretrain_epochs} pretraining epochs, batch size {cfg.batch_size}, "
        f"max_samples={cfg.max_samples} (cases per split), max_source_samples={cfg.max_source_samples}."
    )
    data = (
        f"Cases: {n['train']} train / {n['val']} val / {n['test']} test (60/20/20 split of the image/label pairs "
        "by MONAI's partition_dataset, seed 0). Each volume: intensities from its 0.5/99.5 percentiles to [-1, 1], "
        f"centre-cropped/padded to {size} voxels (labels never interpolated; {100 * target['foreground_kept']:.2f} % "
        f"of the foreground voxels kept). **Dice (MONAI's DiceMetric; a class absent from a case's label is left out) "
        f"is computed on that {size} grid**, not on the original voxel grids."
    )
    network = (
        "Network: the transferred 3D ResNet18 of each method is the encoder (stem, layer1..4) of a UNet-style network "
        "whose decoder (MONAI Convolution blocks, trilinear upsampling, 1x1x1 head) trains from scratch. Weak probing "
        "trains the encoder's normalisation layers and the decoder; full fine-tuning trains everything. Loss: Dice + "
        "cross-entropy."
    )
    return [setup, "", data, "", network]


def _markdown(summary: dict, cfg: TransferConfig, priors: dict, target: dict, columns: dict[str, str]) -> str:
    lines = [f"# Transfer study: {os.path.basename(os.path.normpath(cfg.target))}", "", *_target_lines(cfg, target), ""]
    lines += [
        "| method | protocol | " + " | ".join(columns.values()) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for e in summary.values():
        cells = [f"{e[m]['mean']:.3f} +- {e[m]['std']:.3f}" for m in columns]
        lines.append(f"| {e['method']} | {e['protocol']} | " + " | ".join(cells) + " |")
    lines += ["", "2D priors (validation split of the 2D source data):", ""]
    for kind, rep in priors.items():
        if "val_final" in rep:
            v = rep["val_final"]
            init = f", rotation_init {cfg.crossd_rotation_init!r}" if kind == "crossd" else ""
            lines.append(
                f"- {kind}: accuracy {v['accuracy']:.3f}, balanced accuracy {v['balanced_accuracy']:.3f}, "
                f"{rep['num_classes']} classes{init}"
            )
        else:
            lines.append(f"- {kind}: given checkpoint {rep['checkpoint']}")
    return "\n".join(lines) + "\n"


def _plot(summary: dict, path: Path, title: str, metrics: dict[str, str], ylim: tuple[float, float], chance: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = list(summary.values())
    protocols = sorted({e["protocol"] for e in entries})
    methods = list(dict.fromkeys(e["method"] for e in entries))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    width = 0.8 / max(len(protocols), 1)
    for ax, (metric, name) in zip(axes[0], metrics.items()):
        for j, protocol in enumerate(protocols):
            rows = [next((e for e in entries if e["method"] == m and e["protocol"] == protocol), None) for m in methods]
            means = [r[metric]["mean"] if r else np.nan for r in rows]
            stds = [r[metric]["std"] if r else 0 for r in rows]
            ax.bar(np.arange(len(methods)) + j * width, means, width, yerr=stds, capsize=3, label=protocol)
        ax.set_xticks(np.arange(len(methods)) + width * (len(protocols) - 1) / 2, methods, rotation=20)
        ax.set_ylabel(name)
        ax.set_ylim(*ylim)
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.5)
        ax.legend(title="protocol", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)


def run_transfer(cfg: TransferConfig) -> dict:
    """Run the study of ``cfg`` and write ``results.json``, ``results.md`` and ``results.png`` to ``cfg.out_dir``.

    Returns:
        the results: config, environment, prior report, target report, every run and the summary.
    """
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    priors, prior_report = _priors(cfg, device, out)
    if target_kind(cfg.target) == "classification":
        task, classifier = classification_task(cfg.target, cfg.max_samples), None
    else:
        task = segmentation.segmentation_task(cfg.target, cfg.seg_size, cfg.max_samples)
        classifier = segmentation.CLASSIFIER

    def build(method: str, seed: int) -> nn.Module:
        if task.report["kind"] == "classification":
            return _build_3d(method, priors, task.report["num_classes"], seed)
        return segmentation.SegmentationNet(_build_3d(method, priors, 1, seed), task.report["num_classes"])

    target = task.report
    logger.info("target %s: %s, %s train / %s val / %s test", cfg.target, target["kind"], *target["samples"].values())
    runs = []
    total = len(cfg.methods) * len(cfg.protocols) * cfg.seeds
    for method in cfg.methods:
        for protocol in cfg.protocols:
            for seed in range(cfg.seeds):
                label = f"[{len(runs) + 1}/{total}] {method} {protocol} seed {seed}"
                set_determinism(seed=seed)
                model = build(method, seed).to(device)
                lr = cfg.lr_weak if protocol == "weak" else cfg.lr_full
                result = fit(model, protocol_parameters(model, _PROTOCOL[protocol], classifier), task, cfg.epochs, lr, cfg.batch_size, device, seed, label)
                runs.append({"method": method, "protocol": protocol, "seed": seed, **result})
    summary = _summary(runs, task.columns)
    results = {
        "config": asdict(cfg),
        "environment": {
            "torch": torch.__version__,
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "seconds": time.time() - started,
        },
        "priors": prior_report,
        "target": target,
        "summary": summary,
        "runs": runs,
    }
    name = os.path.basename(os.path.normpath(cfg.target))
    atomic_write_bytes(json.dumps(results, indent=1).encode(), out / "results.json")
    atomic_write_bytes(_markdown(summary, cfg, prior_report, target, task.columns).encode(), out / "results.md")
    if target["kind"] == "classification":
        _plot(summary, out / "results.png", f"{name}: transfer from 2D priors", {"auc": "AUC", "balanced_accuracy": "balanced accuracy"}, (0.4, 1.0), 0.5)
    else:
        _plot(summary, out / "results.png", f"{name}: transfer from 2D priors (test Dice)", task.columns, (0.0, 1.0), None)
    logger.info("results written to %s (%.0fs)", out, time.time() - started)
    return results
