"""A compact HTML summary of a dissection for notebooks (`Dissection._repr_html_`).

One table of counts per layer, then the best units of one layer with their strips inlined as
base64 JPEGs, so the summary needs no files next to the notebook.
"""
from __future__ import annotations

import base64

from netdissect.report.pages import esc, headline
from netdissect.report.strips import StripMaker
from netdissect.report.views import category_colours, layer_view

STYLE = (".nd-summary{font:13px system-ui,sans-serif}.nd-summary table{border-collapse:collapse}"
         ".nd-summary td,.nd-summary th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}"
         ".nd-summary img{display:block;max-width:100%;height:auto}"
         ".nd-summary .cat{color:#fff;border-radius:6px;padding:0 5px;font-size:11px}")


def dissection_html(dissection, layer: str | None = None, top: int = 8, images: int = 6,
                    height: int = 64) -> str:
    """HTML summary of `dissection`: counts per layer and the `top` units of `layer` (default:
    the last layer) by IoU, each with a strip of its first `images` top images when the
    dataset recorded in the results can be read."""
    from netdissect.report.writer import open_images

    if not dissection.layers:
        return '<div class="nd-summary">An empty dissection (no layers).</div>'
    layer = layer or list(dissection.layers)[-1]
    if layer not in dissection.layers:
        raise KeyError(f"layer {layer!r} is not in this dissection: {', '.join(dissection.layers)}")
    rows = "".join(
        f"<tr><td><code>{esc(name)}</code></td><td>{c['units']}</td><td>{c['detectors']}</td>"
        f"<td>{c['unique_detectors_total']}</td><td>{esc(', '.join(f'{k} {v}' for k, v in c['unique_detectors'].items()))}</td></tr>"
        for name, c in ((n, r.counts()) for n, r in dissection.layers.items()))
    result = dissection[layer]
    view = layer_view(result, dissection.image_names, top=images)
    colours = category_colours(view.categories)
    try:
        maker, _ = open_images(dissection, None, height=height)
    except Exception:  # a notebook summary never fails for want of images
        maker = None
    cards = []
    for u in sorted(view.units, key=lambda u: (-u.iou, u.unit))[:top]:
        picture = ""
        if isinstance(maker, StripMaker):
            strip = maker.strip(result.top_indices[u.unit], result.top_maps[u.unit],
                                float(result.thresholds[u.unit]), images)
            if strip is not None:
                data = base64.b64encode(maker.encode(strip)).decode("ascii")
                picture = (f'<img src="data:image/jpeg;base64,{data}" width="{strip.width}" '
                           f'height="{strip.height}" alt="top images of unit {u.unit}">')
        cat = (f'<span class="cat" style="background:{colours.get(u.category, "#999")}">'
               f"{esc(u.category)}</span>") if u.category else ""
        cards.append(f"<tr><td>unit {u.unit}</td><td><b>{esc(u.label or 'no label')}</b> {cat}</td>"
                     f"<td>{u.iou:.3f}</td><td>{picture}</td></tr>")
    where = f" · report: <code>{esc(dissection.out)}/index.html</code>" if dissection.out else ""
    return (f'<div class="nd-summary"><style>{STYLE}</style>'
            f"<table><tr><th>layer</th><th>units</th><th>detectors</th><th>unique</th>"
            f"<th>unique per category</th></tr>{rows}</table>"
            f"<p><b><code>{esc(layer)}</code></b>: {esc(headline(view))}{where}</p>"
            f"<table><tr><th>unit</th><th>label</th><th>IoU</th><th>top images</th></tr>"
            f"{''.join(cards)}</table></div>")
