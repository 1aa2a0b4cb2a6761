"""The HTML report: files, sizes, counts, escaping, charts, strips, the mask overlay, the CLI
and the server."""
from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from markupsafe import escape
from PIL import Image

import netdissect
from conftest import HOSTILE, TinyNet, hostile_report
from netdissect.report import (StripMaker, dissection_html, display_label, make_server, mask_outline,
                               mask_overlay, write_report)
from netdissect.report.charts import iou_histogram
from netdissect.report.pages import Crumb, Strip, layer_page, script_json
from netdissect.report.strips import GAP, OUTLINE_RGB, thumbnails
from netdissect.report.strips import shrink_mask, upsample
from netdissect.report.views import LayerView, UnitView, layer_view

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
    from netdissect.cli import main

    assert main(["report", str(copy), "--dataset", str(moved), "--quiet"]) == 0
    assert len(list((copy / "conv2" / "strips").glob("*.jpg"))) == 16
    page = (copy / "conv2" / "index.html").read_text()
    assert headline_numbers(page)[:2] == (result["conv2"].counts()["detectors"], 16)


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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and r.read() == (out / "index.html").read_bytes()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/conv1/index.html", timeout=10) as r:
            assert r.status == 200 and b"units are detectors" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/conv1/strips/unit-0000.jpg", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(FileNotFoundError, match="netdissect report"):
        make_server(out / "conv1" / "strips", 0)


