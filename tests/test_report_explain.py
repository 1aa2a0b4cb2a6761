"""The report's compositional explanations: a layer folder holding the explanations.json of
`netdissect explain` gets a formula line on every explained unit's card, a chart of the mean
IoU against formula length and links to the files; a malformed file is a warning and no
formulas; a layer without one is drawn as before."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import HOSTILE, hostile_report
from netdissect.report import display_label, write_report
from netdissect.report.charts import length_bars
from netdissect.report.views import attach_explanations, formula_display, layer_view

IMG = "<img src=x onerror=alert(1)>"
MEANS = [0.0123456789012, 0.0234567890123, 0.0345678901234]
SETTINGS = {"length": 3, "beam": 5, "penalty": 1.0, "quantile": 0.005}
NO_FORMULA = 5  # the 0-based unit given an empty formula


def text_of(tree) -> str:
    """The formula text as `netdissect explain` writes it (raw label names)."""
    if isinstance(tree, str):
        return tree
    if tree[0] == "not":
        return f"NOT {text_of(tree[1])}"
    return f"({text_of(tree[1])} {tree[0].upper()} {text_of(tree[2])})"


def explanation(record: dict) -> tuple[dict, str | None]:
    """A plausible explanations.json record for a unit of units.json, built from its own label,
    and the display text the card should show (None without a formula)."""
    k, label = record["unit"], record["label"]
    if k == NO_FORMULA or not label:
        return ({"unit": k + 1, "formula": "", "tree": None, "iou": 0, "score": 0, "length": 0,
                 "single_label": "", "single_iou": 0, "iou_by_length": [0, 0, 0]}, None)
    shown = display_label(label)
    tree, length, expected = [
        (["or", label, "blue-c"], 2, f"({shown} OR blue)"),
        (["and", ["or", label, "water_body-s"], ["not", IMG]], 4, f"(({shown} OR water body) AND NOT {IMG})"),
        (label, 1, shown),
    ][k % 3]
    iou = round(min(1.0, record["score"] + 0.001 * (k + 1)), 6)
    return ({"unit": k + 1, "formula": text_of(tree), "tree": tree, "iou": iou, "score": iou,
             "length": length, "single_label": label, "single_iou": record["score"],
             "iou_by_length": [record["score"], iou, iou]}, expected)


def write_explanations(layer_dir: Path, layer: str) -> dict[int, tuple[dict, str | None]]:
    """explanations.json and .csv for every unit of `layer_dir`; returns, per 0-based unit, its
    record and the display text expected on its card."""
    units = json.loads((layer_dir / "units.json").read_text())
    expected = {r["unit"]: explanation(r) for r in units}
    records = [record for record, _ in expected.values()]
    (layer_dir / "explanations.json").write_text(json.dumps(
        {"layer": layer, "settings": SETTINGS, "mean_iou_by_length": MEANS, "units": records}))
    with open(layer_dir / "explanations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["unit", "formula", "iou", "length"])
        writer.writerows([r["unit"], r["formula"], r["iou"], r["length"]] for r in records)
    return expected


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """The hostile report, its pages as first written, then rewritten once conv2 holds
    explanations; yields (out, dissection, pages before, expected per conv2 unit)."""
    out, result = hostile_report(tmp_path_factory.mktemp("explain"))
    before = {layer: (out / layer / "index.html").read_text() for layer in ("conv1", "conv2")}
    expected = write_explanations(out / "conv2", "conv2")
    write_report(out, progress=False)
    return out, result, before, expected


class Cards(HTMLParser):
    """Per unit card of a page (by its 0-based unit): its text as a browser shows it and the
    attributes of the elements inside it; and the attributes of every element of the page."""

    def __init__(self, text: str):
        super().__init__()
        self.text: dict[int, list[str]] = {}
        self.inside: dict[int, list[tuple[str, dict]]] = {}
        self.elements: list[tuple[str, dict]] = []
        self.card: int | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "article":
            self.card = int(attrs["data-unit"])
            self.text[self.card], self.inside[self.card] = [], []
        elif self.card is not None:
            self.inside[self.card].append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "article":
            self.card = None

    def handle_data(self, data):
        if self.card is not None:
            self.text[self.card].append(data)

    def card_text(self, unit: int) -> str:
        return "".join(self.text[unit])


def length_chart(page: str):
    return re.search(r'<svg [^>]*aria-label="mean IoU against formula length"[^>]*>(.*?)</svg>', page, re.S)


def test_formula_display():
    assert formula_display(["and", ["or", "water", "river"], ["not", "blue-c"]]) == \
        "((water OR river) AND NOT blue)"
    assert formula_display("living_room-s") == "living room"
    assert formula_display(["or", ["and", "a", "b-c"], "c_d"]) == "((a AND b) OR c d)"
    for bad in (["xor", "a", "b"], ["and", "a"], ["or", "a", 3], 3, {"a": 1}):
        with pytest.raises(ValueError):
            formula_display(bad)


def test_cards_show_their_formula(explained):
    out, result, _, expected = explained
    page = (out / "conv2" / "index.html").read_text()
    cards = Cards(page)
    assert sorted(cards.text) == list(range(16))
    shown = [k for k, (_, text) in expected.items() if text is not None]
    assert len(shown) >= 10 and NO_FORMULA not in shown
    for k, (record, text) in expected.items():
        lines = [a for tag, a in cards.inside[k] if "formula" in a.get("class", "").split()]
        if text is None:
            assert lines == [] and "formula" not in cards.card_text(k)
            continue
        assert len(lines) == 1
        assert f"formula {text} · IoU {record['iou']:.3f} · length {record['length']}" in cards.card_text(k)
        title = next(a["title"] for tag, a in cards.inside[k] if "formula-text" in a.get("class", "").split())
        assert title == record["formula"]  # the text as the file writes it
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S)[1])
    assert [u["formula"] for u in data["units"]] == [expected[k][1] or "" for k in range(16)]
    assert page.count('class="sub formula"') == len(shown)
    assert 'placeholder="search labels, formulas"' in page


def test_length_chart_carries_the_means(explained):
    out, _, _, _ = explained
    page = (out / "conv2" / "index.html").read_text()
    svg = length_chart(page)
    assert svg, "chart of mean IoU against formula length missing"
    bars = re.findall(r'<rect class="length" x="[0-9.]+" y="([0-9.]+)" width="[0-9.]+" height="([0-9.]+)" '
                      r'fill="#[0-9a-f]+" data-length="(\d+)" data-mean="([^"]+)"/>', svg[1])
    assert len(bars) == svg[1].count("<rect") == len(MEANS)
    assert [int(n) for _, _, n, _ in bars] == [1, 2, 3]
    assert [float(m) for _, _, _, m in bars] == MEANS  # the exact values of the file
    for (y, height, n, _), mean in zip(bars, MEANS):
        assert float(height) == pytest.approx(mean / max(MEANS) * 150, abs=0.051)
        assert f">{mean:.3f}</text>" in svg[1]  # the value written over its bar
        assert f"at most {n} lea" in svg[1]
    caption = re.search(r'<figure class="explanations">.*?<figcaption>(.*?)</figcaption>', page, re.S)[1]
    assert "Mu &amp; Andreas" in caption and "at most n leaves" in caption
    assert "length 3, beam 5, penalty 1.0, quantile 0.005" in caption


def test_explanation_files_are_linked(explained):
    out, _, _, _ = explained
    page = (out / "conv2" / "index.html").read_text()
    assert 'href="explanations.json">explanations.json</a>' in page
    assert 'href="explanations.csv">explanations.csv</a>' in page
    assert "explanations." not in (out / "conv1" / "index.html").read_text()


def test_hostile_names_in_formulas_are_text(explained):
    out, result, _, expected = explained
    page = (out / "conv2" / "index.html").read_text()
    assert IMG not in page and HOSTILE not in page
    assert html.escape(IMG, quote=False) in page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page  # in the script's JSON
    cards = Cards(page)
    assert [tag for tag, _ in cards.elements].count("img") == 16  # the strips, nothing else
    assert [tag for tag, _ in cards.elements].count("script") == 2
    hostile = [k for k, (r, _) in expected.items() if r["formula"] and HOSTILE in r["formula"]]
    assert hostile, "no formula holds the hostile object label"
    for k in hostile:
        assert HOSTILE in cards.card_text(k)  # shown as text, decoded by the parser
    assert any(IMG in cards.card_text(k) for k in expected)


def test_layer_without_explanations_is_unchanged(explained):
    out, _, before, _ = explained
    page = (out / "conv1" / "index.html").read_text()
    assert page == before["conv1"]
    assert length_chart(page) is None and "formula" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert length_chart(before["conv2"]) is None
    assert length_chart((out / "conv2" / "index.html").read_text())


def test_malformed_file_warns_and_shows_no_formulas(explained, tmp_path):
    out, _, before, _ = explained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.html"))
    broken = copy / "conv2" / "explanations.json"
    broken.write_text('{"layer": "conv2", "units": [')
    with pytest.warns(UserWarning, match=re.escape(str(broken))):
        write_report(copy, progress=False)
    page = (copy / "conv2" / "index.html").read_text()
    assert length_chart(page) is None and 'class="sub formula"' not in page
    assert page.count('<article class="card') == 16
    assert 'href="explanations.json"' in page  # the file is still there to open


def test_report_elsewhere_reads_the_results_explanations(explained, tmp_path):
    out, _, _, expected = explained
    index = write_report(out, out_dir=tmp_path / "elsewhere", progress=False)
    page = (index.parent / "conv2" / "index.html").read_text()
    assert length_chart(page)
    assert page.count('class="sub formula"') == sum(text is not None for _, text in expected.values())
    assert 'href="explanations.json"' not in page  # not in this folder: no link


def good(result) -> dict:
    return {"layer": "conv2", "settings": SETTINGS, "mean_iou_by_length": MEANS,
            "units": [{"unit": k + 1, "formula": "(box OR red-c)", "tree": ["or", "box", "red-c"],
                       "iou": 0.1, "length": 2} for k in range(result["conv2"].units)]}


@pytest.mark.parametrize("change", [
    lambda d: [],
    lambda d: d.update(units={}),
    lambda d: d.update(layer="conv1"),
    lambda d: d.update(mean_iou_by_length={}),
    lambda d: d.update(mean_iou_by_length=[0.1, "x"]),
    lambda d: d.update(mean_iou_by_length=[0.1, float("nan")]),
    lambda d: d.update(settings=[1]),
    lambda d: d["units"][0].update(unit=0),
    lambda d: d["units"][0].update(unit=17),
    lambda d: d["units"][0].update(unit=True),
    lambda d: d["units"][1].update(unit=1),
    lambda d: d["units"][0].update(iou=1.5),
    lambda d: d["units"][0].update(iou=None),
    lambda d: d["units"][0].update(formula=None),
    lambda d: d["units"][0].update(tree=["xor", "a", "b"]),
    lambda d: d["units"][0].update(length="2"),
    lambda d: d["units"].append("unit"),
], ids=["list", "units-object", "other-layer", "means-object", "text-mean", "nan-mean", "settings-list",
        "unit-0", "unit-17", "unit-bool", "repeated", "iou-1.5", "iou-null", "formula-null", "bad-tree",
        "length-text", "record-text"])
def test_attach_rejects_a_malformed_file(explained, change):
    _, result, _, _ = explained
    data = good(result)
    view = layer_view(result["conv2"])
    assert attach_explanations(view, data, "x.json") and view.explanations.mean_iou_by_length == MEANS
    assert all(u.formula == "(box OR red)" and u.formula_text == "(box OR red-c)" for u in view.units)
    data = good(result)
    changed = change(data)
    view = layer_view(result["conv2"])
    with pytest.warns(UserWarning, match=r"x\.json: not a valid explanations file"):
        assert not attach_explanations(view, data if changed is None else changed, "x.json")
    assert view.explanations is None and all(u.formula == "" and u.formula_iou is None for u in view.units)


def test_units_without_record_or_formula_show_none(explained):
    _, result, _, _ = explained
    data = good(result)
    data["units"] = data["units"][:3]
    data["units"][1].update(formula="", tree=None, iou=0, length=0)
    view = layer_view(result["conv2"])
    assert attach_explanations(view, data)
    assert [u.formula for u in view.units[:4]] == ["(box OR red)", "", "(box OR red)", ""]
    assert [u.formula_length for u in view.units[:4]] == [2, None, 2, None]


def test_no_explained_unit_draws_no_chart(explained):
    _, result, _, _ = explained
    view = layer_view(result["conv2"])
    assert attach_explanations(view, {"layer": "conv2", "settings": SETTINGS, "mean_iou_by_length": [],
                                      "units": []})
    assert view.explanations.mean_iou_by_length == [] and length_bars(view) is None
    assert all(u.formula == "" for u in view.units)
