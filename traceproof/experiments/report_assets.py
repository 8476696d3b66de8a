"""The HTML report's stylesheet and script (:mod:`traceproof.experiments.report` inlines them
and allows exactly these two by hash in the page's Content-Security-Policy).

The script reads the data block ``#report-data`` (spans as lists in
``report.SPAN_FIELDS`` order), filters the examples table by change and text, and draws the
selected example's baseline and candidate waterfalls with ``textContent`` only (never
``innerHTML``): whatever the data holds is shown as text.
"""

STYLE = """
:root{--fg:#1b1f24;--muted:#57606a;--bg:#fff;--line:#d0d7de;--pass:#1a7f37;--fail:#cf222e;
--inc:#9a6700;--bar:#0969da;--err:#cf222e;--soft:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0 auto;padding:16px 24px;max-width:1400px}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:600}
caption{text-align:left;color:var(--muted);padding:2px 0}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.sub{color:var(--muted);font-size:12px;font-weight:normal}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.verdict{border:2px solid var(--line);border-radius:6px;padding:8px 16px;margin-top:16px}
.verdict h2{margin:4px 0}
.verdict.pass{border-color:var(--pass)}.verdict.pass .status{color:var(--pass)}
.verdict.fail{border-color:var(--fail)}.verdict.fail .status{color:var(--fail)}
.verdict.inconclusive{border-color:var(--inc)}.verdict.inconclusive .status{color:var(--inc)}
.status{text-transform:uppercase}
.badge{display:inline-block;padding:0 6px;border-radius:10px;font-size:12px;border:1px solid}
.badge.pass,.badge.improved{color:var(--pass)}.badge.fail,.badge.regressed{color:var(--fail)}
.badge.inconclusive,.badge.flaky,.badge.mixed,.badge.uncalibrated{color:var(--inc)}
.badge.unchanged,.badge.other{color:var(--muted)}
td.regressed{color:var(--fail)}td.improved{color:var(--pass)}
tr.worse td{color:var(--fail)}tr.better td{color:var(--pass)}
svg.interval .axis{stroke:var(--line)}svg.interval .zero{stroke:var(--muted);stroke-width:1}
svg.interval .ci{fill:#8c959f;opacity:.45}svg.interval .dot{fill:#57606a}
svg.interval.better .ci,svg.interval.better .dot{fill:var(--pass)}
svg.interval.worse .ci,svg.interval.worse .dot{fill:var(--fail)}
.filters{display:flex;gap:16px;align-items:center;flex-wrap:wrap;margin:8px 0}
.filters input,.filters select{font:inherit;padding:2px 4px}
.scroll{overflow-x:auto}
table.examples td.text{max-width:260px;overflow-wrap:anywhere;white-space:pre-wrap}
tr.example{cursor:pointer}tr.example:hover{background:var(--soft)}
tr.example.selected{background:#ddf4ff}
button.show{font:inherit;min-width:2.2em}
#detail{border-top:2px solid var(--line);margin-top:16px}
#detail:focus{outline:none}
.io{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.io pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--soft);padding:8px;
margin:0;max-height:240px;overflow:auto;font:12px ui-monospace,Menlo,monospace}
.wf{margin:8px 0 16px}.wf h3{font-size:15px;margin:8px 0 4px}
.wf-row{display:grid;column-gap:8px;grid-template-columns:minmax(180px,30%) 1fr 90px;
align-items:center;min-height:20px;border-bottom:1px solid var(--soft)}
.wf-label{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:12px}
.wf-kind{color:var(--muted);font-size:11px;margin-left:4px}
.wf-track{position:relative;height:14px;background:var(--soft)}
.wf-bar{position:absolute;top:1px;height:12px;min-width:2px;background:var(--bar);
border-radius:2px}
.wf-bar.wf-error{background:var(--err);outline:2px solid #82071e}
.wf-flag{color:var(--err);font-weight:600;font-size:11px;margin-left:4px}
.wf-dur{text-align:right;font-size:12px;font-variant-numeric:tabular-nums}
.wf-axis{display:grid;column-gap:8px;grid-template-columns:minmax(180px,30%) 1fr 90px;
font-size:11px;color:var(--muted)}.wf-axis .ends{display:flex;justify-content:space-between}
.notes{color:var(--inc)}.run-error{color:var(--err);font-weight:600}
@media (max-width:800px){.io{grid-template-columns:1fr}}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  Object.keys(data.traces).forEach(function (id) {
    data.traces[id].spans = data.traces[id].spans.map(function (a) {
      return {span_id: a[0], parent_span_id: a[1], name: a[2], span_kind: a[3], status: a[4],
              start_ms: a[5], duration_ms: a[6]};
    });
  });
  var rows = Array.prototype.slice.call(document.querySelectorAll("#examples tr.example"));
  var changeSel = document.getElementById("filter-change");
  var textInput = document.getElementById("filter-text");
  var count = document.getElementById("filter-count");
  var haystacks = rows.map(function (row) {
    var ex = data.examples[Number(row.getAttribute("data-index"))];
    return [ex.example_id, ex.input_preview, ex.baseline_output, ex.candidate_output,
            ex.baseline_run_id || "", ex.candidate_run_id || ""].join("\n").toLowerCase();
  });

  function applyFilters() {
    var change = changeSel.value;
    var needle = textInput.value.trim().toLowerCase();
    var shown = 0;
    rows.forEach(function (row, i) {
      var ok = (!change || row.getAttribute("data-change") === change) &&
               (!needle || haystacks[i].indexOf(needle) !== -1);
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " shown";
  }
  changeSel.addEventListener("change", applyFilters);
  textInput.addEventListener("input", applyFilters);

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function fmtMs(ms) {
    if (ms >= 1000) { return (ms / 1000).toFixed(ms >= 10000 ? 1 : 2) + " s"; }
    return (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1)) + " ms";
  }
  function fmtScore(v) { return v === null || v === undefined ? "\u2014" : String(v); }

  // Spans in tree order (children after their parent, siblings by start), with their depth.
  function ordered(spans) {
    var byId = {};
    spans.forEach(function (s) { byId[s.span_id] = s; });
    var kids = {};
    var roots = [];
    spans.forEach(function (s) {
      var p = s.parent_span_id;
      if (p && byId[p] && p !== s.span_id) {
        (kids[p] = kids[p] || []).push(s);
      } else {
        roots.push(s);
      }
    });
    function byStart(a, b) { return a.start_ms - b.start_ms || (a.span_id < b.span_id ? -1 : 1); }
    var out = [];
    var seen = {};
    function walk(s, depth) {
      if (seen[s.span_id]) { return; }
      seen[s.span_id] = true;
      out.push({span: s, depth: depth});
      (kids[s.span_id] || []).sort(byStart).forEach(function (c) { walk(c, depth + 1); });
    }
    roots.sort(byStart).forEach(function (r) { walk(r, 0); });
    spans.forEach(function (s) { if (!seen[s.span_id]) { walk(s, 0); } });  // cycles
    return out;
  }

  function extent(trace) {
    var end = 0;
    if (trace) {
      trace.spans.forEach(function (s) { end = Math.max(end, s.start_ms + s.duration_ms); });
    }
    return end;
  }

  function waterfall(role, traceId, runId, scale) {
    var box = el("section", "wf");
    box.setAttribute("data-role", role);
    var title = role + " trace";
    box.appendChild(el("h3", null, title));
    if (!traceId) {
      box.appendChild(el("p", "sub", "This run recorded no trace."));
      return box;
    }
    var trace = data.traces[traceId];
    var idLine = el("p", "sub");
    if (runId) {
      idLine.appendChild(document.createTextNode("run "));
      idLine.appendChild(el("code", null, runId));
      idLine.appendChild(document.createTextNode(", "));
    }
    idLine.appendChild(document.createTextNode("trace "));
    idLine.appendChild(el("code", null, traceId));
    box.appendChild(idLine);
    if (!trace || !trace.spans.length) {
      box.appendChild(el("p", "sub", "No spans of this trace are in the report."));
      return box;
    }
    if (trace.total > trace.spans.length) {
      box.appendChild(el("p", "notes", "Showing the first " + trace.spans.length + " of " +
                         trace.total + " spans (by start time)."));
    }
    var axis = el("div", "wf-axis");
    axis.setAttribute("aria-hidden", "true");
    axis.appendChild(el("span", null, "span"));
    var ends = el("span", "ends");
    ends.appendChild(el("span", null, "0"));
    ends.appendChild(el("span", null, fmtMs(scale)));
    axis.appendChild(ends);
    axis.appendChild(el("span", null, "duration"));
    box.appendChild(axis);
    var list = el("div", "wf-list");
    list.setAttribute("role", "list");
    list.setAttribute("aria-label", title + " spans");
    ordered(trace.spans).forEach(function (item) {
      var s = item.span;
      var error = s.status === "ERROR";
      var row = el("div", "wf-row");
      row.setAttribute("role", "listitem");
      row.setAttribute("data-span-id", s.span_id);
      var label = el("span", "wf-label");
      label.style.paddingLeft = (item.depth * 14) + "px";
      label.appendChild(el("span", "wf-name", s.name));
      label.appendChild(el("span", "wf-kind", s.span_kind));
      if (error) { label.appendChild(el("span", "wf-flag", "error")); }
      label.title = s.name + " (" + s.span_kind + ", " + s.status + ")";
      var track = el("span", "wf-track");
      var bar = el("span", "wf-bar" + (error ? " wf-error" : ""));
      bar.style.left = (scale > 0 ? Math.max(0, s.start_ms) / scale * 100 : 0) + "%";
      bar.style.width = (scale > 0 ? s.duration_ms / scale * 100 : 0) + "%";
      bar.title = s.name + ": starts at " + fmtMs(s.start_ms) + ", lasts " + fmtMs(s.duration_ms);
      track.appendChild(bar);
      row.appendChild(label);
      row.appendChild(track);
      row.appendChild(el("span", "wf-dur", fmtMs(s.duration_ms)));
      list.appendChild(row);
    });
    box.appendChild(list);
    return box;
  }

  var detailBody = document.getElementById("detail-body");
  var detailEmpty = document.getElementById("detail-empty");
  var detail = document.getElementById("detail");

  function show(index) {
    var ex = data.examples[index];
    rows.forEach(function (row) {
      var on = Number(row.getAttribute("data-index")) === index;
      row.classList.toggle("selected", on);
      row.setAttribute("aria-selected", on ? "true" : "false");
    });
    while (detailBody.firstChild) { detailBody.removeChild(detailBody.firstChild); }
    var head = el("p");
    head.appendChild(document.createTextNode("Example "));
    head.appendChild(el("code", null, ex.example_id));
    head.appendChild(document.createTextNode(" \u2014 "));
    head.appendChild(el("span", "badge " + ex.change, ex.change));
    detailBody.appendChild(head);
    var scores = el("ul");
    data.evaluators.forEach(function (name) {
      var v = (ex.evaluators || {})[name];
      if (!v) { return; }
      scores.appendChild(el("li", null, name + ": " + fmtScore(v.baseline) + " \u2192 " +
                            fmtScore(v.candidate) + " (" + (v.change || "") + ")"));
    });
    detailBody.appendChild(scores);
    var io = el("div", "io");
    [["input", ex.input_preview, ""], ["baseline output", ex.baseline_output, ex.baseline_error],
     ["candidate output", ex.candidate_output, ex.candidate_error]].forEach(function (item) {
      var cell = el("div");
      cell.appendChild(el("h3", null, item[0]));
      if (item[2]) { cell.appendChild(el("p", "run-error", "error: " + item[2])); }
      cell.appendChild(el("pre", null, item[1]));
      io.appendChild(cell);
    });
    detailBody.appendChild(io);
    var base = data.traces[ex.baseline_trace_id];
    var cand = data.traces[ex.candidate_trace_id];
    var scale = Math.max(extent(base), extent(cand));
    var note = el("p", "sub", "Both waterfalls share one time scale (0 to " + fmtMs(scale) +
                  "), from each trace's first span.");
    detailBody.appendChild(note);
    detailBody.appendChild(waterfall("baseline", ex.baseline_trace_id, ex.baseline_run_id, scale));
    detailBody.appendChild(
      waterfall("candidate", ex.candidate_trace_id, ex.candidate_run_id, scale));
    detailEmpty.hidden = true;
    detailBody.hidden = false;
  }

  rows.forEach(function (row) {
    var index = Number(row.getAttribute("data-index"));
    row.addEventListener("click", function () {
      show(index);
    });
    row.querySelector("button.show").addEventListener("click", function (event) {
      event.stopPropagation();
      show(index);
      detail.focus();
    });
  });
})();
"""
