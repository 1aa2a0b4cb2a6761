"""Writes the static HTML report of one or several dissection runs (`write_report`).

For one run, under the report folder (by default the result folder itself):

    index.html                      overview: every layer side by side
    <layer folder>/index.html       a layer page: headline, charts, a card per unit (with the
                                    unit's formula when the layer folder holds the
                                    explanations.json of `netdissect explain`)
    <layer folder>/strips/unit-NNNN.jpg   the unit's top images with its mask
    figures/<layer folder>-concepts.{png,svg}, figures/layers.{png,svg}

The overview also lists the experiments (rotate, compare, ablate) found under the report
folder, from their experiment.json records; `refresh_overviews` (report/experiments.py) adds
one written later.

For several runs (a parent folder holding result folders, or a list), each run gets that
report in its own subfolder and the parent index.html compares all their layers.  Only the
top images recorded in the results are read from the dataset; the model is never needed.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from tqdm.auto import tqdm

from netdissect.files import atomic_write_bytes, atomic_write_text
from netdissect.report.experiments import find_experiments
from netdissect.report.figures import comparison_figure, concept_figure
from netdissect.report.pages import Crumb, LayerLink, Strip, layer_page, overview_page
from netdissect.report.strips import StripMaker
from netdissect.report.views import LayerView, layer_view, load_explanations
from netdissect.results import threshold_text
from netdissect.errors import ResultError

if TYPE_CHECKING:
    from netdissect.results import Dissection

Source = Union["Dissection", str, os.PathLike]


@dataclass
class Run:
    """One dissection run of the report: a name (model or folder) and its result."""

    name: str
    dissection: Dissection


def slug(text: str) -> str:
    """A folder name made of safe characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def run_name(dissection: Dissection, fallback: str) -> str:
    """The model's name as recorded in the results, else `fallback`."""
    for result in dissection.layers.values():
        model = result.meta.get("model") or {}
        if isinstance(model, dict) and model.get("name"):
            return str(model["name"])
    return fallback


def collect_runs(source: Source | list[Source]) -> tuple[list[Run], Path | None, bool]:
    """The runs to report, the default report folder, and whether the source was several runs."""
    from netdissect.results import Dissection

    if isinstance(source, (list, tuple)):
        runs = [collect_runs(s)[0] for s in source]
        flat = [r for group in runs for r in group]
        return flat, None, True
    if isinstance(source, Dissection):
        return [Run(run_name(source, "model"), source)], source.out, False
    folder = Path(source)
    if (folder / "dissection.json").is_file():
        dissection = Dissection.load(folder)
        return [Run(run_name(dissection, folder.name), dissection)], folder, False
    children = sorted(p for p in folder.iterdir() if (p / "dissection.json").is_file()) \
        if folder.is_dir() else []
    if not children:
        raise ResultError(f"{folder}: no dissection.json here or in its subfolders; give a "
                                "result folder written by `netdissect dissect --out`.")
    runs = []
    for child in children:
        runs.append(Run(child.name, Dissection.load(child)))
    return runs, folder, True


def open_images(dissection: Dissection, dataset: str | os.PathLike | None,
                height: int = 112) -> tuple[StripMaker | None, str]:
    """A StripMaker over the run's dataset (from the results unless `dataset` is given), or
    None and the reason when the dataset cannot be read."""
    from netdissect.data.broden import BrodenError, load_broden

    meta = next(iter(dissection.layers.values())).meta if dissection.layers else {}
    recorded = (meta.get("dataset") or {}).get("path")
    path = dataset or recorded
    if not path:
        return None, "The results do not record a dataset folder; pass dataset= (--dataset) for image strips."
    try:
        broden = load_broden(path)
    except (BrodenError, FileNotFoundError, OSError) as e:
        if dataset:
            raise
        reason = (f"The dataset {path} recorded in the results could not be read ({e}); "
                  "pass dataset= (--dataset) for image strips.")
        warnings.warn(reason, stacklevel=3)
        return None, reason
    fingerprint = (meta.get("dataset") or {}).get("fingerprint")
    if fingerprint and fingerprint != broden.fingerprint:
        warnings.warn(f"{path}: its fingerprint differs from the one recorded in the results; "
                      "the strips may show other images than those dissected.", stacklevel=3)
    names = dissection.image_names or [row.image for row in broden.rows]
    return StripMaker(broden.images_dir, names, height=height), ""


