"""get_trace_preview: a trace as a compact tree, one dense line per span.

The shape of the trace (parents, orphans, critical path, self time, runs of similar siblings)
lives in :mod:`traceproof.tools.tree`; what fits the budget and how a line reads, in
:mod:`traceproof.tools.layout`. This module loads the few columns a line needs, with previews
already cut in SQL (a span holding a megabyte of input costs no more than any other), and builds
the result.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Reader, Store
from traceproof.storage.annotations import span_marks, trace_marks
from traceproof.tools.common import MaxChars, ToolFailure, UtcTime, budget, one_line, size
from traceproof.tools.filters import ProjectParam
from traceproof.tools.layout import CollapsedSpans, Frame, Layout
from traceproof.tools.paging import tidy
from traceproof.tools.tree import SpanFacts, build_forest, mark_critical_path, prepare

__all__ = ["CollapsedSpans", "TracePreview", "get_trace_preview"]

#: Characters loaded for previews: the head of inputs and outputs, the tail of an LLM's input
#: (its latest message), an error message. Lines show less; the rest is for cleaning.
HEAD_CHARS = 240
TAIL_CHARS = 600
ERROR_TEXT_CHARS = 300
#: Most critical-path span ids listed (the tree marks them all; a sequential trace has
#: every span on its path).
CRITICAL_PATH_MAX = 20
#: Longest the trace's (and session's) annotation marks are shown.
TRACE_MARK_CHARS = 200

_SPAN_SQL = f"""
SELECT span_id, parent_span_id, name, span_kind, status = 'ERROR',
       epoch_us(start_time), epoch_us(end_time), model, tool_name, total_tokens,
       CASE WHEN span_kind = 'LLM' THEN right(input_value, {TAIL_CHARS})
            ELSE left(input_value, {HEAD_CHARS}) END,
       left(output_value, {HEAD_CHARS}),
       CASE WHEN status = 'ERROR' THEN left(
           CASE WHEN error_type IS NOT NULL AND error_message IS NOT NULL
                     AND NOT starts_with(error_message, error_type)
                THEN error_type || ': ' || error_message
                ELSE coalesce(error_message, status_message, error_type) END,
           {ERROR_TEXT_CHARS}) END
FROM spans
WHERE trace_id = ?"""

_TRACE_SQL = """
SELECT count(*), string_agg(project, ', ' ORDER BY project), arg_min(name, start_time),
       min(start_time), epoch_us(min(start_time)), epoch_us(max(end_time)), sum(span_count),
       sum(error_count), sum(total_tokens), min(session_id)
