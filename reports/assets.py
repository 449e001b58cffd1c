"""The report's inline CSS and JavaScript (no external assets: the HTML opens from disk or a CI artifact)."""

CSS = """
:root { --fg:#1d232b; --muted:#5b6675; --line:#d9dee5; --bg:#ffffff; --head:#f3f5f8; --ok:#1f7a3a;
        --bad:#b42318; --warn:#a15c00; --skip:#56627a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 0 28px 40px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 8px; padding: 18px 0 10px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line);
padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
nav a { margin-right: 14px; color: #1f5fae; text-decoration: none; font-size: 13px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 12px 0;
           font-family: ui-monospace, monospace; }
.verdict.pass { background: #e7f5ec; color: var(--ok); border: 1px solid #b5dfc3; }
.verdict.fail { background: #fdecea; color: var(--bad); border: 1px solid #f3c1bb; }
.verdict.none { background: var(--head); color: var(--muted); border: 1px solid var(--line); }
.tablewrap { overflow: auto; max-height: 640px; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.reason { white-space: normal; min-width: 240px; max-width: 520px; }
table.env td { white-space: normal; overflow-wrap: anywhere; max-width: 420px; }
thead th { position: sticky; top: 0; background: var(--head); z-index: 1; }
table.sortable thead th { cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 9px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 9px; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
tr.differs td { background: #fff6e0; }
.status { font-weight: 600; padding: 1px 6px; border-radius: 4px; font-size: 11.5px; }
.status-ok { color: var(--ok); background: #e7f5ec; }
.status-oom, .status-error, .status-timeout { color: var(--bad); background: #fdecea; }
.status-skipped { color: var(--skip); background: #eceff3; }
.v-regression { color: var(--bad); font-weight: 600; } .v-improvement { color: var(--ok); font-weight: 600; }
.filters { display: flex; gap: 10px; align-items: center; margin: 6px 0; flex-wrap: wrap; }
.filters input[type=search] { width: 280px; padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; }
.filters select { padding: 3px 6px; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
figcaption { font-size: 12px; color: var(--muted); }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 180px; }
.card b { font-size: 18px; display: block; }
#telemetry-plots { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 8px; }
.tplot { border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.tplot .t { font-size: 12px; font-weight: 600; }
.tplot svg { display: block; }
"""

