"""`netdissect relabel` recomputes labels and counts from saved tallies, equal to a fresh run."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import TinyNet

import netdissect
from netdissect.cli import main


def test_relabel_equals_fresh_run(broden_dir, tmp_path):
    out = tmp_path / "out"
    netdissect.dissect(TinyNet(), broden_dir, ["conv1", "conv2"], quantile=0.02, workers=0,
                       progress=False, out=out)
    assert main(["relabel", str(out), "--iou-threshold", "0.02", "--definition", "lite"]) == 0
    fresh = tmp_path / "fresh"
    netdissect.dissect(TinyNet(), broden_dir, ["conv1", "conv2"], quantile=0.02, workers=0,
                       progress=False, out=fresh, iou_threshold=0.02, definition="lite")
    for layer in ("conv1", "conv2"):
        assert (out / layer / "tally.csv").read_text() == (fresh / layer / "tally.csv").read_text()
        relabelled = json.loads((out / layer / "summary.json").read_text())
        expected = json.loads((fresh / layer / "summary.json").read_text())
        for key in ("detectors", "unique_detectors", "distinct_labels", "iou_threshold", "definition"):
            assert relabelled[key] == expected[key]
        assert relabelled["settings"]["definition"] == "lite"
        units = json.loads((out / layer / "units.json").read_text())
        assert units == json.loads((fresh / layer / "units.json").read_text())
    # The threshold matters on this data: 0.02 finds more detectors than 0.2.
    strict = netdissect.Dissection.load(out).relabel(0.2)
    assert strict["conv1"].counts()["detectors"] < json.loads(
        (out / "conv1" / "summary.json").read_text())["detectors"]


def recompute(stats: dict, threshold: float, definition: str) -> dict:
    """Labels and counts from stats.pt's raw int64 tallies, in plain numpy (docs/method.md
    sections 6-7), without netdissect's code: IoU = I / (A[k, cat(c)] + G[c] - I)."""
    inter = stats["intersection"].numpy().astype(np.float64)
    act = stats[f"activation_{definition}"].numpy().astype(np.float64)
    truth = stats["truth"].numpy().astype(np.float64)
    cat = stats["labels"]["category"].numpy()
    names, categories = list(stats["labels"]["names"]), list(stats["labels"]["categories"])
    units, labels = inter.shape
    iou = np.zeros((units, labels))
    for k in range(units):
        for c in range(labels):
            if cat[c] < 0:
                continue
            union = act[k, cat[c]] + truth[c] - inter[k, c]
            iou[k, c] = inter[k, c] / union if union > 0 else 0.0
    best = np.zeros((units, len(categories)), dtype=np.int64)  # label number, 0 = none
    best_iou = np.zeros((units, len(categories)))
    for k in range(units):
        for ci in range(len(categories)):
            for c in range(labels):  # increasing label number: the lowest wins a tie
                if cat[c] == ci and iou[k, c] > best_iou[k, ci]:
                    best[k, ci], best_iou[k, ci] = c, iou[k, c]
    unit = []
    for k in range(units):
        ci = int(np.argmax(best_iou[k]))  # first maximum: the earlier category wins a tie
        score = best_iou[k, ci]
        unit.append({"label": names[best[k, ci]] if score > 0 else "",
                     "category": categories[ci] if score > 0 else "", "score": float(score),
                     "detector": bool(score >= threshold)})
    unique = {name: len({int(best[k, ci]) for k in range(units) if best_iou[k, ci] >= threshold
                         and best[k, ci] > 0}) for ci, name in enumerate(categories)}
    detectors = [u for u in unit if u["detector"]]
    return {"units": unit, "best": best, "best_iou": best_iou, "act": act, "names": names,
            "categories": categories, "detectors": len(detectors), "unique_detectors": unique,
            "distinct_labels": len({u["label"] for u in detectors})}


def test_relabel_equals_recomputation_from_raw_tallies(broden_dir, tmp_path):
    """tally.csv, units.json and summary.json after `relabel --definition lite` hold what plain
    numpy computes from stats.pt's int64 tallies: lite's A, the threshold's detectors, the
    paper's unique-detector count; not the original definition's numbers."""
    out = tmp_path / "out"
    netdissect.dissect(TinyNet(), broden_dir, ["conv1", "conv2"], quantile=0.02, workers=0,
                       progress=False, out=out, report=False)
    stats = {layer: torch.load(out / layer / "stats.pt", weights_only=True) for layer in ("conv1", "conv2")}
    # A threshold equal to one unit's exact lite score pins `score >= T` at the boundary.
    scores = sorted(u["score"] for u in recompute(stats["conv2"], 0.0, "lite")["units"])
    pinned = scores[8]
    assert scores[7] < pinned  # no tie: exactly 8 of the 16 units reach it
    differs = 0
    for threshold in (0.02, pinned):
        assert main(["relabel", str(out), "--iou-threshold", repr(threshold), "--definition", "lite"]) == 0
        for layer in ("conv1", "conv2"):
            want = recompute(stats[layer], threshold, "lite")
            original = recompute(stats[layer], threshold, "original")
            differs += sum(a["score"] != b["score"] for a, b in zip(want["units"], original["units"]))
            with open(out / layer / "tally.csv") as f:
                rows = list(csv.DictReader(f))
            order = sorted(range(len(want["units"])), key=lambda k: (-want["units"][k]["score"], k))
            assert [int(r["unit"]) for r in rows] == [k + 1 for k in order]
            for row in rows:
                k = int(row["unit"]) - 1
                u = want["units"][k]
                assert (row["label"], row["category"]) == (u["label"], u["category"])
                assert float(row["score"]) == pytest.approx(u["score"], rel=1e-12, abs=1e-15)
                for ci, c in enumerate(want["categories"]):
                    n = want["best"][k, ci]
                    assert row[f"{c}-label"] == (want["names"][n] if n > 0 else "")
                    assert int(row[f"{c}-activation"]) == want["act"][k, ci]  # lite's A, not original's
                    assert float(row[f"{c}-iou"]) == pytest.approx(want["best_iou"][k, ci], rel=1e-12, abs=1e-15)
            records = json.loads((out / layer / "units.json").read_text())
            for record, u in zip(records, want["units"]):
                assert (record["label"], record["category"], record["detector"]) == \
                    (u["label"], u["category"], u["detector"])
                assert record["score"] == pytest.approx(u["score"], rel=1e-12, abs=1e-15)
            summary = json.loads((out / layer / "summary.json").read_text())
            assert summary["detectors"] == want["detectors"]
            assert summary["unique_detectors"] == want["unique_detectors"]
            assert summary["unique_detectors_total"] == sum(want["unique_detectors"].values())
            assert summary["distinct_labels"] == want["distinct_labels"]
            assert summary["iou_threshold"] == threshold and summary["definition"] == "lite"
        # Non-trivial data: some units are detectors and some are not.
        found = [recompute(stats[layer], threshold, "lite") for layer in ("conv1", "conv2")]
        assert 0 < sum(r["detectors"] for r in found) < 8 + 16
        assert sum(sum(r["unique_detectors"].values()) for r in found) > 0
    assert json.loads((out / "conv2" / "summary.json").read_text())["detectors"] == 16 - 8
    assert differs > 0  # lite and original disagree on this data, so the check can tell them apart
