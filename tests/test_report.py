"""The HTML report: files, sizes, counts, escaping, the mask overlay, the CLI and the server."""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

import netdissect
from conftest import LABELS, TinyNet, make_broden, write_metadata
from netdissect.report import (add_report_parser, add_serve_parser, dissection_html, display_label,
                               make_server, mask_outline, mask_overlay, write_report)
from netdissect.report.pages import script_json

HOSTILE = "<script>alert(1)</script>"


def hostile_report(root: Path) -> tuple[Path, netdissect.Dissection]:
    """Dissect TinyNet on a generated dataset whose object labels are all named HOSTILE
    (so every unit's best object label is that name), then write the report into OUT."""
    dataset = make_broden(root / "broden", images=40)
    labels = {n: ((HOSTILE, cats) if "object" in cats and n in (4, 5, 6) else (name, cats))
              for n, (name, cats) in LABELS.items()}
    write_metadata(dataset, labels)
    # A random net scores IoUs near 0.003: a low IoU threshold gives the charts detectors.
    result = netdissect.dissect(TinyNet(), dataset, ["conv1", "conv2"], out=root / "out",
                                iou_threshold=0.002, batch_size=20, workers=0, progress=False)
    write_report(root / "out", progress=False)
    return root / "out", result


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, netdissect.Dissection]:
    return hostile_report(tmp_path_factory.mktemp("report"))


def headline_numbers(page: str) -> tuple[int, int, int, float]:
    m = re.search(r'id="headline">(\d+) of (\d+) units are detectors, covering (\d+) concepts '
                  r"\(IoU &gt;= ([0-9.]+)\)", page)
    assert m, "headline missing"
    return int(m[1]), int(m[2]), int(m[3]), float(m[4])


def test_report_files_and_sizes(report):
    out, result = report
    assert (out / "index.html").is_file()
    for layer, units in (("conv1", 8), ("conv2", 16)):
        strips = sorted((out / layer / "strips").glob("unit-*.jpg"))
        assert [p.name for p in strips] == [f"unit-{k:04d}.jpg" for k in range(units)]
        for p in strips:
            with Image.open(p) as im:
                assert im.format == "JPEG" and im.height == 112
                assert im.width == 10 * 112 + 9 * 2  # ten 32x32 images grown to 112 px, 2 px gaps
            assert p.stat().st_size < 40_000
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{layer}-concepts.{ext}").stat().st_size > 1000
    for ext in ("png", "svg"):
        assert (out / "figures" / f"layers.{ext}").stat().st_size > 1000
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix != ".pt")
    assert total < 3_000_000


