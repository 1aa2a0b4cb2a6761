"""Experiments in the report's overview, listed from their experiment.json records: listed
when written under an existing report, kept when the report is rebuilt, escaped, and a broken
record only warns.  The experiment folders are written here with `write_record`, as an
experiment writes them; one test runs a real experiment through the CLI."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from markupsafe import escape
from PIL import Image

from conftest import TinyNet, make_broden
from netdissect import dissect
from netdissect.experiments.record import ExperimentRecord, write_record
from netdissect.report import find_experiments, refresh_overviews, write_report
from netdissect.report.experiments import overview_pages_above
from netdissect.report.pages import EXPERIMENTS_BEGIN, EXPERIMENTS_END

QUIET = dict(progress=False, workers=0, batch_size=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A dissection with its report (TinyNet conv2 on a small generated Broden)."""
    root = tmp_path_factory.mktemp("repexp")
    broden = make_broden(root / "broden", images=24, seed=5)
    out = root / "run"
    dissect(TinyNet(), broden, ["conv2"], out=out, **QUIET)
    write_report(out, progress=False)
    return out


def experiment(folder: Path, kind: str, summary: str, figure: str = "", tables: tuple = (),
               layer: str = "conv2", missing: tuple = ()) -> Path:
    """Write an experiment's outputs as an experiment does: a figure (PNG and SVG), its tables
    and its record.  `missing`: files the record names that are not written."""
    folder.mkdir(parents=True, exist_ok=True)
    if figure:
        Image.new("RGB", (8, 4), (200, 30, 30)).save(folder / f"{figure}.png")
        (folder / f"{figure}.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    for table in tables:
        if table not in missing:
            (folder / table).write_text("a,b\n1,2\n")
    write_record(folder, ExperimentRecord(kind, layer, summary, figure, list(tables)))
    return folder


def section(page: Path) -> str:
    """The experiments part of an overview page."""
    text = page.read_text()
    return text[text.index(EXPERIMENTS_BEGIN):text.index(EXPERIMENTS_END)]


def outside(page: Path) -> str:
    """An overview page without its experiments part."""
    text = page.read_text()
    return text[:text.index(EXPERIMENTS_BEGIN)] + text[text.index(EXPERIMENTS_END):]


def test_experiments_are_listed_in_an_existing_report(run, tmp_path):
    report = tmp_path / "run"
    shutil.copytree(run, report)
    index = report / "index.html"
    before = outside(index)
    assert "<h2>Experiments</h2>" not in index.read_text()
    assert section(index) == EXPERIMENTS_BEGIN  # just the markers

    rotate_out = experiment(report / "experiments" / "rotate", "rotate",
                            "Unique detectors by rotation power (a=0: 5, a=1: 2); seed 0.",
                            "rotate", ("rotate.json", "rotate.csv"))
    assert refresh_overviews(rotate_out) == [index.resolve()]
    listed = section(index)
    assert "<h2>Experiments</h2>" in listed
    assert "Unique detectors by rotation power (a=0: 5, a=1: 2); seed 0." in listed
    assert '<figure class="experiment" data-kind="rotate">' in listed
    assert '<a href="experiments/rotate/rotate.svg"><img src="experiments/rotate/rotate.png"' in listed
    for name in ("rotate.json", "rotate.csv", "rotate.png", "rotate.svg"):
        assert f'href="experiments/rotate/{name}"' in listed
    assert outside(index) == before  # only the experiments part was rewritten

    # Any kind of experiment is listed from its record; only files that exist are linked.
    experiment(report / "ablate", "ablate", "Balanced accuracy 0.625. beach-s: 0.80 → 0.40.",
               "", ("ablate.json", "ablate_curve.csv"), missing=("ablate_curve.csv",))
    experiment(report / "seg", "segment", "A new kind.", "nofigure-written", ("masks.csv",))
    for ext in ("png", "svg"):
        (report / "seg" / f"nofigure-written.{ext}").unlink()
    assert refresh_overviews(report / "ablate") == [index.resolve()]
    listed = section(index)
    assert "Balanced accuracy 0.625. beach-s: 0.80 → 0.40." in listed
    assert 'href="ablate/ablate.json"' in listed and "ablate_curve.csv" not in listed
    assert '<figure class="experiment" data-kind="segment"><figcaption>' in listed
    assert "nofigure-written" not in listed and 'href="seg/masks.csv"' in listed
    # Every experiment, in path order; rebuilding the report keeps them.
    found = find_experiments(report)
    assert [(e.kind, e.folder) for e in found] == [("ablate", "ablate"), ("rotate", "experiments/rotate"),
                                                    ("segment", "seg")]
    assert found[1].figure == "experiments/rotate/rotate.png"
    assert found[1].tables == ["experiments/rotate/rotate.json", "experiments/rotate/rotate.csv"]
    assert found[0].figure == "" and found[0].tables == ["ablate/ablate.json"]
    write_report(report, progress=False)
    assert section(index) == listed
    assert outside(index) == before


def test_nested_experiment_is_listed_in_each_report_above(run, tmp_path):
    runs = tmp_path / "runs"
    for name in ("early", "late"):
        shutil.copytree(run, runs / name)
    write_report(runs, progress=False)  # runs/index.html compares both; each run has its own
    summary = "Unique detectors (early: 4, late: 4). Unit concepts early → late: 12 kept."
    out = experiment(runs / "late" / "compare-early-late", "compare", summary, "unique_detectors",
                     ("compare.json", "counts.csv"))
    pages = [(runs / "late" / "index.html").resolve(), (runs / "index.html").resolve()]
    assert overview_pages_above(out) == pages
    assert refresh_overviews(out) == pages
    assert summary in section(runs / "index.html")
    assert 'src="late/compare-early-late/unique_detectors.png"' in section(runs / "index.html")
    assert 'href="late/compare-early-late/counts.csv"' in section(runs / "index.html")
    assert summary in section(runs / "late" / "index.html")
    assert 'src="compare-early-late/unique_detectors.png"' in section(runs / "late" / "index.html")
    assert "<h2>Experiments</h2>" not in (runs / "early" / "index.html").read_text()
    # Rebuilding the all-runs report lists it again in both.
    write_report(runs, progress=False)
    assert summary in section(runs / "index.html") and summary in section(runs / "late" / "index.html")
    assert "<h2>Experiments</h2>" not in (runs / "early" / "index.html").read_text()


def test_hostile_and_broken_experiment_records(run, tmp_path):
    report = tmp_path / "run"
    shutil.copytree(run, report)
    before = outside(report / "index.html")
    hostile = experiment(report / "<i onmouseover=x>", "rotate<script>", "a=0: 3 & <b>bold</b>",
                         "fig ure", ("rotate.json", "../../outside.csv"),
                         layer="<img src=x onerror=alert(1)>")
    (tmp_path / "outside.csv").write_text("a\n")  # exists, but outside the experiment folder
    broken = report / "broken"
    broken.mkdir()
    (broken / "experiment.json").write_text('{"kind": "ablate", "layer": "conv2"')  # cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert refresh_overviews(hostile) == [(report / "index.html").resolve()]
    assert any("broken/experiment.json" in str(w.message) and "not listed" in str(w.message)
               for w in caught)
    listed = section(report / "index.html")
    assert "<i onmouseover" not in listed and "<img src=x" not in listed
    assert "<script" not in listed and "<b>bold" not in listed
    assert "&lt;img src=x onerror=alert(1)&gt;" in listed
    assert "a=0: 3 &amp; &lt;b&gt;bold&lt;/b&gt;" in listed
    assert 'data-kind="rotate&lt;script&gt;"' in listed
    assert 'href="%3Ci%20onmouseover%3Dx%3E/rotate.json"' in listed
    assert 'src="%3Ci%20onmouseover%3Dx%3E/fig%20ure.png"' in listed
    assert "outside.csv" not in listed
    assert "broken" not in listed
    assert outside(report / "index.html") == before


def test_no_report_above_means_nothing_rewritten(tmp_path):
    (tmp_path / "index.html").write_text("<p>someone else's page</p>")
    experiment(tmp_path / "exp", "rotate", "summary", "fig", ("t.csv",))
    assert overview_pages_above(tmp_path / "exp") == []
    assert refresh_overviews(tmp_path / "exp") == []
    assert (tmp_path / "index.html").read_text() == "<p>someone else's page</p>"


def test_an_experiment_run_by_the_cli_is_listed(run, tmp_path, capsys):
    """`netdissect rotate` writes its record under the report and lists itself there."""
    from netdissect.cli import main

    report = tmp_path / "run"
    shutil.copytree(run, report)
    index = report / "index.html"
    before = outside(index)
    out = report / "rotate"
    assert main(["rotate", "--dataset", str(run.parent / "broden"), "--model", "conftest:tiny_net",
                 "--layer", "conv2", "--powers", "0,1", "--out", str(out), "--workers", "0",
                 "--quiet", "--iou-threshold", "0.001"]) == 0
    assert f"listed in the report: {index.resolve()}" in capsys.readouterr().out
    record = json.loads((out / "experiment.json").read_text())
    assert record["kind"] == "rotate" and record["layer"] == "conv2"
    listed = section(index)
    assert str(escape(record["summary"])) in listed
    assert f'<img src="rotate/{record["figure"]}.png"' in listed
    for table in record["tables"]:
        assert f'href="rotate/{table}"' in listed
    assert outside(index) == before