class Attributes(HTMLParser):
    """The attributes of every element of a page, as a browser's parser decodes them."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_layer_page_escapes_a_hostile_label():
    label = '"<img src=x onerror=alert(1)> & \'quoted\''
    counts = {"detectors": 1, "units": 1, "distinct_labels": 1, "iou_threshold": 0.04,
              "unique_detectors": {"object": 1}, "unique_detectors_total": 1, "definition": "original"}
    unit = UnitView(unit=0, label=label, category="object", iou=0.1, threshold=1.5, detector=True,
                    others=[("part", label, 0.05)], top_images=[f"{label}.jpg"])
    view = LayerView(layer=label, folder="layer", counts=counts, units=[unit], categories=["object", "part"],
                     concepts={"object": [(label, 1)], "part": []}, meta={"dataset": {"path": label}})
    page = layer_page(view, {0: Strip("strips/<u> 0.jpg", 10, 10)}, [Crumb(label, "../a b.html")],
                      label, ["a b/<c>.csv"], note=label)
    assert "<img src=x" not in page and '"<' not in page
    markup = re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.S)
    assert "'" not in markup.replace("unit's label", "")  # quotes escaped outside the JSON too
    escaped = str(escape(label))
    assert escaped == "&#34;&lt;img src=x onerror=alert(1)&gt; &amp; &#39;quoted&#39;"
    # In the title, the h1, the crumb, the note, the dataset, the card, the details table, the
    # bar graph's title and axis label and the data-label / title attributes.
    assert page.count(escaped) >= 10
    assert "\\u003cimg src=x onerror=alert(1)\\u003e \\u0026" in page  # the JSON block
    parsed = Attributes(page)
    card = next(a for tag, a in parsed.elements if tag == "article")
    assert card["data-label"] == label and card["id"] == "unit-0"
    strip = next(a for tag, a in parsed.elements if tag == "img")
    assert strip["src"] == "strips/%3Cu%3E%200.jpg" and strip["title"] == f"{label}.jpg"
    assert [tag for tag, _ in parsed.elements].count("img") == 1
    assert [tag for tag, _ in parsed.elements].count("script") == 2
    assert 'href="a%20b/%3Cc%3E.csv"' in page and 'href="../a%20b.html"' in page
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S)[1])
    assert data["units"][0]["label"] == label and data["layer"] == label


def test_iou_histogram_bars_count_the_units(report):
    out, result = report
    for layer in ("conv1", "conv2"):
        page = (out / layer / "index.html").read_text()
        counts = result[layer].counts()
        svg = re.search(r'<svg [^>]*aria-label="IoU histogram"[^>]*data-bins="(\d+)">(.*?)</svg>', page, re.S)
        assert svg, "IoU histogram missing"
        bins = int(svg[1])
        bars = re.findall(r'<rect class="bin[^"]*" x="[0-9.]+" y="[0-9.]+" width="[0-9.]+" height="([0-9.]+)" '
                          r'fill="(#[0-9a-f]+)" data-count="(\d+)"><title>IoU ([0-9.]+)-([0-9.]+): (\d+) units'
                          r"</title></rect>", svg[2])
        assert len(bars) == bins == svg[2].count("<rect")
        assert bins == len(iou_histogram(layer_view(result[layer])).bins)
        assert all(int(n) == int(t) for _, _, n, _, _, t in bars)  # title and data-count agree
        assert sum(int(n) for _, _, n, _, _, _ in bars) == counts["units"]
        blue = [(float(lo), int(n)) for _, fill, n, lo, _, _ in bars if fill == "#2f6fb0"]
        assert blue and sum(n for _, n in blue) == counts["detectors"] > 0
        assert all(lo >= counts["iou_threshold"] - 5e-4 for lo, _ in blue)  # titles round to 3 digits
        assert {fill for _, fill, *_ in bars} == {"#2f6fb0", "#b8b8bd"}
        # Consecutive bins, from 0, the tallest bar the full plot height.
        edges = [(float(lo), float(hi)) for _, _, _, lo, hi, _ in bars]
        assert edges[0][0] == 0 and all(abs(a[1] - b[0]) < 1e-9 for a, b in zip(edges, edges[1:]))
        assert max(float(h) for h, *_ in bars) == 150.0


def test_strip_pixels_are_the_overlay(report):
    out, result = report
    layer = result["conv2"]

    def covered(k: int) -> float:  # the part of unit k's first top image (32x32) under its mask
        up = torch.nn.functional.interpolate(layer.top_maps[k][:1, None].float(), size=(32, 32),
                                             mode="bilinear", align_corners=False)
        return float((up > float(layer.thresholds[k])).float().mean())

    # The unit whose first top image is the most covered by its mask: a real outline to check.
    k = max(range(layer.units), key=covered)
    threshold = float(layer.thresholds[k])
    assert 0 < covered(k) < 1
    images_dir = Path(layer.meta["dataset"]["path"]) / "images"
    maker = StripMaker(images_dir, result.image_names, height=112)
    strip = np.array(maker.strip(layer.top_indices[k], layer.top_maps[k], threshold, 10))
    assert strip.shape == (112, 10 * 112 + 9 * GAP, 3)

    row = int(layer.top_indices[k, 0])
    with Image.open(images_dir / result.image_names[row]) as im:
        pixels = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None]
    overlay, mask = mask_overlay(pixels, layer.top_maps[k][:1], threshold)
    # mask_overlay's rule, by hand: image * 0.2 outside the mask, the image inside.
    assert torch.equal(overlay[0], pixels[0].float() * torch.where(mask[0], 1.0, 0.2))
    assert 0 < int(mask.sum()) < mask.numel()
    thumb = thumbnails(overlay, mask, 112)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(strip[:, :112], thumb)
    assert (strip[:, 112:112 + GAP] == 255).all()  # the white gap
    outline = (thumb == OUTLINE_RGB).all(axis=-1)
    assert 0 < outline.sum() < 112 * 112 // 2
    plain = thumbnails(pixels.float(), torch.ones(1, 32, 32, dtype=torch.bool), 112)[0].permute(1, 2, 0).numpy()
    dimmed = ~outline & (thumb.astype(int).sum(-1) < plain.astype(int).sum(-1) - 30)
    assert dimmed.sum() > 100  # the pixels outside the mask really are darker
    # The file on disk is that strip, JPEG-compressed.
    with Image.open(out / "conv2" / "strips" / f"unit-{k:04d}.jpg") as im:
        saved = np.array(im.convert("RGB")).astype(int)
    assert np.abs(saved[:, :112] - thumb.astype(int)).mean() < 6


def test_strips_hold_the_top_images_in_order(report):
    """Every conv2 strip on disk shows, at its k-th place, units.json's k-th top image under the
    unit's own mask (its k-th top map from stats.pt, thresholded at its T_k); the top images
    are the 10 of largest spatial maximum of TinyNet's real conv2 output, best first."""
    out, result = report
    dataset = Path(result["conv2"].meta["dataset"]["path"])
    records = json.loads((out / "conv2" / "units.json").read_text())
    stats = torch.load(out / "conv2" / "stats.pt", weights_only=True)
    with open(dataset / "index.csv") as f:
        names = [row["image"] for row in csv.DictReader(f)]  # dataset row -> image, from the CSV

    def rgb(name: str) -> torch.Tensor:
        with Image.open(dataset / "images" / name) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)

    # The real activations, written here: ImageNet normalisation by hand, one image at a time.
    net = TinyNet().eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        maps = torch.cat([net.conv2(net.conv1(((rgb(n).float() / 255 - mean) / std)[None])) for n in names])
    peaks = maps.amax(dim=(2, 3))  # (images, units)
    for record in records:
        k = record["unit"]
        top = record["top_images"]
        assert [t["index"] for t in top] == torch.argsort(peaks[:, k], descending=True, stable=True)[:10].tolist()
        assert [t["image"] for t in top] == [names[t["index"]] for t in top]
        assert [t["activation"] for t in top] == pytest.approx(peaks[[t["index"] for t in top], k].tolist(), rel=1e-5)
        assert torch.allclose(stats["top_maps"][k], maps[[t["index"] for t in top], k], rtol=1e-5, atol=1e-6)
        pixels = torch.stack([rgb(t["image"]) for t in top])
        overlay, mask = mask_overlay(pixels, stats["top_maps"][k], record["threshold"])
        thumbs = thumbnails(overlay, mask, 112).permute(0, 2, 3, 1).numpy().astype(int)
        with Image.open(out / "conv2" / "strips" / f"unit-{k:04d}.jpg") as im:
            strip = np.array(im.convert("RGB")).astype(int)
        assert strip.shape[1] == len(top) * 112 + (len(top) - 1) * GAP
        for place in range(len(top)):
            region = strip[:, place * (112 + GAP):place * (112 + GAP) + 112]
            errors = [np.abs(region - t).mean() for t in thumbs]
            assert errors[place] < 6, (k, place, errors[place])  # JPEG noise only
            assert int(np.argmin(errors)) == place  # and no other top image fits this place better