JS = r"""
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (e) { body.setAttribute("data-js-error", String(e.message)); });

  function key(td) {
    var v = td.getAttribute("data-v");
    if (v !== null && v !== "") { var n = Number(v); if (!isNaN(n)) { return [0, n]; } }
    if (v === "") { return [2, 0]; }
    return [1, td.textContent.trim().toLowerCase()];
  }
  function sortTable(table, col, dir) {
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var keyed = rows.map(function (r, i) { return [key(r.cells[col]), i, r]; });
    keyed.sort(function (a, b) {
      var ka = a[0], kb = b[0];
      if (ka[0] !== kb[0]) { return ka[0] - kb[0]; }  // numbers, then text, then blanks
      if (ka[1] < kb[1]) { return dir; } if (ka[1] > kb[1]) { return -dir; }
      return a[1] - b[1];
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k[2]); });
    tbody.appendChild(frag);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === col) { th.setAttribute("aria-sort", dir < 0 ? "ascending" : "descending"); }
      else { th.removeAttribute("aria-sort"); }
    });
    table.setAttribute("data-sorted-by", String(col));
  }
  function wireSort(table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.title = "click to sort";
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        sortTable(table, i, asc ? -1 : 1);
      });
    });
    table.setAttribute("data-sortable", "1");
  }
  function wireFilter(box) {
    var table = document.getElementById(box.getAttribute("data-for"));
    if (!table) { return; }
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var text = rows.map(function (r) { return r.textContent.toLowerCase(); });
    var search = box.querySelector("input[type=search]");
    var selects = Array.prototype.slice.call(box.querySelectorAll("select[data-col]"));
    var count = box.querySelector(".count");
    function apply() {
      var q = search ? search.value.trim().toLowerCase().split(/\s+/).filter(Boolean) : [];
      var shown = 0;
      rows.forEach(function (r, i) {
        var ok = q.every(function (w) { return text[i].indexOf(w) >= 0; });
        selects.forEach(function (s) {
          if (ok && s.value) { ok = r.getAttribute("data-" + s.getAttribute("data-col")) === s.value; }
        });
        r.style.display = ok ? "" : "none";
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + rows.length + " rows"; }
      table.setAttribute("data-shown", String(shown));
    }
    if (search) { search.addEventListener("input", apply); }
    selects.forEach(function (s) { s.addEventListener("change", apply); });
    apply();
    box.setAttribute("data-wired", "1");
    return apply;
  }

  var METRICS = [["gpu_util_pct", "GPU utilisation (%)"], ["power_w", "Power (W)"],
                 ["sm_clock_mhz", "SM clock (MHz)"], ["temperature_c", "Temperature (\u00b0C)"],
                 ["memory_used_bytes", "Memory used (GiB)"]];
  var SVGNS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3); }
  function drawSeries(container, title, t, ys) {
    var W = 300, H = 130, L = 40, R = 8, T = 8, B = 22;
    var box = document.createElement("div"); box.className = "tplot";
    var head = document.createElement("div"); head.className = "t"; head.textContent = title; box.appendChild(head);
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"}, box);
    var vals = ys.filter(function (v) { return typeof v === "number" && isFinite(v); });
    if (!vals.length || t.length < 2) { head.textContent += " \u2014 no samples"; container.appendChild(box); return; }
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    if (hi === lo) { hi = lo + 1; }
    var t0 = t[0], t1 = t[t.length - 1] > t0 ? t[t.length - 1] : t0 + 1;
    function x(v) { return L + (W - L - R) * (v - t0) / (t1 - t0); }
    function y(v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); }
    el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fafbfc", stroke: "#d9dee5"}, svg);
    var pts = [];
    for (var i = 0; i < t.length && i < ys.length; i++) {
      if (typeof ys[i] === "number" && isFinite(ys[i])) { pts.push(x(t[i]).toFixed(1) + "," + y(ys[i]).toFixed(1)); }
    }
    el("polyline", {points: pts.join(" "), fill: "none", stroke: "#2f6db5", "stroke-width": 1.5}, svg);
    [[hi, T + 8], [lo, H - B]].forEach(function (p) {
      el("text", {x: L - 4, y: p[1], "text-anchor": "end", "font-size": 10, fill: "#5b6675"}, svg)
        .textContent = fmt(p[0]);
    });
    el("text", {x: L, y: H - 6, "font-size": 10, fill: "#5b6675"}, svg).textContent = fmt(t0) + " s";
    el("text", {x: W - R, y: H - 6, "text-anchor": "end", "font-size": 10, fill: "#5b6675"}, svg)
      .textContent = fmt(t1) + " s";
    container.appendChild(box);
  }
  function wireTelemetry() {
    var node = document.getElementById("telemetry-data");
    var select = document.getElementById("telemetry-cell");
    var out = document.getElementById("telemetry-plots");
    if (!node || !select || !out) { return; }
    var data = JSON.parse(node.textContent);
    function draw() {
      while (out.firstChild) { out.removeChild(out.firstChild); }
      var entry = data[select.value];
      if (!entry) { return; }
      entry.devices.forEach(function (dev) {
        METRICS.forEach(function (m) {
          var ys = dev.series[m[0]];
          if (!ys) { return; }
          if (m[0] === "memory_used_bytes") { ys = ys.map(function (v) { return v / 1073741824; }); }
          drawSeries(out, dev.name + ": " + m[1], dev.series.t_s || [], ys);
        });
      });
      out.setAttribute("data-drawn", select.value);
    }
    select.addEventListener("change", draw);
    draw();
  }

  function selftest(apply) {
    // #selftest: exercise sort and filter on the matrix and leave the outcome in data-selftest
    var table = document.getElementById("matrix-table");
    if (!table) { body.setAttribute("data-selftest", "no matrix"); return; }
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells,
                                         function (th) { return th.getAttribute("data-col"); });
    var col = heads.indexOf("throughput_ips");
    sortTable(table, col, 1);
    var vals = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return key(r.cells[col]); })
      .filter(function (k) { return k[0] === 0; }).map(function (k) { return k[1]; });
    for (var i = 1; i < vals.length; i++) {
      if (vals[i] > vals[i - 1]) { body.setAttribute("data-selftest", "fail: sort"); return; }
    }
    var box = document.querySelector(".filters[data-for=matrix-table]");
    var sel = box && box.querySelector("select[data-col=status]");
    if (sel && apply) {
      sel.value = "ok"; apply();
      var bad = Array.prototype.filter.call(table.tBodies[0].rows, function (r) {
        return r.style.display !== "none" && r.getAttribute("data-status") !== "ok"; });
      sel.value = ""; apply();
      if (bad.length) { body.setAttribute("data-selftest", "fail: filter"); return; }
    }
    body.setAttribute("data-selftest", "pass");
  }

  var applyMatrix = null;
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), wireSort);
  Array.prototype.forEach.call(document.querySelectorAll(".filters[data-for]"), function (box) {
    var apply = wireFilter(box);
    if (box.getAttribute("data-for") === "matrix-table") { applyMatrix = apply; }
  });
  wireTelemetry();
  body.setAttribute("data-js", "ready");
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
    body.setAttribute("data-images", broken ? "broken:" + broken + "/" + imgs.length : "ok:" + imgs.length);
    if (location.hash === "#selftest") { selftest(applyMatrix); }
  });
})();
"""
