"""The parts of the HTML report (:mod:`traceproof.experiments.report`): the data embedded as
JSON (examples and waterfall spans, clipped; NaN as null) and the server-rendered sections
(title, runs, verdict, evaluators with their interval SVGs, operational deltas, the example
table, the detail pane). Every value reaches the page HTML-escaped (:func:`_e`), and the
embedded JSON has ``<``, ``>`` and ``&`` escaped so it cannot end its ``<script>`` block.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from traceproof.experiments.comparison import OPERATIONAL_METRICS

#: An output or input preview is embedded up to this many characters (the rest is counted).
MAX_OUTPUT_CHARS = 4_000
#: A cell of the per-example table shows this many characters of a value.
MAX_TABLE_CHARS = 160

#: Operational metrics where a lower candidate value is the better one (all the known ones).
_LOWER_IS_BETTER = frozenset(OPERATIONAL_METRICS)
_CHANGES = ("regressed", "improved", "flaky", "mixed", "unchanged")


# -- data ---------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _clip(value: Any, limit: int) -> str:
    text = _text(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _example_data(ex: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "example_id": _text(ex.get("example_id")),
        "change": _text(ex.get("change")),
        "evaluators": ex.get("evaluators") or {},
        "input_preview": _clip(ex.get("input_preview"), MAX_OUTPUT_CHARS),
        "baseline_output": _clip(ex.get("baseline_output"), MAX_OUTPUT_CHARS),
        "candidate_output": _clip(ex.get("candidate_output"), MAX_OUTPUT_CHARS),
        "baseline_trace_id": ex.get("baseline_trace_id"),
        "candidate_trace_id": ex.get("candidate_trace_id"),
        "baseline_run_id": ex.get("baseline_run_id"),
        "candidate_run_id": ex.get("candidate_run_id"),
        "baseline_error": _clip(ex.get("baseline_error"), MAX_OUTPUT_CHARS),
        "candidate_error": _clip(ex.get("candidate_error"), MAX_OUTPUT_CHARS),
    }


#: A span in the embedded data: a list in this order (keys repeated 50,000 times weigh more
#: than the spans).
SPAN_FIELDS = (
    "span_id",
    "parent_span_id",
    "name",
    "span_kind",
    "status",
    "start_ms",
    "duration_ms",
)


def _span_data(span: Mapping[str, Any]) -> list[Any]:
    def ms(key: str) -> float:
        value = span.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return round(float(value), 3)
        return 0.0

    parent = span.get("parent_span_id")
    return [
        _text(span.get("span_id")),
        _text(parent) if parent else None,
        _text(span.get("name")),
        _text(span.get("span_kind")),
        _text(span.get("status")),
        ms("start_ms"),
        max(0.0, ms("duration_ms")),
    ]


def _script_json(data: Any) -> str:
    """JSON that cannot end its ``<script>`` block: ASCII only, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


# -- formatting ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _num(value: Any, *, signed: bool = False) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else _e(value)
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if signed and value > 0:
        text = "+" + text
    return text.replace("-", "−")


