"""The ``aggregate`` tool: GROUP BY over spans or traces without writing SQL.

Group keys and metrics are small strings an agent writes (``model``, ``hour(start_time)``,
``p95(latency_ms)``). Each is parsed strictly and turned into SQL by a whitelist: public columns
and dotted attribute paths through :func:`field_sql` (which validates them), time buckets and
metric functions from fixed tables. The raw string never reaches SQL; only the shared ``where``
filter does, and that runs as an untrusted statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import SPAN_NUMERIC_COLUMNS, Store
from traceproof.tools.common import JsonValue, MaxChars, ToolFailure, budget, size
from traceproof.tools.filters import (
    ANNOTATION_ROOT,
    FilterRef,
    ProjectParam,
    SessionParam,
    SpanFilter,
    StatusParam,
    field_sql,
    span_source,
    trace_source,
    where_errors,
)
from traceproof.tools.paging import tidy_cell
from traceproof.tools.tabular import fit_note, fit_rows

#: Columns of the ``traces`` view that can be grouped by or aggregated.
TRACE_COLUMNS = (
    "project",
    "trace_id",
    "name",
    "root_span_id",
    "has_root",
    "span_kind",
    "status",
    "start_time",
    "end_time",
    "latency_ms",
    "span_count",
    "error_count",
    "llm_span_count",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "session_id",
    "user_id",
)
_TRACE_NUMERIC = (
    "latency_ms",
    "span_count",
    "error_count",
    "llm_span_count",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)

#: Time buckets: ``unit(column)``.
_BUCKETS = ("minute", "hour", "day", "week")
_TIME_COLUMNS = ("start_time", "end_time")

#: Metric functions and their SQL; ``{x}`` is the argument's SQL.
_FUNCTIONS: dict[str, str] = {
    "count": "count({x})",
    "count_distinct": "count(DISTINCT {x})",
    "sum": "sum({x})",
    "avg": "avg({x})",
    "min": "min({x})",
    "max": "max({x})",
    "p50": "quantile_cont({x}, 0.5)",
    "p90": "quantile_cont({x}, 0.9)",
    "p95": "quantile_cont({x}, 0.95)",
    "p99": "quantile_cont({x}, 0.99)",
}
#: Functions whose argument is read as a number.
_NUMERIC_FUNCTIONS = frozenset({"sum", "avg", "p50", "p90", "p95", "p99"})

_CALL = re.compile(r"^\s*([a-z_0-9]+)\s*\(\s*([^()]*?)\s*\)\s*$", re.IGNORECASE)
_ORDER = re.compile(r"^(.*?)(?:\s+(asc|desc))?\s*$", re.IGNORECASE | re.DOTALL)

_NOTE_ROOM = 400
_MARKER = "…[clipped: {cut:,} chars]"

GroupByParam = Annotated[
    list[str],
    Field(
        description="Columns (model, tool_name…), attribute paths or "
        "minute/hour/day/week(start_time)."
    ),
]
MetricsParam = Annotated[
    list[str],
    Field(
        description="count, count_distinct(x), sum/avg/min/max(x), p50/p90/p95/p99(x) of a "
        "numeric column (latency_ms…) or path.",
        min_length=1,
    ),
]


class AggregateResult(BaseModel):
    columns: list[str] = Field(description="Group keys, then metrics, as given.")
    rows: list[list[JsonValue]] = Field(description="One row per group (times ISO 8601, UTC).")
    truncated: bool = Field(description="True when more groups exist than returned.")
    note: str | None = Field(default=None, description="What was left out and how to get it.")


@dataclass(frozen=True)
class _Source:
    """What is aggregated: the spans table or the traces view, and the names it accepts."""

    table: str
    columns: tuple[str, ...]
    numeric: tuple[str, ...]
    paths: bool  # dotted attribute paths allowed

    def allowed(self) -> str:
        paths = ", or a dotted attribute path (llm.token_count.prompt)" if self.paths else ""
        return f"{', '.join(self.columns)}{paths}"


_SPANS_SOURCE = _Source(
    "spans",
    (
        "project",
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "span_kind",
        "status",
        "status_message",
        "start_time",
        "end_time",
        "latency_ms",
        "session_id",
        "user_id",
        "model",
        "tool_name",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "error_type",
        "error_message",
    ),
    SPAN_NUMERIC_COLUMNS,
    True,
)
_TRACES = _Source("traces", TRACE_COLUMNS, _TRACE_NUMERIC, False)


def aggregate(
    store: Store,
    *,
    group_by: GroupByParam = [],  # noqa: B006 (pydantic copies defaults; never mutated)
    metrics: MetricsParam = ["count"],  # noqa: B006
    over: Annotated[
        Literal["spans", "traces"],
        Field(description="Rows: spans, or traces (latency_ms, span_count…)."),
    ] = "spans",
    project: ProjectParam = None,
    since: FilterRef = None,
    until: FilterRef = None,
    status: StatusParam = None,
    span_kind: FilterRef = None,
    name: FilterRef = None,
    session_id: SessionParam = None,
    where: FilterRef = None,
    order_by: Annotated[
        str | None,
        Field(description="A metric or key as written, + ' asc' (default desc)."),
    ] = None,
    limit: Annotated[int, Field(ge=1, le=1000)] = 50,
    max_chars: MaxChars = None,
) -> AggregateResult:
    """Group spans or traces and compute metrics: p95 latency or tokens by model, errors per
    hour. Filters as in search_spans; over='traces' counts a trace when any span matches."""
    source = _SPANS_SOURCE if over == "spans" else _TRACES
    groups = [_group_sql(g, source) for g in group_by]
    measures = [_metric_sql(m, source) for m in metrics]
    names = [g[0] for g in groups] + [m[0] for m in measures]
    order = _order_sql(order_by, [g[0] for g in groups], [m[0] for m in measures])
    span_filter = SpanFilter(project, since, until, status, span_kind, name, session_id, where)
    query, params = _query(source, groups, measures, order, span_filter, limit)
    with store.reader() as reader, where_errors(where):
        rows = reader.rows(query, params, untrusted=span_filter.untrusted)
    more = len(rows) > limit
    result = AggregateResult(columns=names, rows=[], truncated=more)
    room = budget(max_chars, store.settings) - size(result) - _NOTE_ROOM
    tidied = [tuple(tidy_cell(v) for v in row) for row in rows[:limit]]
    fitted = fit_rows(names, tidied, room, _marker)
    result.rows = fitted.rows
    result.truncated = more or fitted.dropped > 0
    note = _note(len(fitted.rows), fitted.dropped, more, limit, fitted.clipped_cells)
    result.note = fit_note(note, budget(max_chars, store.settings) - size(result))
    return result


def _group_sql(text: str, source: _Source) -> tuple[str, str]:
    """``(name, sql)`` of a group key: a column, an attribute path or a time bucket."""
    name = " ".join(text.split())
    call = _CALL.match(name)
    if call:
        unit, column = call[1].lower(), call[2]
        if unit not in _BUCKETS or column not in _TIME_COLUMNS:
            raise _bad(
                f"group_by {text!r} is not a time bucket",
                f"Use {', '.join(f'{b}(start_time)' for b in _BUCKETS)} (or end_time), a "
                f"column ({source.allowed()})",
            )
        return f"{unit}({column})", f"date_trunc('{unit}', {column})"
    return name, _field(name, source, numeric=False, role="group_by")


def _metric_sql(text: str, source: _Source) -> tuple[str, str]:
    """``(name, sql)`` of a metric such as ``count``, ``p95(latency_ms)``."""
    name = " ".join(text.split())
    if name.lower() in ("count", "count(*)"):
        return "count", "count(*)"
    call = _CALL.match(name)
    function = call[1].lower() if call else None
    if call is None or function not in _FUNCTIONS or not call[2]:
        raise _bad(
            f"metric {text!r} is not one of the metrics",
            f"Use count, {', '.join(f'{f}(x)' for f in _FUNCTIONS if f != 'count')}, "
            f"with x one of {', '.join(source.numeric)}"
            + (" or an attribute path" if source.paths else ""),
        )
    assert function is not None
    argument = call[2]
    numeric = function in _NUMERIC_FUNCTIONS or (
        function in ("min", "max") and argument not in source.columns
    )
    if (
        function in _NUMERIC_FUNCTIONS
        and argument in source.columns
        and argument not in source.numeric
    ):
        raise _bad(
            f"metric {text!r}: {argument} is not numeric",
            f"Use one of {', '.join(source.numeric)}"
            + (" or a numeric attribute path" if source.paths else ""),
        )
    column = _field(argument, source, numeric=numeric, role="metric")
    return f"{function}({argument})", _FUNCTIONS[function].format(x=column)


def _field(name: str, source: _Source, *, numeric: bool, role: str) -> str:
    if name in source.columns:
        return f"TRY_CAST({name} AS DOUBLE)" if numeric and name not in source.numeric else name
    if name.startswith(ANNOTATION_ROOT + "."):
        return field_sql(name, numeric=numeric)  # annotations: over spans and traces alike
    if not source.paths:
        raise _bad(f"{role} {name!r} is not a column of {source.table}", f"Use {source.allowed()}")
    try:
        return field_sql(name, numeric=numeric)
    except ToolFailure:
        raise _bad(
            f"{role} {name!r} is neither a column nor a dotted attribute path",
            f"Use {source.allowed()}",
        ) from None


def _order_sql(order_by: str | None, groups: list[str], metrics: list[str]) -> str:
    """ORDER BY over the result's positional aliases; default: the first metric, descending."""
    names = groups + metrics
    if order_by is None:
        first = len(groups)
        return f"{first + 1} DESC NULLS LAST"
    match = _ORDER.match(order_by.strip())
    assert match is not None
    wanted = " ".join(match[1].split())
    direction = (match[2] or "desc").upper()
    lowered = [n.lower() for n in names]
    if wanted.lower() not in lowered:
        raise _bad(
            f"order_by {order_by!r} names no group key or metric",
            f"Use one of {', '.join(names)}, optionally followed by asc or desc",
        )
    return f"{lowered.index(wanted.lower()) + 1} {direction} NULLS LAST"


