"""``categorize_errors``: errors grouped into clusters an agent can read at a glance.

An error is a span with status ERROR, an ``exception`` event or an ``error.type`` attribute.
One DuckDB query does the counting: it reads each error's type, message (``error_message``,
else ``status_message``) and stack trace (``exception.stacktrace`` of its exception event),
templates each distinct message *shape* once (:func:`traceproof.evals.fingerprint.
template_query`) and groups by type, template and stack, with counts, times, names, tools, the
distinct traces and sessions and the latest examples. :func:`traceproof.evals.clusters.cluster`
turns those groups into fingerprint clusters with near-duplicates merged; this module fits them
into the response budget.

With ``annotation=NAME`` the errors are that annotation's failing verdicts instead (one per
target, its explanation as the message: failures that raise no exception), grouped in Python
(:func:`annotation_groups`). ``llm=true`` has the LLM name the clusters
(:mod:`traceproof.evals.naming`). ``save=true`` writes an ``error_category`` annotation on
every error matched (:func:`save_categories`): the same query then lists each group's spans,
and :func:`traceproof.evals.clusters.assignments` maps each group to its cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, Direction, TargetKind
from traceproof.evals.clusters import (
    Cluster,
    ErrorGroup,
    ErrorRecord,
    Example,
    GroupKey,
    assignments,
    cluster,
    group_key,
    group_records,
)
from traceproof.evals.fingerprint import frames_sql, shape_sql, template_query
from traceproof.evals.llm import LLMClient
from traceproof.evals.naming import Category, Naming, name_clusters
from traceproof.settings import Settings
from traceproof.storage import Reader, Store
from traceproof.storage.annotations import get_configs, write_annotations
from traceproof.tools.annotations import AnnotateResult, confirm_first
from traceproof.tools.annotations import _conditions as annotation_conditions
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
    category: str | None = Field(default=None, description="The LLM's category (llm=true).")
    examples: list[ErrorExample]


class ErrorCategory(BaseModel):
    name: str
    description: str
    count: int
    share: float
    clusters: list[str] = Field(description="Fingerprints of its clusters.")


class ErrorCategories(BaseModel):
    errors: int = Field(description="Errors matched (spans, or the annotation's targets).")
    labels: list[str] = Field(default_factory=list, description="The annotation's labels read.")
    total_clusters: int
    categories: list[ErrorCategory] = Field(
        default_factory=list, description="llm=true: the LLM's categories, largest first."
    )
    clusters: list[ErrorCluster] = Field(description="Largest first.")
    truncated: bool = Field(description="True when more clusters exist than returned.")
    saved: AnnotateResult | None = Field(default=None, description="save=true: what was written.")
    llm_cost_usd: float | None = None
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
    annotation: Annotated[str | None, Field(description="Its fails; NAME=a|b: labels.")] = None,
    llm: Annotated[bool, Field(description="LLM names them.")] = False,
    save: Annotated[bool, Field(description="Write error_category.")] = False,
    confirm: Annotated[bool, Field(description="Past the cap.")] = False,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
    max_chars: MaxChars = None,
) -> ErrorCategories:
    """Group errors by type, template, frames. Filters as in search_spans."""
    room = budget(max_chars, store.settings)
    settings = store.settings
    span_filter = SpanFilter(project, since, until, None, span_kind, name, session_id, where)
    if annotation is not None:
        source, _, labels = annotation.partition("=")
        chosen = [value for value in labels.split("|") if value] or None  # NAME=: default
        errors = annotation_groups(store, source, span_filter, chosen)
    else:
        errors = span_errors(store, span_filter, targets=save)
    clusters = cluster(
        errors.groups,
        threshold=settings.errors_merge_similarity,
        max_templates=settings.errors_merge_templates,
        examples=MAX_EXAMPLES,
    )
    naming = name_clusters(llm_client(settings), clusters) if llm and clusters else None
    saved = save_categories(store, errors, clusters, naming, confirm=confirm) if save else None
    total = sum(c.count for c in clusters)
    result = _fit(clusters, total, limit, room, settings.errors_example_chars, naming, saved)
    if errors.labels:
        result.labels = errors.labels
    return result


# -- sources: span errors, an annotation's failing explanations ---------------------------------


@dataclass(frozen=True)
class Target:
    """What an ``error_category`` annotation is written on."""

    kind: TargetKind
    project: str
    trace_id: str | None
    target_id: str


@dataclass
class ErrorSet:
    """The errors of one source: their groups, and (read again only for save=true) every
    error's target with the key of its group."""

    groups: list[ErrorGroup]
    targets: Callable[[], list[tuple[Target, GroupKey]]]
    identifier: str = ""  # of the error_category annotations written
    labels: list[str] = field(default_factory=list)


