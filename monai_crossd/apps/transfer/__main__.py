"""Command line: ``python -m monai_crossd.apps.transfer transfer --target PATH [options]``.

``PATH`` is a MedMNIST-format 3D ``.npz`` (classification: accuracy, balanced accuracy, AUC) or a folder with
``imagesTr/`` and ``labelsTr/`` NIfTI pairs in the MSD layout (segmentation: per-class and mean Dice).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from monai_crossd.apps.transfer.study import METHODS, PROTOCOLS, TransferConfig, run_transfer

DEFAULT_SOURCES = ("breastmnist.npz", "pneumoniamnist_subset.npz")


def _default_source() -> list[str]:
    """The MedMNIST 2D files of ``shared/data/medmnist`` beside the working directory or this checkout."""
    roots = [Path.cwd() / ".." / "shared", Path(__file__).resolve().parents[4] / "shared"]
    for root in roots:
        files = [root / "data" / "medmnist" / name for name in DEFAULT_SOURCES]
        if all(f.is_file() for f in files):
            return [str(f.resolve()) for f in files]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_crossd.apps.transfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transfer", help="2D prior -> 3D target transfer study (the paper's Table II protocol)")
    t.add_argument("--target", required=True, help="MedMNIST-format 3D .npz ({train,val,test}_{images,labels}) for "
                   "classification, or a folder with imagesTr/ and labelsTr/ NIfTI pairs (MSD layout) for segmentation")
    t.add_argument("--source", nargs="+", default=None, help="2D MedMNIST .npz files for the priors "
                   f"(default: {', '.join(DEFAULT_SOURCES)} from ../shared/data/medmnist)")
    t.add_argument("--out", default=None, help="output folder (default: transfer_results/<target name>)")
    t.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    t.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    t.add_argument("--seeds", type=int, default=3)
    t.add_argument("--epochs", type=int, default=5, help="3D fine-tuning epochs per run")
    t.add_argument("--pretrain-epochs", type=int, default=3)
    t.add_argument("--max-samples", type=int, default=None, help="cap on target samples (cases) per split")
    t.add_argument("--max-source-samples", type=int, default=None, help="cap on 2D source samples per file and split")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--plain-prior", default=None, help="state_dict of a plain 2D ResNet18 (skips its pretraining)")
    t.add_argument("--crossd-prior", default=None, help="state_dict of a 2D Cross-D ResNet18 (skips its pretraining)")
    t.add_argument("--crossd-rotation-init", default="identity", choices=("identity", "random"),
                   help="rotation-network initialisation of the pretrained Cross-D prior (random: the authors')")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--seg-size", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="segmentation: size every volume is centre-cropped/padded to (default: per-axis median of the "
                   "cases' shapes rounded to the nearest multiple of 16, 32 48 32 for MSD hippocampus)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    source = args.source if args.source is not None else _default_source()
    target = Path(args.target)
    out = args.out or os.path.join("transfer_results", target.name if target.is_dir() else target.stem)
    cfg = TransferConfig(
        target=args.target, out_dir=out, source=source, methods=args.methods, protocols=args.protocols,
        seeds=args.seeds, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs, max_samples=args.max_samples,
        max_source_samples=args.max_source_samples,
        batch_size=args.batch_size, plain_prior=args.plain_prior, crossd_prior=args.crossd_prior,
        device=args.device, threads=args.threads, seg_size=args.seg_size,
        crossd_rotation_init=args.crossd_rotation_init,
    )
    try:
        run_transfer(cfg)
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