def test_concept_bar_graph_draws_the_unique_detectors(report):
    """The layer page's bar graph (inline SVG) holds one bar per unique detector: per category,
    as many bars as counts()'s unique_detectors, each the concept's number of units whose best
    label in that category it is with IoU >= T (counted here from units.json), drawn at a height
    proportional to that number (the tallest 150 px)."""
    out, result = report
    for layer in ("conv1", "conv2"):
        page = (out / layer / "index.html").read_text()
        counts = result[layer].counts()
        threshold = counts["iou_threshold"]
        svg = re.search(r'<svg [^>]*aria-label="unique detectors per concept">(.*?)</svg>', page, re.S)
        assert svg, "concept bar graph missing"
        bars = re.findall(r'<g><title>(.*?) \(([a-z]+)\): (\d+) units?</title><rect x="[0-9.]+" y="[0-9.]+" '
                          r'width="[0-9.]+" height="([0-9.]+)" fill="(#[0-9a-f]+)"/>', svg[1])
        assert len(bars) == svg[1].count("<rect") == counts["unique_detectors_total"] > 0
        expected: dict[str, dict[str, int]] = {}
        for record in json.loads((out / layer / "units.json").read_text()):
            for cat, best in record["categories"].items():
                if best["label"] and best["iou"] >= threshold:
                    name = display_label(best["label"])
                    found = expected.setdefault(cat, {})
                    found[name] = found.get(name, 0) + 1
        # Units per (category, name); the three object labels all named HOSTILE are three bars.
        drawn: dict[str, dict[str, int]] = {}
        for name, cat, n, _, _ in bars:
            found = drawn.setdefault(cat, {})
            found[html.unescape(name)] = found.get(html.unescape(name), 0) + int(n)
        assert drawn == expected
        order = [cat for _, cat, _, _, _ in bars]
        per_category = {cat: order.count(cat) for cat in set(order)}
        assert per_category == {c: v for c, v in counts["unique_detectors"].items() if v}
        peak = max(int(n) for _, _, n, _, _ in bars)
        for _, cat, n, height, fill in bars:
            assert float(height) == pytest.approx(int(n) * 150 / peak, abs=0.051)
            assert re.search(rf'font-weight="600" fill="{fill}">{cat} \({per_category[cat]}\)</text>', svg[1])
        # Bars of one category are drawn together, most units first.
        assert order == sorted(order, key=order.index)
        for cat in drawn:
            heights = [int(n) for _, c, n, _, _ in bars if c == cat]
            assert heights == sorted(heights, reverse=True)


