"""`netdissect rotate`, `compare` and `ablate`: the experiments of the papers.

Each runs its function of `netdissect.experiments`, prints its numbers, then lists the
experiment in the report overviews above its output folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.cli.options import (add_model_options, add_run_options, add_settings_options,
                                    names, names_or_file, number_list, probe_from_args,
                                    settings_from_args)

__all__ = ["add_parsers"]

DEFAULT_POWERS = "0,0.2,0.4,0.6,0.8,1"
DEFAULT_COUNTS = "1,2,4,8,16,20"


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "rotate", help="dissect a layer after rotating its channel basis (axis-alignment test)",
        description="Dissect one layer in the bases R^a of a Haar-random rotation R for several "
                    "powers a (0 = the units themselves, 1 = fully rotated), in one set of passes.")
    p.add_argument("--dataset", "--data", dest="dataset", required=True,
                   help="Broden-format folder (holds index.csv)")
    add_model_options(p, layers="--layer")
    p.add_argument("--powers", type=number_list(float, "--powers", "numbers in [0, 1]"),
                   default=number_list(float, "--powers")(DEFAULT_POWERS),
                   help=f"comma-separated rotation powers a in [0, 1] (default {DEFAULT_POWERS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random rotation (default 0)")
    add_settings_options(p)
    p.add_argument("--out", required=True, help="output folder")
    add_run_options(p)
    p.set_defaults(func=run_rotate)

    p = sub.add_parser(
        "compare", help="compare saved dissections of a layer (checkpoints, fine-tuning)",
        description="Compare two or more saved dissections of the same layer: detectors per "
                    "run, each unit's label in each run (kept/changed/gained/lost), the matrix "
                    "of concept-category changes, unique detectors against training step.")
    p.add_argument("results", nargs="+", help="result folders (from `netdissect dissect --out`), in order")
    p.add_argument("--layer", help="the layer to compare (default: the only layer they share)")
    p.add_argument("--steps", type=number_list(float, "--steps"),
                   help="comma-separated training step of each folder (default: 0, 1, 2, ...)")
    p.add_argument("--names", type=names, help="comma-separated run names (default: the folder names)")
    add_settings_options(p, only=["iou_threshold"])
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_compare)

    p = sub.add_parser(
        "ablate", help="zero units of a layer and measure per-class accuracy (causal role)",
        description="Rank the units of a layer by the drop of each class's accuracy when each "
                    "is removed alone, then remove a class's top units, random units and all but "
                    "the top units and measure the class's accuracy again (no retraining).")
    p.add_argument("--dataset", "--data", dest="dataset", required=True,
                   help="a folder per class (ROOT/<class>/<image>) or a Broden-format folder "
                        "with a scene column")
    add_model_options(p, layers="--layer")
    p.add_argument("--class-names", type=names_or_file,
                   help="the classifier's class names in output order: comma-separated or a file "
                        "with one per line (default: the model's class_names, else sorted folder names)")
    p.add_argument("--classes", type=names, help="comma-separated classes to report curves for (default: all)")
    p.add_argument("--counts", type=number_list(int, "--counts", "integers"),
                   default=number_list(int, "--counts")(DEFAULT_COUNTS),
                   help=f"numbers of units to remove (default {DEFAULT_COUNTS})")
    p.add_argument("--draws", type=int, default=5, help="random unit sets per count (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random unit sets")
    p.add_argument("--split", help="Broden-format data: only rows of this split (e.g. val)")
    p.add_argument("--dissection", help="a result folder of this layer, to name the top units' concepts")
    p.add_argument("--memory-mb", type=float, default=512.0,
                   help="budget for the repeated layer outputs of batched ablation (default 512)")
    add_settings_options(p, only=["batch_size", "workers"])
    p.add_argument("--out", required=True, help="output folder")
    add_run_options(p)
    p.set_defaults(func=run_ablate)


def run_rotate(args: argparse.Namespace) -> int:
    from netdissect.experiments import rotate

    settings = settings_from_args(args)
    result = rotate(probe_from_args(args), args.dataset, args.layer, powers=args.powers,
                    seed=args.seed, out=args.out, device=args.device, progress=not args.quiet,
                    settings=settings)
    print("a      detectors  unique")
    for row in result.rows():
        print(f"{row['a']:<6g} {row['detectors']:<10d} {row['unique_detectors_total']}")
    _list_in_reports(args.out)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from netdissect.experiments import compare
    from netdissect.experiments.compare import STATUSES

    comparison = compare(args.results, args.layer, steps=args.steps, names=args.names,
                         iou_threshold=args.iou_threshold, out=args.out)
    print("run  step  detectors  unique")
    for c in comparison.counts():
        print(f"{c['run']}  {c['step']:g}  {c['detectors']}  {c['unique_detectors_total']}")
    for s in comparison.status_counts():
        print(f"{s['from']} -> {s['to']}: " + ", ".join(f"{k} {s[k]}" for k in STATUSES))
    _list_in_reports(args.out)
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    from netdissect.experiments import ablate

    settings = settings_from_args(args)
    result = ablate(probe_from_args(args), args.dataset, args.layer, class_names=args.class_names,
                    classes=args.classes, counts=args.counts, draws=args.draws, seed=args.seed,
                    dissection=args.dissection, split=args.split, batch_size=settings.batch_size,
                    workers=settings.workers or 0, device=args.device, memory_mb=args.memory_mb,
                    progress=not args.quiet, out=args.out)
    print(f"balanced accuracy {result.balanced_accuracy:.3f}")
    for name, curve in result.curves.items():
        steps = ", ".join(f"-{r['removed']}: {r['removed_top']:.3f} (random {r['removed_random']:.3f})"
                          for r in curve)
        print(f"{name}: {curve[0]['baseline']:.3f}; {steps}")
    _list_in_reports(args.out)
    return 0


def _list_in_reports(out: str) -> None:
    """Say where the experiment's files are, and list it in the report overviews above."""
    from netdissect.report import refresh_overviews

    print(f"results: {Path(out).resolve()}")
    for page in refresh_overviews(out):
        print(f"listed in the report: {page}")
