"""The files the method decides are byte-identical to those of netdissect 752bbe6.

tests/golden/ was written by tests/golden/make_golden.py with the version before the redesign
of issue 11, on the same generated dataset as the `broden_dir` fixture and the same TinyNet.
A change of a number, a label, a column or a key order in tally.csv / units.json, or of a
count in summary.json, fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import netdissect
from conftest import TinyNet

GOLDEN = Path(__file__).parent / "golden"
from golden.make_golden import CONFIGS, COUNT_KEYS, LAYERS  # noqa: E402


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_match_the_version_before_the_redesign(broden_dir, tmp_path, name):
    out = tmp_path / name
    netdissect.dissect(TinyNet(), broden_dir, LAYERS, out=out, workers=0, progress=False,
                       report=False, **CONFIGS[name])
    for layer in LAYERS:
        golden = GOLDEN / name / layer
        for file in ("tally.csv", "units.json"):
            assert (out / layer / file).read_bytes() == (golden / file).read_bytes(), (name, layer, file)
        summary = json.loads((out / layer / "summary.json").read_text())
        assert {k: summary[k] for k in COUNT_KEYS} == json.loads((golden / "counts.json").read_text())
