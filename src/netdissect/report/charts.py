"""The geometry of the report's inline SVG charts: numbers and coordinates, no markup.

`concept_bars`, `iou_histogram`, `length_bars` and `comparison_bars` turn `LayerView`s into
plain dataclasses; templates/charts.html draws them.  They count what `LayerView` holds, so the
charts agree with the headline, the tables and the matplotlib figures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netdissect.report.views import LayerView

if TYPE_CHECKING:
    from netdissect.report.pages import LayerLink

DETECTOR_FILL = "#2f6fb0"  # histogram bins at or above the IoU threshold
OTHER_FILL = "#b8b8bd"


@dataclass
class Tick:
    """A horizontal grid line of a chart: its y coordinate and the count it marks."""

    y: float
    value: int


def ticks(peak: int, base: float, scale: float) -> list[Tick]:
    """Grid lines at round counts from 0 to `peak`, `scale` pixels per unit above `base`."""
    step = max(1, 10 ** int(math.log10(max(peak, 1))))
    if peak / step < 3:
        step = max(1, step // 2)
    return [Tick(base - v * scale, v) for v in range(0, peak + 1, step)]


# -- unique detectors per concept -----------------------------------------------------------
@dataclass
class ConceptBar:
    name: str  # display label of the concept
    count: int  # units whose best label in the category is this concept, IoU >= threshold
    x: float
    y: float
    height: float


@dataclass
class ConceptGroup:
    category: str
    colour: str
    title: str  # "category (number of concepts)"
    centre: float  # x of the title
    bars: list[ConceptBar]


@dataclass
class ConceptChart:
    width: int
    height: int
    left: float
    base: float  # y of the axis
    bar: float  # bar width
    ticks: list[Tick]
    groups: list[ConceptGroup]


def concept_bars(view: LayerView, colours: dict[str, str]) -> ConceptChart | None:
    """Unique detectors per concept, grouped and coloured by category (the paper's bar graph):
    one bar per concept, its height the number of units whose best label in that category is
    the concept with IoU >= the threshold.  None when no unit reaches the threshold."""
    groups = [(c, bars) for c, bars in view.concepts.items() if bars]
    if not groups:
        return None
    bar, gap, group_gap, plot_h, top, bottom, left = 12, 3, 18, 150, 14, 96, 30
    peak = max(n for _, bars in groups for _, n in bars)
    scale = plot_h / peak
    titles = [f"{c} ({len(b)})" for c, b in groups]
    spans = [max(len(b) * (bar + gap), 6.5 * len(t)) for (_, b), t in zip(groups, titles)]
    width = round(left + sum(spans) + group_gap * (len(groups) - 1) + 10)
    base = top + plot_h
    chart = ConceptChart(width, top + plot_h + bottom, left, base, bar, ticks(peak, base, scale), [])
    x = left
    for (cat, bars), title, span in zip(groups, titles, spans):
        start = x
        drawn = []
        for name, n in bars:
            drawn.append(ConceptBar(name, n, x, base - n * scale, n * scale))
            x += bar + gap
        chart.groups.append(ConceptGroup(cat, colours[cat], title, start + span / 2, drawn))
        x = start + span + group_gap
    return chart


# -- histogram of the units' IoU ------------------------------------------------------------
@dataclass
class Bin:
    low: float
    high: float
    count: int  # units whose score falls in [low, high)
    detector: bool  # the bin lies at or above the threshold
    fill: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class Histogram:
    width: int
    height: int
    left: float
    top: float
    base: float
    right: float  # x of the axis's end
    high: float  # the score at the axis's end
    threshold: float
    threshold_x: float
    ticks: list[Tick]
    bins: list[Bin] = field(default_factory=list)


def iou_histogram(view: LayerView, bins: int = 30) -> Histogram:
    """Histogram of the units' scores; bins at or above the threshold T are the detectors'.
    When T > 0 the bins have equal width with T on an edge, so no bin mixes detectors and
    other units."""
    t = view.iou_threshold
    scores = [u.iou for u in view.units]
    high = max([2 * t, *scores]) * 1.0001 or 1.0
    if t > 0:
        step = t / max(1, round(t * bins / high))
        bins = math.ceil(high / step)
        high = bins * step
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, int(s / (high / bins) + 1e-9))] += 1
    width, plot_h, top, left, bottom = 360, 150, 10, 30, 34
    right = width - 10
    bar_w = (right - left) / bins
    peak = max(counts) or 1
    scale = plot_h / peak
    base = top + plot_h
    chart = Histogram(width, top + plot_h + bottom, left, top, base, right, high, t,
                      left + t / high * (right - left), ticks(peak, base, scale))
    for i, n in enumerate(counts):
        lo, hi = i * high / bins, (i + 1) * high / bins
        detector = lo >= t * (1 - 1e-9)
        chart.bins.append(Bin(lo, hi, n, detector, DETECTOR_FILL if detector else OTHER_FILL,
                              left + i * bar_w, base - n * scale, bar_w - 1, n * scale))
    return chart


# -- mean IoU of the compositional explanations against formula length -----------------------
@dataclass
class LengthBar:
    length: int  # the formulas' most leaves
    mean: float  # mean over units of the IoU of the best formula of at most `length` leaves
    x: float
    y: float
    height: float


@dataclass
class ScaleTick:
    """A horizontal grid line of a chart of fractions: its y coordinate and the value it marks."""

    y: float
    value: float


@dataclass
class LengthChart:
    width: int
    height: int
    left: float
    base: float
    bar: float
    ticks: list[ScaleTick]
    bars: list[LengthBar]


def scale_ticks(peak: float, base: float, scale: float) -> list[ScaleTick]:
    """Grid lines at round values (steps of 1, 2 or 5 times a power of ten, at most five
    lines above 0) from 0 to `peak`, `scale` pixels per unit above `base`."""
    if peak <= 0:
        return [ScaleTick(base, 0.0)]
    power = 10.0 ** math.floor(math.log10(peak))
    step = next(k * power for k in (0.2, 0.5, 1, 2, 5) if peak / (k * power) <= 5)
    return [ScaleTick(base - v * scale, v)
            for v in (round(i * step, 12) for i in range(int(peak / step + 1e-9) + 1))]


def length_bars(view: LayerView) -> LengthChart | None:
    """Mean IoU of the compositional explanations against formula length: one bar per length
    n = 1, 2, ..., its height the mean over units of the IoU of their best formula of at most
    n leaves (n = 1: the best single label).  None when the layer has no explanations (or
    they explain no unit)."""
    if view.explanations is None or not view.explanations.mean_iou_by_length:
        return None
    means = view.explanations.mean_iou_by_length
    bar, gap, plot_h, top, bottom, left = 36, 14, 150, 16, 34, 40
    peak = max(means)
    scale = plot_h / peak if peak > 0 else 0.0
    width = round(max(left + len(means) * (bar + gap) + 10, 200))
    base = top + plot_h
    chart = LengthChart(width, top + plot_h + bottom, left, base, bar, scale_ticks(peak, base, scale), [])
    for n, mean in enumerate(means, 1):
        chart.bars.append(LengthBar(n, mean, left + gap / 2 + (n - 1) * (bar + gap), base - mean * scale,
                                    mean * scale))
    return chart


# -- unique detectors per layer (overview) --------------------------------------------------
@dataclass
class Segment:
    category: str
    count: int
    colour: str
    y: float
    height: float


@dataclass
class LayerBar:
    run: str
    layer: str
    href: str
    total: int
    x: float
    top: float  # y of the stack's top
    segments: list[Segment]


@dataclass
class RunLabel:
    name: str
    centre: float


@dataclass
class ComparisonChart:
    width: int
    height: int
    left: float
    base: float
    bar: float
    ticks: list[Tick]
    bars: list[LayerBar]
    runs: list[RunLabel]  # empty for a single run


def comparison_bars(links: list[LayerLink], categories: list[str],
                    colours: dict[str, str]) -> ComparisonChart | None:
    """Unique detectors per category as stacked bars, one bar per layer (grouped by run),
    each bar a link to its layer page.  None without layers."""
    if not links:
        return None
    bar, gap, run_gap, plot_h, top, bottom, left = 42, 14, 30, 180, 16, 70, 34
    peak = max([sum(k.view.counts["unique_detectors"].values()) for k in links] + [1])
    scale = plot_h / peak
    runs = list(dict.fromkeys(k.run for k in links))
    width = left + len(links) * (bar + gap) + run_gap * (len(runs) - 1) + 10
    base = top + plot_h
    chart = ComparisonChart(width, top + plot_h + bottom, left, base, bar,
                            ticks(peak, base, scale), [], [])
    x = left
    for run in runs:
        start = x
        for link in (k for k in links if k.run == run):
            counts = link.view.counts["unique_detectors"]
            y = base
            segments = []
            for cat in categories:
                n = counts.get(cat, 0)
                if n:
                    y -= n * scale
                    segments.append(Segment(cat, n, colours[cat], y, n * scale))
            chart.bars.append(LayerBar(run, link.view.layer, link.href, sum(counts.values()), x, y,
                                       segments))
            x += bar + gap
        if len(runs) > 1:
            chart.runs.append(RunLabel(run, (start + x - gap) / 2))
        x += run_gap
    return chart
