"""Training conditions and fine-tuning (docs/method.md section 10): compare dissections of one layer.

The runs are saved result folders (`netdissect dissect --out`), so no pass over the data is
repeated: checkpoints along training, a model before and after fine-tuning, or two training
regimes.  For each run: detectors and unique detectors per category.  For each unit: its
label in each run and, between consecutive runs, whether it kept its concept, changed it,
gained one or lost it.  Between the first and the last run: the matrix of concept-category
changes (rows: the unit's category before, columns: after, "none" for non-detectors).  The
figure plots unique detectors per category against training step (or run order).

Unit statuses between runs A and B (a unit "has a concept" when it is a detector):
kept (same label in both), changed (a detector in both, another label), gained (only in B),
lost (only in A), none (in neither).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from netdissect.engine.settings import check_iou_threshold
from netdissect.errors import SettingsError
from netdissect.experiments.record import ExperimentRecord, write_record
from netdissect.experiments.summary import count_columns, unique_detectors_figure
from netdissect.files import atomic_write_json, write_csv
from netdissect.results import Dissection, LayerResult

__all__ = ["compare", "Comparison", "Run", "unit_status", "write_comparison", "STATUSES"]

STATUSES = ("kept", "changed", "gained", "lost", "none")
NONE = "none"


@dataclass
class Run:
    """One dissected layer to compare: a name, a training step and the unit labels."""

    name: str
    step: float
    result: LayerResult
    labels: list[str]  # per unit: the label if the unit is a detector, else ""
    categories: list[str]  # per unit: its label's category if a detector, else ""
    scores: list[float]
    iou_threshold: float


def unit_status(before: str, after: str) -> str:
    """kept / changed / gained / lost / none for a unit labelled `before` then `after` ("" = none)."""
    if before and after:
        return "kept" if before == after else "changed"
    if after:
        return "gained"
    return "lost" if before else "none"


@dataclass
class Comparison:
    """The comparison of one layer across runs; see the module docstring for each table."""

    layer: str
    runs: list[Run]

    def counts(self) -> list[dict]:
        """Per run: step, detectors, unique detectors per category and in total."""
        return [{"run": r.name, "step": r.step, **r.result.counts(r.iou_threshold)} for r in self.runs]

    def unit_rows(self) -> list[dict]:
        """Per unit: label, category and score in each run, and its status per consecutive pair."""
        rows = []
        for k in range(self.runs[0].result.units):
            row: dict = {"unit": k}
            for r in self.runs:
                row[f"{r.name}:label"] = r.labels[k]
                row[f"{r.name}:category"] = r.categories[k]
                row[f"{r.name}:score"] = round(r.scores[k], 6)
            for a, b in zip(self.runs, self.runs[1:]):
                row[f"{a.name}->{b.name}"] = unit_status(a.labels[k], b.labels[k])
            rows.append(row)
        return rows

    def status_counts(self) -> list[dict]:
        """Per consecutive pair of runs: how many units kept, changed, gained, lost, none."""
        out = []
        for a, b in zip(self.runs, self.runs[1:]):
            statuses = [unit_status(x, y) for x, y in zip(a.labels, b.labels)]
            out.append({"from": a.name, "to": b.name, **{s: statuses.count(s) for s in STATUSES}})
        return out

    def summary(self) -> str:
        """One line: unique detectors per run and the unit changes between runs."""
        runs = ", ".join(f"{c['run']}: {c['unique_detectors_total']}" for c in self.counts())
        pairs = "; ".join(f"{s['from']} → {s['to']}: {s['kept']} kept, {s['changed']} changed, "
                          f"{s['gained']} gained, {s['lost']} lost" for s in self.status_counts())
        return f"Unique detectors ({runs}). Unit concepts {pairs}."

    def change_matrix(self, first: int = 0, last: int = -1) -> tuple[list[str], list[list[int]]]:
        """Units by category in run `first` (rows) and run `last` (columns), "none" last."""
        a, b = self.runs[first], self.runs[last]
        cats = list(a.result.labels.categories)
        cats += [c for c in b.result.labels.categories if c not in cats]
        names = cats + [NONE]
        index = {c: i for i, c in enumerate(names)}
        matrix = [[0] * len(names) for _ in names]
        for x, y in zip(a.categories, b.categories):
            matrix[index[x or NONE]][index[y or NONE]] += 1
        return names, matrix


def _run(name: str, step: float, result: LayerResult, iou_threshold: float | None) -> Run:
    check_iou_threshold(iou_threshold)
    threshold = result.iou_threshold if iou_threshold is None else iou_threshold
    units = result.labelled_units(iou_threshold=threshold)
    return Run(name, step, result, [u.label if u.detector else "" for u in units],
               [u.category if u.detector else "" for u in units], [u.score for u in units],
               threshold)


def compare(folders: list[str | os.PathLike], layer: str | None = None, *,
            steps: list[float] | None = None, names: list[str] | None = None,
            iou_threshold: float | None = None, out: str | os.PathLike | None = None) -> Comparison:
    """Compare `layer` across saved dissections (result folders), in the order given.

    `steps` (one per folder) are the training steps of the figure, default 0, 1, 2, ...;
    `names` name the runs (default: the folder names, made unique).  `iou_threshold`
    overrides each run's own detector threshold.  With `out`, writes compare.json,
    counts.csv, units.csv, changes.csv and unique_detectors.{png,svg}.
    """
    if len(folders) < 2:
        raise SettingsError("compare needs at least two result folders")
    if steps is not None and len(steps) != len(folders):
        raise SettingsError(f"--steps gives {len(steps)} steps for {len(folders)} result folders")
    if names is not None and len(names) != len(folders):
        raise SettingsError(f"--names gives {len(names)} names for {len(folders)} result folders")
    dissections = [Dissection.load(f) for f in folders]
    if layer is None:
        common = [n for n in dissections[0].layers if all(n in d.layers for d in dissections)]
        if len(common) != 1:
            raise SettingsError("name the layer to compare (--layer); the result folders share "
                             f"the layers: {', '.join(common) or 'none'}")
        layer = common[0]
    for folder, d in zip(folders, dissections):
        if layer not in d.layers:
            raise SettingsError(f"{folder}: no layer {layer!r} (it has {', '.join(d.layers)})")
    units = {d[layer].units for d in dissections}
    if len(units) != 1:
        raise SettingsError(f"layer {layer!r} has different unit counts across the folders "
                         f"({sorted(units)}); only dissections of the same layer compare unit by unit")
    if names is None:
        names = _unique_names([Path(f).name for f in folders])
    steps = [float(s) for s in steps] if steps is not None else [float(i) for i in range(len(folders))]
    comparison = Comparison(layer, [_run(n, s, d[layer], iou_threshold)
                                    for n, s, d in zip(names, steps, dissections)])
    if out is not None:
        write_comparison(comparison, out)
    return comparison


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        result.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return result


def write_comparison(comparison: Comparison, out: str | os.PathLike) -> ExperimentRecord:
    """Write compare.json, counts.csv, units.csv, changes.csv, the figure and experiment.json
    under `out`; returns the record."""
    out = Path(out)
    counts = comparison.counts()
    names, matrix = comparison.change_matrix()
    first, last = comparison.runs[0].name, comparison.runs[-1].name
    atomic_write_json(out / "compare.json", {
        "layer": comparison.layer, "runs": counts, "unit_status": comparison.status_counts(),
        "category_changes": {"from": first, "to": last, "categories": names, "matrix": matrix}})
    write_csv(out / "counts.csv", [{"run": c["run"], "step": c["step"], **count_columns(c)}
                                   for c in counts])
    write_csv(out / "units.csv", comparison.unit_rows())
    write_csv(out / "changes.csv", [{f"{first} \\ {last}": n, **dict(zip(names, row))}
                                    for n, row in zip(names, matrix)])
    unique_detectors_figure([c["step"] for c in counts], counts, out / "unique_detectors",
                            xlabel="run (training step)",
                            title=f"{comparison.layer}: unique detectors per category",
                            xticklabels=[f"{c['run']}\n({c['step']:g})" for c in counts])
    record = ExperimentRecord("compare", comparison.layer, comparison.summary(), "unique_detectors",
                              ["compare.json", "counts.csv", "units.csv", "changes.csv"])
    write_record(out, record)
    return record
