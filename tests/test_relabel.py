"""`netdissect relabel` recomputes labels and counts from saved tallies, equal to a fresh run."""
from __future__ import annotations

import json

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