def _query(
    source: _Source,
    groups: list[tuple[str, str]],
    measures: list[tuple[str, str]],
    order: str,
    span_filter: SpanFilter,
    limit: int,
) -> tuple[str, list[Any]]:
    condition, params = span_filter.sql()
    selected = [f"{sql} AS g{i}" for i, (_, sql) in enumerate(groups)]
    selected += [f"{sql} AS m{i}" for i, (_, sql) in enumerate(measures)]
    table = source.table
    if table == "traces":
        if condition != "TRUE":
            spans = span_source(condition)
            condition = (
                f"(project, trace_id) IN (SELECT project, trace_id FROM {spans} WHERE {condition})"
            )
        table = trace_source(*selected)
    elif table == "spans":
        table = span_source(condition, *selected)
    # Ties broken by the group keys so a page is the same on every call.
    tie = "".join(f", {i + 1}" for i in range(len(groups)))
    group = "GROUP BY ALL" if groups else ""
    query = (
        f"SELECT {', '.join(selected)} FROM {table} WHERE {condition} {group} "
        f"ORDER BY {order}{tie} LIMIT {limit + 1}"
    )
    return query, params


def _marker(column: str, kept: int, total: int) -> str:
    return _MARKER.format(cut=total - kept)


def _note(shown: int, dropped: int, more: bool, limit: int, clipped: int) -> str | None:
    parts: list[str] = []
    if more:
        parts.append(
            f"More than {limit} groups: raise limit (max 1000), add filters, or group by fewer "
            "keys."
        )
    if dropped:
        parts.append(
            f"{dropped} more groups did not fit the response budget: lower limit or raise "
            "max_chars."
        )
    if clipped:
        parts.append(f"{clipped} long group values were clipped.")
    return " ".join(parts) or None


def _bad(what: str, hint: str) -> ToolFailure:
    return ToolFailure(f"{what}. {hint}.", code=ErrorCode.INVALID_ARGUMENT)
