"""`netdissect explain`: each unit's best formula of concepts (compositional explanations)."""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.cli.options import (add_model_options, add_out_option, add_run_options,
                                    add_settings_options, out_from_args, probe_from_args,
                                    settings_from_args)

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = sub.add_parser("explain", help="the best formula of concepts (AND, OR, AND NOT) for every unit",
                       description="Compositional explanations (Mu & Andreas 2020; docs/method.md "
                                   "section 13): for every unit, a beam search over formulas "
                                   "such as '((water OR river) AND NOT blue-c)', scored by their "
                                   "exact IoU with the unit's mask over the whole dataset. The "
                                   "unit masks use the thresholds of the dissection in --out "
                                   "(run first when there is none). Writes "
                                   "OUT/<layer>/explanations.{csv,json} and the HTML report.")
    p.add_argument("--dataset", "--data", dest="dataset", required=True,
                   help="Broden-format folder (holds index.csv)")
    add_model_options(p)
    g = p.add_argument_group("formula search")
    g.add_argument("--length", type=int, default=3,
                   help="at most this many labels per formula: length-1 beam steps (default 3; "
                        "a formula's reported length also counts 1 per NOT)")
    g.add_argument("--beam", type=int, default=5, help="formulas kept per unit at each step (default 5)")
    g.add_argument("--penalty", type=float, default=1.0,
                   help="rank candidates by IoU * penalty**(length-1); 1.0 (default): no penalty")
    add_settings_options(p)
    add_out_option(p, "result folder (OUT/<layer>/...)")
    p.add_argument("--restart", action="store_true",
                   help="discard a saved state and the dissection in --out, and dissect again")
    p.add_argument("--no-report", action="store_true", help="write the result files but no HTML report")
    add_run_options(p)
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from netdissect.api import is_main_process
    from netdissect.compositional import explain

    probe = probe_from_args(args, require_layers=True)
    settings = settings_from_args(args)
    out = out_from_args(args, probe.name)
    found = explain(probe, args.dataset, settings=settings, length=args.length,
                    beam=args.beam, penalty=args.penalty, out=out, report=not args.no_report,
                    progress=not args.quiet, device=args.device, restart=args.restart)
    if is_main_process():
        print_explanations(found, out)
    return 0


def print_explanations(found: dict, out: Path, show: int = 5) -> None:
    """Per layer: mean IoU by formula length, then the units with the best formulas."""
    for layer, result in found.items():
        means = " ".join(f"{n + 1}:{m:.4f}" for n, m in enumerate(result.mean_iou_by_length))
        print(f"{layer}: mean IoU by formula length {means}")
        best = sorted(result.records(), key=lambda r: (-r["iou"], r["unit"]))[:show]
        for r in best:
            if r["formula"]:
                print(f"  unit {r['unit']:>4}  IoU {r['iou']:.4f}  {r['formula']}")
    print(f"results: {out.resolve()}")
    if (out / "index.html").is_file():
        print(f"report:  {(out / 'index.html').resolve()}")