def span_errors(store: Store, span_filter: SpanFilter, *, targets: bool = False) -> ErrorSet:
    """The error spans matching ``span_filter``, grouped by type, template and stack trace;
    with ``targets`` (save=true) the same query lists every group's spans too."""
    groups, members = span_error_groups(store, span_filter, targets=targets)
    pairs = [
        (Target(TargetKind.SPAN, project, trace, span), group_key(group))
        for group, spans in zip(groups, members, strict=True)
        for project, trace, span in spans
    ]
    return ErrorSet(groups, lambda: pairs)


def _errors_sql(span_filter: SpanFilter) -> tuple[str, list[Any]]:
    """The ``WITH`` clause every span error query starts with: ``errors`` (one row per error
    span, with its message shape and stack key), ``shapes`` (shape → template) and ``stacks``
    (stack key → frame lines)."""
    condition, params = span_filter.sql()
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
    sql = f"""
        WITH raw AS MATERIALIZED (
            SELECT project, span_id, trace_id, session_id, start_time, name, tool_name,
                   error_type, {message} AS message, {stack} AS st
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
    """
    return sql, params


def span_error_groups(
    store: Store, span_filter: SpanFilter, *, targets: bool = False
) -> tuple[list[ErrorGroup], list[list[tuple[str, str, str]]]]:
    """The error groups of the spans matching ``span_filter`` (one query), and with
    ``targets`` each group's spans as (project, trace, span)."""
    with_errors, params = _errors_sql(span_filter)
    chars = store.settings.errors_example_chars
    members = ", list([project, trace_id, span_id])" if targets else ""
    query = f"""{with_errors}
        SELECT error_type, template, stack, count(*), min(start_time), max(start_time),
               list(DISTINCT name),
               list(DISTINCT tool_name) FILTER (WHERE tool_name IS NOT NULL),
               list(DISTINCT trace_id),
               list(DISTINCT session_id) FILTER (WHERE session_id IS NOT NULL),
               arg_max({{'span_id': span_id, 'trace_id': trace_id,
                         'message': left(message, {chars + 1}), 'seen': start_time}},
                       start_time, {MAX_EXAMPLES}){members}
        FROM errors JOIN shapes USING (shape) LEFT JOIN stacks USING (stack_key)
        GROUP BY error_type, template, stack
    """
    with store.reader() as reader, where_errors(span_filter.where):
        rows = reader.rows(query, params, untrusted=span_filter.untrusted)
    groups = [_group(row[:11]) for row in rows]
    spans = [[(p, t, s) for p, t, s in row[11]] for row in rows] if targets else [[]] * len(rows)
    return groups, spans


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


#: Labels read as failures when an annotation's config scores none (compared lower-cased).
FAILING_LABELS = frozenset(
    {"fail", "failed", "failure", "false", "incorrect", "wrong", "bad", "error", "unsafe",
     "hallucinated", "unhelpful", "irrelevant", "toxic", "no"}
)  # fmt: skip

#: An annotation's current verdict per target (a person's latest wins, else the latest of
#: any, as ``where annotation.<name>`` reads it), with the span, or the trace's root, it is on.
_VERDICTS = """
WITH verdicts AS (
    SELECT * FROM annotations a WHERE a.name = ? AND {cond}
    QUALIFY row_number() OVER (
        PARTITION BY a.project, a.target_kind, a.target_id, a.trace_id
        ORDER BY a.annotator_kind = 'HUMAN' DESC, a.updated_at DESC, a.id) = 1
)
SELECT v.target_kind, v.project, v.trace_id, v.target_id, v.session_id, v.label,
       v.explanation, coalesce(s.start_time, t.start_time, v.updated_at), s.name, s.tool_name,
       coalesce(v.span_id, t.root_span_id, v.target_id)
FROM verdicts v
LEFT JOIN spans s ON v.target_kind = 'span' AND s.project = v.project
    AND s.trace_id = v.trace_id AND s.span_id = v.span_id
LEFT JOIN trace_index t ON v.target_kind = 'trace' AND t.project = v.project
    AND t.trace_id = v.trace_id
WHERE list_contains(?, v.label)
ORDER BY v.target_kind, v.project, v.trace_id, v.target_id
"""


