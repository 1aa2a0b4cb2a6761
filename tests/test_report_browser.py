"""The report in a real browser: headless Chromium (Debian's /usr/bin/chromium) via playwright.

Opens a generated layer page from a 127.0.0.1 server and checks: no console errors, one card
per unit, sorting by IoU orders the cards, a category filter hides the others, the hostile
label is text (no dialog fires), and keeps a screenshot under tests/artifacts/.
Skipped only when Chromium is absent and CI is unset; under CI it must run.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from conftest import HOSTILE, hostile_report
from netdissect.report import make_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"

if not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: apt-get install -y chromium); "
                "set CI=true to make this a failure", allow_module_level=True)

if os.environ.get("CI"):
    from playwright import sync_api  # under CI a missing playwright is a failure, not a skip
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install playwright; never `playwright install`)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The hostile report, served on 127.0.0.1; yields (base URL, dissection)."""
    out, result = hostile_report(tmp_path_factory.mktemp("browser"))
    server = make_server(out, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", result
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_page(browser, url: str):
    """A page at `url` with its console errors, page errors and dialogs recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, problems


def card_ious(page) -> list[float]:
    return page.eval_on_selector_all("article.card:not([hidden])", "cs => cs.map(c => +c.dataset.iou)")


def test_layer_page_in_chromium(browser, served):
    base, result = served
    counts = result["conv2"].counts()
    page, problems = open_page(browser, f"{base}/conv2/index.html")
    assert page.locator("article.card").count() == counts["units"] == 16
    assert page.inner_text("#headline").startswith(f"{counts['detectors']} of 16 units are detectors")

    page.select_option("#sort", "unit")
    units = page.eval_on_selector_all("article.card", "cs => cs.map(c => +c.dataset.unit)")
    assert units == list(range(16))
    page.select_option("#sort", "iou")
    ious = card_ious(page)
    assert ious == sorted(ious, reverse=True) and ious != sorted(ious)

    categories = page.eval_on_selector_all("article.card", "cs => cs.map(c => c.dataset.category)")
    chosen = max(set(categories) - {""}, key=categories.count)
    page.select_option("#category", chosen)
    visible = page.eval_on_selector_all("article.card:not([hidden])", "cs => cs.map(c => c.dataset.category)")
    assert visible and set(visible) == {chosen} and len(visible) == categories.count(chosen)
    assert page.locator("article.card:visible").count() == len(visible)
    assert page.inner_text("#shown") == f"{len(visible)} of 16 units shown"
    page.select_option("#category", "")

    page.fill("#min-iou", "0.05")
    assert all(v >= 0.05 for v in card_ious(page))
    page.fill("#min-iou", "0")

    # The hostile label is text on the page (in the expandable table), never markup.
    assert HOSTILE in page.text_content("#cards")
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    page.locator("article.card details").first.locator("summary").click()

    # A stable link per unit: #unit-3 is a card, revealed even when a filter hid it.
    page.fill("#search", "no such label")
    assert page.locator("article.card:visible").count() == 0
    page.evaluate("location.hash = '#unit-5'")
    page.wait_for_function("!document.getElementById('unit-5').hidden")
    assert page.locator("#unit-5").is_visible()

    page.goto(f"{base}/conv2/index.html")
    page.wait_for_load_state("load")
    page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-conv2.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).length")
    assert broken == 0
    assert problems == []
    page.close()


def test_overview_in_chromium(browser, served):
    base, result = served
    page, problems = open_page(browser, f"{base}/index.html")
    links = page.eval_on_selector_all("svg a", "as => as.map(a => a.getAttribute('href'))")
    assert links == ["conv1/index.html", "conv2/index.html"]
    page.locator("table.layers a").nth(1).click()
    page.wait_for_url("**/conv2/index.html")
    assert page.locator("article.card").count() == 16
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{base}/index.html")
    page.screenshot(path=str(ARTIFACTS / "report-overview.png"), full_page=True)
    assert problems == []
    page.close()


def test_opens_from_disk(browser, served, tmp_path):
    """The pages are plain files: file:// works too (no server, no network)."""
    base, result = served
    out = Path(result.out)
    page, problems = open_page(browser, (out / "conv1" / "index.html").as_uri())
    assert page.locator("article.card").count() == 8
    assert page.locator("img.strip").first.evaluate("i => i.decode().then(() => i.naturalWidth)") > 0
    assert problems == []
    page.close()


def test_significant_only_filter_in_chromium(browser, tmp_path):
    """A layer dissected with a null (a planted detector among noise units): the checkbox
    keeps exactly the significant detectors, and clearing it brings every card back."""
    import netdissect
    from test_significance import _Planted, _planted_broden

    data = _planted_broden(tmp_path / "planted")
    out = tmp_path / "out"
    result = netdissect.dissect(_Planted(), data, ["layer"], out=out, quantile=0.3, null=199,
                                categories=["object"], progress=False)["layer"]
    significant = sorted(int(u) for u in result.significance().significant.nonzero().flatten())
    assert 0 in significant and len(significant) < 8  # the planted unit, not every unit
    page, problems = open_page(browser, (out / "layer" / "index.html").as_uri())
    assert page.locator("article.card").count() == 8
    page.check("#significant")
    shown = sorted(page.eval_on_selector_all("article.card:not([hidden])", "cs => cs.map(c => +c.dataset.unit)"))
    assert shown == significant
    assert page.inner_text("#shown") == f"{len(significant)} of 8 units shown"
    page.uncheck("#significant")
    assert page.locator("article.card:not([hidden])").count() == 8
    assert problems == []
    page.close()
