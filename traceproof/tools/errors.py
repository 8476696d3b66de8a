"""``categorize_errors``: the error spans grouped into clusters an agent can read at a glance.

An error is a span with status ERROR, an ``exception`` event or an ``error.type`` attribute.
One DuckDB query does the counting: it reads each error's type, message (``error_message``,
else ``status_message``) and stack trace (``exception.stacktrace`` of its exception event),
templates each distinct message *shape* once (:func:`traceproof.evals.fingerprint.
template_query`) and groups by type, template and stack, with counts, times, names, tools, the
distinct traces and sessions and the latest examples. :func:`traceproof.evals.clusters.cluster`
turns those groups into fingerprint clusters with near-duplicates merged; this module fits them
into the response budget.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.evals.clusters import Cluster, ErrorGroup, Example, cluster
from traceproof.evals.fingerprint import frames_sql, shape_sql, template_query
from traceproof.storage import Store
from traceproof.tools.common import MaxChars, ToolFailure, UtcTime, budget, one_line, size
from traceproof.tools.filters import (
    FilterRef,
    ProjectParam,
    SessionParam,
    SpanFilter,
    span_source,
    where_errors,
)
from traceproof.tools.tabular import fit_note

#: Span names and tools listed per cluster (the most frequent).
MAX_NAMES = 5
#: Example errors per cluster (the most recent).
MAX_EXAMPLES = 3
#: Characters of a stack trace read per error: its head and its tail (Python's innermost frames
#: are last, JavaScript's first).
STACK_HEAD, STACK_TAIL = 2000, 4000
_NOTE_ROOM = 300


class ErrorExample(BaseModel):
    span_id: str
    trace_id: str
    message: str = Field(description="Raw message, clipped.")


class ErrorCluster(BaseModel):
    fingerprint: str = Field(description="Stable id of the cluster.")
    error_type: str | None
    template: str = Field(description="Message with variable parts as <placeholders>.")
    count: int
    share: float = Field(description="Of all errors matched.")
    traces: int
    sessions: int
    first_seen: UtcTime
    last_seen: UtcTime
    span_names: list[str]
    tools: list[str]
    frames: list[str] = Field(description="Top stack frames, innermost first.")
    variants: int = Field(description="Templates merged into this one.")
    examples: list[ErrorExample]


class ErrorCategories(BaseModel):
    errors: int = Field(description="Error spans matched.")
    total_clusters: int
    clusters: list[ErrorCluster] = Field(description="Largest first.")
    truncated: bool = Field(description="True when more clusters exist than returned.")
    note: str | None = None


def categorize_errors(
    store: Store,
    *,
    project: ProjectParam = None,
    since: FilterRef = None,
    until: FilterRef = None,
    span_kind: FilterRef = None,
    name: FilterRef = None,
    session_id: SessionParam = None,
    where: FilterRef = None,
    annotation: Annotated[
        str | None,
        Field(description="Cluster its fail explanations instead."),
    ] = None,
    save: Annotated[bool, Field(description="Write error_category annotations.")] = False,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
    max_chars: MaxChars = None,
) -> ErrorCategories:
    """Cluster error spans by type, message template and top frames: what fails, how often,
    where. Filters as in search_spans."""
    room = budget(max_chars, store.settings)
    if save:
        require_annotations("save=true writes an error_category annotation on each error span")
    span_filter = SpanFilter(project, since, until, None, span_kind, name, session_id, where)
    if annotation is not None:
        groups = annotation_groups(store, annotation, span_filter)
    else:
        groups = span_error_groups(store, span_filter)
    settings = store.settings
    clusters = cluster(
        groups,
        threshold=settings.errors_merge_similarity,
        max_templates=settings.errors_merge_templates,
        examples=MAX_EXAMPLES,
    )
    if save:
        save_categories(store, clusters)
    total = sum(c.count for c in clusters)
    return _fit(clusters, total, limit, room, settings.errors_example_chars)


def span_error_groups(store: Store, span_filter: SpanFilter) -> list[ErrorGroup]:
    """The error spans matching ``span_filter``, grouped by type, template and stack trace."""
    condition, params = span_filter.sql()
    chars = store.settings.errors_example_chars
    source = span_source(condition, "session_id")
    message = "coalesce(error_message, status_message, '')"
    # The exception event is nearly always the first: read it directly, else search them all.
    first = "json_extract_string(events, '$[0].attributes.exception.stacktrace')"
    every = (
        "list_filter(json_extract_string(events, '$[*].attributes.exception.stacktrace'), "
        "x -> x IS NOT NULL)[1]"
    )
    stack = f"CASE WHEN contains(events, 'stacktrace') THEN coalesce({first}, {every}) END"
    clipped = (
        f"CASE WHEN length(st) > {STACK_HEAD + STACK_TAIL} THEN left(st, {STACK_HEAD}) || "
        f"chr(10) || right(st, {STACK_TAIL}) ELSE st END"
    )
    stripped = (
        "CASE WHEN error_type IS NOT NULL AND starts_with(message, error_type || ': ') "
        "THEN message[length(error_type) + 3:] ELSE message END"
    )
    # A trace usually repeats the message (Python's last line, JavaScript's first): without
    # it, the traces of one code path are a handful of texts, reduced to frames once each.
    unmessaged = f"CASE WHEN message = '' THEN {clipped} ELSE replace({clipped}, message, '') END"
    query = f"""
        WITH raw AS MATERIALIZED (
            SELECT span_id, trace_id, session_id, start_time, name, tool_name, error_type,
                   {message} AS message, {stack} AS st
            FROM {source}
            WHERE ({condition})
              AND (status = 'ERROR' OR error_type IS NOT NULL OR error_message IS NOT NULL)
        ),
        errors AS MATERIALIZED (
            SELECT *, {shape_sql(stripped)} AS shape, {unmessaged} AS stack_key FROM raw
        ),
        shapes AS ({template_query("(SELECT DISTINCT shape FROM errors) AS d")}),
        stacks AS (
            SELECT stack_key, {frames_sql("stack_key")} AS stack
            FROM (SELECT DISTINCT stack_key FROM errors WHERE stack_key IS NOT NULL)
        )
        SELECT error_type, template, stack, count(*), min(start_time), max(start_time),
               list(DISTINCT name),
               list(DISTINCT tool_name) FILTER (WHERE tool_name IS NOT NULL),
               list(DISTINCT trace_id),
               list(DISTINCT session_id) FILTER (WHERE session_id IS NOT NULL),
               arg_max({{'span_id': span_id, 'trace_id': trace_id,
                         'message': left(message, {chars + 1}), 'seen': start_time}},
                       start_time, {MAX_EXAMPLES})
        FROM errors JOIN shapes USING (shape) LEFT JOIN stacks USING (stack_key)
        GROUP BY error_type, template, stack
    """
    with store.reader() as reader, where_errors(span_filter.where):
        rows = reader.rows(query, params, untrusted=span_filter.untrusted)
    return [_group(row) for row in rows]


def _group(row: tuple[Any, ...]) -> ErrorGroup:
    kind, text, stack, count, first, last, names, tools, traces, sessions, examples = row
    return ErrorGroup(
        error_type=kind,
        template=text,
        stack=stack,
        count=count,
        first_seen=first,
        last_seen=last,
        span_names=names or (),
        tools=tools or (),
        trace_ids=traces or (),
        session_ids=sessions or (),
        examples=[
            Example(e["span_id"], e["trace_id"], e["message"], e["seen"]) for e in examples or ()
        ],
    )


def annotation_groups(store: Store, name: str, span_filter: SpanFilter) -> list[ErrorGroup]:
    """The failing explanations of annotation ``name`` on the spans matching ``span_filter``
    (every ``fail`` of a judge: failures that raise no exception), as error groups.

    Not available yet: annotations are stored (storage/annotations.py), but this reader is not
    written. Once it is,
    this reads ``(annotation id, trace, session, name as type, explanation, no stack, time,
    span name, tool)`` records of the failing labels and passes them through
    :func:`traceproof.evals.clusters.group_records`.
    """
    require_annotations(f"annotation={name[:80]!r} clusters an annotation's explanations")
    return []


def save_categories(store: Store, clusters: list[Cluster]) -> None:
    """Write an ``error_category`` annotation (label: the cluster's fingerprint, explanation:
    its type and template) on every error span of ``clusters``.

    Not available yet: it needs a per-span fingerprint pass to write with
    ``storage.annotations.write_annotations``.
    """
    require_annotations("save=true writes an error_category annotation on each error span")


def require_annotations(what: str) -> None:
    """Refuse what categorize_errors cannot do with annotations yet: ``[not_available]``.
    Remove with the stubs above once they are written."""
    raise ToolFailure(
        f"{what}, and this traceproof cannot do that yet (annotations are stored, but "
        "categorize_errors does not read or write them). Call again without it to cluster the "
        "span errors.",
        code=ErrorCode.NOT_AVAILABLE,
    )


def _fit(
    clusters: list[Cluster], total: int, limit: int, room: int, example_chars: int
) -> ErrorCategories:
    result = ErrorCategories(
        errors=total, total_clusters=len(clusters), clusters=[], truncated=False
    )
    shown = result.clusters  # the model's own list (pydantic copies the one it is given)
    shown.extend(_model(c, total, example_chars) for c in clusters[:limit])
    while shown and size(result) > room - _NOTE_ROOM:
        shown.pop()
    result.truncated = len(shown) < len(clusters)
    note = None
    if result.truncated:
        more = len(clusters) - len(shown)
        why = "past limit" if len(shown) == min(limit, len(clusters)) else "past the budget"
        note = (
            f"{more} smaller clusters not shown ({why}): raise limit or max_chars, or narrow "
            "the filters (since, name, where…)."
        )
    result.note = fit_note(note, room - size(result))
    return result


def _model(item: Cluster, total: int, example_chars: int) -> ErrorCluster:
    return ErrorCluster(
        fingerprint=item.key,
        error_type=item.error_type,
        template=one_line(item.template, 500) or "",
        count=item.count,
        share=round(item.count / total, 4) if total else 0.0,
        traces=len(item.traces),
        sessions=len(item.sessions),
        first_seen=item.first_seen,
        last_seen=item.last_seen,
        span_names=_most_common(item.span_names),
        tools=_most_common(item.tools),
        frames=list(item.frames),
        variants=len(item.templates),
        examples=[
            ErrorExample(
                span_id=e.span_id,
                trace_id=e.trace_id,
                message=one_line(e.message, example_chars) or "",
            )
            for e in item.examples
        ],
    )


def _most_common(counts: Counter[str]) -> list[str]:
    """The most frequent names, ties in name order (the same answer on every call)."""
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return [name for name, _ in ranked[:MAX_NAMES]]