def annotation_groups(
    store: Store, name: str, span_filter: SpanFilter, labels: list[str] | None = None
) -> ErrorSet:
    """The failing explanations of annotation ``name`` on the targets matching ``span_filter``
    (every ``fail`` of a judge: failures that raise no exception), as error groups: the type
    is ``name=label``, the message the explanation; each target's current verdict counts once.

    ``labels`` default to the failing labels (:func:`failing_labels`)."""
    flt = None if span_filter == SpanFilter() else span_filter
    cond, params = annotation_conditions(None, None, None, None, None, None, None, flt)
    with store.reader() as reader, where_errors(span_filter.where):
        chosen = labels if labels is not None else failing_labels(reader, name)
        rows = reader.rows(
            _VERDICTS.format(cond=cond),
            [name, *params, chosen],
            untrusted=flt is not None and flt.untrusted,
        )
    records: list[ErrorRecord] = []
    targets: list[Target] = []
    for kind, project, trace, target_id, session, verdict, text, time, span, tool, shown in rows:
        targets.append(Target(TargetKind(kind), project, trace, target_id))
        records.append(
            ErrorRecord(shown, trace or "", session, f"{name}={verdict}", text, None, time,
                        span, tool)
        )  # fmt: skip
    keys: list[GroupKey] = []
    groups = group_records(records, MAX_EXAMPLES, keys)
    pairs = list(zip(targets, keys, strict=True))
    return ErrorSet(groups, lambda: pairs, identifier=name, labels=list(chosen))


