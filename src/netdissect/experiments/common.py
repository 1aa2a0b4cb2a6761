"""Helpers shared by the experiments: tables and figures written atomically, models from CLI specs.

Every experiment writes its numbers as JSON and CSV and its figure as PNG and SVG (matplotlib's
Agg backend, so no display is needed), all through a temporary file and a rename.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

from netdissect.files import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["write_csv", "write_json", "save_figure", "new_figure", "load_cli_model",
           "add_model_arguments", "print_outputs", "unique_detectors_figure"]

write_json = atomic_write_json


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """Write `rows` (dicts) as CSV with a header, atomically; columns in first-seen order."""
    if fieldnames is None:
        fieldnames = []
        for row in rows:
            fieldnames += [k for k in row if k not in fieldnames]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return Path(path)


def new_figure(width: float = 6.0, height: float = 4.0, nrows: int = 1, ncols: int = 1):
    """A matplotlib figure and axes on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
    """Save `fig` as STEM.png and STEM.svg, atomically; returns both paths."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=120, bbox_inches="tight")
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def unique_detectors_figure(xs: list[float], counts: list[dict], stem: str | os.PathLike, *,
                            xlabel: str, title: str, xticklabels: list[str] | None = None) -> list[Path]:
    """Unique detectors per category and in total against `xs`, one line each, saved as
    STEM.png and STEM.svg; `counts` are `LayerResult.counts()` dicts, one per x."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for cat in dict.fromkeys(k for c in counts for k in c["unique_detectors"]):
        ax.plot(xs, [c["unique_detectors"].get(cat, 0) for c in counts], marker="o", label=cat)
    ax.plot(xs, [c["unique_detectors_total"] for c in counts], marker="s", color="black",
            linewidth=2, label="total")
    if xticklabels is not None:
        ax.set_xticks(xs)
        ax.set_xticklabels(xticklabels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unique detectors")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options every experiment that runs a network shares with `netdissect dissect`."""
    from netdissect.cli import _floats

    p.add_argument("--model", required=True,
                   help="a zoo name (resnet18, ...), timm:NAME, or an import path "
                        "package.module:callable (e.g. netdissect.models.demo_cnn:load_demo_cnn)")
    p.add_argument("--weights", help="state dict file (.pt/.pth/.safetensors) for the model")
    p.add_argument("--preset", choices=["imagenet", "places365"],
                   help="preprocessing preset (mean/std); default: the model's own")
    p.add_argument("--mean", type=lambda t: _floats(t, "--mean"), help="R,G,B means on 0-1 pixels")
    p.add_argument("--std", type=lambda t: _floats(t, "--std"), help="R,G,B stds on 0-1 pixels")
    p.add_argument("--input-size", type=int, help="model input size (images are resized to it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="data-loader worker processes (default: up to 4)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_cli_model(args: argparse.Namespace):
    """Build the model of `--model/--weights/--preset` and resolve its mean, std and input size.

    Returns (ModelInfo, mean, std, input_size); a model object carrying `mean`/`std`
    attributes (like the demo CNN) supplies them when neither the options nor a preset do.
    """
    from netdissect.models.zoo import build_model

    info = build_model(args.model, weights=args.weights, preset=args.preset)
    mean, std = info.mean, info.std
    if args.preset is None:
        mean = tuple(getattr(info.model, "mean", mean))
        std = tuple(getattr(info.model, "std", std))
    size = args.input_size or info.input_size
    return info, tuple(args.mean or mean), tuple(args.std or std), size


def resolve_layer(info, layer: str) -> str:
    """A layer alias or module name of the CLI model, as a module name."""
    from netdissect.models.zoo import resolve_layer_names

    return resolve_layer_names(info, [layer])[0]


def print_outputs(out: str | os.PathLike) -> None:
    """Say where an experiment's files are and which report overviews now list them."""
    from netdissect.report.experiments import overview_pages_above

    print(f"results: {Path(out).resolve()}")
    for page in overview_pages_above(out):
        print(f"listed in the report: {page}")


def number_list(kind: type, option: str, what: str = "numbers"):
    """An argparse type for comma-separated numbers (`kind` is int or float)."""
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} takes comma-separated {what}, got {text!r}") from None
    return parse
