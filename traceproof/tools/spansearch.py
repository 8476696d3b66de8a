"""``search_spans``: spans across traces matching the shared filters and a regex, paged.

The regex is applied by DuckDB (``regexp_matches``, RE2 syntax: linear time, so no pattern can
stall the store) to a span's own text: name, input and output values, status and error
messages, and the attributes' JSON text. Only for the rows of the page does Python find where it
matched (the field path and a snippet), with the same engine (the ``re2`` module), so a pattern
that selected a row always shows where it matched, in linear time.

Paging is keyset paging on the sort key plus ``(trace_id, span_id)``: the cursor holds the last
row's key, so pages never overlap or skip, even while new spans arrive.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    UtcTime,
    budget,
    decode_cursor,
    encode_cursor,
    one_line,
    size,
)
from traceproof.tools.emptiness import annotation_note, explain_empty
from traceproof.tools.filters import (
    NameParam,
    ProjectParam,
    SessionParam,
    SinceParam,
    SpanFilter,
    SpanKindParam,
    StatusParam,
    UntilParam,
    WhereParam,
    check_regex,
    span_source,
    time_param,
    where_errors,
)
from traceproof.tools.find import compile_regex, fingerprint, snippet
from traceproof.tools.paging import NEXT_CALL_DESCRIPTION, next_call, tidy
from traceproof.tools.spandoc import TEXT_COLUMNS, Leaf, leaves
from traceproof.tools.windows import WHOLE, time_windows, window_sql

PREVIEW_CHARS = 160
SNIPPET_CONTEXT = 60

#: Sort keys: (column, direction); trace_id and span_id make every key unique.
_ORDERS: dict[str, tuple[tuple[str, str], ...]] = {
    "newest": (("start_time", "DESC"), ("trace_id", "DESC"), ("span_id", "DESC")),
    "oldest": (("start_time", "ASC"), ("trace_id", "ASC"), ("span_id", "ASC")),
    "latency": (("latency_ms", "DESC"), ("trace_id", "ASC"), ("span_id", "ASC")),
}

#: Cursors hold a start time as microseconds since this (the store's times are naive UTC).
_EPOCH = datetime(1970, 1, 1)

#: What the regex looks at, in SQL.
_SEARCHED = (*TEXT_COLUMNS, "attributes")


class SpanMatch(BaseModel):
    path: str = Field(
        description="Field where the pattern matched first (as in get_span_data); "
        "'attributes' when only the attributes' JSON text matched."
    )
    offset: int = Field(description="Character offset of the match in that field.")
    snippet: str = Field(description="Text around the match, the match marked «like this».")


class SpanRow(BaseModel):
    span_id: str = Field(description="The span (read it with get_span_data).")
    trace_id: str | None = Field(
        default=None, description="Its trace (left out when the call's trace_id fixes it)."
    )
    name: str = Field(description="Span name.")
    span_kind: str = Field(description="OpenInference kind: LLM, TOOL, CHAIN…")
    status: str = Field(description="OK, ERROR or UNSET.")
    start_time: UtcTime = Field(description="Start (UTC).")
    latency_ms: float = Field(description="Duration in milliseconds.")
    model: str | None = Field(default=None, description="Model of an LLM span.")
    tool_name: str | None = Field(default=None, description="Tool of a TOOL span.")
    match: SpanMatch | None = Field(default=None, description="Where the pattern matched.")
    input_preview: str | None = Field(
        default=None, description="Start of the input (no pattern given)."
    )
    error: str | None = Field(default=None, description="Error message of a failed span.")


class SpanList(BaseModel):
    spans: list[SpanRow] = Field(description="Matching spans, in the order asked for.")
    truncated: bool = Field(description="More spans match than this page holds.")
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor to read the next page."
    )
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)
    note: str | None = Field(default=None, description="Why nothing matched, when nothing did.")


def search_spans(
    store: Store,
    *,
    project: ProjectParam = None,
    since: SinceParam = None,
    until: UntilParam = None,
    status: StatusParam = None,
    span_kind: SpanKindParam = None,
    name: NameParam = None,
    session_id: SessionParam = None,
    where: WhereParam = None,
    trace_id: Annotated[str | None, Field(description="Only spans of this trace.")] = None,
    pattern: Annotated[
        str | None,
        Field(description="RE2 regex over span text; rows show the match."),
    ] = None,
    ignore_case: bool = False,
    order_by: Annotated[Literal["newest", "oldest", "latency"], Field()] = "newest",
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> SpanList:
    """Spans across traces matching filters and an optional regex, with the matched snippet.
    Use it to find which spans (e.g. span_kind=TOOL) did or said something."""
    room = budget(max_chars, store.settings)
    spec = SpanFilter(project, since, until, status, span_kind, name, session_id, where)
    if pattern is not None:
        with store.reader() as reader:
            check_regex(reader, pattern)
    condition, params = _condition(spec, trace_id, pattern, ignore_case)
    order = _ORDERS[order_by]
    digest = fingerprint(
        project, since, until, status, span_kind, name, session_id, where, trace_id, pattern,
        ignore_case, order_by,
    )  # fmt: skip
    scope, scope_params = _window_scope(spec, trace_id)
    if cursor is not None:
        key = _cursor_key(cursor, digest, order)
        key_sql, key_params = _after(order, key)
        condition += f" AND ({key_sql})"
        params.extend(key_params)
        if order[0][0] == "start_time":  # the scan starts at the cursor's instant
            scope += f" AND start_time {'<=' if order[0][1] == 'DESC' else '>='} ?"
            scope_params.append(key[0])
    columns = (
        "SELECT span_id, trace_id, name, span_kind, status, start_time, latency_ms, model, "
        f"tool_name, left(input_value, {PREVIEW_CHARS * 2}) AS input_head, "
        f"left(error_message, {PREVIEW_CHARS * 2}) AS error_head FROM {span_source(condition)}"
    )
    sort = ", ".join(f"{c} {d}" for c, d in order)
    with store.reader(timeout=store.settings.sql_timeout_seconds) as reader:
        windows = WHOLE
        if pattern is not None and order[0][0] == "start_time":
            windows = time_windows(
                reader,
                scope,
                scope_params,
                descending=order[0][1] == "DESC",
                first_spans=store.settings.search_window_spans,
            )
        found: list[dict[str, Any]] = []
        for window in windows:  # in sort order: stop once a page (and one more row) is found
            inside, inside_params = window_sql(window)
            sql = (
                f"{columns} WHERE {condition} AND {inside} ORDER BY {sort} "
                f"LIMIT {limit + 1 - len(found)}"
            )
            with where_errors(where):
                found += reader.dicts(sql, params + inside_params, untrusted=spec.untrusted)
            if len(found) > limit:
                break
        more = len(found) > limit
        found = found[:limit]
        matches = _matches(reader, found, pattern, ignore_case) if pattern is not None else {}
        empty = not found and cursor is None
        note = _why_empty(reader, spec, trace_id, pattern, ignore_case) if empty else None
    rows = [_row(r, matches.get((r["trace_id"], r["span_id"]))) for r in found]
    if trace_id is not None:
        for row in rows:
            row.trace_id = None
    result = SpanList(spans=rows, truncated=more, note=note)
    return _fit(result, found, more, order, digest, room)


def _window_scope(spec: SpanFilter, trace_id: str | None) -> tuple[str, list[Any]]:
    """The trusted, cheap part of the filters (no where, no session join): what the time
    windows are sized by."""
    cheap = replace(spec, where=None, session_id=None)
    scope, params = cheap.sql()
    if trace_id is not None:
        scope += " AND trace_id = ?"
        params.append(trace_id)
    return scope, params


def _condition(
    spec: SpanFilter, trace_id: str | None, pattern: str | None, ignore_case: bool
) -> tuple[str, list[Any]]:
    """The SQL condition over ``spans`` of the filters, the trace and the pattern."""
    condition, params = spec.sql()
    if trace_id is not None:
        condition += " AND trace_id = ?"
        params.append(trace_id)
    if pattern is not None:
        options = "'i'" if ignore_case else "'c'"
        searched = " OR ".join(f"regexp_matches({c}, ?, {options})" for c in _SEARCHED)
        condition += f" AND ({searched})"
        params.extend([pattern] * len(_SEARCHED))
    return condition, params


def _why_empty(
    reader: Any, spec: SpanFilter, trace_id: str | None, pattern: str | None, ignore_case: bool
) -> str:
    """The note of an empty first page: which filter left nothing (see tools/emptiness.py)."""
    others = {"trace_id": trace_id, "pattern": pattern, **asdict(spec)}
    scope = ("project", "since", "until")
    filters = {k: v for k, v in others.items() if v is not None and k not in scope}
    window = SpanFilter(spec.project, spec.since, spec.until)

    def count(subset: dict[str, Any]) -> int:
        spans = replace(window, **{k: v for k, v in subset.items() if k in asdict(spec)})
        sql, params = _condition(spans, subset.get("trace_id"), subset.get("pattern"), ignore_case)
        return int(reader.scalar(f"SELECT count(*) FROM {span_source(sql)} WHERE {sql}", params))

    note = explain_empty(
        reader,
        noun="spans",
        table="spans",
        project=spec.project,
        since=spec.since,
        until=spec.until,
        since_at=time_param(spec.since, "since"),
        until_at=time_param(spec.until, "until"),
        filters=filters,
        count=count,
    )
    read = annotation_note(reader, spec.where)
    return f"{note} {read}" if read else note


def _cursor_key(cursor: str, digest: str, order: tuple[tuple[str, str], ...]) -> list[Any]:
    key = decode_cursor(cursor, "search_spans", digest)
    damaged = ToolFailure(
        "The cursor is damaged (its key has the wrong shape). Pass the next_cursor of the "
        "previous search_spans call unchanged, or omit cursor to start again.",
        code=ErrorCode.INVALID_CURSOR,
    )
    if len(key) != len(order):
        raise damaged
    first, *ids = key
    if not all(type(value) is str for value in ids):
        raise damaged
    if order[0][0] == "start_time":  # microseconds since the epoch, as the store keeps them
        if type(first) is not int:
            raise damaged
        try:
            return [_EPOCH + timedelta(microseconds=first), *ids]
        except OverflowError:
            raise damaged from None
    if type(first) not in (int, float):
        raise damaged
    return [first, *ids]


def _after(order: tuple[tuple[str, str], ...], key: list[Any]) -> tuple[str, list[Any]]:
    """SQL for "sorts after ``key``" under ``order``: (a > x) OR (a = x AND b > y) OR …"""
    terms: list[str] = []
    params: list[Any] = []
    for i, (column, direction) in enumerate(order):
        equal = [f"{c} = ?" for c, _ in order[:i]]
        op = "<" if direction == "DESC" else ">"
        terms.append(" AND ".join([*equal, f"{column} {op} ?"]))
        params.extend([*key[:i], key[i]])
    return " OR ".join(f"({t})" for t in terms), params


def _key(row: dict[str, Any], order: tuple[tuple[str, str], ...]) -> list[Any]:
    values = [row[c] for c, _ in order]
    if isinstance(values[0], datetime):
        values[0] = (values[0] - _EPOCH) // timedelta(microseconds=1)
    return values


def _matches(
    reader: Any, found: list[dict[str, Any]], pattern: str, ignore_case: bool
) -> dict[tuple[str, str], SpanMatch]:
    """Where the pattern matched, for the page's rows (RE2 on the full values)."""
    if not found:
        return {}
    try:
        regex = compile_regex(pattern, ignore_case)
    except ToolFailure:
        return {}
    marks = ", ".join("?" for _ in found)
    # The page's start times bound the scan (DuckDB prunes by start_time before it reads a
    # wide column; span_id alone was a full scan of the text, seconds on a large store).
    times = [r["start_time"] for r in found]
    full = reader.dicts(
        f"SELECT trace_id, span_id, {', '.join(_SEARCHED)} FROM spans "
        f"WHERE start_time >= ? AND start_time <= ? AND trace_id IN ({marks}) "
        f"AND span_id IN ({marks})",
        [min(times), max(times), *[r["trace_id"] for r in found], *[r["span_id"] for r in found]],
    )
    out: dict[tuple[str, str], SpanMatch] = {}
    for row in full:
        fields = [leaf for leaf in leaves(row) if leaf.path in TEXT_COLUMNS or _is_attr(leaf)]
        fields.append(Leaf("attributes", row["attributes"] or ""))  # key names, JSON escapes
        for leaf in fields:
            text = leaf.text
            hit = next((m for m in regex.finditer(text) if m.end() > m.start()), None)
            if hit is not None:
                out[(row["trace_id"], row["span_id"])] = SpanMatch(
                    path=leaf.path,
                    offset=hit.start(),
                    snippet=snippet(text, hit.start(), hit.end(), SNIPPET_CONTEXT),
                )
                break
    return out