def failing_labels(reader: Reader, name: str) -> list[str]:
    """The labels of annotation ``name`` that are failures, decided in this order:

    1. its config scores its labels: the lowest-scored ones (the highest when its direction is
       MINIMIZE);
    2. the labels it has (in its config, else stored) that name a failure
       (:data:`FAILING_LABELS`: ``fail``, ``incorrect``, ``wrong``…);
    3. the stored label(s) with the lowest mean score, when every label has scores.

    Raises ``[invalid_argument]`` when none of these decides, or nothing is stored."""
    config = get_configs(reader, [name]).get(name)
    if config is not None and config.labels:
        scored = [c for c in config.labels if c.score is not None]
        if scored:
            pick = max if config.direction is Direction.MINIMIZE else min
            worst = pick(c.score for c in scored if c.score is not None)
            return [c.label for c in scored if c.score == worst]
    stored = reader.rows(
        "SELECT label, avg(score), count(score) = count(*) FROM annotations "
        "WHERE name = ? AND label IS NOT NULL GROUP BY label ORDER BY label",
        [name],
    )
    known = [c.label for c in config.labels] if config is not None and config.labels else []
    known = known or [row[0] for row in stored]
    if not known:
        raise ToolFailure(
            f"No labelled annotation named {name[:80]!r} is stored. Call get_annotations to "
            "see the names, or annotate first.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    failing = [value for value in known if value.lower() in FAILING_LABELS]
    if failing:
        return failing
    if len(stored) > 1 and all(row[2] for row in stored):
        worst = min(row[1] for row in stored)
        return [row[0] for row in stored if row[1] == worst]
    shown = ", ".join(repr(value) for value in known[:10])
    raise ToolFailure(
        f"Cannot tell which labels of {name[:80]!r} are failures (labels: {shown}). Name "
        f"them: annotation='{name[:80]}=label|label'.",
        code=ErrorCode.INVALID_ARGUMENT,
    )


# -- LLM naming and save=true -----------------------------------------------------------------


def llm_client(settings: Settings) -> LLMClient:
    """The client ``llm=true`` calls (the judge's: ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``;
    ``[llm_unavailable]`` without a credential). Tests replace it with one over a mock
    transport."""
    return LLMClient(settings)


#: The annotation save=true writes, and its annotator (``evaluator@version``).
CATEGORY_NAME = "error_category"
ANNOTATOR = "categorize_errors@1"
#: Annotations written per transaction by save=true.
SAVE_BATCH = 5000


def save_categories(
    store: Store,
    errors: ErrorSet,
    clusters: list[Cluster],
    naming: Naming | None = None,
    *,
    confirm: bool = False,
) -> AnnotateResult:
    """Write an ``error_category`` annotation on every error of ``clusters`` (label: its
    category, i.e. the LLM's category name or else the cluster's fingerprint; explanation: its
    template; metadata: fingerprint and error type), in batches of :data:`SAVE_BATCH` through
    the store's writer. Like ``annotate`` with filters, more than the ``annotate_confirm_over``
    setting's worth needs ``confirm`` (the answer then says how many and writes nothing).
    Unchanged annotations are not written again."""
    total = sum(item.count for item in clusters)
    waiting = confirm_first(store.settings, CATEGORY_NAME, total, "error", confirm)
    if waiting is not None:
        return waiting
    cluster_of = assignments(errors.groups, clusters)
    named = naming.by_key() if naming is not None else {}
    limit = store.settings.annotation_text_max_chars
    values: dict[str, dict[str, Any]] = {}
    for item in clusters:
        category = named.get(item.key)
        metadata: dict[str, Any] = {"fingerprint": item.key, "error_type": item.error_type}
        if naming is not None and category is not None:
            metadata["named_by"] = naming.call.model
        values[item.key] = {
            "label": category.name if category is not None else item.key,
            "explanation": item.template[:limit] or None,
            "metadata": metadata,
        }
    stored = _stored_categories(store, errors.identifier)
    counts = Counter[str]()
    batch: list[AnnotationInput] = []

    def flush() -> None:
        written = write_annotations(store, batch)
        counts.update(created=written.created, updated=written.updated)
        counts.update(unchanged=written.unchanged)
        batch.clear()

    for target, key in errors.targets():
        found = cluster_of.get(key)
        if found is None:  # an error stored after the clusters were made: the next call's
            continue
        counts["matched"] += 1
        value = values[found.key]
        trace = target.trace_id if target.kind is TargetKind.SPAN else None
        if stored.get((target.kind, target.project, trace, target.target_id)) == value:
            counts["unchanged"] += 1  # known unchanged: not sent to the writer at all
            continue
        batch.append(
            AnnotationInput(
                target_kind=target.kind,
                target_id=target.target_id,
                name=CATEGORY_NAME,
                annotator_kind=AnnotatorKind.CODE,
                annotator=ANNOTATOR,
                identifier=errors.identifier,
                trace_id=trace,
                project=target.project,
                **value,
            )
        )
        if len(batch) >= SAVE_BATCH:
            flush()
    if batch:
        flush()
    return AnnotateResult(
        matched=counts["matched"],
        created=counts["created"],
        updated=counts["updated"],
        unchanged=counts["unchanged"],
    )


def _stored_categories(store: Store, identifier: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The ``error_category`` annotations this tool wrote with ``identifier``: (kind, project,
    trace, target) → their label, explanation and metadata, to leave the unchanged ones out of
    the writes (the writer would find them unchanged too, at a cost per annotation)."""
    with store.reader() as reader:
        rows = reader.rows(
            "SELECT target_kind, project, CASE WHEN target_kind = 'span' THEN trace_id END, "
            "target_id, label, explanation, metadata FROM annotations WHERE name = ? AND "
            "annotator = ? AND identifier = ? AND annotator_kind = 'CODE'",
            [CATEGORY_NAME, ANNOTATOR, identifier],
        )
    parsed: dict[str | None, Any] = {}
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for kind, project, trace, target, label, explanation, metadata in rows:
        if metadata not in parsed:
            parsed[metadata] = orjson.loads(metadata) if metadata is not None else None
        value = {"label": label, "explanation": explanation, "metadata": parsed[metadata]}
        out[(kind, project, trace, target)] = value  # TargetKind is a StrEnum: same keys
    return out


def _fit(
    clusters: list[Cluster],
    total: int,
    limit: int,
    room: int,
    example_chars: int,
    naming: Naming | None = None,
    saved: AnnotateResult | None = None,
) -> ErrorCategories:
    result = ErrorCategories(
        errors=total, total_clusters=len(clusters), clusters=[], truncated=False, saved=saved
    )
    named = naming.by_key() if naming is not None else {}
    if naming is not None:
        result.llm_cost_usd = naming.call.cost_usd
        counts = {item.key: item.count for item in clusters}
        categories = [
            ErrorCategory(
                name=c.name,
                description=c.description,
                count=sum(counts.get(k, 0) for k in c.keys),
                share=round(sum(counts.get(k, 0) for k in c.keys) / total, 4) if total else 0.0,
                clusters=list(c.keys),
            )
            for c in naming.categories
        ]
        result.categories.extend(sorted(categories, key=lambda c: (-c.count, c.name)))
    shown = result.clusters  # the model's own list (pydantic copies the one it is given)
    shown.extend(_model(c, total, example_chars, named) for c in clusters[:limit])
    while shown and size(result) > room - _NOTE_ROOM:
        shown.pop()
    if size(result) > room - _NOTE_ROOM:  # the categories alone: each cluster names its own
        for category in result.categories:
            category.clusters.clear()
    result.truncated = len(shown) < len(clusters)
    notes = []
    if result.truncated:
        more = len(clusters) - len(shown)
        why = "past limit" if len(shown) == min(limit, len(clusters)) else "past the budget"
        notes.append(
            f"{more} smaller clusters not shown ({why}): raise limit or max_chars, or narrow "
            "the filters (since, name, where…)."
        )
    if naming is not None and len(named) < len(clusters):
        notes.append(
            f"{len(clusters) - len(named)} smaller clusters were not sent to the LLM (it names "
            f"the {len(named)} largest); they have no category."
        )
    if saved is not None and saved.note:
        notes.append(saved.note)
        saved.note = None
    result.note = fit_note(" ".join(notes) or None, room - size(result))
    return result


def _model(
    item: Cluster, total: int, example_chars: int, named: dict[str, Category]
) -> ErrorCluster:
    category = named.get(item.key)
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
        category=category.name if category is not None else None,
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