def blob_masks(n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Masks (n, H, W) of smooth blobs: random 5x5 maps upsampled and thresholded at 0."""
    maps = torch.randn(n, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0] > 0


@pytest.mark.parametrize("size,small", [((224, 224), (112, 112)), ((96, 144), (32, 48)),
                                        ((64, 64), (16, 16)), ((50, 70), (20, 28)), ((32, 32), (112, 112))])
def test_shrink_mask_is_the_area_rule(size, small):
    """A thumbnail pixel is in the mask when at least half the area it covers is: counted with
    integers at whole factors (2, 3, 4 here), 'area' interpolation otherwise; the same either way."""
    noise = torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) > 0.5
    for mask in (noise, blob_masks(3, size, 1), torch.ones(1, *size, dtype=torch.bool)):
        expected = torch.nn.functional.interpolate(mask[:, None].float(), size=small, mode="area")[:, 0] >= 0.5
        assert torch.equal(shrink_mask(mask, *small), expected)


def test_mask_outline_is_the_eroded_boundary():
    """mask_outline (boolean shifts) is the mask minus its 3x3 erosion, the border not outside."""
    noise = torch.rand(4, 40, 50, generator=torch.Generator().manual_seed(2)) > 0.4
    for mask in (noise, blob_masks(4, (40, 50), 3)):
        eroded = -torch.nn.functional.max_pool2d(-mask[:, None].float(), kernel_size=3, stride=1,
                                                 padding=1)[:, 0]
        assert torch.equal(mask_outline(mask), mask & (eroded < 0.5))


@pytest.mark.parametrize("small,size", [((7, 7), (224, 224)), ((6, 9), (227, 300)), ((13, 13), (113, 97)),
                                        ((2, 2), (4, 4)), ((7, 7), (7, 7)), ((9, 9), (4, 5))])
def test_upsample_is_bilinear(small, size):
    """upsample (two matrix products per map) is F.interpolate's bilinear rule, align_corners=False,
    up to float rounding, and each map's result does not depend on the maps beside it."""
    maps = torch.randn(4, *small, generator=torch.Generator().manual_seed(4))
    expected = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear",
                                               align_corners=False)[:, 0]
    up = upsample(maps, size)
    assert up.shape == (4, *size) and torch.allclose(up, expected, rtol=0, atol=1e-5)
    assert torch.equal(upsample(maps[2:3], size)[0], up[2])
    assert torch.equal(upsample(maps[[3, 1]], size), up[[3, 1]])


