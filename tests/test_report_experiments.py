"""Experiments in the report's overview: listed when written under an existing report, kept
when the report is rebuilt, escaped, and a broken experiment file only warns."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from conftest import TinyNet, make_broden
from netdissect import dissect
from netdissect.report import write_report
from netdissect.report.experiments import find_experiments, overview_pages_above, refresh_overviews
from netdissect.report.pages import EXPERIMENTS_BEGIN, EXPERIMENTS_END
from test_experiments import QUIET, TINY_CLASSES, parse


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A dissection with its report (TinyNet conv2 on a small generated Broden)."""
    root = tmp_path_factory.mktemp("repexp")
    broden = make_broden(root / "broden", images=24, seed=5)
    out = root / "run"
    dissect(TinyNet(), broden, ["conv2"], out=out, **QUIET)
    return out


def section(page: Path) -> str:
    """The experiments part of an overview page."""
    text = page.read_text()
    return text[text.index(EXPERIMENTS_BEGIN):text.index(EXPERIMENTS_END)]


def outside(page: Path) -> str:
    """An overview page without its experiments part."""
    text = page.read_text()
    return text[:text.index(EXPERIMENTS_BEGIN)] + text[text.index(EXPERIMENTS_END):]


def test_experiments_are_listed_in_an_existing_report(run, tmp_path, capsys):
    report = tmp_path / "run"
    shutil.copytree(run, report)
    index = report / "index.html"
    before = outside(index)
    assert "<h2>Experiments</h2>" not in index.read_text()

    rotate_out = report / "experiments" / "rotate"
    args = parse(["rotate", "--dataset", str(run.parent / "broden"), "--model", "conftest:tiny_net",
                  "--layer", "conv2", "--powers", "0,1", "--out", str(rotate_out), "--workers", "0",
                  "--quiet", "--iou-threshold", "0.001"])
    assert args.func(args) == 0
    assert f"listed in the report: {index.resolve()}" in capsys.readouterr().out
    powers = json.loads((rotate_out / "rotate.json").read_text())["powers"]
    listed = section(index)
    assert "<h2>Experiments</h2>" in listed
    text = ", ".join(f"a={p['a']:g}: {p['unique_detectors_total']}" for p in powers)
    assert f"Unique detectors by rotation power ({text}); seed 0." in listed
    assert '<img src="experiments/rotate/rotate.png"' in listed
    for name in ("rotate.json", "rotate.csv", "rotate.svg"):
        assert f'href="experiments/rotate/{name}"' in listed
    assert outside(index) == before  # only the experiments part was rewritten

    ablate_out = report / "ablate"
    args = parse(["ablate", "--data", str(run.parent / "broden"), "--model", "conftest:tiny_net",
                  "--layer", "conv2", "--class-names", ",".join(TINY_CLASSES), "--counts", "1,2",
                  "--draws", "2", "--out", str(ablate_out), "--quiet"])
    assert args.func(args) == 0
    ablation = json.loads((ablate_out / "ablate.json").read_text())
    listed = section(index)
    assert f"Balanced accuracy {ablation['balanced_accuracy']:.3f}." in listed
    beach = ablation["classes"]["beach-s"]["curve"][-1]
    assert (f"beach-s: {beach['baseline']:.2f} → {beach['removed_top']:.2f} without its top 2 units "
            f"({beach['removed_random']:.2f} without 2 random units)") in listed
    # Both experiments, in path order; rebuilding the report keeps them.
    assert [e.kind for e in find_experiments(report)] == ["ablate", "rotate"]
    write_report(report, progress=False)
    assert section(index) == listed


def test_compare_lists_itself_in_the_report_of_each_run_above(run, tmp_path):
    runs = tmp_path / "runs"
    for name in ("early", "late"):
        shutil.copytree(run, runs / name)
    write_report(runs, progress=False)  # runs/index.html compares both; each run has its own
    out = runs / "late" / "compare-early-late"
    args = parse(["compare", str(runs / "early"), str(runs / "late"), "--out", str(out)])
    assert args.func(args) == 0
    summary = json.loads((out / "compare.json").read_text())
    status = summary["unit_status"][0]
    assert status["kept"] == 16 - status["none"]  # the same weights: every label kept
    expected = (f"Unique detectors (early: {summary['runs'][0]['unique_detectors_total']}, late: "
                f"{summary['runs'][1]['unique_detectors_total']}). Unit concepts early → late: "
                f"{status['kept']} kept, 0 changed, 0 gained, 0 lost.")
    assert overview_pages_above(out) == [(runs / "late" / "index.html").resolve(),
                                         (runs / "index.html").resolve()]
    assert expected in section(runs / "index.html")
    assert 'src="late/compare-early-late/unique_detectors.png"' in section(runs / "index.html")
    assert expected in section(runs / "late" / "index.html")
    assert 'src="compare-early-late/unique_detectors.png"' in section(runs / "late" / "index.html")
    assert "<h2>Experiments</h2>" not in (runs / "early" / "index.html").read_text()


def test_hostile_and_broken_experiment_files(run, tmp_path):
    report = tmp_path / "run"
    shutil.copytree(run, report)
    hostile = report / "<i onmouseover=x>"
    hostile.mkdir()
    (hostile / "rotate.json").write_text(json.dumps({
        "layer": "<img src=x onerror=alert(1)>", "seed": 0,
        "powers": [{"a": 0.0, "unique_detectors_total": 3}]}))
    broken = report / "broken"
    broken.mkdir()
    (broken / "ablate.json").write_text('{"layer": "conv2"')  # cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert refresh_overviews(hostile) == [(report / "index.html").resolve()]
    assert any("broken/ablate.json" in str(w.message) and "netdissect ablate" in str(w.message)
               for w in caught)
    listed = section(report / "index.html")
    assert "<i onmouseover" not in listed and "<img src=x" not in listed
    assert "&lt;img src=x onerror=alert(1)&gt;" in listed
    assert 'href="%3Ci%20onmouseover%3Dx%3E/rotate.json"' in listed
    assert "broken" not in listed
    assert "a=0: 3" in listed


def test_no_report_above_means_nothing_rewritten(tmp_path):
    (tmp_path / "index.html").write_text("<p>someone else's page</p>")
    assert overview_pages_above(tmp_path / "exp") == []
    assert refresh_overviews(tmp_path / "exp") == []
    assert (tmp_path / "index.html").read_text() == "<p>someone else's page</p>"
