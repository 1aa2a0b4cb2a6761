"""The `netdissect` command: a thin layer over the Python API.

    netdissect dissect --dataset DIR --model SPEC --layers NAME[,NAME] --out DIR [...]
    netdissect demo [--out results/demo]
    netdissect toyworld --out DIR [--images N --seed S]
    netdissect train-demo [--dataset DIR --out demo_cnn.pt]
    netdissect layers MODEL
    netdissect relabel OUT [--iou-threshold T] [--definition original|lite]
    netdissect download broden [--variant 224|227|384] [--dest DIR] [--url URL]
    netdissect report OUT / netdissect serve OUT [--port N]
    netdissect rotate / compare / ablate ...   (the experiments of the papers)

Every option has an API twin (see `netdissect.dissect`); errors are printed as one line
naming what was wrong and what to do, with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _floats(text: str, option: str, count: int = 3) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} takes {count} comma-separated numbers, got {text!r}")
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{option} takes {count} comma-separated numbers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def add_dissect_parser(sub) -> None:
    p = sub.add_parser("dissect", help="dissect layers of a model on a Broden-format dataset",
                       description="Compute thresholds, IoUs, labels and detector counts for "
                                   "every unit of the chosen layers (Network Dissection).")
    p.add_argument("--dataset", required=True, help="Broden-format folder (holds index.csv)")
    p.add_argument("--model", required=True,
                   help="a zoo name (resnet18, alexnet, vgg16, efficientnet_lite0, ...), "
                        "timm:NAME, or an import path package.module:callable")
    p.add_argument("--weights", help="state dict file (.pt/.pth/.safetensors) for the model")
    p.add_argument("--layers", type=_names, help="comma-separated layer names or aliases "
                                                 "(default: the model's default layers)")
    p.add_argument("--preset", choices=["imagenet", "places365"],
                   help="preprocessing preset (mean/std); default: the model's own")
    p.add_argument("--mean", type=lambda t: _floats(t, "--mean"), help="R,G,B means on 0-1 pixels")
    p.add_argument("--std", type=lambda t: _floats(t, "--std"), help="R,G,B stds on 0-1 pixels")
    p.add_argument("--input-size", type=int, help="model input size (images of another size are resized)")
    p.add_argument("--quantile", type=float, default=0.005, help="top quantile q of T_k (default 0.005)")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="detector IoU threshold (default 0.04)")
    p.add_argument("--categories", type=_names, help="comma-separated subset of categories")
    p.add_argument("--definition", choices=["original", "lite"], default="original",
                   help="how A counts activation pixels (METHOD.md section 6)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="data-loader worker processes (default: up to 4)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--top-k", type=int, default=10, help="top images kept per unit (default 10)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images and count them in summary.json instead of stopping")
    p.add_argument("--cache-limit-gb", type=float, default=8.0,
                   help="largest on-disk activation cache; above it pass 2 runs the model again")
    p.add_argument("--out", required=True, help="result folder (OUT/<layer>/...)")
    p.add_argument("--restart", action="store_true",
                   help="discard the saved state of an interrupted run and layers finished earlier")
    p.add_argument("--checkpoint-seconds", type=float, default=300.0,
                   help="save the run's state this often, to resume after an interruption (default 300)")
    p.add_argument("--no-report", action="store_true", help="write the result files but no HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_dissect)


def run_dissect(args: argparse.Namespace) -> int:
    from netdissect.dissect import dissect
    from netdissect.models.zoo import build_model, resolve_layer_names

    info = build_model(args.model, weights=args.weights, preset=args.preset)
    layers = resolve_layer_names(info, args.layers or info.default_layers)
    if not layers:
        raise ValueError(f"--layers: model {args.model!r} has no default layers; name some "
                         "(`netdissect layers MODEL` lists them).")
    result = dissect(
        info.model, args.dataset, layers, quantile=args.quantile, iou_threshold=args.iou_threshold,
        definition=args.definition, categories=args.categories, mean=args.mean or info.mean,
        std=args.std or info.std, input_size=args.input_size or info.input_size,
        batch_size=args.batch_size, workers=args.workers, device=args.device, top_k=args.top_k,
        skip_bad=args.skip_bad, cache_limit_gb=args.cache_limit_gb, out=args.out,
        progress=not args.quiet, model_info=info.describe(), report=not args.no_report,
        restart=args.restart, checkpoint_seconds=args.checkpoint_seconds)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print_summary([result], Path(args.out))
    return 0


def print_summary(results: list, out: Path) -> None:
    """Per model and layer: units, detectors, unique detectors per category; then where."""
    rows = []
    for dissection in results:
        for layer, r in dissection.layers.items():
            model_name = str(r.meta.get("model", {}).get("name", ""))
            c = r.counts()
            per_cat = " ".join(f"{k}:{v}" for k, v in c["unique_detectors"].items())
            rows.append((model_name, layer, str(c["units"]), str(c["detectors"]),
                         str(c["unique_detectors_total"]), per_cat))
    header = ("model", "layer", "units", "detectors", "unique", "unique per category")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"results: {out.resolve()}")
    if (out / "index.html").is_file():
        print(f"report:  {(out / 'index.html').resolve()}")


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="dissect the demo CNN and EfficientNet-Lite0 on the toy world",
                       description="The main job on the embedded default: creates the toy world "
                                   "if absent, dissects the scene-trained demo CNN and "
                                   "EfficientNet-Lite0, writes results and prints a summary.")
    p.add_argument("--out", default="results/demo", help="result folder (default results/demo)")
    p.add_argument("--data", default="data/toyworld", help="toy world folder (created if absent)")
    p.add_argument("--images", type=int, default=2000, help="toy world size (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int)
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from netdissect.demo import run_demo

    results = run_demo(out=args.out, data=args.data, images=args.images, seed=args.seed,
                       workers=args.workers, device=args.device, progress=not args.quiet)
    print_summary(list(results.values()), Path(args.out))
    return 0


def add_toyworld_parser(sub) -> None:
    p = sub.add_parser("toyworld", help="generate a toy Broden-format dataset",
                       description="Generate the deterministic toy world (all six Broden "
                                   "categories) in Broden format.")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_toyworld)


def run_toyworld(args: argparse.Namespace) -> int:
    from netdissect.data.toyworld import ensure_toyworld

    path = ensure_toyworld(args.out, images=args.images, seed=args.seed, workers=args.workers,
                           progress=not args.quiet)
    print(f"toy world: {path}")
    return 0


def add_layers_parser(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layers, output shapes and dissectability",
                       description="Run one dummy input of the model's size and list every "
                                   "module with its output shape, marking which layers can be "
                                   "dissected as they are, after token reshaping, or not.")
    p.add_argument("model", help="model spec, as for `netdissect dissect --model`")
    p.add_argument("--weights")
    p.add_argument("--input-size", type=int, help="input side (default: the model's, else 224)")
    p.add_argument("--all", action="store_true", help="also list layers that cannot be dissected")
    p.set_defaults(func=run_layers)


def run_layers(args: argparse.Namespace) -> int:
    import torch

    from netdissect.models.capture import list_layers
    from netdissect.models.zoo import build_model, friendly_layer_name

    info = build_model(args.model, weights=args.weights)
    size = args.input_size or info.input_size or 224
    records = list_layers(info.model, torch.zeros(1, 3, size, size))
    marks = {"yes": "yes", "tokens": "tokens->grid", "no": "no"}
    print(f"{info.name}: {size}x{size} input; default layers: {', '.join(info.default_layers) or '-'}")
    for r in records:
        if r["dissectable"] == "no" and not args.all:
            continue
        alias = friendly_layer_name(info, r["name"])
        shape = "x".join(str(d) for d in r["shape"]) if r["shape"] else "-"
        print(f"  {r['name']:<40} {r['type']:<22} {shape:<18} {marks[r['dissectable']]:<13}"
              f"{alias if alias != r['name'] else ''}")
    return 0


def add_relabel_parser(sub) -> None:
    p = sub.add_parser("relabel", help="recompute labels and counts from saved tallies",
                       description="Apply another IoU threshold or IoU definition to a result "
                                   "folder without touching the model or the data.")
    p.add_argument("out", help="result folder written by `netdissect dissect --out`")
    p.add_argument("--iou-threshold", type=float)
    p.add_argument("--definition", choices=["original", "lite"])
    p.set_defaults(func=run_relabel)


def run_relabel(args: argparse.Namespace) -> int:
    from netdissect.results import Dissection

    from netdissect.report import write_report

    dissection = Dissection.load(args.out).relabel(args.iou_threshold, args.definition)
    dissection.save(args.out)
    if (Path(args.out) / "index.html").is_file():
        write_report(dissection, args.out, progress=False)
    print_summary([dissection], Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from netdissect import __version__
    from netdissect.data.download import add_download_parser
    from netdissect.experiments import add_ablate_parser, add_compare_parser, add_rotate_parser
    from netdissect.report import add_report_parser, add_serve_parser
    from netdissect.train_demo import add_train_demo_parser

    parser = argparse.ArgumentParser(prog="netdissect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"netdissect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_dissect_parser, add_demo_parser, add_toyworld_parser, add_layers_parser,
                add_relabel_parser, add_download_parser, add_report_parser, add_serve_parser,
                add_rotate_parser, add_compare_parser, add_ablate_parser, add_train_demo_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from netdissect.data.broden import BrodenError
    from netdissect.dissect import DissectError, Interrupted
    from netdissect.models.capture import LayerError
    from netdissect.models.weights import WeightsError
    from netdissect.models.zoo import ModelError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BrodenError, DissectError, LayerError, ModelError, WeightsError, ValueError,
            FileNotFoundError) as e:
        print(f"netdissect {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"netdissect {args.command}: {e}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("netdissect: interrupted; no result files were written for unfinished layers.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
