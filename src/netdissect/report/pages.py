"""HTML of the report: the layer pages, the overview page and their inline SVG charts.

Every label, file name and path goes through `esc` (text and attributes) or `url` (links);
JSON inside <script> goes through `script_json`, which also escapes `<`, `>` and `&`, so a
label such as `<script>alert(1)</script>` can only ever show as text.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from urllib.parse import quote

from netdissect.report.assets import CSS, JS
from netdissect.report.views import LayerView, category_colours


def esc(value) -> str:
    """Text or attribute value, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative link, percent-encoded then HTML-escaped."""
    return esc(quote(path, safe="/#"))


def script_json(value) -> str:
    """JSON safe inside a <script> element: `<`, `>`, `&` and the JS line separators escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, code in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def page(title: str, body: str, script: str = "") -> str:
    """A complete, self-contained HTML document."""
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"{script}</body>\n</html>\n")


def legend(categories: list[str], colours: dict[str, str]) -> str:
    return '<div class="legend">' + "".join(
        f'<span style="--c: {colours[c]}">{esc(c)}</span>' for c in categories) + "</div>"


# -- charts ---------------------------------------------------------------------------------
def concept_bars_svg(view: LayerView, colours: dict[str, str]) -> str:
    """Unique detectors per concept, grouped and coloured by category (the paper's bar graph):
    one bar per concept, its height the number of units whose best label in that category is
    the concept with IoU >= the threshold."""
    groups = [(c, bars) for c, bars in view.concepts.items() if bars]
    if not groups:
        return '<p class="muted">No unit reaches the IoU threshold: no detectors to draw.</p>'
    bar, gap, group_gap, plot_h, top, bottom, left = 12, 3, 18, 150, 14, 96, 30
    peak = max(n for _, bars in groups for _, n in bars)
    scale = plot_h / peak
    titles = [f"{c} ({len(b)})" for c, b in groups]
    spans = [max(len(b) * (bar + gap), 6.5 * len(t)) for (_, b), t in zip(groups, titles)]
    width = round(left + sum(spans) + group_gap * (len(groups) - 1) + 10)
    height = top + plot_h + bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="unique detectors per concept">']
    base = top + plot_h
    for tick in _ticks(peak):
        y = base - tick * scale
        parts.append(f'<line class="axis" x1="{left - 4}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke-opacity="0.25"/><text x="{left - 6}" y="{y + 3:.1f}" '
                     f'text-anchor="end">{tick}</text>')
    x = left
    for (cat, bars), title, span in zip(groups, titles, spans):
        start = x
        for name, n in bars:
            h = n * scale
            cx = x + bar / 2
            parts.append(f'<g><title>{esc(name)} ({esc(cat)}): {n} unit{"s" if n != 1 else ""}</title>'
                         f'<rect x="{x}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" '
                         f'fill="{colours[cat]}"/>'
                         f'<text transform="translate({cx + 3:.1f},{base + 6}) rotate(-65)" '
                         f'text-anchor="end">{esc(name)}</text></g>')
            x += bar + gap
        parts.append(f'<text x="{start + span / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                     f'font-weight="600" fill="{colours[cat]}">{esc(title)}</text>')
        x = start + span + group_gap
    parts.append(f'<line class="axis" x1="{left}" x2="{width}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


def iou_histogram_svg(view: LayerView, bins: int = 30) -> str:
    """Histogram of the units' scores; detectors (score >= threshold) in colour."""
    t = view.iou_threshold
    scores = [u.iou for u in view.units]
    high = max([2 * t, *scores]) * 1.0001 or 1.0
    if t > 0:  # bins of equal width with T on an edge, so no bin mixes detectors and others
        step = t / max(1, round(t * bins / high))
        bins = math.ceil(high / step)
        high = bins * step
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, int(s / (high / bins) + 1e-9))] += 1
    width, plot_h, top, left, bottom = 360, 150, 10, 30, 34
    bar_w = (width - left - 10) / bins
    peak = max(counts) or 1
    scale = plot_h / peak
    base = top + plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + plot_h + bottom}" '
             f'viewBox="0 0 {width} {top + plot_h + bottom}" role="img" aria-label="IoU histogram">']
    for tick in _ticks(peak):
        y = base - tick * scale
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{tick}</text>')
    for i, n in enumerate(counts):
        lo, hi = i * high / bins, (i + 1) * high / bins
        fill = "#2f6fb0" if lo >= t * (1 - 1e-9) else "#b8b8bd"
        h = n * scale
        parts.append(f'<rect x="{left + i * bar_w:.1f}" y="{base - h:.1f}" width="{bar_w - 1:.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>IoU {lo:.3f}-{hi:.3f}: {n} units</title></rect>')
    tx = left + t / high * (width - left - 10)
    parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{base}" stroke="#d62728" '
                 f'stroke-dasharray="3,2"/><text x="{tx + 3:.1f}" y="{top + 8}" fill="#d62728">'
                 f'T = {t:g}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - 10}" y1="{base}" y2="{base}"/>'
                 f'<text x="{left}" y="{base + 14}">0</text>'
                 f'<text x="{width - 10}" y="{base + 14}" text-anchor="end">{high:.3f}</text>'
                 f'<text x="{(left + width) / 2:.0f}" y="{base + 28}" text-anchor="middle">'
                 f'IoU of the unit\'s label</text></svg>')
    return "".join(parts)


