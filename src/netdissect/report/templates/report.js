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
  var significantOnly = document.getElementById("significant");  // only with a null
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
               (!significantOnly || !significantOnly.checked || u.significant) &&
               (query === "" || u.label.toLowerCase().indexOf(query) >= 0 ||
                (u.formula || "").toLowerCase().indexOf(query) >= 0 ||
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
      category.value = ""; minIou.value = "0"; search.value = "";
      if (significantOnly) significantOnly.checked = false;
      apply();
    }
    target.scrollIntoView({block: "start"});
  }
  [sortBy, category, significantOnly].forEach(function (el) {
    if (el) el.addEventListener("change", apply);
  });
  [minIou, search].forEach(function (el) { el.addEventListener("input", apply); });
  window.addEventListener("hashchange", reveal);
  apply();
  reveal();
})();
