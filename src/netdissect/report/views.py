"""What the report shows of a layer, computed once from a saved `LayerResult`.

The pages, the figures and the notebook summary all read these plain values, so they agree
with each other and with `LayerResult.counts()` by construction.  When the layer folder holds
the compositional explanations of `netdissect explain` (explanations.json),
`load_explanations` adds each unit's formula and the layer's mean IoU per formula length.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from netdissect.results import reaches_threshold

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
    formula: str = ""  # display text of the unit's formula ("" without one)
    formula_text: str = ""  # the formula as explanations.json writes it (raw label names)
    formula_iou: float | None = None
    formula_length: int | None = None
    # With a null (docs/method.md section 15): p- and q-value, significant detector; with a
    # bootstrap: the 95% interval of the IoU.  None when the run made neither.
    p_value: float | None = None
    q_value: float | None = None
    significant: bool | None = None
    iou_interval: tuple[float, float] | None = None


@dataclass
class Explanations:
    """A layer's compositional explanations: the mean over units of the IoU of the best
    formula of at most n leaves (n = 1, 2, ...), and the search's settings."""

    mean_iou_by_length: list[float]
    settings: dict


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
    explanations: Explanations | None = None

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
    significance = result.significance()
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
            top_images=[image_names[i] for i in rows] if image_names else [f"row {i}" for i in rows],
            **_significance_fields(significance, u.unit)))
        # a bar per concept (label number, as unique detectors count them): the units whose
        # best label of that category it is, with IoU >= the threshold
        for number, (c, (name, iou)) in zip(u.best_numbers, u.best.items()):
            if number > 0 and reaches_threshold(iou, counts["iou_threshold"], counts["definition"]):
                concepts[c].setdefault(number, [name, 0])[1] += 1
    bars = {c: sorted(((display_label(name), n) for name, n in found.values()),
                      key=lambda b: (-b[1], b[0])) for c, found in concepts.items()}
    return LayerView(layer=result.layer, folder=layer_folder_name(result.layer), counts=counts,
                     units=units, categories=categories, concepts=bars, meta=result.meta)


def _significance_fields(significance, unit: int) -> dict:
    """The UnitView fields of `unit` from a `significance.Significance` (or None)."""
    if significance is None:
        return {}
    fields = significance.unit_fields(unit)
    interval = fields.get("score_interval")
    return {"p_value": fields.get("p_value"), "q_value": fields.get("q_value"),
            "significant": fields.get("significant"),
            "iou_interval": tuple(interval) if interval else None}


OPERATORS = {"or": "OR", "and": "AND"}


def formula_display(tree) -> str:
    """A formula tree (`["and", ["or", "water", "river"], ["not", "blue-c"]]`) as the report
    shows it: fully parenthesised, leaves through `display_label`, operators AND, OR and
    AND NOT (`((water OR river) AND NOT blue)`).  ValueError for anything else."""
    if isinstance(tree, str):
        return display_label(tree)
    if isinstance(tree, list) and len(tree) == 2 and tree[0] == "not":
        return f"NOT {formula_display(tree[1])}"
    if isinstance(tree, list) and len(tree) == 3 and tree[0] in OPERATORS:
        return f"({formula_display(tree[1])} {OPERATORS[tree[0]]} {formula_display(tree[2])})"
    raise ValueError(f"not a formula tree: {tree!r}"[:200])


def unit_number(value) -> float:
    """`value` as an IoU (a number in [0, 1]); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{value!r} is not an IoU in [0, 1]"[:200])
    return float(value)


def parse_explanations(view: LayerView, data) -> tuple[Explanations, dict[int, tuple[str, str, float, int]]]:
    """The layer's `Explanations` and, per 0-based unit with a formula, (display text, text as
    written, IoU, length), from the parsed explanations.json `data`; ValueError (saying what)
    when `data` does not describe this layer's units."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("layer", view.layer) not in (view.layer, view.folder):
        raise ValueError(f"it explains layer {data['layer']!r}, not {view.layer!r}"[:200])
    recorded, current = data.get("fingerprint"), view.meta.get("fingerprint")
    if recorded and current and recorded != current:
        raise ValueError("it was computed for another dissection of this layer (other settings, "
                         "model or data); run `netdissect explain` again")
    means, settings, records = (data.get("mean_iou_by_length"), data.get("settings", {}),
                                data.get("units"))
    if not isinstance(means, list):
        raise ValueError("mean_iou_by_length is not a list")
    if not isinstance(settings, dict) or not isinstance(records, list):
        raise ValueError("settings is not an object or units not a list")
    known = {u.unit for u in view.units}
    formulas: dict[int, tuple[str, str, float, int]] = {}
    seen: set[int] = set()
    for record in records:
        if not isinstance(record, dict):
            raise ValueError("a unit record is not an object")
        unit = record.get("unit")
        if isinstance(unit, bool) or not isinstance(unit, int) or unit - 1 not in known or unit in seen:
            raise ValueError(f"unit {unit!r} is not a unit of the layer (1-based), or repeated"[:200])
        seen.add(unit)
        text, tree, length = record.get("formula"), record.get("tree"), record.get("length")
        if not isinstance(text, str):
            raise ValueError(f"unit {unit}: formula is not a string")
        iou = unit_number(record.get("iou"))
        if not text:
            continue
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"unit {unit}: length {length!r} is not a positive integer"[:200])
        formulas[unit - 1] = (formula_display(tree) if tree is not None else text, text, iou, length)
    return Explanations([unit_number(m) for m in means], settings), formulas


def attach_explanations(view: LayerView, data, source: str = "explanations.json") -> bool:
    """Fill the view's explanations and its units' formulas from the parsed explanations.json
    `data`; when `data` is malformed, warn (naming `source`) and leave the view as it was.
    Returns whether the view now shows explanations."""
    try:
        explanations, formulas = parse_explanations(view, data)
    except (ValueError, RecursionError) as e:
        warnings.warn(f"{source}: not a valid explanations file ({e}); the report shows no "
                      "formulas for this layer.", stacklevel=2)
        return False
    view.explanations = explanations
    for u in view.units:
        if u.unit in formulas:
            u.formula, u.formula_text, u.formula_iou, u.formula_length = formulas[u.unit]
    return True


def load_explanations(view: LayerView, path: str | Path) -> bool:
    """`attach_explanations` from the file at `path`: nothing when there is no such file, a
    warning naming it when it cannot be read or parsed.  Returns whether the view shows them."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        warnings.warn(f"{path}: cannot read the explanations ({e}); the report shows no "
                      "formulas for this layer.", stacklevel=2)
        return False
    return attach_explanations(view, data, str(path))

