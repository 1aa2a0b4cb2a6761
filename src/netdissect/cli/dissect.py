"""`netdissect dissect`, `relabel` and `layers`."""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.cli.options import (add_model_options, add_out_option, add_run_options,
                                    add_settings_options, out_from_args, probe_from_args,
                                    settings_from_args)
from netdissect.errors import SettingsError

__all__ = ["add_parsers", "print_summary"]


def add_parsers(sub) -> None:
    p = sub.add_parser("dissect", help="dissect layers of a model on a Broden-format dataset",
                       description="Compute thresholds, IoUs, labels and detector counts for "
                                   "every unit of the chosen layers (Network Dissection, "
                                   "docs/method.md sections 4-7), and write the HTML report.")
    p.add_argument("--dataset", "--data", dest="dataset", required=True,
                   help="Broden-format folder (holds index.csv)")
    add_model_options(p)
    add_settings_options(p)
    add_out_option(p, "result folder (OUT/<layer>/...)")
    p.add_argument("--restart", action="store_true",
                   help="discard the saved state of an interrupted run and layers finished earlier")
    p.add_argument("--no-report", action="store_true", help="write the result files but no HTML report")
    add_run_options(p)
    p.set_defaults(func=run_dissect)

    p = sub.add_parser("relabel", help="recompute labels and counts from saved tallies",
                       description="Apply another IoU threshold, IoU definition or FDR to a "
                                   "result folder without touching the model or the data.")
    p.add_argument("out", help="result folder written by `netdissect dissect --out`")
    add_settings_options(p, only=["iou_threshold", "definition", "fdr"])
    p.set_defaults(func=run_relabel)

    p = sub.add_parser("layers", help="list a model's layers, output shapes and dissectability",
                       description="Run one dummy input of the model's size and list every "
                                   "module with its output shape, marking which layers can be "
                                   "dissected as they are, after token reshaping, or not "
                                   "(\"no (runs 2x)\": a module called more than once in one "
                                   "pass, whose output is ambiguous: dissect its block instead).")
    p.add_argument("model", help="model spec, as for `netdissect dissect --model`")
    p.add_argument("--weights")
    p.add_argument("--input-size", type=int, help="input side (default: the model's, else 224)")
    p.add_argument("--all", action="store_true", help="also list layers that cannot be dissected "
                                                      "(modules that run more than once are always listed)")
    p.set_defaults(func=run_layers)


def run_dissect(args: argparse.Namespace) -> int:
    from netdissect.api import is_main_process, dissect

    probe = probe_from_args(args, require_layers=True)
    settings = settings_from_args(args)
    out = out_from_args(args, probe.name)
    result = dissect(probe, args.dataset, settings=settings, out=out,
                     report=not args.no_report, progress=not args.quiet, device=args.device,
                     restart=args.restart)
    if is_main_process():
        print_summary([result], out)
    return 0


def print_summary(results: list, out: Path) -> None:
    """Per model and layer: units, detectors, unique detectors per category (with a null:
    the significant ones; with a bootstrap: 95% intervals of the counts); then where."""
    rows, significance = [], False
    for dissection in results:
        for layer, r in dissection.layers.items():
            model_name = str(r.meta.get("model", {}).get("name", ""))
            c = r.counts()
            per_cat = " ".join(f"{k}:{v}" for k, v in c["unique_detectors"].items())
            boot = c.get("bootstrap")
            detectors, unique = str(c["detectors"]), str(c["unique_detectors_total"])
            if boot:
                detectors += " [{:g}-{:g}]".format(*boot["detectors"])
                unique += " [{:g}-{:g}]".format(*boot["unique_detectors_total"])
            significant = ""
            if "significant_detectors" in c:
                significance = True
                significant = f"{c['significant_detectors']} (unique {c['significant_unique_detectors_total']})"
            rows.append((model_name, layer, str(c["units"]), detectors, unique, significant, per_cat))
    header = ("model", "layer", "units", "detectors", "unique", "significant", "unique per category")
    keep = [i for i in range(len(header)) if significance or header[i] != "significant"]
    rows = [tuple(row[i] for i in keep) for row in rows]
    header = tuple(header[i] for i in keep)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if significance:
        print("significant: detectors whose q-value (Benjamini-Hochberg over the layer's units) "
              "is at most the FDR; [a-b]: 95% bootstrap interval")
    print(f"results: {out.resolve()}")
    if (out / "index.html").is_file():
        print(f"report:  {(out / 'index.html').resolve()}")


def run_relabel(args: argparse.Namespace) -> int:
    from netdissect.report import write_report
    from netdissect.results import Dissection

    dissection = Dissection.load(args.out).relabel(args.iou_threshold, args.definition, args.fdr)
    dissection.save(args.out)
    if (Path(args.out) / "index.html").is_file():
        write_report(dissection, args.out, progress=False)
    print_summary([dissection], Path(args.out))
    return 0


def run_layers(args: argparse.Namespace) -> int:
    import torch

    from netdissect.models.trace import list_layers
    from netdissect.models.zoo import build_model

    if args.input_size is not None and args.input_size < 1:
        raise SettingsError(f"--input-size must be at least 1, got {args.input_size}")
    probe = build_model(args.model, weights=args.weights or "random")  # shapes need no training
    size = args.input_size or probe.input_size or 224
    try:
        records = list_layers(probe.model, torch.zeros(1, 3, size, size))
    except RuntimeError as e:  # e.g. an input too small for the model's strides
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SettingsError(f"model {args.model!r} cannot run on a {size}x{size} input "
                            f"(--input-size): {first}") from None
    marks = {"yes": "yes", "tokens": "tokens->grid", "no": "no"}
    print(f"{probe.name}: {size}x{size} input; default layers: {', '.join(probe.default_layers) or '-'}")
    for r in records:
        repeated = r.get("calls", 1) > 1 and r["dissectable"] != "no"
        if r["dissectable"] == "no" and not args.all:
            continue
        alias = probe.friendly_name(r["name"])
        shape = "x".join(str(d) for d in r["shape"]) if r["shape"] else "-"
        mark = f"no (runs {r['calls']}x)" if repeated else marks[r["dissectable"]]
        print(f"  {r['name']:<40} {r['type']:<22} {shape:<18} {mark:<13}"
              f"{alias if alias != r['name'] else ''}")
    return 0