def strip_dataset(folder: Path, images: int = 8, side: int = 64) -> list[str]:
    """PNG images of smooth colour with some noise, side x side: names relative to folder."""
    g = torch.Generator().manual_seed(5)
    names = []
    for i in range(images):
        base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g) * 255, size=(side, side),
                                               mode="bilinear", align_corners=False)[0]
        pixels = (base + torch.randn(3, side, side, generator=g) * 20).round().clamp(0, 255).to(torch.uint8)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(folder / f"im{i}.png")
        names.append(f"im{i}.png")
    return names


def test_strip_at_a_whole_factor_is_the_overlay(tmp_path):
    """64x64 images in 32-pixel strips (the integer paths): each thumbnail is exactly
    thumbnails(mask_overlay(...)) of its image, and within one level of the float overlay
    shrunk in floats and rounded once (the thumbnail shrinks the overlay rounded to 8 bits)."""
    names = strip_dataset(tmp_path)
    maker = StripMaker(tmp_path, names, height=32)
    for i, name in enumerate(names):
        with Image.open(tmp_path / name) as im:
            assert torch.equal(maker.image(i), torch.from_numpy(np.array(im)).permute(2, 0, 1))
    indices = torch.tensor([3, 0, 5, -1, 2])
    maps = torch.randn(5, 4, 4, generator=torch.Generator().manual_seed(6))
    strip = np.array(maker.strip(indices, maps, 0.3, 10))
    kept = [0, 1, 2, 4]
    assert strip.shape == (32, 4 * 32 + 3 * GAP, 3)
    images = torch.stack([maker.image(int(indices[i])) for i in kept])
    overlay, mask = mask_overlay(images, maps[kept], 0.3)
    assert 0 < int(mask.sum()) < mask.numel()
    thumbs = thumbnails(overlay, mask, 32).permute(0, 2, 3, 1).numpy()
    for place, thumb in enumerate(thumbs):
        assert np.array_equal(strip[:, place * (32 + GAP):place * (32 + GAP) + 32], thumb)
        if place:
            assert (strip[:, place * (32 + GAP) - GAP:place * (32 + GAP)] == 255).all()
    edge = mask_outline(shrink_mask(mask, 32, 32)).numpy()
    assert edge.any() and (thumbs[edge] == OUTLINE_RGB).all()
    floats = torch.nn.functional.interpolate(overlay, size=(32, 32), mode="bilinear", align_corners=False,
                                             antialias=True).round().permute(0, 2, 3, 1).numpy()
    assert np.abs(thumbs.astype(int) - floats)[~edge].max() <= 1


def test_encoded_strips_on_threads_are_the_strips_one_by_one(tmp_path):
    """encoded_strips yields every unit in order, the same bytes on 1 or 3 threads and with a
    cache too small for the images in use, each the JPEG of the unit's strip (None for a unit
    without images)."""
    names = strip_dataset(tmp_path)
    g = torch.Generator().manual_seed(7)
    indices = torch.stack([torch.randperm(len(names), generator=g)[:5] for _ in range(12)])
    indices[4] = -1  # no images
    indices[7, 3:] = -1  # fewer than five
    maps = torch.randn(12, 5, 4, 4, generator=g)
    thresholds = torch.rand(12, generator=g) * 0.5
    units = [(k, indices[k], maps[k], thresholds[k]) for k in range(12)]
    one = StripMaker(tmp_path, names, height=32, workers=1)
    many = StripMaker(tmp_path, names, height=32, workers=3)
    tiny = StripMaker(tmp_path, names, height=32, workers=2, cache_size=2)
    serial, threaded = list(one.encoded_strips(units, 4)), list(many.encoded_strips(units, 4))
    assert [u[0] for u in threaded] == list(range(12)) and threaded == serial
    assert list(tiny.encoded_strips(units, 4)) == serial and len(tiny._cache) <= 2
    assert threaded[4][1] is None
    for k, data, width, height in threaded:
        if k == 4:
            continue
        strip = many.strip(indices[k], maps[k], float(thresholds[k]), 4)
        assert data == many.encode(strip) and (width, height) == strip.size
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.size == strip.size
    assert threaded[7][2] == 3 * 32 + 2 * GAP
