"""The HTML report of a comparison: a self-contained page (:func:`render_html`, written with the
traces' waterfalls by :func:`write_report`). The Markdown summary for a CI job summary or a pull
request comment is :func:`traceproof.experiments.summary.summary_markdown`.

One file, no network and no external assets: inline CSS and vanilla JavaScript, the data
embedded as JSON in a ``<script type="application/json">`` block. The page shows the verdict
with its reasons, each evaluator's score delta with its interval (an inline SVG), the
operational deltas, the per-example table (regressions first, as the comparison orders them;
filters by change and by text) and, for the selected example, the latency waterfalls of its
baseline and candidate traces.

Safety: every value from the comparison reaches the page as text. The server-rendered parts
are HTML-escaped; the embedded JSON has ``<``, ``>`` and ``&`` written as ``\\u003c``-style
escapes (so ``</script>`` in an output cannot end the block); the script builds the waterfall
with ``textContent`` only. A Content-Security-Policy allows exactly the page's own script and
style (by hash) and no request of any kind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traceproof.experiments.report_assets import SCRIPT as _SCRIPT
from traceproof.experiments.report_assets import STYLE as _STYLE
from traceproof.experiments.report_parts import (
    MAX_OUTPUT_CHARS,
    MAX_TABLE_CHARS,
    SPAN_FIELDS,
    _csp_hash,
    _detail,
    _e,
    _evaluators,
    _example_data,
    _examples,
    _finite,
    _notes,
    _operational,
    _runs,
    _script_json,
    _span_data,
    _text,
    _title,
    _verdict,
)
from traceproof.storage.reports import MAX_WATERFALL_SPANS, read_waterfalls, run_trace_ids

if TYPE_CHECKING:
    from traceproof.storage.store import Store

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_REPORT_SPANS",
    "MAX_TABLE_CHARS",
    "SPAN_FIELDS",
    "comparison_data",
    "render_html",
    "report_page",
    "write_page",
    "write_report",
]

#: A report embeds at most this many spans in all; the waterfalls of later examples (the
#: comparison lists regressions first) are left out beyond it, and the report says so.
MAX_REPORT_SPANS = 50_000
#: Trace ids read from the store at a time while filling the span budget.
_READ_CHUNK = 200


def render_html(
    comparison: Mapping[str, Any],
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    span_totals: Mapping[str, int] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report page for ``comparison`` (PROOF.md's comparison object, as JSON data).

    ``traces`` maps a trace id to its waterfall spans (``span_id``, ``parent_span_id``,
    ``name``, ``span_kind``, ``status``, ``start_ms``, ``duration_ms``); ``span_totals`` gives
    a trace's full span count when its list was cut; ``notes`` are shown under the title (for
    example which traces were left out)."""
    comp = _finite(dict(comparison))
    examples: list[dict[str, Any]] = list(comp.get("examples") or [])
    evaluators: list[dict[str, Any]] = list(comp.get("evaluators") or [])
    names = [str(e.get("name")) for e in evaluators]
    for ex in examples:
        for name in ex.get("evaluators") or {}:
            if name not in names:
                names.append(str(name))
    totals = dict(span_totals or {})
    data = {
        "evaluators": names,
        "examples": [_example_data(ex) for ex in examples],
        "traces": {
            str(tid): {
                "spans": [_span_data(s) for s in spans],
                "total": max(int(totals.get(tid, len(spans))), len(spans)),
            }
            for tid, spans in traces.items()
        },
    }
    title = _title(comp)
    notes = [*(_text(n) for n in comp.get("notes") or []), *notes]
    body = "\n".join(
        [
            f"<header><h1>{_e(title)}</h1>{_runs(comp)}{_notes(notes)}</header>",
            "<main>",
            _verdict(comp.get("verdict")),
            _evaluators(evaluators),
            _operational(list(comp.get("operational") or [])),
            _examples(examples, names),
            _detail(),
            "</main>",
        ]
    )
    style_hash = _csp_hash(_STYLE)
    script_hash = _csp_hash(_SCRIPT)
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src '{style_hash}'; script-src '{script_hash}'; "
        "base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_e(title)}</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="report-data">{_script_json(data)}</script>\n'
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def comparison_data(comparison: Any) -> dict[str, Any]:
    """The comparison as JSON data: a mapping as it is, a pydantic model dumped."""
    if isinstance(comparison, Mapping):
        return dict(comparison)
    dump = getattr(comparison, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
        if isinstance(data, dict):
            return data
    raise TypeError(f"not a comparison: {type(comparison).__name__}")


def write_report(
    store: Store,
    comparison: Any,
    path: Path | str,
    *,
    max_spans_per_trace: int = MAX_WATERFALL_SPANS,
    max_report_spans: int = MAX_REPORT_SPANS,
) -> Path:
    """Write the HTML report of ``comparison`` (the comparison object, as a dict or its
    pydantic model) to ``path``, with the waterfalls of the compared runs' traces read from
    ``store`` (:func:`report_page`). The file is written whole (:func:`write_page`)."""
    page = report_page(
        store, comparison, max_spans_per_trace=max_spans_per_trace,
        max_report_spans=max_report_spans,
    )  # fmt: skip
    return write_page(page, path)


def write_page(page: str, path: Path | str) -> Path:
    """Write ``page`` to ``path`` whole: a temporary file renamed over it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8", errors="replace")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def report_page(
    store: Store,
    comparison: Any,
    *,
    max_spans_per_trace: int = MAX_WATERFALL_SPANS,
    max_report_spans: int = MAX_REPORT_SPANS,
) -> str:
    """The HTML report of ``comparison`` with the waterfalls of the compared runs' traces read
    from ``store`` (a run the comparison names no trace for gets its first recorded trace)."""
    comp = comparison_data(comparison)
    examples = [dict(ex) for ex in comp.get("examples") or [] if isinstance(ex, Mapping)]
    with store.reader() as reader:
        missing = [
            ex.get(f"{side}_run_id")
            for ex in examples
            for side in ("baseline", "candidate")
            if not ex.get(f"{side}_trace_id") and ex.get(f"{side}_run_id")
        ]
        if missing:
            found = run_trace_ids(reader, (str(r) for r in missing))
            for ex in examples:
                for side in ("baseline", "candidate"):
                    run_id = ex.get(f"{side}_run_id")
                    if not ex.get(f"{side}_trace_id") and run_id in found:
                        ex[f"{side}_trace_id"] = found[str(run_id)][0]
        wanted = list(
            dict.fromkeys(
                str(ex[key])
                for ex in examples
                for key in ("baseline_trace_id", "candidate_trace_id")
                if ex.get(key)
            )
        )
        traces: dict[str, list[dict[str, Any]]] = {}
        totals: dict[str, int] = {}
        kept = 0
        left_out = 0
        for at in range(0, len(wanted), _READ_CHUNK):
            chunk = wanted[at : at + _READ_CHUNK]
            if kept >= max_report_spans:
                left_out += len(chunk)
                continue
            spans, counts = read_waterfalls(reader, chunk, max_spans=max_spans_per_trace)
            for trace_id in chunk:
                if trace_id not in spans:
                    continue
                if kept + len(spans[trace_id]) > max_report_spans:
                    left_out += 1
                    kept = max_report_spans
                    continue
                traces[trace_id] = spans[trace_id]
                totals[trace_id] = counts[trace_id]
                kept += len(spans[trace_id])
    notes = []
    cut = sum(1 for t, spans in traces.items() if totals[t] > len(spans))
    if cut:
        notes.append(
            f"{cut:,} trace(s) have more than {max_spans_per_trace:,} spans: their waterfalls "
            f"show the first {max_spans_per_trace:,} by start time."
        )
    if left_out:
        notes.append(
            f"The waterfalls of {left_out:,} trace(s) are left out: the report holds at most "
            f"{max_report_spans:,} spans (the earliest examples in the table come first)."
        )
    comp["examples"] = examples
    return render_html(comp, traces, span_totals=totals, notes=notes)
