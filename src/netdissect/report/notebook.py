"""A compact HTML summary of a dissection for notebooks (what `Dissection._repr_html_` shows).

One table of counts per layer, then the best units of one layer with their strips inlined as
base64 JPEGs, so the summary needs no files next to the notebook.  Rendered from
templates/notebook.html.
"""
from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from netdissect.report.pages import Strip, headline
from netdissect.report.render import render
from netdissect.report.strips import StripMaker
from netdissect.report.views import category_colours, layer_view

if TYPE_CHECKING:
    from netdissect.results import Dissection

__all__ = ["dissection_html"]


def dissection_html(dissection: Dissection, layer: str | None = None, top: int = 8, images: int = 6,
                    height: int = 64) -> str:
    """HTML summary of `dissection`: counts per layer and the `top` units of `layer` (default:
    the last layer) by IoU, each with a strip of its first `images` top images when the
    dataset recorded in the results can be read."""
    from netdissect.report.writer import open_images

    if not dissection.layers:
        return render("notebook.html", layers=[])
    layer = layer or list(dissection.layers)[-1]
    if layer not in dissection.layers:
        raise KeyError(f"layer {layer!r} is not in this dissection: {', '.join(dissection.layers)}")
    result = dissection[layer]
    view = layer_view(result, dissection.image_names, top=images)
    colours = category_colours(view.categories)
    try:
        maker, _ = open_images(dissection, None, height=height)
    except Exception:  # a notebook summary never fails for want of images
        maker = None
    units = []
    for u in sorted(view.units, key=lambda u: (-u.iou, u.unit))[:top]:
        strip = None
        if isinstance(maker, StripMaker):
            image = maker.strip(result.top_indices[u.unit], result.top_maps[u.unit],
                                float(result.thresholds[u.unit]), images)
            if image is not None:
                data = base64.b64encode(maker.encode(image)).decode("ascii")
                strip = Strip(f"data:image/jpeg;base64,{data}", image.width, image.height)
        units.append({"unit": u.unit, "label": u.label, "category": u.category, "iou": u.iou,
                      "colour": colours.get(u.category, "#999"), "strip": strip})
    return render("notebook.html", layers=[(n, r.counts()) for n, r in dissection.layers.items()],
                  layer=layer, headline=headline(view), units=units,
                  out=str(dissection.out) if dissection.out else "")
