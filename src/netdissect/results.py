"""The Dissection result: IoUs, labels and counts (docs/method.md section 7) and their files.

`LayerResult` holds what the passes measured for one layer (thresholds, exact tallies, top
images) and derives everything else on demand, so changing the IoU threshold or the IoU
definition never needs the data again.  `Dissection` groups the layers of one run, gives a
pandas view per layer, and saves / loads the result folder:

    OUT/<layer>/tally.csv     NetDissect's table (docs/method.md section 9)
    OUT/<layer>/units.json    one record per unit (0-based `unit`)
    OUT/<layer>/summary.json  counts, settings, fingerprints, versions, timings
    OUT/<layer>/stats.pt      the raw statistics (thresholds, I, A, G, top images and maps)
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from netdissect.engine.settings import DEFINITIONS, check_iou_threshold
from netdissect.scoring import best_per_category_table, iou_table, reaches_threshold, threshold_text
from netdissect.errors import ResultError, SettingsError
from netdissect.files import atomic_write_files, csv_bytes, json_bytes, torch_bytes

__all__ = ["Dissection", "LayerResult", "LabelSpace", "UnitLabels", "layer_folder_name", "DEFINITIONS",
           "reaches_threshold", "threshold_text", "iou_table", "best_per_category_table"]


# -- labels ---------------------------------------------------------------------------------
@dataclass
class LabelSpace:
    """The concepts a layer was scored against: names by global number, primary categories."""

    names: list[str]
    category: np.ndarray  # (L+1,) index into `categories`, -1 when not scored
    categories: list[str]

    @classmethod
    def from_broden(cls, broden) -> "LabelSpace":
        return cls(list(broden.label_names), broden.label_category.copy(), list(broden.categories))

    def state_dict(self) -> dict:
        return {"names": self.names, "category": torch.from_numpy(self.category),
                "categories": self.categories}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LabelSpace":
        return cls(list(state["names"]), state["category"].numpy().copy(), list(state["categories"]))


@dataclass(frozen=True)
class UnitLabels:
    """One unit as the tables show it (docs/method.md section 7): names, not label numbers."""

    unit: int  # 0-based
    label: str  # "" when the unit matches nothing
    category: str
    score: float  # IoU of the label
    detector: bool  # score reaches the IoU threshold (reaches_threshold)
    label_number: int
    best: dict  # category -> (its best label, IoU), in category order
    best_numbers: list  # the best labels' numbers, in category order


# -- one layer ------------------------------------------------------------------------------
@dataclass
class LayerResult:
    """What the passes measured for one layer, and the labels derived from it."""

    layer: str
    labels: LabelSpace
    thresholds: torch.Tensor  # (K,) float32
    intersection: torch.Tensor  # (K, L+1) int64
    activation: dict  # definition -> (K, C) int64
    truth: torch.Tensor  # (L+1,) int64
    top_indices: torch.Tensor  # (K, k) dataset rows, -1 where fewer images
    top_values: torch.Tensor  # (K, k) spatial maxima
    top_maps: torch.Tensor  # (K, k, h, w) the raw maps of those images
    definition: str = "original"
    iou_threshold: float = 0.04
    meta: dict = field(default_factory=dict)  # settings, fingerprints, timings, ...
    # The tallies of the permutation null and the bootstrap (IoUTally's null_* and boot_*
    # counts; empty when the run made none): significance.Significance reads them.
    resampled: dict = field(default_factory=dict)

    @property
    def units(self) -> int:
        return len(self.thresholds)

    @property
    def upsampled_thresholds(self) -> bool:
        """Whether the thresholds were taken on upsampled maps (dissected with pnas)."""
        return self.meta.get("settings", {}).get("thresholds") == "upsampled"

    def iou(self, definition: str | None = None) -> torch.Tensor:
        """IoU[k, c] = I / (A[k, cat(c)] + G[c] - I), float64 (K, L+1); 0 where undefined.
        Under pnas A[k, .] counts every mask pixel (the plain IoU)."""
        definition = definition or self.definition
        self._check_definition(definition)
        return iou_table(self.intersection, self.activation[definition], self.truth,
                         torch.from_numpy(self.labels.category))

    def _check_definition(self, definition: str) -> None:
        """SettingsError unless `definition` can be derived from this layer's tallies."""
        if definition not in DEFINITIONS:
            raise SettingsError(f"definition must be one of {DEFINITIONS}, got {definition!r}")
        if (definition == "pnas") != self.upsampled_thresholds:
            made = "pnas" if self.upsampled_thresholds else "original or lite"
            raise SettingsError(
                f"layer {self.layer!r} was dissected with --definition {made}, whose thresholds "
                f"are taken {'on upsampled maps' if self.upsampled_thresholds else 'at the layer resolution'}; "
                f"--definition {definition} needs the other kind: run `netdissect dissect` again "
                f"with --definition {definition} (docs/method.md section 14).")

    def best_per_category(self, definition: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, C) label numbers (0 = none) and their IoUs: each category's best label per unit."""
        return best_per_category_table(self.iou(definition), torch.from_numpy(self.labels.category),
                                       len(self.labels.categories))

    def unit_labels(self, definition: str | None = None):
        """Per unit: label number, category index (-1 when none) and score."""
        best_label, best_iou = self.best_per_category(definition)
        score, cat = best_iou.max(dim=1)
        label = best_label.gather(1, cat[:, None])[:, 0]
        none = score <= 0
        return label.masked_fill(none, 0), cat.masked_fill(none, -1), score

    def counts(self, iou_threshold: float | None = None, definition: str | None = None) -> dict:
        """Detectors, unique detectors per category (as the paper counts them), distinct labels."""
        t = self.iou_threshold if iou_threshold is None else iou_threshold
        definition = definition or self.definition
        best_label, best_iou = self.best_per_category(definition)
        label, _, score = self.unit_labels(definition)
        detector = reaches_threshold(score, t, definition)
        unique = {}
        for c, name in enumerate(self.labels.categories):
            hits = best_label[:, c][reaches_threshold(best_iou[:, c], t, definition)]
            unique[name] = int(torch.unique(hits[hits > 0]).numel())
        counts = {"units": self.units, "detectors": int(detector.sum()),
                  "distinct_labels": int(torch.unique(label[detector]).numel()),
                  "unique_detectors": unique, "unique_detectors_total": sum(unique.values()),
                  "iou_threshold": t, "definition": definition}
        significance = self.significance(definition, t)
        return counts | (significance.counts() if significance is not None else {})

    @property
    def fdr(self) -> float:
        """The false discovery rate of significant detectors (settings, default 0.05)."""
        return float(self.meta.get("settings", {}).get("fdr", 0.05))

    def significance(self, definition: str | None = None, iou_threshold: float | None = None):
        """p- and q-values and bootstrap intervals (`significance.Significance`, cached), or
        None when the run tallied neither a null nor a bootstrap."""
        if not self.resampled:
            return None
        key = (definition or self.definition, self.iou_threshold if iou_threshold is None else iou_threshold,
               self.fdr)
        cache = self.__dict__.setdefault("_significance", {})
        if key not in cache:
            from netdissect.significance import Significance

            cache[key] = Significance(self, *key)
        return cache[key]

    def labelled_units(self, definition: str | None = None, iou_threshold: float | None = None) -> list[UnitLabels]:
        """Each unit's label, category, score and best label per category, decoded into names
        once (cached per definition and threshold); every table and page reads these."""
        key = (definition or self.definition, self.iou_threshold if iou_threshold is None else iou_threshold)
        cache = self.__dict__.setdefault("_units", {})
        if key not in cache:
            best_label, best_iou = self.best_per_category(key[0])
            label, cat, score = self.unit_labels(key[0])
            names, cats = self.labels.names, self.labels.categories
            best_label, best_iou = best_label.tolist(), best_iou.tolist()
            cache[key] = [
                UnitLabels(unit=k, label=names[n] if n > 0 else "", category=cats[c] if c >= 0 else "",
                           score=sc, detector=bool(reaches_threshold(sc, key[1], key[0])), label_number=n,
                           best={cname: (names[best_label[k][ci]] if best_label[k][ci] > 0 else "",
                                         best_iou[k][ci]) for ci, cname in enumerate(cats)},
                           best_numbers=best_label[k])
                for k, (n, c, sc) in enumerate(zip(label.tolist(), cat.tolist(), score.tolist()))]
        return cache[key]

    # -- tables -----------------------------------------------------------------------
    def unit_records(self, image_names: list[str] | None = None) -> list[dict]:
        """One JSON-ready record per unit (0-based `unit`); with a null, its p- and q-value
        (overall and per category) and whether it is a significant detector; with a
        bootstrap, the 95% interval of its score."""
        significance = self.significance()
        records = []
        for u in self.labelled_units():
            top = [{"index": int(i), "activation": float(v),
                    **({"image": image_names[int(i)]} if image_names else {})}
                   for i, v in zip(self.top_indices[u.unit].tolist(), self.top_values[u.unit].tolist()) if i >= 0]
            extra = significance.unit_fields(u.unit) if significance is not None else {}
            records.append({
                "unit": u.unit, "threshold": float(self.thresholds[u.unit]), "label": u.label,
                "category": u.category, "score": u.score, "detector": u.detector, **extra,
                "categories": {c: {"label": name, "iou": iou,
                                   **(significance.category_fields(u.unit, ci) if significance is not None else {})}
                               for ci, (c, (name, iou)) in enumerate(u.best.items())},
                "top_images": top,
            })
        return records

    def tally_rows(self) -> list[dict]:
        """tally.csv rows: NetDissect's format, 1-based units, sorted by score descending;
        p-value, q-value, score-low and score-high last when the run made a null or a
        bootstrap."""
        significance = self.significance()
        act = self.activation[self.definition].tolist()
        truth, intersection = self.truth.tolist(), self.intersection
        rows = []
        for u in sorted(self.labelled_units(), key=lambda u: (-u.score, u.unit)):
            row = {"unit": u.unit + 1, "category": u.category, "label": u.label, "score": u.score}
            for ci, (c, (name, iou)) in enumerate(u.best.items()):
                lab = u.best_numbers[ci]
                row[f"{c}-label"] = name
                row[f"{c}-truth"] = truth[lab] if lab > 0 else 0
                row[f"{c}-activation"] = act[u.unit][ci]
                row[f"{c}-intersect"] = int(intersection[u.unit, lab]) if lab > 0 else 0
                row[f"{c}-iou"] = iou
            if significance is not None:
                fields = significance.unit_fields(u.unit)
                if "p_value" in fields:
                    row["p-value"], row["q-value"] = fields["p_value"], fields["q_value"]
                if "score_interval" in fields:
                    row["score-low"], row["score-high"] = fields["score_interval"]
            rows.append(row)
        return rows

    def frame(self):
        """A pandas DataFrame: one row per unit with label, category, score and every
        category's best label and IoU."""
        import pandas as pd

        rows = []
        for u, threshold in zip(self.labelled_units(), self.thresholds.tolist()):
            row = {"unit": u.unit, "label": u.label, "category": u.category, "score": u.score,
                   "detector": u.detector, "threshold": float(threshold)}
            for c, (name, iou) in u.best.items():
                row[f"{c}_label"], row[f"{c}_iou"] = name, iou
            rows.append(row)
        return pd.DataFrame(rows).set_index("unit")

    # -- files ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"layer": self.layer, "labels": self.labels.state_dict(), "thresholds": self.thresholds,
                "intersection": self.intersection,
                **{f"activation_{d}": a for d, a in self.activation.items()}, "truth": self.truth,
                "top_indices": self.top_indices, "top_values": self.top_values,
                "top_maps": self.top_maps, **self.resampled}

    @classmethod
    def from_state_dict(cls, state: dict, meta: dict | None = None) -> "LayerResult":
        meta = meta or {}
        settings = meta.get("settings", {})
        return cls(layer=state["layer"], labels=LabelSpace.from_state_dict(state["labels"]),
                   thresholds=state["thresholds"], intersection=state["intersection"],
                   activation={d: state[f"activation_{d}"] for d in DEFINITIONS if f"activation_{d}" in state},
                   truth=state["truth"], top_indices=state["top_indices"], top_values=state["top_values"],
                   top_maps=state["top_maps"], definition=settings.get("definition", "original"),
                   iou_threshold=settings.get("iou_threshold", 0.04), meta=meta,
                   resampled={k: v for k, v in state.items() if k.startswith(("null_", "boot_"))})

    def relabel(self, iou_threshold: float | None = None, definition: str | None = None,
                fdr: float | None = None) -> "LayerResult":
        """Use another IoU threshold, definition or FDR from now on (labels are derived on
        demand)."""
        check_iou_threshold(iou_threshold)
        settings = self.meta.setdefault("settings", {})
        if fdr is not None:
            if not 0.0 < fdr < 1.0:
                raise SettingsError(f"--fdr must be between 0 and 1, got {fdr}")
            if self.resampled:  # the FDR decides nothing without a null
                settings["fdr"] = fdr
        if iou_threshold is not None:
            self.iou_threshold = settings["iou_threshold"] = iou_threshold
        if definition is not None:
            self._check_definition(definition)
            self.definition = settings["definition"] = definition
        return self

    def summary(self) -> dict:
        """summary.json: the counts and the recorded metadata."""
        return {"layer": self.layer, **self.counts(), **self.meta}

    def files(self, image_names: list[str] | None = None) -> dict[str, bytes]:
        """The contents of stats.pt, tally.csv, units.json and summary.json, by file name."""
        rows = self.tally_rows()
        return {"stats.pt": torch_bytes(self.state_dict()),
                "tally.csv": csv_bytes(rows, list(rows[0]) if rows else ["unit"]),
                "units.json": json_bytes(self.unit_records(image_names)),
                "summary.json": json_bytes(self.summary())}

    def save(self, folder: str | os.PathLike, image_names: list[str] | None = None) -> Path:
        """Write tally.csv, units.json, summary.json and stats.pt under `folder`, as one
        (all or none)."""
        folder = Path(folder)
        atomic_write_files({folder / name: data for name, data in self.files(image_names).items()})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "LayerResult":
        folder = Path(folder)
        meta = {}
        if (folder / "summary.json").is_file():
            summary = json.loads((folder / "summary.json").read_text())
            meta = {k: v for k, v in summary.items() if k not in _DERIVED}
        state = torch.load(folder / "stats.pt", map_location="cpu", weights_only=True)
        return cls.from_state_dict(state, meta)


