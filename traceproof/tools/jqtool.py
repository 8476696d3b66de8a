"""The ``jq`` tool: a jq program over one span, one trace, or the spans a filter matches.

The input is the span as a document: its columns (timestamps ISO 8601, UTC) with
``attributes``, ``events``, ``links`` and ``resource`` as nested JSON, the same names every
other tool uses (``attributes.llm.input_messages`` is ``.attributes.llm.input_messages``). A
trace or a filter gives an array of such spans in start order. Programs run in a sandboxed child
process (:mod:`traceproof.tools.jqworker`) under the store's query time limit.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import QueryTimeout, Store
from traceproof.storage.reader import time_left
from traceproof.tools.common import JsonValue, MaxChars, ToolFailure, budget, iso_time, size
from traceproof.tools.filters import (
    SPANS_WITH_TRACE,
    FilterRef,
    ProjectParam,
    SessionParam,
    SpanFilter,
    StatusParam,
    span_source,
    where_errors,
)
from traceproof.tools.jqworker import JqCrashed, JqError, JqTimeout, runner
from traceproof.tools.spandoc import JSON_COLUMNS, SELECT_COLUMNS

log = logging.getLogger(__name__)

#: Deepest nesting of a span document given to jq (deeper parts are folded into dotted keys).
MAX_DEPTH = 64
#: Most spans of one trace given to a program.
TRACE_MAX_SPANS = 20_000
_NOTE_ROOM = 500
#: Room for the marker that ends a clipped output.
_MARKER_ROOM = 250


class JqResult(BaseModel):
    input: str = Field(description="What the program ran over.")
    spans_read: int = Field(description="Spans in the input.")
    spans_capped: bool = Field(
        description="True when more spans matched than were read (max_spans)."
    )
    results: list[JsonValue] = Field(description="The program's outputs, in order.")
    dropped: int = Field(description="Further outputs left out to fit the budget.")
    dropped_more: bool = Field(
        description="True when the outputs left out are more than 'dropped' (counting stopped)."
    )
    clipped: bool = Field(description="True when the one output shown was cut short.")
    truncated: bool = Field(description="True when any output, or any matching span, is missing.")
    note: str | None = Field(default=None, description="What was left out and how to get it.")


def jq(
    store: Store,
    *,
    program: Annotated[
        str,
        Field(
            description="e.g. '.attributes.llm.output_messages' (span) or "
            "'[.[] | select(.status==\"ERROR\") | .name]' (array).",
            min_length=1,
        ),
    ],
    span_id: Annotated[str | None, Field(description="Run over this span (object).")] = None,
    trace_id: Annotated[
        str | None,
        Field(description="Run over this trace (array)."),
    ] = None,
    project: ProjectParam = None,
    since: FilterRef = None,
    until: FilterRef = None,
    status: StatusParam = None,
    span_kind: FilterRef = None,
    name: FilterRef = None,
    session_id: SessionParam = None,
    where: FilterRef = None,
    max_spans: Annotated[
        int | None,
        Field(description="Most filtered spans read, latest (default 500).", ge=1),
    ] = None,
    max_chars: MaxChars = None,
) -> JqResult:
    """Run a jq program over one span (object), one trace or the spans matching filters
    (arrays). Span fields: columns plus attributes, events, resource. Filters as in search_spans."""
    span_filter = SpanFilter(project, since, until, status, span_kind, name, session_id, where)
    others = (since, until, status, span_kind, name, session_id, where)
    if (span_id or trace_id) and any(v is not None for v in others):
        raise ToolFailure(
            "Pass span_id, trace_id or filters, not both. Drop the filters to read one span "
            "or trace, or drop span_id/trace_id to run over the spans the filters match.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if span_id is not None:
        document, label, count, capped = _one_span(store, span_id, trace_id, project)
    elif trace_id is not None:
        document, label, count, capped = _trace(store, trace_id, project)
    elif project is None and not any(v is not None for v in others):
        raise ToolFailure(
            "Say what to run over: span_id, trace_id, or filters (project, since, status, "
            "where…). Call search_traces to find ids.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    else:
        limit = max_spans or store.settings.jq_max_spans
        document, label, count, capped = _filtered(store, span_filter, limit)
    result = JqResult(
        input=label,
        spans_read=count,
        spans_capped=capped,
        results=[],
        dropped=0,
        dropped_more=False,
        clipped=False,
        truncated=capped,
    )
    room = budget(max_chars, store.settings) - size(result) - _NOTE_ROOM
    seconds = store.settings.sql_timeout_seconds
    reply = _run(program, document, room, seconds, store.settings.jq_workers)
    _fill(result, reply, program)
    return result


# -- input --------------------------------------------------------------------------------------


def span_document(row: dict[str, Any]) -> dict[str, Any]:
    """A span row as the document jq sees: columns, then JSON columns parsed (nesting past
    :data:`MAX_DEPTH` folded into dotted keys)."""
    doc: dict[str, Any] = {}
    for column, value in row.items():
        if column in JSON_COLUMNS:
            doc[column] = _bounded(_parse(value), 2)
        elif isinstance(value, datetime):
            doc[column] = iso_time(value)
        else:
            doc[column] = value
    return doc


def _bounded(value: Any, depth: int) -> Any:
    """``value`` with every object or array nested deeper than :data:`MAX_DEPTH` folded into
    one object of dotted keys (``{"a.b.c": 1}``). A span whose attribute key has hundreds of
    dotted segments is stored hundreds of levels deep, past what orjson serialises (255): the
    span, its trace and every filter that includes it still run, with the deep part flat."""
    if not isinstance(value, dict | list):
        return value
    if depth >= MAX_DEPTH:
        flat: dict[str, Any] = {}
        _flatten(value, "", flat)
        return flat
    items = value.items() if isinstance(value, dict) else enumerate(value)
    bounded = {k: _bounded(v, depth + 1) for k, v in items}
    return bounded if isinstance(value, dict) else list(bounded.values())


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> None:
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:  # iterative: the depth is what we are avoiding
        path, item = stack.pop()
        if isinstance(item, dict | list) and item:
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in pairs]
            stack.extend(reversed(children))
        else:
            into[path] = item


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _one_span(
    store: Store, span_id: str, trace_id: str | None, project: str | None
) -> tuple[bytes, str, int, bool]:
    condition, params = "span_id = ?", [span_id]
    if trace_id is not None:
        condition, params = condition + " AND trace_id = ?", [*params, trace_id]
    if project is not None:
        condition, params = condition + " AND project = ?", [*params, project]
    with store.reader() as reader:
        rows = reader.dicts(
            f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE {condition} LIMIT 2", params
        )
    if not rows:
        where = f" in trace {trace_id!r}" if trace_id else ""
        raise ToolFailure(
            f"No span {span_id!r}{where}. Call get_trace_preview or search_spans to list span ids.",
            code=ErrorCode.UNKNOWN_SPAN,
        )
    if len(rows) > 1:
        raise ToolFailure(
            f"Span id {span_id!r} is in more than one trace. Pass trace_id too.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    row = rows[0]
    label = f"span {span_id} ({row['name']}) of trace {row['trace_id']}: an object"
    return orjson.dumps(span_document(row)), label, 1, False


def _trace(store: Store, trace_id: str, project: str | None) -> tuple[bytes, str, int, bool]:
    condition, params = "trace_id = ?", [trace_id]
    if project is not None:
        condition, params = condition + " AND project = ?", [*params, project]
    with store.reader() as reader:
        rows = reader.dicts(
            f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE {condition} "
            f"ORDER BY start_time, span_id LIMIT {TRACE_MAX_SPANS + 1}",
            params,
        )
    if not rows:
        raise ToolFailure(
            f"No trace {trace_id!r}. Call search_traces to list recent traces.",
            code=ErrorCode.UNKNOWN_TRACE,
        )
    capped = len(rows) > TRACE_MAX_SPANS
    rows = rows[:TRACE_MAX_SPANS]
    label = f"trace {trace_id}: an array of its {len(rows)} spans in start order"
    if capped:
        label += f" (the first {TRACE_MAX_SPANS}; the trace has more)"
    return orjson.dumps([span_document(r) for r in rows]), label, len(rows), capped


def _filtered(store: Store, span_filter: SpanFilter, limit: int) -> tuple[bytes, str, int, bool]:
    condition, params = span_filter.sql()
    with store.reader() as reader, where_errors(span_filter.where):
        # Two steps, so a large store's wide text is read only for the spans given to jq: the
        # newest matching keys first (narrow columns), then those spans' every column, bounded
        # by their time range (whole row groups outside it are skipped).
        keys = reader.rows(
            f"SELECT trace_id, span_id, start_time FROM {span_source(condition)} "
            f"WHERE {condition} ORDER BY start_time DESC, span_id DESC LIMIT {limit + 1}",
            params,
            untrusted=span_filter.untrusted,
        )
        rows = _spans_by_key(reader, keys) if keys else []
    capped = len(rows) > limit
    rows = rows[:limit][::-1]
    label = f"an array of the {len(rows)} spans matching the filters, in start order"
    if capped:
        label = (
            f"an array of the latest {len(rows)} spans matching the filters (more match), in "
            f"start order; pass until={rows[0]['start_time'].isoformat()} for earlier ones or "
            "raise max_spans"
        )
    return orjson.dumps([span_document(r) for r in rows]), label, len(rows), capped


def _spans_by_key(reader: Any, keys: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every column of the spans ``keys`` name (trace id, span id, start), newest first."""
    wanted = {(trace_id, span_id) for trace_id, span_id, _ in keys}
    span_ids = sorted({span_id for _, span_id, _ in keys})
    marks = ", ".join("?" for _ in span_ids)
    found = reader.dicts(
        f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE spans.start_time BETWEEN ? AND ? "
        f"AND spans.span_id IN ({marks})",
        [min(k[2] for k in keys), max(k[2] for k in keys), *span_ids],
    )
    rows = [row for row in found if (row["trace_id"], row["span_id"]) in wanted]
    rows.sort(key=lambda row: (row["start_time"], row["span_id"]), reverse=True)
    return rows


