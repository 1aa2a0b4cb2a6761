"""What the report shows of a layer, computed once from a saved `LayerResult`.

The pages, the figures and the notebook summary all read these plain values, so they agree
with each other and with `LayerResult.counts()` by construction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from netdissect.results import LayerResult

# Colours of the usual Broden categories (the paper's figures use one hue per category);
# other category names take the next colour of FALLBACK in order.
CATEGORY_COLOURS = {"object": "#4e79a7", "scene": "#59a14f", "part": "#f28e2b",
                    "material": "#b07aa1", "texture": "#e15759", "color": "#edc948"}
FALLBACK = ["#76b7b2", "#ff9da7", "#9c755f", "#bab0ac", "#17becf", "#bcbd22", "#8c564b"]


def display_label(name: str) -> str:
    """A label as the report shows it: no -s/-c suffix, underscores as spaces
    (the rule of `Broden.display_name`, applied to a saved name)."""
    if name.endswith(("-s", "-c")):
        name = name[:-2]
    return name.replace("_", " ")


def category_colours(categories: list[str]) -> dict[str, str]:
    """One colour per category name, stable for the usual Broden names."""
    colours, spare = {}, iter(FALLBACK * (1 + len(categories) // len(FALLBACK)))
    for c in categories:
        colours[c] = CATEGORY_COLOURS.get(c) or next(spare)
    return colours


@dataclass
class UnitView:
    """One unit's card: 0-based unit number, top label and score, and the other categories."""

    unit: int
    label: str  # display name ("" when the unit matches nothing)
    category: str
    iou: float
    threshold: float
    detector: bool
    others: list[tuple[str, str, float]]  # (category, display label, IoU), best first
    top_images: list[str]  # file names of the top images, best first


@dataclass
class LayerView:
    """A layer as the report shows it."""

    layer: str
    folder: str
    counts: dict
    units: list[UnitView]
    categories: list[str]
    concepts: dict[str, list[tuple[str, int]]]  # category -> [(display label, units)], most first
    meta: dict = field(default_factory=dict)

    @property
    def iou_threshold(self) -> float:
        return float(self.counts["iou_threshold"])


def layer_view(result: LayerResult, image_names: list[str] | None = None,
               top: int = 10) -> LayerView:
    """Collect what the pages show of one layer (labels by the rule of docs/method.md
    section 7)."""
    from netdissect.results import layer_folder_name

    categories = list(result.labels.categories)
    counts = result.counts()
    units = []
    concepts: dict[str, dict[int, list]] = {c: {} for c in categories}  # label number -> [name, units]
    for u, threshold, top_rows in zip(result.labelled_units(), result.thresholds.tolist(),
                                      result.top_indices[:, :top].tolist()):
        others = [(c, display_label(name), iou) for c, (name, iou) in u.best.items()
                  if name and c != u.category]
        others.sort(key=lambda o: -o[2])
        rows = [int(i) for i in top_rows if i >= 0]
        units.append(UnitView(
            unit=u.unit, label=display_label(u.label) if u.label else "", category=u.category,
            iou=u.score, threshold=float(threshold), detector=u.detector, others=others,
            top_images=[image_names[i] for i in rows] if image_names else [f"row {i}" for i in rows]))
        # a bar per concept (label number, as unique detectors count them): the units whose
        # best label of that category it is, with IoU >= the threshold
        for number, (c, (name, iou)) in zip(u.best_numbers, u.best.items()):
            if number > 0 and iou >= counts["iou_threshold"]:
                concepts[c].setdefault(number, [name, 0])[1] += 1
    bars = {c: sorted(((display_label(name), n) for name, n in found.values()),
                      key=lambda b: (-b[1], b[0])) for c, found in concepts.items()}
    return LayerView(layer=result.layer, folder=layer_folder_name(result.layer), counts=counts,
                     units=units, categories=categories, concepts=bars, meta=result.meta)