# Keys of summary.json that `counts()` recomputes rather than reads back.
_DERIVED = {"layer", "units", "detectors", "distinct_labels", "unique_detectors",
            "unique_detectors_total", "iou_threshold", "definition", "null_permutations",
            "significant_detectors", "significant_unique_detectors",
            "significant_unique_detectors_total", "bootstrap", "shuffled_labels"}


def layer_folder_name(layer: str) -> str:
    """The folder of a layer under OUT: its dotted name, made safe for file systems."""
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer)


class Dissection:
    """The result of a dissection run: one LayerResult per layer, in the order dissected."""

    def __init__(self, layers: dict[str, LayerResult], image_names: list[str] | None = None,
                 out: Path | None = None):
        self.layers = layers
        self.image_names = image_names
        self.out = out

    def __getitem__(self, layer: str) -> LayerResult:
        return self.layers[layer]

    def frame(self, layer: str | None = None):
        """The pandas view of `layer` (the only layer when there is one)."""
        if layer is None:
            if len(self.layers) != 1:
                raise SettingsError(f"name a layer: {', '.join(self.layers)}")
            layer = next(iter(self.layers))
        return self.layers[layer].frame()

    #: The notebook summary; `netdissect` sets it to the report's `dissection_html`, so that
    #: this module needs no report.
    html_view: Callable[["Dissection"], str] | None = None

    def _repr_html_(self) -> str | None:
        view = type(self).html_view
        return view(self) if view is not None else None

    def relabel(self, iou_threshold: float | None = None, definition: str | None = None,
                fdr: float | None = None) -> "Dissection":
        """Apply another IoU threshold, definition or FDR to the saved tallies (no data needed)."""
        for result in self.layers.values():
            result.relabel(iou_threshold, definition, fdr)
        return self

    def save(self, out: str | os.PathLike) -> Path:
        """Write every layer's files and dissection.json under `out`, all as one: a failure
        (a full disk) leaves the files already there as they were."""
        out = Path(out)
        contents = {out / layer_folder_name(name) / file: data
                    for name, result in self.layers.items()
                    for file, data in result.files(self.image_names).items()}
        contents[out / "dissection.json"] = json_bytes({
            "layers": {name: layer_folder_name(name) for name in self.layers},
            "image_names": self.image_names or []})
        atomic_write_files(contents)
        self.out = out
        return out

    @classmethod
    def load(cls, out: str | os.PathLike) -> "Dissection":
        """Read a result folder written by `save` (or by `netdissect dissect --out`)."""
        out = Path(out)
        index_path = out / "dissection.json"
        if not index_path.is_file():
            raise ResultError(f"{index_path}: missing; {out} is not a netdissect result folder.")
        index = json.loads(index_path.read_text())
        layers = {name: LayerResult.load(out / folder) for name, folder in index["layers"].items()}
        return cls(layers, index.get("image_names") or None, out)
