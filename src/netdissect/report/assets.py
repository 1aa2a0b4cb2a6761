"""The report's style sheet and script, inlined into every page (no CDN, no network)."""

CSS = """
:root { --fg: #1d1d1f; --muted: #6b6b70; --line: #dcdce0; --bg: #fafafa; --card: #fff;
        --accent: #2f6fb0; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header.page, section, main { max-width: 1240px; margin: 0 auto; padding: 0 16px; }
header.page { padding-top: 12px; }
nav { font-size: 13px; color: var(--muted); }
a { color: var(--accent); }
h1 { font-size: 22px; margin: 6px 0; } h2 { font-size: 17px; margin: 18px 0 6px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
.headline { font-size: 17px; margin: 4px 0; }
.muted, .sub { color: var(--muted); }
.sub { margin: 2px 0; font-size: 13px; }
.charts { display: grid; grid-template-columns: minmax(0, 2fr) minmax(0, 1fr); gap: 16px; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
figure { margin: 10px 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px;
         padding: 8px; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
.scroll { overflow-x: auto; }
.experiments { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 10px; }
.experiments img { display: block; max-width: 100%; height: auto; }
svg text { font: 10px system-ui, sans-serif; fill: var(--fg); }
svg .axis { stroke: #999; stroke-width: 1; }
.legend { display: flex; flex-wrap: wrap; gap: 10px; font-size: 12px; margin: 4px 0; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 10px; margin-right: 4px;
                       background: var(--c); border-radius: 2px; vertical-align: -1px; }
.controls { position: sticky; top: 0; z-index: 2; background: var(--bg); padding-top: 8px;
            padding-bottom: 8px; border-bottom: 1px solid var(--line); display: flex; flex-wrap: wrap;
            gap: 12px; align-items: center; }
.controls label { font-size: 13px; color: var(--muted); }
.controls input, .controls select { font: inherit; padding: 3px 6px; }
.controls input[type=number] { width: 6em; }
.cards { display: grid; gap: 10px; padding-top: 10px; padding-bottom: 40px; }
.card { background: var(--card); border: 1px solid var(--line); border-left: 5px solid var(--cat, #ccc);
        border-radius: 6px; padding: 8px 10px; scroll-margin-top: 70px; }
.card:target { outline: 2px solid var(--accent); }
.card[hidden] { display: none; }
.card header { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.card .unit { font-weight: 600; text-decoration: none; }
.card .label { font-size: 15px; font-weight: 600; }
.card.nodetector .label { color: var(--muted); font-weight: 400; }
.card .cat { font-size: 12px; padding: 0 6px; border-radius: 8px; background: var(--cat, #ccc); color: #fff; }
.card .nums { font-size: 12px; color: var(--muted); margin-left: auto; }
.strip { display: block; max-width: 100%; height: auto; margin: 6px 0 2px; background: #eee; }
.nostrip { font-size: 12px; color: var(--muted); margin: 6px 0; }
details { font-size: 12px; } summary { cursor: pointer; color: var(--muted); }
details table { border-collapse: collapse; margin: 4px 0; }
td, th { padding: 2px 10px 2px 0; text-align: left; }
table.layers { border-collapse: collapse; width: 100%; background: var(--card); }
table.layers th, table.layers td { border-bottom: 1px solid var(--line); padding: 5px 8px; }
table.layers td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""

# Sorting and filtering reorder and hide the server-rendered cards; the unit records come
# from the JSON block of the page.  Text is only ever set with textContent.
JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var box = document.getElementById("cards");
  var cards = Array.prototype.slice.call(box.querySelectorAll("article.card"));
  var units = new Map();
  data.units.forEach(function (u) { units.set(u.unit, u); });
  var sortBy = document.getElementById("sort"), category = document.getElementById("category");
  var minIou = document.getElementById("min-iou"), search = document.getElementById("search");
  var shown = document.getElementById("shown");
  function emptyLast(a, b) { return (a === "" ? 1 : 0) - (b === "" ? 1 : 0); }
  var orders = {
    iou: function (a, b) { return b.iou - a.iou || a.unit - b.unit; },
    unit: function (a, b) { return a.unit - b.unit; },
    label: function (a, b) {
      return emptyLast(a.label, b.label) || a.label.localeCompare(b.label) || b.iou - a.iou || a.unit - b.unit;
    },
    category: function (a, b) {
      return emptyLast(a.category, b.category) || a.category.localeCompare(b.category) ||
             b.iou - a.iou || a.unit - b.unit;
    }
  };
  function record(card) { return units.get(Number(card.dataset.unit)); }
  function apply() {
    var order = orders[sortBy.value] || orders.iou;
    var sorted = cards.slice().sort(function (x, y) { return order(record(x), record(y)); });
    var fragment = document.createDocumentFragment();
    sorted.forEach(function (c) { fragment.appendChild(c); });
    box.appendChild(fragment);
    var cat = category.value, min = parseFloat(minIou.value) || 0;
    var query = search.value.trim().toLowerCase(), visible = 0;
    cards.forEach(function (card) {
      var u = record(card);
      var ok = (cat === "" || u.category === cat) && u.iou >= min &&
               (query === "" || u.label.toLowerCase().indexOf(query) >= 0 ||
                u.others.some(function (o) { return o[1].toLowerCase().indexOf(query) >= 0; }));
      card.hidden = !ok;
      if (ok) visible += 1;
    });
    shown.textContent = visible + " of " + cards.length + " units shown";
  }
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (!target || !target.classList.contains("card")) return;
    if (target.hidden) {
      category.value = ""; minIou.value = "0"; search.value = ""; apply();
    }
    target.scrollIntoView({block: "start"});
  }
  [sortBy, category].forEach(function (el) { el.addEventListener("change", apply); });
  [minIou, search].forEach(function (el) { el.addEventListener("input", apply); });
  window.addEventListener("hashchange", reveal);
  apply();
  reveal();
})();
"""
