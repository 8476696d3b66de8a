"""search_traces: traces as rows (get_session, the same traces read as a conversation, lives in
:mod:`traceproof.tools.sessions` and is re-exported here).

It reads the ``traces`` view (one row per trace, kept by the writer) and touches ``spans`` only
for what a trace row cannot answer: a regex over the trace's text, an agent's ``where``
expression. Pages are keyset pages on ``(order key, trace_id, project)``, so paging to the
end neither skips nor repeats a trace, even while new traces arrive; the cursor also carries a
fingerprint of the filters, so a cursor cannot silently continue a different query.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Reader, Store
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
    FilterRef,
    ProjectParam,
    SessionParam,
    SpanFilter,
    check_regex,
    span_source,
    time_param,
    where_errors,
)
from traceproof.tools.paging import (
    NEXT_CALL_DESCRIPTION,
    check_project,
    cut,
    largest_fit,
    next_call,
    tidy,
)
from traceproof.tools.sessions import SessionTurn, SessionView, get_session
from traceproof.tools.windows import Window, time_windows, window_sql

__all__ = [
    "SessionTurn",
    "SessionView",
    "TraceList",
    "TraceRow",
    "get_session",
    "search_traces",
]

_EPOCH = datetime(1970, 1, 1)

#: Characters of a one-line input/output preview in a search_traces row.
ROW_PREVIEW_CHARS = 100

Order = Literal["newest", "oldest", "latency", "tokens", "errors"]

# The order keys: (SQL over the traces view ``t``, direction). Trace id and project break ties.
_ORDERS: dict[str, list[tuple[str, str]]] = {
    "newest": [("epoch_us(t.start_time)", "DESC")],
    "oldest": [("epoch_us(t.start_time)", "ASC")],
    "latency": [("t.latency_ms", "DESC")],
    "tokens": [("t.total_tokens", "DESC")],
    "errors": [("t.error_count", "DESC"), ("epoch_us(t.start_time)", "DESC")],
}

# The text a regex searches: every text field of every span of the trace.
_TEXT_FIELDS = (
    "name",
    "input_value",
    "output_value",
    "status_message",
    "error_type",
    "error_message",
    "CAST(attributes AS VARCHAR)",
)


# -- results -------------------------------------------------------------------------------------


class TraceRow(BaseModel):
    trace_id: str = Field(description="Trace id (pass to get_trace_preview).")
    project: str = Field(description="Project of the trace.")
    name: str = Field(description="Root span name (the earliest span's while the root is missing).")
    start_time: UtcTime = Field(description="Start of the trace's earliest span (UTC).")
    latency_ms: float = Field(description="From the earliest start to the latest end, in ms.")
    span_count: int = Field(description="Spans in the trace.")
    error_count: int = Field(description="Spans whose status is ERROR.")
    total_tokens: int = Field(description="Tokens of the trace's LLM spans.")
    session_id: str | None = Field(description="Session of the trace, if any.")
    input: str | None = Field(description="One-line preview of the root span's input.")
    output: str | None = Field(description="One-line preview of the root span's output.")


class TraceList(BaseModel):
    traces: list[TraceRow] = Field(description="Matching traces, in the order asked for.")
    total: int | None = Field(
        description="Traces matching the filters, over all pages; null when a newest-first "
        "regex search stopped reading once its page was full (truncated still tells)."
    )
    truncated: bool = Field(description="True when more matching traces follow this page.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page.")
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)
    note: str | None = Field(default=None, description="Why nothing matched, when nothing did.")


# -- search_traces -------------------------------------------------------------------------------


def search_traces(
    store: Store,
    *,
    project: ProjectParam = None,
    since: FilterRef = None,
    until: FilterRef = None,
    status: Annotated[
        Literal["OK", "ERROR"] | None,
        Field(description="ERROR: with an ERROR span; OK: without."),
    ] = None,
    min_latency_ms: Annotated[float | None, Field(ge=0)] = None,
    name: FilterRef = None,
    span_kind: Annotated[
        str | None,
        Field(description="Traces with a span of this kind."),
    ] = None,
    session_id: SessionParam = None,
    user_id: Annotated[str | None, Field()] = None,
    regex: Annotated[
        str | None,
        Field(description="RE2 regex over the trace's text."),
    ] = None,
    ignore_case: bool = False,
    where: FilterRef = None,
    order_by: Order = "newest",
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> TraceList:
    """Find traces by the filters of search_spans, latency, user or a regex over their text.
    Rows: id, latency, counts, tokens, previews."""
    query = _TraceQuery(
        project=project,
        since=since,
        until=until,
        status=_choice(status and status.upper(), ("OK", "ERROR"), "status"),
        min_latency_ms=min_latency_ms,
        name=name,
        span_kind=span_kind,
        session_id=session_id,
        user_id=user_id,
        regex=regex,
        ignore_case=ignore_case,
        where=where,
        order_by=_choice(order_by, tuple(_ORDERS), "order_by") or "newest",
    )
    if not 1 <= limit <= 100:
        raise ToolFailure(
            f"limit={limit} is out of range. Use 1 to 100.", code=ErrorCode.INVALID_ARGUMENT
        )
    after = _keyset_of(cursor, query) if cursor else None
    limit_chars = budget(max_chars, store.settings)
    with store.reader() as reader:
        if project is not None:
            check_project(reader, project)
        if regex is not None:
            check_regex(reader, regex, name="regex")
        found, total = query.page(reader, after, limit + 1, store.settings.search_window_spans)
        note = _why_empty(reader, query) if not found and cursor is None else None
    rows = [_trace_row(raw) for raw in found[:limit]]
    keys = [raw["keys"] for raw in found[:limit]]
    result = TraceList(traces=rows, total=total, truncated=len(found) > limit, note=note)
    return _fit_traces(result, keys, query, limit_chars)


_QUERY_ARGUMENTS = (
    "project",
    "since",
    "until",
    "status",
    "min_latency_ms",
    "name",
    "span_kind",
    "session_id",
    "user_id",
    "regex",
    "ignore_case",
    "where",
    "order_by",
)


@dataclass(frozen=True)
class _TraceQuery:
    """search_traces' filters and order, as SQL over the traces view."""

    project: str | None = None
    since: str | None = None
    until: str | None = None
    status: str | None = None
    min_latency_ms: float | None = None
    name: str | None = None
    span_kind: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    regex: str | None = None
    ignore_case: bool = False
    where: str | None = None
    order_by: str = "newest"
    keys: list[tuple[str, str]] = field(init=False)
    since_at: datetime | None = field(init=False)
    until_at: datetime | None = field(init=False)

    def __post_init__(self) -> None:
        primary = _ORDERS[self.order_by]
        direction = primary[0][1]
        keys = [*primary, ("t.trace_id", direction), ("t.project", direction)]
        object.__setattr__(self, "keys", keys)
        # Parsed once: a relative time ("2h") must mean the same instant in every condition.
        object.__setattr__(self, "since_at", time_param(self.since, "since"))
        object.__setattr__(self, "until_at", time_param(self.until, "until"))

    def arguments(self) -> dict[str, Any]:
        """The call's arguments that differ from the defaults (filters and order)."""
        given = {name: getattr(self, name) for name in _QUERY_ARGUMENTS}
        defaults = {"ignore_case": False, "order_by": "newest"}
        return {k: v for k, v in given.items() if v is not None and defaults.get(k) != v}

    def fingerprint(self) -> str:
        """A short hash of the filters and order: a cursor continues only the query it came
        from."""
        return hashlib.sha256(orjson.dumps(self.arguments())).hexdigest()[:12]

    def page(
        self, reader: Reader, after: list[Any] | None, fetch: int, window_spans: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``fetch`` rows after the keyset ``after``, and the count of all matches
        (``None`` when a windowed regex search stopped before reading every span)."""
        simple = self.where is None and self.span_kind is None
        if self.regex is not None and simple and self.order_by == "newest":
            scope, scope_params = self._span_scope()
            windows = time_windows(
                reader, scope, scope_params, descending=True, first_spans=window_spans
            )
            if len(windows) > 1:
                return self._page_in_windows(reader, after, fetch, windows)
        ctes, params = self._hit_ctes()
        conditions, condition_params = self._trace_conditions()
        params += condition_params
        key_columns = ", ".join(f"{sql} AS k{i}" for i, (sql, _) in enumerate(self.keys))
        order = ", ".join(f"k{i} {direction}" for i, (_, direction) in enumerate(self.keys))
        keyset, keyset_params = _keyset_sql(self.keys, after)
        sql = f"""
            WITH {ctes}
            matched AS (
                SELECT t.project, t.trace_id, {key_columns}
                FROM traces t {self._semi_joins()}
                WHERE {conditions}
            ),
            page AS (SELECT * FROM matched WHERE {keyset} ORDER BY {order} LIMIT ?)
            SELECT page.*, t.name, t.start_time, t.latency_ms, t.span_count, t.error_count,
                   t.total_tokens, t.session_id,
                   left(t.input_preview, {ROW_PREVIEW_CHARS * 4}) AS input,
                   left(t.output_preview, {ROW_PREVIEW_CHARS * 4}) AS output,
                   (SELECT count(*) FROM matched) AS total
            FROM page JOIN traces t ON t.project = page.project AND t.trace_id = page.trace_id
            ORDER BY {order}
        """
        params += [*keyset_params, fetch]
        with where_errors(self.where):
            rows = reader.dicts(sql, params, untrusted=self.where is not None)
        if not rows:
            return [], 0 if after is None else self._count(reader)
        width = len(self.keys)
        for row in rows:
            row["keys"] = [row.pop(f"k{i}") for i in range(width)]
        return rows, int(rows[0]["total"])

    def _page_in_windows(
        self, reader: Reader, after: list[Any] | None, fetch: int, windows: list[Window]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The newest-first regex page, reading spans in start_time windows from the newest.

        Every span of a trace starts at or after the trace's start, so once the spans from
        instant ``lo`` on have been searched, every trace that starts at or after ``lo`` is
        known to match or not; traces found through newer spans but starting earlier wait until
        a window reaches their start. The search stops as soon as ``fetch`` known traces follow
        the cursor: no trace not yet known can sort before them."""
        scope, scope_params = self._span_scope()
        conditions, condition_params = self._trace_conditions()
        key_columns = ", ".join(f"{sql} AS k{i}" for i, (sql, _) in enumerate(self.keys))
        keyset, keyset_params = _keyset_sql(self.keys, after)
        flags = "'i'" if self.ignore_case else "''"
        tests = " OR ".join(f"regexp_matches({f}, ?, {flags})" for f in _TEXT_FIELDS)
        matched: dict[tuple[str, str], tuple[list[Any], bool]] = {}
        ready: list[list[Any]] = []
        complete = True
        for n, window in enumerate(windows):
            inside, inside_params = window_sql(window)
            sql = f"""
                WITH hits AS (
                    SELECT DISTINCT project, trace_id FROM spans
                    WHERE {scope} AND {inside} AND ({tests})
                )
                SELECT *, ({keyset}) AS after_cursor FROM (
                    SELECT t.project, t.trace_id, {key_columns} FROM traces t
                    SEMI JOIN hits ON hits.project = t.project AND hits.trace_id = t.trace_id
                    WHERE {conditions}
                ) m
            """
            params = [
                *scope_params, *inside_params, *[self.regex] * len(_TEXT_FIELDS),
                *keyset_params, *condition_params,
            ]  # fmt: skip
            width = len(self.keys)
            for hit in reader.rows(sql, params):
                matched[(hit[0], hit[1])] = (list(hit[2 : 2 + width]), bool(hit[2 + width]))
            lo = window[0]
            since = None if lo is None else (lo - _EPOCH) // timedelta(microseconds=1)
            ready = sorted(
                (
                    keys
                    for keys, later in matched.values()
                    if later and (since is None or keys[0] >= since)
                ),
                key=tuple,
                reverse=True,
            )
            if len(ready) >= fetch:
                complete = n == len(windows) - 1
                break
        page = ready[:fetch]
        if not page:
            return [], len(matched)
        marks = ", ".join("?" for _ in page)
        details = reader.dicts(
            f"""SELECT t.project, t.trace_id, t.name, t.start_time, t.latency_ms, t.span_count,
                       t.error_count, t.total_tokens, t.session_id,
                       left(t.input_preview, {ROW_PREVIEW_CHARS * 4}) AS input,
                       left(t.output_preview, {ROW_PREVIEW_CHARS * 4}) AS output
                FROM traces t WHERE t.trace_id IN ({marks})""",
            [keys[-2] for keys in page],
        )
        by_id = {(d["project"], d["trace_id"]): d for d in details}
        rows = []
        for keys in page:
            row = by_id[(keys[-1], keys[-2])]
            row["keys"] = keys
            rows.append(row)
        return rows, len(matched) if complete else None

    def _count(self, reader: Reader) -> int:
        ctes, params = self._hit_ctes()
        conditions, condition_params = self._trace_conditions()
        sql = (
            f"WITH {ctes} _none AS (SELECT 1) SELECT count(*) FROM traces t "
            f"{self._semi_joins()} WHERE {conditions}"
        )
        return int(reader.rows(sql, params + condition_params, untrusted=bool(self.where))[0][0])

    def _hit_ctes(self) -> tuple[str, list[Any]]:
        """CTEs naming the traces with a span that matches the regex / the where expression.
        They see only ``spans``, so a where expression cannot reach the outer query."""
        ctes: list[str] = []
        params: list[Any] = []
        scope, scope_params = self._span_scope()
        if self.regex is not None:
            flags = "'i'" if self.ignore_case else "''"
            tests = " OR ".join(f"regexp_matches({f}, ?, {flags})" for f in _TEXT_FIELDS)
            ctes.append(
                f"regex_hits AS (SELECT DISTINCT project, trace_id FROM spans "
                f"WHERE {scope} AND ({tests})),"
            )
            params += [*scope_params, *[self.regex] * len(_TEXT_FIELDS)]
        if self.where is not None or self.span_kind is not None:
            condition, where_params = SpanFilter(span_kind=self.span_kind, where=self.where).sql()
            ctes.append(
                f"where_hits AS (SELECT DISTINCT project, trace_id FROM {span_source(condition)} "
                f"WHERE {scope} AND {condition}),"
            )
            params += [*scope_params, *where_params]
        return "\n".join(ctes), params

    def _span_scope(self) -> tuple[str, list[Any]]:
        """Conditions on spans implied by the trace filters: a trace that starts after
        ``since`` has all its spans after it, so spans before it need not be read."""
        conditions: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.project is not None:
            conditions.append("project = ?")
            params.append(self.project)
        if self.since is not None:
            conditions.append("start_time >= ?")
            params.append(self.since_at)
        return " AND ".join(conditions), params

    def _semi_joins(self) -> str:
        joins = []
        span_hits = self.where is not None or self.span_kind is not None
        for cte in ("regex_hits",) * (self.regex is not None) + ("where_hits",) * span_hits:
            joins.append(
                f"SEMI JOIN {cte} ON {cte}.project = t.project AND {cte}.trace_id = t.trace_id"
            )
        return " ".join(joins)

    def _trace_conditions(self) -> tuple[str, list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        simple = (
            ("t.project = ?", self.project),
            ("t.start_time >= ?", self.since_at),
            ("t.start_time < ?", self.until_at),
            ("t.latency_ms >= ?", self.min_latency_ms),
            ("t.name = ?", self.name),
            ("t.session_id = ?", self.session_id),
            ("t.user_id = ?", self.user_id),
        )
        for sql, value in simple:
            if value is not None:
                conditions.append(sql)
                params.append(value)
        if self.status == "ERROR":
            conditions.append("t.error_count > 0")
        elif self.status == "OK":
            conditions.append("t.error_count = 0")
        return " AND ".join(conditions) or "TRUE", params


def _why_empty(reader: Reader, query: _TraceQuery) -> str:
    """The note of an empty first page: which filter left nothing (see tools/emptiness.py)."""
    scope = ("project", "since", "until", "order_by", "ignore_case")
    filters = {k: v for k, v in query.arguments().items() if k not in scope}

    def count(subset: dict[str, Any]) -> int:
        window = {k: getattr(query, k) for k in ("project", "since", "until", "ignore_case")}
        return _TraceQuery(**window, **subset)._count(reader)

    note = explain_empty(
        reader,
        noun="traces",
        table="traces",
        project=query.project,
        since=query.since,
        until=query.until,
        since_at=query.since_at,
        until_at=query.until_at,
        filters=filters,
        count=count,
    )
    read = annotation_note(reader, query.where)
    return f"{note} {read}" if read else note


def _keyset_sql(keys: list[tuple[str, str]], after: list[Any] | None) -> tuple[str, list[Any]]:
    """Rows strictly after ``after`` in the order of ``keys`` (columns ``k0``, ``k1``…):
    ``k0 after v0 OR (k0 = v0 AND k1 after v1) OR …``."""
    if after is None:
        return "TRUE", []
    alternatives: list[str] = []
    params: list[Any] = []
    for i, (_, direction) in enumerate(keys):
        op = "<" if direction == "DESC" else ">"
        terms = [f"k{j} = ?" for j in range(i)] + [f"k{i} {op} ?"]
        alternatives.append("(" + " AND ".join(terms) + ")")
        params += after[: i + 1]
    return "(" + " OR ".join(alternatives) + ")", params


def _keyset_of(cursor: str, query: _TraceQuery) -> list[Any]:
    keys = decode_cursor(cursor, "search_traces", query.fingerprint())
    if not _valid_keys(keys, len(query.keys)):
        raise ToolFailure(
            "The cursor is damaged. Pass next_cursor unchanged, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return keys


def _valid_keys(keys: Any, width: int) -> bool:
    if not isinstance(keys, list) or len(keys) != width:
        return False
    numbers, names = keys[:-2], keys[-2:]
    return all(isinstance(k, int | float) and not isinstance(k, bool) for k in numbers) and all(
        isinstance(k, str) for k in names
    )


def _trace_row(raw: dict[str, Any]) -> TraceRow:
    return TraceRow(
        trace_id=raw["trace_id"],
        project=raw["project"],
        name=cut(raw["name"]) or "",
        start_time=raw["start_time"],
        latency_ms=tidy(float(raw["latency_ms"])),
        span_count=int(raw["span_count"]),
        error_count=int(raw["error_count"]),
        total_tokens=int(raw["total_tokens"]),
        session_id=cut(raw["session_id"]),
        input=one_line(raw["input"], ROW_PREVIEW_CHARS),
        output=one_line(raw["output"], ROW_PREVIEW_CHARS),
    )


def _fit_traces(
    result: TraceList,
    keys: list[list[Any]],
    query: _TraceQuery,
    limit_chars: int,
) -> TraceList:
    """The page cut to the budget: rows are dropped from the end (the cursor then continues
    after the last row shown); a lone row too big for the budget loses its previews."""
    rows = list(result.traces)
    more = result.truncated

    def build(shown: int) -> TraceList:
        result.traces = rows[:shown]
        result.truncated = more or shown < len(rows)
        result.next_cursor = result.next_call = None
        if result.truncated and shown:
            key = keys[shown - 1]
            result.next_cursor = encode_cursor("search_traces", query.fingerprint(), key)
            result.next_call = next_call("search_traces")
        return result

    shown = largest_fit(build, len(rows), limit_chars)
    build(shown)
    if shown == 1 and size(result) > limit_chars:
        rows[0] = rows[0].model_copy(update={"input": None, "output": None})
        build(1)
    return result


# -- shared checks -------------------------------------------------------------------------------


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise ToolFailure(
            f"{name}={value!r} is not allowed. Use one of {', '.join(allowed)}.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return value