def _ticks(peak: int) -> list[int]:
    step = max(1, 10 ** int(math.log10(max(peak, 1))))
    if peak / step < 3:
        step = max(1, step // 2)
    return list(range(0, peak + 1, step))


# -- layer page -----------------------------------------------------------------------------
def headline(view: LayerView) -> str:
    c = view.counts
    return (f"{c['detectors']} of {c['units']} units are detectors, covering "
            f"{c['distinct_labels']} concepts (IoU >= {c['iou_threshold']:g})")


def unit_card(u, colours: dict[str, str], strip: tuple[str, int, int] | None) -> str:
    """One unit's card; `strip` is (relative path or data URL, width, height) or None."""
    label = u.label or "no label"
    others = "; ".join(f"{c}: {name} ({iou:.3f})" for c, name, iou in u.others)
    colour = colours.get(u.category, "#ccc")
    head = (f'<header><a class="unit" href="#unit-{u.unit}">unit {u.unit}</a>'
            f'<span class="label" title="{esc(others or "no other category matches")}">{esc(label)}</span>'
            + (f'<span class="cat">{esc(u.category)}</span>' if u.category else "")
            + f'<span class="nums">IoU <b>{u.iou:.3f}</b> · threshold {u.threshold:.4g}</span></header>')
    if strip:
        src, w, h = strip
        image = (f'<img class="strip" loading="lazy" decoding="async" src="{url(src) if not src.startswith("data:") else src}" '
                 f'width="{w}" height="{h}" alt="top images of unit {u.unit}" '
                 f'title="{esc(", ".join(u.top_images))}">')
    else:
        image = '<p class="nostrip">(no strip: the dataset images were not available)</p>'
    rows = "".join(f"<tr><td>{esc(c)}</td><td>{esc(name)}</td><td>{iou:.3f}</td></tr>"
                   for c, name, iou in u.others)
    details = (f"<details><summary>best labels of the other categories</summary><table>"
               f"<tr><th>category</th><th>label</th><th>IoU</th></tr>{rows}</table></details>"
               if rows else "")
    return (f'<article class="card{"" if u.detector else " nodetector"}" id="unit-{u.unit}" '
            f'data-unit="{u.unit}" data-iou="{u.iou:.6f}" data-label="{esc(u.label)}" '
            f'data-category="{esc(u.category)}" style="--cat: {colour}">{head}{image}{details}</article>')


@dataclass
class Crumb:
    """A link of the navigation line: text and relative href."""

    text: str
    href: str


def layer_page(view: LayerView, strips: dict[int, tuple[str, int, int]], crumbs: list[Crumb],
               run_name: str, files: list[str], note: str = "") -> str:
    """The page of one layer: headline, charts, controls, and a card per unit."""
    colours = category_colours(view.categories)
    c = view.counts
    per_cat = ", ".join(f"{esc(k)} {v}" for k, v in c["unique_detectors"].items())
    settings = view.meta.get("settings", {})
    dataset = view.meta.get("dataset", {}).get("path", "")
    facts = [f"model <code>{esc(run_name)}</code>", f"layer <code>{esc(view.layer)}</code>",
             f"{c['units']} units", f"IoU definition {esc(c['definition'])}"]
    if settings.get("quantile") is not None:
        facts.append(f"quantile {esc(settings['quantile'])}")
    if dataset:
        facts.append(f"dataset <code>{esc(dataset)}</code>")
    nav = " / ".join(f'<a href="{url(k.href)}">{esc(k.text)}</a>' for k in crumbs)
    downloads = " · ".join(f'<a href="{url(f)}">{esc(f.rsplit("/", 1)[-1])}</a>' for f in files)
    order = sorted(view.units, key=lambda u: (-u.iou, u.unit))
    cards = "\n".join(unit_card(u, colours, strips.get(u.unit)) for u in order)
    options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in view.categories)
    body = f"""<header class="page"><nav>{nav}</nav>
<h1>{esc(run_name)} · <code>{esc(view.layer)}</code></h1>
<p class="headline" id="headline">{esc(headline(view))}</p>
<p class="sub">Unique detectors per category: {per_cat} (total {c['unique_detectors_total']}).</p>
<p class="sub">{" · ".join(facts)}</p>
{f'<p class="sub">{esc(note)}</p>' if note else ""}
{f'<p class="sub">Files: {downloads}</p>' if downloads else ""}
</header>
<section class="charts">
<figure><div class="scroll">{concept_bars_svg(view, colours)}</div>
<figcaption>Unique detectors per concept, grouped by category: a bar counts the units whose best
label in that category is the concept with IoU &gt;= {c['iou_threshold']:g}.</figcaption></figure>
<figure>{iou_histogram_svg(view)}
<figcaption>Units by the IoU of their label; detectors in blue.</figcaption></figure>
</section>
<section class="controls" aria-label="sort and filter">
<label>sort <select id="sort"><option value="iou">IoU</option><option value="unit">unit</option>
<option value="label">label</option><option value="category">category</option></select></label>
<label>category <select id="category"><option value="">all</option>{options}</select></label>
<label>min IoU <input id="min-iou" type="number" min="0" max="1" step="0.01" value="0"></label>
<label>label <input id="search" type="search" placeholder="search labels"></label>
<span id="shown" class="muted">{len(view.units)} units</span>
{legend(view.categories, colours)}
</section>
<main id="cards" class="cards">
{cards}
</main>"""
    data = {"layer": view.layer, "iou_threshold": c["iou_threshold"], "categories": view.categories,
            "units": [{"unit": u.unit, "label": u.label, "category": u.category, "iou": u.iou,
                       "threshold": u.threshold, "others": [list(o) for o in u.others]}
                      for u in view.units]}
    script = (f'<script type="application/json" id="report-data">{script_json(data)}</script>\n'
              f"<script>{JS}</script>\n")
    return page(f"{run_name} {view.layer}: netdissect", body, script)