def write_layer(run: Run, layer: str, folder: Path, images: StripMaker | None, note: str,
                parent: str | None, top: int, progress: bool) -> LayerView:
    """Strips, page and figure of one layer under `folder` (the run's report folder); the
    units' formulas from the layer's explanations.json, in the report's layer folder or else
    the result's."""
    result = run.dissection[layer]
    view = layer_view(result, run.dissection.image_names, top=top)
    layer_dir = folder / view.folder
    explanations = layer_dir / "explanations.json"
    if not explanations.is_file() and run.dissection.out is not None:
        explanations = Path(run.dissection.out) / view.folder / "explanations.json"
    load_explanations(view, explanations)
    strips = write_strips(result, layer_dir, images, top, f"strips {layer}", progress) \
        if images is not None else {}
    concept_figure(view, folder / "figures" / f"{view.folder}-concepts",
                   title=f"{run.name} {layer}: {view.counts['unique_detectors_total']} unique detectors "
                         f"({threshold_text(view.iou_threshold, view.counts['definition'])})")
    files = [f for f in ("tally.csv", "units.json", "summary.json", "explanations.csv", "explanations.json")
             if (layer_dir / f).is_file()]
    files += [f"../figures/{view.folder}-concepts.{ext}" for ext in ("png", "svg")]
    crumbs = ([Crumb("all runs", f"../{parent}")] if parent else []) + [Crumb(run.name, "../index.html")]
    html = layer_page(view, strips, crumbs, run.name, files, note)
    atomic_write_text(layer_dir / "index.html", html)
    return view


def write_strips(result, layer_dir: Path, images: StripMaker, top: int, desc: str,
                 progress: bool) -> dict[int, Strip]:
    """Every unit's strip as layer_dir/strips/unit-NNNN.jpg; the strips written, by unit.

    The strips are drawn and encoded on StripMaker's threads, a few units ahead; the files are
    written here, in unit order, each through a temporary file and a rename."""
    (layer_dir / "strips").mkdir(parents=True, exist_ok=True)
    strips = {}
    units = ((k, result.top_indices[k], result.top_maps[k], result.thresholds[k]) for k in range(result.units))
    for k, data, width, height in tqdm(images.encoded_strips(units, top), total=result.units, desc=desc,
                                       disable=not progress, leave=False):
        if data is None:
            continue
        name = f"strips/unit-{k:04d}.jpg"
        atomic_write_bytes(layer_dir / name, data)
        strips[k] = Strip(name, width, height)
    return strips


def write_run(run: Run, folder: Path, dataset: str | os.PathLike | None, parent: str | None,
              top: int, progress: bool) -> list[tuple[LayerView, str]]:
    """The whole report of one run under `folder`; returns its layer views and their pages.
    `parent`: the link from `folder` to the overview of all runs, if any."""
    images, note = open_images(run.dissection, dataset)
    views = []
    for layer in run.dissection.layers:
        view = write_layer(run, layer, folder, images, note, parent, top, progress)
        views.append((view, f"{view.folder}/index.html"))
    comparison_figure([(run.name, v) for v, _ in views], folder / "figures" / "layers")
    figures = [f"figures/layers.{e}" for e in ("png", "svg")] + \
              [f"figures/{v.folder}-concepts.{e}" for v, _ in views for e in ("png", "svg")]
    links = [LayerLink(run.name, v, href) for v, href in views]
    crumbs = [Crumb("all runs", parent)] if parent else []
    atomic_write_text(folder / "index.html",
                      overview_page(run.name, links, figures, crumbs, find_experiments(folder)))
    return views


def write_report(dissection_or_out_dir: Source | list[Source], out_dir: str | os.PathLike | None = None,
                 dataset: str | os.PathLike | None = None, progress: bool = True,
                 top: int = 10) -> Path:
    """Write the HTML report and return the path of its index.html.

    `dissection_or_out_dir`: a `Dissection`, a result folder, a folder holding several result
    folders, or a list of those.  `out_dir`: where to write (default: the result folder, or
    the parent folder for several runs; required for a list).  `dataset`: the Broden folder to
    read the top images from (default: the one recorded in the results).  `top`: images per
    strip.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # strips are many small tensors, drawn on threads of their own
    try:
        return _write(dissection_or_out_dir, out_dir, dataset, progress, top)
    finally:
        torch.set_num_threads(threads)


def _write(dissection_or_out_dir: Source | list[Source], out_dir: str | os.PathLike | None,
           dataset: str | os.PathLike | None, progress: bool, top: int) -> Path:
    runs, default_out, several = collect_runs(dissection_or_out_dir)
    out = Path(out_dir) if out_dir is not None else default_out
    if out is None:
        raise ValueError("write_report: give out_dir (the results have no folder of their own).")
    if not several:
        write_run(runs[0], out, dataset, None, top, progress)
        return out / "index.html"
    names: dict[str, int] = {}
    links = []
    for run in runs:
        folder = run.dissection.out.name if run.dissection.out is not None else run.name
        base = slug(folder)
        names[base] = names.get(base, 0) + 1
        sub = base if names[base] == 1 else f"{base}-{names[base]}"
        views = write_run(run, out / sub, dataset, "../index.html", top, progress)
        links += [LayerLink(run.name, v, f"{sub}/{href}") for v, href in views]
    comparison_figure([(k.run, k.view) for k in links], out / "figures" / "layers")
    figures = [f"figures/layers.{e}" for e in ("png", "svg")]
    atomic_write_text(out / "index.html", overview_page("all runs", links, figures, [], find_experiments(out)))
    return out / "index.html"