def test_layer_page_counts_equal_counts(report):
    out, result = report
    for layer in ("conv1", "conv2"):
        page = (out / layer / "index.html").read_text()
        counts = result[layer].counts()
        assert headline_numbers(page) == (counts["detectors"], counts["units"],
                                          counts["distinct_labels"], counts["iou_threshold"])
        assert page.count('<article class="card') == counts["units"]
        assert sorted(int(u) for u in re.findall(r'id="unit-(\d+)"', page)) == list(range(counts["units"]))
        # The bar graph has one group per category with detectors, titled "category (n)".
        assert counts["unique_detectors_total"] > 0
        groups = dict(re.findall(r'font-weight="600" fill="[^"]+">([a-z]+) \((\d+)\)</text>', page))
        assert {k: int(v) for k, v in groups.items()} == \
            {k: v for k, v in counts["unique_detectors"].items() if v}
        data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S)[1])
        assert [u["unit"] for u in data["units"]] == list(range(counts["units"]))
        records = result[layer].unit_records()
        assert [round(u["iou"], 9) for u in data["units"]] == [round(r["score"], 9) for r in records]
        # Cards are written best IoU first, as the page's default sort shows them.
        ious = [float(v) for v in re.findall(r'data-iou="([0-9.]+)"', page)]
        assert ious == sorted(ious, reverse=True)
        # Self-contained: no external resource (the SVG namespace is a name, not a fetch).
        assert not re.search(r"https?://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))


def test_overview_links_every_layer(report):
    out, result = report
    page = (out / "index.html").read_text()
    for layer in ("conv1", "conv2"):
        assert f'href="{layer}/index.html"' in page
        total = result[layer].counts()["unique_detectors_total"]
        assert f"{total} unique detectors</title>" in page


def test_hostile_label_is_escaped(report):
    out, result = report
    assert any(HOSTILE in r["categories"]["object"]["label"] for r in result["conv2"].unit_records())
    for page_path in [out / "index.html", out / "conv1" / "index.html", out / "conv2" / "index.html"]:
        page = page_path.read_text()
        assert HOSTILE not in page
        assert page.count("<script") == page.count("</script>") == (2 if page_path.parent != out else 0)
    page = (out / "conv2" / "index.html").read_text()
    assert html.escape(HOSTILE) in page
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page
    assert HOSTILE not in dissection_html(result)


def test_script_json_cannot_close_the_script():
    text = script_json({"label": "</script><b>&amp;"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"label": "</script><b>&amp;"}


def test_mask_overlay_by_hand():
    # A 2x2 map upsampled bilinearly (align_corners=False) to 4x4 is, in its first row,
    # [1, 0.75, 0.25, 0] and in its second [0.75, 0.5625, 0.1875, 0]: > 0.5 keeps the top-left 2x2.
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    images = torch.full((1, 3, 4, 4), 100.0)
    overlay, mask = mask_overlay(images, maps, 0.5)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(mask[0], expected)
    assert torch.equal(overlay[0, 1], torch.where(expected, 100.0, 20.0))
    _, mask = mask_overlay(images, maps, 0.7)  # 0.75 > 0.7 too: an L of three pixels
    assert mask[0].sum() == 3 and mask[0, 0, 1] and mask[0, 1, 0] and not mask[0, 1, 1]


def test_mask_outline_by_hand():
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 1:4, 1:4] = True
    edge = mask_outline(mask)[0]
    assert edge.sum() == 8 and not edge[2, 2] and edge[1, 1] and not edge[0, 0]
    full = torch.ones(1, 3, 3, dtype=torch.bool)
    assert mask_outline(full).sum() == 0  # the image border is not an edge


def test_display_label():
    assert display_label("red-c") == "red"
    assert display_label("living_room-s") == "living room"
    assert display_label("car") == "car"


def test_report_command_rebuilds_and_takes_dataset(report, tmp_path):
    out, result = report
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for p in [copy / "index.html", *copy.glob("*/index.html"), *copy.glob("*/strips/*.jpg")]:
        p.unlink()
    moved = tmp_path / "moved-broden"
    shutil.copytree(result["conv1"].meta["dataset"]["path"], moved)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_report_parser(sub)
    add_serve_parser(sub)
    args = parser.parse_args(["report", str(copy), "--dataset", str(moved), "--quiet"])
    assert args.func(args) == 0
    assert len(list((copy / "conv2" / "strips").glob("*.jpg"))) == 16
    page = (copy / "conv2" / "index.html").read_text()
    assert headline_numbers(page)[:2] == (result["conv2"].counts()["detectors"], 16)
    args = parser.parse_args(["serve", str(copy), "--port", "0"])
    assert args.port == 0 and args.func.__name__ == "run_serve"


def test_report_without_dataset_still_writes_pages(report, tmp_path):
    out, result = report
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("strips", "*.html"))
    summary = json.loads((copy / "conv1" / "summary.json").read_text())
    summary["dataset"]["path"] = str(tmp_path / "nowhere")
    (copy / "conv1" / "summary.json").write_text(json.dumps(summary))
    with pytest.warns(UserWarning, match="could not be read"):
        write_report(copy, progress=False)
    page = (copy / "conv1" / "index.html").read_text()
    assert page.count('<article class="card') == 8 and "no strip" in page


def test_report_of_several_runs(report, tmp_path):
    out, _ = report
    for name in ("run-a", "run-b"):
        shutil.copytree(out, tmp_path / "runs" / name, ignore=shutil.ignore_patterns("strips", "*.html"))
    index = write_report(tmp_path / "runs", progress=False)
    page = index.read_text()
    for name in ("run-a", "run-b"):
        for layer in ("conv1", "conv2"):
            assert f'href="{name}/{layer}/index.html"' in page
            assert (tmp_path / "runs" / name / layer / "index.html").is_file()
        assert 'href="../index.html"' in (tmp_path / "runs" / name / "index.html").read_text()
    assert (tmp_path / "runs" / "figures" / "layers.svg").is_file()


def test_notebook_summary(report):
    _, result = report
    text = dissection_html(result, top=3)
    assert text.count("data:image/jpeg;base64,") == 3
    assert "units are detectors" in text and "<code>conv2</code>" in text
    with pytest.raises(KeyError):
        dissection_html(result, layer="nope")


def test_serve_binds_localhost(report):
    out, _ = report
    server = make_server(out, 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/conv1/index.html", timeout=10) as r:
            assert r.status == 200 and b"units are detectors" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/conv1/strips/unit-0000.jpg", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FileNotFoundError, match="netdissect report"):
        make_server(out / "conv1" / "strips", 0)