FROM traces
WHERE trace_id = ?"""


class TracePreview(BaseModel):
    """A trace (or one span's subtree) as a tree of one-line spans."""

    trace_id: str = Field(description="The trace.")
    project: str = Field(description="Its project.")
    name: str = Field(description="Name of its root span.")
    start_time: UtcTime = Field(description="Start of its earliest span (UTC).")
    latency_ms: float = Field(description="From the earliest start to the latest end.")
    span_count: int = Field(description="Spans in the trace.")
    error_count: int = Field(description="Spans with status ERROR.")
    total_tokens: int = Field(description="LLM tokens over all spans.")
    session_id: str | None = Field(description="Its session, if any.")
    annotations: str | None = Field(
        default=None,
        description="The trace's own annotations, then its session's, marked as spans are: "
        "trace: [resolved=fail|pass?] session: [...].",
    )
    span_id: str | None = Field(description="The span whose subtree is shown (None: all).")
    tree: list[str] = Field(description="One line per span, run of similar spans, or hidden part.")
    critical_path: list[str] = Field(
        description="Span ids on the critical path (what sets the end time; marked * in the "
        f"tree), the longest-holding first; at most {CRITICAL_PATH_MAX}."
    )
    collapsed: list[CollapsedSpans] = Field(
        description="Parts shown as one line, with the call that shows them."
    )
    truncated: bool = Field(description="True when some spans are not shown on lines of their own.")


def get_trace_preview(
    store: Store,
    *,
    trace_id: str,
    project: ProjectParam = None,
    span_id: Annotated[str | None, Field(description="Show only this span's subtree.")] = None,
    max_depth: Annotated[
        int | None, Field(description="Levels shown; deeper ones collapse.", ge=0)
    ] = None,
    max_chars: MaxChars = None,
) -> TracePreview:
    """One trace as a compact tree. Start here to see what a trace did and where time or errors
    went.
    Line: name KIND span_id +start dur [self] [%] model|tool tokens in:/out: (^ = parent's);
    * critical path; N× folded run; … hidden → call shown; [name=label] annotations
    (label? = uncalibrated judge)."""  # noqa: RUF002
    limit = budget(max_chars, store.settings)
    with store.reader() as reader:
        summary = _summary(reader, trace_id, project)
        spans = _spans(reader, trace_id, project)
        marks = trace_marks(reader, trace_id, summary["session_id"], project)
    top, nodes = build_forest(spans)
    if span_id is not None:
        if span_id not in nodes:
            raise ToolFailure(
                f"No span {span_id[:200]!r} in trace {trace_id!r}. Call get_trace_preview "
                "without span_id to see the trace's spans.",
                code=ErrorCode.UNKNOWN_SPAN,
            )
        top = [nodes[span_id]]
    order = prepare(top)
    chain = mark_critical_path(top)
    frame = Frame(trace_id, project, summary.pop("start_us"), summary.pop("latency_us"))
    layout = Layout(order, top, frame, max_depth)
    result = TracePreview(
        **summary,
        annotations=one_line(marks, TRACE_MARK_CHARS),
        trace_id=trace_id,
        span_id=span_id,
        tree=[],
        critical_path=[n.span.span_id for n in chain if n.span][:CRITICAL_PATH_MAX],
        collapsed=[],
        truncated=False,
    )
    width = layout.fit(size(result), limit, len(orjson.dumps(result.critical_path)))
    result.tree, result.collapsed = layout.render(width)
    result.truncated = bool(result.collapsed)
    return _cut_to_budget(result, limit)


def _summary(reader: Reader, trace_id: str, project: str | None) -> dict[str, Any]:
    sql, params = _TRACE_SQL, [trace_id]
    if project is not None:
        sql, params = sql + " AND project = ?", [trace_id, project]
    row = reader.rows(sql, params)[0]
    if not row[0]:
        where = f" in project {project!r}" if project is not None else ""
        raise ToolFailure(
            f"No trace {trace_id[:200]!r}{where}. Call search_traces to list traces.",
            code=ErrorCode.UNKNOWN_TRACE,
        )
    _, projects, name, start, start_us, end_us, spans, errors, total, session = row
    return {
        "project": projects,
        "name": name,
        "start_time": start,
        "latency_ms": tidy((end_us - start_us) / 1000),
        "span_count": spans,
        "error_count": errors,
        "total_tokens": total or 0,
        "session_id": session,
        "start_us": start_us,
        "latency_us": end_us - start_us,
    }


def _spans(reader: Reader, trace_id: str, project: str | None) -> list[SpanFacts]:
    sql, params = _SPAN_SQL, [trace_id]
    if project is not None:
        sql, params = sql + " AND project = ?", [trace_id, project]
    facts = [SpanFacts(*row) for row in reader.rows(sql, params)]
    marks = span_marks(reader, trace_id, project)
    if marks:
        for span in facts:
            span.marks = marks.get(span.span_id)
    return facts


def _cut_to_budget(result: TracePreview, limit: int) -> TracePreview:
    """The last resort when collapsing could not make the tree fit (a node with thousands of
    distinct children): keep the leading lines that fit and say how many were cut."""
    if size(result) <= limit:
        return result
    lines = result.tree
    note_room = 200
    excess = size(result) - limit + note_room
    kept = len(lines)
    while kept > 0 and excess > 0:
        kept -= 1
        excess -= len(lines[kept]) + 3
    while True:
        shown = lines[:kept]
        calls = [entry for entry in result.collapsed if any(entry.call in line for line in shown)]
        note = (
            f"… {len(lines) - kept} more lines cut to fit max_chars. Call again with span_id of "
            "a shown span, a smaller max_depth or a larger max_chars."
        )
        cut = result.model_copy(update={"tree": [*shown, note], "collapsed": calls})
        cut.truncated = True
        if size(cut) <= limit or kept == 0:
            return cut
        kept -= 1
