"""Command line of the annotation-cost study (:mod:`monai_crossd.apps.hybrid.study`).

``python -m monai_crossd.apps.hybrid study --data_dir ../shared/data/hippocampus [options]``; ``summarize --out DIR``
rewrites the results of the runs found in ``DIR/runs`` (e.g. after two processes shared the seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from monai_crossd.apps.hybrid.study import ARMS, HybridStudyConfig, run_study, summarize

_BUNDLE = Path("bundles") / "crossd_hippocampus_segmentation"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m monai_crossd.apps.hybrid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("study", help="run the annotation-cost study (missing runs only), then summarise")
    s.add_argument("--data_dir", required=True, help="folder the datalist's paths are relative to")
    s.add_argument("--datalist_file", default=str(_BUNDLE / "data" / "shared_split.json"),
                   help="JSON with training/validation/test lists (default: the bundle's shared_split.json)")
    s.add_argument("--bundle", default=str(_BUNDLE), help="the hippocampus bundle folder")
    s.add_argument("--out", default="benchmarks/results/hybrid", help="output folder (runs/, results.*)")
    s.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="numbers N of fully labelled volumes")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    s.add_argument("--steps", type=int, default=300, help="3D batches per 3D run (2D batches of the pretraining)")
    s.add_argument("--epoch_length", type=int, default=25, help="3D batches per epoch (validation after each)")
    s.add_argument("--ratio_2d", type=float, default=0.5, help="share of 2D batches of the hybrid arm")
    s.add_argument("--override", default="{}", help='JSON of further bundle overrides, e.g. \'{"batch_size": 2}\'')
    s.add_argument("--threads", type=int, default=None, help="torch threads per process")
    m = sub.add_parser("summarize", help="write results.json/.md and dice_vs_n.png from <out>/runs")
    m.add_argument("--out", default="benchmarks/results/hybrid")
    m.add_argument("--command_line", default=None, help="the study command to record in the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    for name in ("ignite", "monai", "py.warnings"):  # the engines' per-epoch lines; the study logs each run
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if args.command == "summarize":
            summarize(args.out, command=args.command_line)
            return 0
        try:
            overrides = json.loads(args.override)
        except json.JSONDecodeError as e:
            parser.error(f"--override should be a JSON object: {e}")
        cfg = HybridStudyConfig(
            bundle=args.bundle, data_dir=args.data_dir, datalist_file=args.datalist_file, out_dir=args.out,
            sizes=args.sizes, seeds=args.seeds, arms=args.arms, steps=args.steps, epoch_length=args.epoch_length,
            ratio_2d=args.ratio_2d, overrides=overrides, threads=args.threads,
        )  # fmt: skip
        run_study(cfg, command="python -m monai_crossd.apps.hybrid " + shlex.join(argv))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