def _is_attr(leaf: Leaf) -> bool:
    return leaf.path.startswith("attributes.")


def _row(row: dict[str, Any], match: SpanMatch | None) -> SpanRow:
    return SpanRow(
        span_id=row["span_id"],
        trace_id=row["trace_id"],
        name=row["name"],
        span_kind=row["span_kind"],
        status=row["status"],
        start_time=row["start_time"],
        latency_ms=tidy(row["latency_ms"]),
        model=row["model"],
        tool_name=row["tool_name"],
        match=match,
        input_preview=None if match else one_line(row["input_head"], PREVIEW_CHARS),
        error=one_line(row["error_head"], PREVIEW_CHARS) if row["status"] == "ERROR" else None,
    )


def _fit(
    result: SpanList,
    found: list[dict[str, Any]],
    more: bool,
    order: tuple[tuple[str, str], ...],
    digest: str,
    room: int,
) -> SpanList:
    """``result`` within ``room`` characters: rows dropped from the end; the cursor resumes
    after the last row kept."""
    while True:
        kept = len(result.spans)
        if kept and (more or kept < len(found)):
            token = encode_cursor("search_spans", digest, _key(found[kept - 1], order))
            result.truncated = True
            result.next_cursor = token
            result.next_call = next_call("search_spans")
        if size(result) <= room or kept <= 1:
            break
        result.spans = result.spans[:-1]
    if size(result) > room:
        for row in result.spans:  # one row left, still too big: shorten its texts
            if row.match is not None:
                row.match.snippet = row.match.snippet[:200]
            row.input_preview = None
    return result