# -- running and output -------------------------------------------------------------------------


def _run(program: str, document: bytes, room: int, limit: float, workers: int) -> dict[str, Any]:
    timeout = time_left(limit) or 0.0
    try:
        return runner(workers).run(
            program, document, keep_chars=max(200, room - _MARKER_ROOM), timeout=timeout
        )
    except JqError as exc:
        raise ToolFailure(
            f"{str(exc).rstrip('.')}. Fix the jq program (a span is an object: .name, "
            ".attributes.llm…; a trace or filter gives an array: .[] | …).",
            code=ErrorCode.INVALID_JQ,
        ) from None
    except JqTimeout:
        raise QueryTimeout(
            f"The jq program did not finish within the {limit:g} s limit (waiting for a free "
            "jq worker counts) and was stopped. Bound it with limit(n; …) or first(…), or run "
            "over fewer spans."
        ) from None
    except JqCrashed as exc:
        log.warning("the jq child process died: %s", exc)
        raise ToolFailure(
            "The jq program ran out of memory and was stopped. Select less (e.g. map({name, "
            "status})) or run over fewer spans.",
            code=ErrorCode.INVALID_JQ,
        ) from None


def _fill(result: JqResult, reply: dict[str, Any], program: str) -> None:
    result.results = orjson.loads(reply["results"])
    result.dropped = int(reply["dropped"])
    result.dropped_more = bool(reply["more"])
    clipped = reply.get("clipped")
    notes: list[str] = []
    if clipped is not None:
        shown = len(clipped["text"])
        what = "string" if clipped["is_string"] else "JSON text"
        result.results = [
            clipped["text"] + f"…[clipped: {clipped['total'] - shown:,} of {clipped['total']:,} "
            f"chars of this {what}. Select a part, e.g. .input_value[{shown}:{shown + 10000}], "
            "or read span fields with get_span_data]"
        ]
        result.clipped = True
    if result.dropped:
        shown = len(result.results)
        more = "at least " if result.dropped_more else ""
        again = f"[{program}]" if len(program) <= 200 else "[<program>]"
        notes.append(
            f"{more}{result.dropped} more outputs did not fit the budget: run "
            f"'{again} | .[{shown}:][]' to read on, narrow the program, or raise max_chars."
        )
    if result.spans_capped:
        notes.append("Not every matching span was read (see input).")
    result.truncated = result.spans_capped or result.clipped or result.dropped > 0
    result.note = " ".join(notes) or None
