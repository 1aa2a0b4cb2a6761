"""The report's figures for papers, as PNG and SVG files beside the HTML pages.

`concept_figure` is a layer's bar graph of unique detectors per concept, grouped and coloured
by category; `comparison_figure` compares layers (and runs) with stacked bars of unique
detectors per category.  Both draw the same numbers as the HTML pages (`LayerView`), with
matplotlib's object API through netdissect.files (`new_figure`, `save_figure`): no pyplot and
no backend switch.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from netdissect.files import new_figure, save_figure
from netdissect.results import threshold_text
from netdissect.report.views import LayerView, category_colours


def concept_figure(view: LayerView, stem: Path, title: str | None = None) -> list[Path]:
    """Bar graph of one layer: a bar per concept, grouped and coloured by category."""
    colours = category_colours(view.categories)
    groups = [(c, bars) for c, bars in view.concepts.items() if bars]
    count = sum(len(b) for _, b in groups)
    figure, axes = new_figure(max(4.0, 0.18 * count + 1.5), 3.2)
    ax = axes[0, 0]
    x, ticks, names, group_marks = 0.0, [], [], []
    for cat, bars in groups:
        start = x
        for name, n in bars:
            ax.bar(x, n, width=0.8, color=colours[cat])
            ticks.append(x)
            names.append(name)
            x += 1
        group_marks.append(((start + x - 1) / 2, f"{cat} ({len(bars)})", colours[cat]))
        x += 1.0
    ax.set_xticks(ticks, names, rotation=90, fontsize=6)
    for centre, text, colour in group_marks:
        ax.text(centre, 1.02, text, transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8, color=colour, fontweight="bold")
    ax.set_ylabel("units")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    if not groups:
        ax.text(0.5, 0.5, "no detectors", ha="center", va="center", transform=ax.transAxes)
    c = view.counts
    figure.suptitle(title or f"{view.layer}: {c['unique_detectors_total']} unique detectors "
                    f"({threshold_text(c['iou_threshold'], c['definition'])})", fontsize=9, y=1.08)
    return save_figure(figure, stem)


def comparison_figure(layers: list[tuple[str, LayerView]], stem: Path) -> list[Path]:
    """Stacked bars of unique detectors per category, one bar per (run, layer)."""
    categories = list(dict.fromkeys(c for _, v in layers for c in v.categories))
    colours = category_colours(categories)
    runs = list(dict.fromkeys(r for r, _ in layers))
    labels = [v.layer if len(runs) == 1 else f"{r}\n{v.layer}" for r, v in layers]
    figure, axes = new_figure(max(3.5, 0.7 * len(layers) + 1.5), 3.4)
    ax = axes[0, 0]
    bottoms = [0] * len(layers)
    for cat in categories:
        heights = [v.counts["unique_detectors"].get(cat, 0) for _, v in layers]
        ax.bar(range(len(layers)), heights, bottom=bottoms, color=colours[cat], label=cat, width=0.7)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, total in enumerate(bottoms):
        ax.text(i, total, str(total), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(layers)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("unique detectors")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(figure, stem)
