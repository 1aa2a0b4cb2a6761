"""The report's pages: the layer page, the overview page and its experiments part.

Each function gathers plain values (a `LayerView`, chart geometry from charts.py, links) and
renders a template of templates/ through render.py, whose environment escapes everything it
prints.  JSON inside <script> goes through `script_json`, which also escapes `<`, `>` and
`&`, so a label such as `<script>alert(1)</script>` can only ever show as text.
"""
from __future__ import annotations

from dataclasses import dataclass

from netdissect.results import threshold_text
from netdissect.report.charts import comparison_bars, concept_bars, iou_histogram, length_bars
from netdissect.report.render import render, script_json
from netdissect.report.views import LayerView, category_colours

__all__ = ["Crumb", "LayerLink", "Strip", "headline", "layer_page", "overview_page",
           "experiments_section", "script_json", "EXPERIMENTS_BEGIN", "EXPERIMENTS_END"]

# The overview's experiments part sits between these comments (written by
# templates/experiments.html), so that an experiment written after the report can rewrite
# that part alone (report/experiments.py).
EXPERIMENTS_BEGIN = "<!-- netdissect experiments -->"
EXPERIMENTS_END = "<!-- /netdissect experiments -->"


@dataclass
class Crumb:
    """A link of the navigation line: text and relative href."""

    text: str
    href: str


@dataclass
class Strip:
    """A unit's strip image: a path relative to the page (or a data: URL) and its size."""

    src: str
    width: int
    height: int


@dataclass
class LayerLink:
    """A layer in the overview: its run, view and the page it links to."""

    run: str
    view: LayerView
    href: str


def headline(view: LayerView) -> str:
    """The one-line result of a layer, as plain text."""
    c = view.counts
    text = (f"{c['detectors']} of {c['units']} units are detectors, covering "
            f"{c['distinct_labels']} concepts ({threshold_text(c['iou_threshold'], c['definition'])})")
    if "bootstrap" in c:
        text += " [95% interval {:g}-{:g}]".format(*c["bootstrap"]["detectors"])
    if "significant_detectors" in c:
        fdr = view.meta.get("settings", {}).get("fdr", 0.05)
        text += (f"; {c['significant_detectors']} significant at FDR {fdr:g} (permutation null, "
                 f"{c['null_permutations']} draws)")
    return text


def page_data(view: LayerView) -> dict:
    """The unit records the layer page's script sorts and filters by (`formula`: the display
    text of the unit's compositional explanation, "" without one)."""
    return {"layer": view.layer, "iou_threshold": view.counts["iou_threshold"],
            "categories": view.categories,
            "units": [{"unit": u.unit, "label": u.label, "category": u.category, "iou": u.iou,
                       "threshold": u.threshold, "others": [list(o) for o in u.others],
                       "formula": u.formula, "significant": bool(u.significant)}
                      for u in view.units]}


def layer_page(view: LayerView, strips: dict[int, Strip], crumbs: list[Crumb], run_name: str,
               files: list[str], note: str = "") -> str:
    """The page of one layer: headline, charts (with the mean IoU per formula length when the
    view has explanations), controls, and a card per unit, best IoU first (the page's default
    sort)."""
    colours = category_colours(view.categories)
    return render("layer.html", title=f"{run_name} {view.layer}: netdissect", view=view,
                  run_name=run_name, crumbs=crumbs, files=files, note=note,
                  headline=headline(view), colours=colours,
                  quantile=view.meta.get("settings", {}).get("quantile"),
                  dataset=view.meta.get("dataset", {}).get("path", ""),
                  concepts=concept_bars(view, colours), histogram=iou_histogram(view),
                  lengths=length_bars(view),
                  cards=sorted(view.units, key=lambda u: (-u.iou, u.unit)), strips=strips,
                  data=page_data(view))


def experiments_section(experiments: list) -> str:
    """The experiments (`report.experiments.Experiment`) as figures with their summary and
    files, between the two markers; just the markers when there are none."""
    return render("experiments.html", experiments=experiments)


def overview_page(title: str, links: list[LayerLink], figures: list[str], crumbs: list[Crumb],
                  experiments: list = ()) -> str:
    """Every layer of every run side by side: counts, and stacked bars linking to the layers;
    then the experiments found under the report folder."""
    categories = list(dict.fromkeys(c for k in links for c in k.view.categories))
    colours = category_colours(categories)
    return render("overview.html", title=f"{title}: netdissect", heading=title, links=links,
                  figures=figures, crumbs=crumbs, experiments=list(experiments),
                  categories=categories, colours=colours,
                  chart=comparison_bars(links, categories, colours),
                  thresholds=sorted({k.view.iou_threshold for k in links}))