def _p(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _title(comp: Mapping[str, Any]) -> str:
    def label(side: Any) -> str:
        if not isinstance(side, Mapping):
            return "?"
        return _text(side.get("name") or side.get("id") or "?")

    return f"Experiment comparison: {label(comp.get('baseline'))} → {label(comp.get('candidate'))}"


def _runs(comp: Mapping[str, Any]) -> str:
    rows = []
    for role in ("baseline", "candidate"):
        side = comp.get(role)
        if not isinstance(side, Mapping):
            continue
        prov = side.get("provenance") if isinstance(side.get("provenance"), Mapping) else {}
        assert isinstance(prov, Mapping)
        commit = _text(prov.get("git_commit"))[:12]
        dirty = " (dirty)" if prov.get("git_dirty") else ""
        dataset = _text(side.get("dataset_id"))
        if dataset and side.get("dataset_version") is not None:
            dataset += f" v{_text(side.get('dataset_version'))}"
        rows.append(
            f"<tr><th scope='row'>{role}</th><td><code>{_e(side.get('id'))}</code></td>"
            f"<td>{_e(side.get('name'))}</td><td>{_e(side.get('task'))}</td>"
            f"<td>{_e(dataset)}</td><td>{_e(side.get('created_at'))}</td>"
            f"<td><code>{_e(commit)}</code>{_e(dirty)}</td></tr>"
        )
    compared = comp.get("examples_compared")
    caption = "Experiments compared"
    if compared is not None:
        caption += f" on {_num(compared)} examples"
    only = [
        f"{_num(comp.get(f'examples_only_{role}'))} only in the {role}"
        for role in ("baseline", "candidate")
        if comp.get(f"examples_only_{role}")
    ]
    if only:
        caption += f" ({', '.join(only)})"
    return (
        f"<table class='runs'><caption>{caption}</caption><thead><tr>"
        "<th scope='col'>role</th><th scope='col'>id</th><th scope='col'>name</th>"
        "<th scope='col'>task</th><th scope='col'>dataset</th><th scope='col'>created</th>"
        "<th scope='col'>commit</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return "<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"


def _verdict(verdict: Any) -> str:
    if not isinstance(verdict, Mapping):
        return (
            "<section id='verdict' class='verdict none' aria-labelledby='verdict-h'>"
            "<h2 id='verdict-h'>Verdict: <span class='status'>no gate</span></h2>"
            "<p>No gate was given, so no verdict.</p></section>"
        )
    status = _text(verdict.get("status")) or "inconclusive"
    cls = status if status in ("pass", "fail", "inconclusive") else "inconclusive"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.get("reasons") or [])
    checks = "".join(
        f"<tr class='{_e(_cls(c.get('status')))}'><td><code>{_e(c.get('rule'))}</code></td>"
        f"<td><span class='badge {_e(_cls(c.get('status')))}'>{_e(c.get('status'))}</span></td>"
        f"<td>{_e(c.get('detail'))}</td></tr>"
        for c in verdict.get("checks") or []
        if isinstance(c, Mapping)
    )
    gate = verdict.get("gate")
    parts = [
        f"<section id='verdict' class='verdict {cls}' aria-labelledby='verdict-h'>",
        f"<h2 id='verdict-h'>Verdict: <span class='status'>{_e(status)}</span></h2>",
        f"<p>Gate: <code>{_e(gate)}</code></p>" if gate else "",
        f"<ul class='reasons'>{reasons}</ul>" if reasons else "",
    ]
    if checks:
        parts.append(
            "<table class='checks'><caption>Gate checks</caption><thead><tr>"
            "<th scope='col'>rule</th><th scope='col'>status</th><th scope='col'>detail</th>"
            f"</tr></thead><tbody>{checks}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _cls(status: Any) -> str:
    text = _text(status)
    return text if text in ("pass", "fail", "inconclusive", *_CHANGES) else "other"


def _interval_svg(ev: Mapping[str, Any]) -> str:
    """The delta as a dot, its interval as a bar, on an axis centred on zero."""
    width, height, pad = 240, 28, 10
    delta, low, high = ev.get("delta"), ev.get("ci_low"), ev.get("ci_high")
    values = [abs(v) for v in (delta, low, high) if isinstance(v, int | float)]
    span = max([*values, 0.05]) * 1.1
    if ev.get("kind") == "binary":
        span = min(span, 1.0)

    def x(v: float) -> float:
        return round(pad + (v + span) / (2 * span) * (width - 2 * pad), 2)

    have_ci = isinstance(low, int | float) and isinstance(high, int | float)
    up, down = ("worse", "better") if ev.get("lower_is_better") else ("better", "worse")
    if have_ci and low > 0:  # type: ignore[operator]
        tone = up
    elif have_ci and high < 0:  # type: ignore[operator]
        tone = down
    else:
        tone = "neutral"
    label = f"delta {_num(delta, signed=True)}"
    if have_ci:
        label += f", interval {_num(low)} to {_num(high)}"
    parts = [
        f"<svg class='interval {tone}' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{_e(label)}'>",
        f"<title>{_e(label)}</title>",
        f"<line class='axis' x1='{pad}' y1='{height / 2}' x2='{width - pad}' y2='{height / 2}'/>",
        f"<line class='zero' x1='{x(0)}' y1='3' x2='{x(0)}' y2='{height - 3}'/>",
    ]
    if have_ci:
        lo, hi = x(float(low)), x(float(high))  # type: ignore[arg-type]
        parts.append(
            f"<rect class='ci' x='{min(lo, hi)}' y='{height / 2 - 5}' "
            f"width='{max(1.0, abs(hi - lo))}' height='10' rx='2'/>"
        )
    if isinstance(delta, int | float):
        parts.append(f"<circle class='dot' cx='{x(float(delta))}' cy='{height / 2}' r='4'/>")
    parts.append("</svg>")
    return "".join(parts)


def _evaluators(evaluators: list[dict[str, Any]]) -> str:
    if not evaluators:
        return (
            "<section aria-labelledby='ev-h'><h2 id='ev-h'>Scores</h2>"
            "<p>No evaluators.</p></section>"
        )
    rows = []
    for ev in evaluators:
        flags = (
            " <span class='badge uncalibrated'>uncalibrated</span>"
            if ev.get("uncalibrated")
            else ""
        )
        ci = (
            f"[{_num(ev.get('ci_low'))}, {_num(ev.get('ci_high'))}]"
            if ev.get("ci_low") is not None and ev.get("ci_high") is not None
            else "—"
        )
        rows.append(
            "<tr>"
            f"<th scope='row'>{_e(ev.get('name'))}{flags}<div class='sub'>{_e(ev.get('kind'))}"
            f"</div></th>"
            f"<td class='n'>{_num(ev.get('baseline_mean'))}</td>"
            f"<td class='n'>{_num(ev.get('candidate_mean'))}</td>"
            f"<td class='n'><strong>{_num(ev.get('delta'), signed=True)}</strong></td>"
            f"<td class='n'>{ci}</td>"
            f"<td>{_interval_svg(ev)}</td>"
            f"<td class='n'>{_p(ev.get('p_value'))}<div class='sub'>adj. "
            f"{_p(ev.get('p_adjusted'))}</div><div class='sub'>{_e(ev.get('test'))}</div></td>"
            f"<td class='n'>{_num(ev.get('mde'))}</td>"
            f"<td class='n'>{_num(ev.get('improved'))} / {_num(ev.get('regressed'))} / "
            f"{_num(ev.get('unchanged'))} / {_num(ev.get('flaky'))}</td>"
            "</tr>"
        )
    return (
        "<section aria-labelledby='ev-h'><h2 id='ev-h'>Scores</h2>"
        "<table class='evaluators'><thead><tr><th scope='col'>evaluator</th>"
        "<th scope='col'>baseline</th><th scope='col'>candidate</th><th scope='col'>delta</th>"
        "<th scope='col'>95% interval</th><th scope='col'>delta and interval (0 marked)</th>"
        "<th scope='col'>p</th><th scope='col'>min. detectable</th>"
        "<th scope='col'>improved / regressed / unchanged / flaky</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>"
    )


def _operational(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    body = []
    for row in rows:
        metric = _text(row.get("metric"))
        delta = row.get("delta")
        tone = ""
        if isinstance(delta, int | float) and delta and metric in _LOWER_IS_BETTER:
            tone = "better" if delta < 0 else "worse"
        pct = row.get("delta_pct")
        pct_text = f"{_num(pct, signed=True)}%" if isinstance(pct, int | float) else "—"
        word = f" <span class='sub'>({tone})</span>" if tone else ""
        body.append(
            f"<tr class='{tone}'><th scope='row'>{_e(metric)}</th>"
            f"<td class='n'>{_num(row.get('baseline'))}</td>"
            f"<td class='n'>{_num(row.get('candidate'))}</td>"
            f"<td class='n'>{_num(delta, signed=True)}{word}</td>"
            f"<td class='n'>{pct_text}</td></tr>"
        )
    return (
        "<section aria-labelledby='op-h'><h2 id='op-h'>Operational</h2>"
        "<table class='operational'><thead><tr><th scope='col'>metric</th>"
        "<th scope='col'>baseline</th><th scope='col'>candidate</th><th scope='col'>delta</th>"
        "<th scope='col'>delta %</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
        "</section>"
    )


def _score(value: Any) -> str:
    if not isinstance(value, Mapping):
        return "<td class='n'>—</td>"
    change = _cls(value.get("change"))
    return (
        f"<td class='n {change}'>{_num(value.get('baseline'))} → "
        f"{_num(value.get('candidate'))}</td>"
    )


def _examples(examples: list[dict[str, Any]], names: list[str]) -> str:
    counts = {c: 0 for c in _CHANGES}
    for ex in examples:
        change = _text(ex.get("change"))
        counts[change] = counts.get(change, 0) + 1
    options = "".join(
        f"<option value='{_e(c)}'>{_e(c)} ({n})</option>" for c, n in counts.items() if n
    )
    head = "".join(f"<th scope='col'>{_e(n)}</th>" for n in names)
    rows = []
    for i, ex in enumerate(examples):
        change = _text(ex.get("change"))
        scores = ex.get("evaluators") if isinstance(ex.get("evaluators"), Mapping) else {}
        assert isinstance(scores, Mapping)
        cells = "".join(_score(scores.get(n)) for n in names)
        rows.append(
            f"<tr class='example' data-index='{i}' data-change='{_e(change)}'>"
            f"<td><button type='button' class='show' aria-controls='detail' "
            f"aria-label='Show traces of example {_e(ex.get('example_id'))}'>{i + 1}</button></td>"
            f"<td><span class='badge {_cls(change)}'>{_e(change)}</span></td>"
            f"<td><code>{_e(ex.get('example_id'))}</code></td>{cells}"
            f"<td class='text'>{_e(_clip(ex.get('input_preview'), MAX_TABLE_CHARS))}</td>"
            f"{_output_cell(ex, 'baseline')}{_output_cell(ex, 'candidate')}"
            "</tr>"
        )
    return (
        "<section aria-labelledby='ex-h'><h2 id='ex-h'>Examples</h2>"
        "<p class='sub'>Regressions first. Select a row to see its traces.</p>"
        "<div class='filters' role='search'>"
        "<label>Change <select id='filter-change'><option value=''>all "
        f"({len(examples)})</option>{options}</select></label> "
        "<label>Search <input id='filter-text' type='search' "
        "placeholder='id, input or output text'></label> "
        f"<span id='filter-count' role='status' aria-live='polite'>{len(examples)} of "
        f"{len(examples)} shown</span></div>"
        "<div class='scroll'><table id='examples' class='examples'><thead><tr>"
        "<th scope='col'>#</th><th scope='col'>change</th><th scope='col'>example</th>"
        f"{head}<th scope='col'>input</th><th scope='col'>baseline output</th>"
        "<th scope='col'>candidate output</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div></section>"
    )


def _output_cell(ex: Mapping[str, Any], side: str) -> str:
    error = ex.get(f"{side}_error")
    flag = (
        f"<span class='run-error'>error: {_e(_clip(error, MAX_TABLE_CHARS))}</span> "
        if error
        else ""
    )
    output = _e(_clip(ex.get(f"{side}_output"), MAX_TABLE_CHARS))
    return f"<td class='text'>{flag}{output}</td>"


def _detail() -> str:
    return (
        "<section id='detail' aria-labelledby='detail-h' tabindex='-1'>"
        "<h2 id='detail-h'>Traces</h2>"
        "<p id='detail-empty'>Select an example above to see its input, outputs and the latency "
        "waterfalls of its baseline and candidate traces.</p>"
        "<div id='detail-body' hidden></div>"
        "<noscript><p>The waterfalls need JavaScript.</p></noscript></section>"
    )