# -- overview -------------------------------------------------------------------------------
@dataclass
class LayerLink:
    """A layer in the overview: its run, view and the page it links to."""

    run: str
    view: LayerView
    href: str


def comparison_svg(links: list[LayerLink], categories: list[str], colours: dict[str, str]) -> str:
    """Unique detectors per category as stacked bars, one bar per layer (grouped by run),
    each bar a link to its layer page."""
    if not links:
        return ""
    bar, gap, run_gap, plot_h, top, bottom, left = 42, 14, 30, 180, 16, 70, 34
    peak = max([sum(k.view.counts["unique_detectors"].values()) for k in links] + [1])
    scale = plot_h / peak
    runs = list(dict.fromkeys(k.run for k in links))
    width = left + len(links) * (bar + gap) + run_gap * (len(runs) - 1) + 10
    height = top + plot_h + bottom
    base = top + plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="unique detectors per layer">']
    for tick in _ticks(peak):
        y = base - tick * scale
        parts.append(f'<line class="axis" x1="{left - 4}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke-opacity="0.25"/><text x="{left - 6}" y="{y + 3:.1f}" text-anchor="end">{tick}</text>')
    x = left
    for r, run in enumerate(runs):
        start = x
        for link in (k for k in links if k.run == run):
            counts = link.view.counts["unique_detectors"]
            y = base
            segs = []
            for cat in categories:
                n = counts.get(cat, 0)
                if n:
                    h = n * scale
                    y -= h
                    segs.append(f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="{colours[cat]}">'
                                f'<title>{esc(cat)}: {n}</title></rect>')
            total = sum(counts.values())
            parts.append(f'<a href="{url(link.href)}"><title>{esc(run)} {esc(link.view.layer)}: '
                         f'{total} unique detectors</title>{"".join(segs)}'
                         f'<text x="{x + bar / 2}" y="{y - 3:.1f}" text-anchor="middle">{total}</text>'
                         f'<text transform="translate({x + bar / 2 + 3},{base + 6}) rotate(-40)" '
                         f'text-anchor="end">{esc(link.view.layer)}</text></a>')
            x += bar + gap
        if len(runs) > 1:
            parts.append(f'<text x="{(start + x - gap) / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                         f'font-weight="600">{esc(run)}</text>')
        x += run_gap
    parts.append(f'<line class="axis" x1="{left}" x2="{width}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


# The overview's experiments part sits between these comments, so that an experiment written
# after the report can rewrite that part alone (report/experiments.py).
EXPERIMENTS_BEGIN = "<!-- netdissect experiments -->"
EXPERIMENTS_END = "<!-- /netdissect experiments -->"


def experiments_section(experiments: list) -> str:
    """The experiments (`report.experiments.Experiment`) as figures with their summary and
    tables, between the two markers; just the markers when there are none."""
    cards = []
    for e in experiments:
        files = [*e.files] + ([f"{e.figure}.png", f"{e.figure}.svg"] if e.figure else [])
        links = " · ".join(f'<a href="{url(f)}">{esc(f.rsplit("/", 1)[-1])}</a>' for f in files)
        image = (f'<a href="{url(e.figure)}.svg"><img src="{url(e.figure)}.png" loading="lazy" '
                 f'alt="{esc(e.kind)} figure of {esc(e.layer)}"></a>' if e.figure else "")
        cards.append(f'<figure class="experiment" data-kind="{esc(e.kind)}">{image}<figcaption>'
                     f'<b>{esc(e.kind)}</b> <code>{esc(e.layer)}</code> in <code>{esc(e.folder)}</code>: '
                     f"{esc(e.summary)}<br>{links}</figcaption></figure>")
    body = (f'<section><h2>Experiments</h2><div class="experiments">{"".join(cards)}</div></section>'
            if cards else "")
    return EXPERIMENTS_BEGIN + body + EXPERIMENTS_END


def overview_page(title: str, links: list[LayerLink], figures: list[str], crumbs: list[Crumb],
                  experiments: list = ()) -> str:
    """Every layer of every run side by side: counts, and stacked bars linking to the layers;
    then the experiments found under the report folder."""
    categories = list(dict.fromkeys(c for k in links for c in k.view.categories))
    colours = category_colours(categories)
    head = "".join(f"<th>{esc(c)}</th>" for c in categories)
    rows = []
    for k in links:
        c = k.view.counts
        cells = "".join(f'<td class="num">{c["unique_detectors"].get(cat, 0)}</td>' for cat in categories)
        rows.append(f'<tr><td>{esc(k.run)}</td><td><a href="{url(k.href)}"><code>{esc(k.view.layer)}</code></a></td>'
                    f'<td class="num">{c["units"]}</td><td class="num">{c["detectors"]}</td>'
                    f'<td class="num">{c["distinct_labels"]}</td><td class="num">{c["unique_detectors_total"]}</td>'
                    f"{cells}</tr>")
    nav = " / ".join(f'<a href="{url(k.href)}">{esc(k.text)}</a>' for k in crumbs)
    figs = " · ".join(f'<a href="{url(f)}">{esc(f)}</a>' for f in figures)
    thresholds = sorted({k.view.iou_threshold for k in links})
    body = f"""<header class="page">{f"<nav>{nav}</nav>" if nav else ""}<h1>{esc(title)}</h1>
<p class="sub">Network Dissection: {len(links)} layer{"s" if len(links) != 1 else ""},
IoU threshold {", ".join(f"{t:g}" for t in thresholds)}. Click a bar or a layer for its units.</p></header>
<section><figure><div class="scroll">{comparison_svg(links, categories, colours)}</div>
{legend(categories, colours)}
<figcaption>Unique detectors per category (METHOD.md section 7), one bar per layer.</figcaption></figure>
<table class="layers"><thead><tr><th>model</th><th>layer</th><th>units</th><th>detectors</th>
<th>distinct labels</th><th>unique detectors</th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{f'<p class="sub">Figures for papers: {figs}</p>' if figs else ""}</section>
{experiments_section(experiments)}"""
    return page(f"{title}: netdissect", body)
