"""The judgment family's annotation tools: ``annotate`` and ``get_annotations``.

Thin functions over :mod:`traceproof.storage.annotations` (the writes, one transaction each)
and the shared span filters (:mod:`traceproof.tools.filters`): targets are chosen by id or by
the spans the filters match (a trace or a session matches when one of its spans does).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.evals.annotations import (
    AnnotationInput,
    AnnotatorKind,
    TargetKind,
    config_summary,
)
from traceproof.settings import Settings
from traceproof.storage import Reader, Store
from traceproof.storage.annotations import get_configs, write_annotations
from traceproof.storage.judges import uncalibrated
from traceproof.tools.common import (
    Cursor,
    JsonValue,
    MaxChars,
    ToolFailure,
    UtcTime,
    budget,
    clip,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.filters import (
    FilterRef,
    SpanFilter,
    span_source,
    where_errors,
)
from traceproof.tools.paging import largest_fit

#: Annotation ids listed in an annotate answer.
IDS_SHOWN = 20
#: Characters of an explanation in a get_annotations row (the rest: sql on annotations).
EXPLANATION_CHARS = 400
#: (name, label) groups listed before the rows.
COUNT_GROUPS = 50

IdsParam = Annotated[list[str] | None, Field(description="Else filters.")]
TraceParam = Annotated[str | None, Field(description="Trace of the span ids, if ambiguous.")]


class AnnotateResult(BaseModel):
    matched: int = Field(description="Targets chosen.")
    created: int = 0
    updated: int = Field(default=0, description="Rewritten (old version kept in history).")
    unchanged: int = 0
    ids: list[str] = Field(default_factory=list, description="Annotation ids (first 20).")
    confirm_needed: bool = Field(default=False, description="Nothing written: call with confirm.")
    note: str | None = None


def _filter(
    project: str | None,
    since: str | None,
    until: str | None,
    span_kind: str | None,
    where: str | None,
) -> SpanFilter | None:
    if all(v is None for v in (project, since, until, span_kind, where)):
        return None
    return SpanFilter(project=project, since=since, until=until, span_kind=span_kind, where=where)


_CHOOSE = {
    TargetKind.SPAN: "SELECT DISTINCT project, trace_id, span_id FROM {src} WHERE {cond}",
    TargetKind.TRACE: "SELECT DISTINCT project, trace_id, NULL FROM {src} WHERE {cond}",
    TargetKind.SESSION: (
        "SELECT DISTINCT project, NULL, session_id FROM {src} WHERE {cond} "
        "AND session_id IS NOT NULL"
    ),
}


def _chosen(
    reader: Reader, kind: TargetKind, flt: SpanFilter, limit: int
) -> tuple[int, list[tuple[str, str | None, str | None]]]:
    cond, params = flt.sql()
    src = span_source(cond, "session_id") if kind is TargetKind.SESSION else span_source(cond)
    sql = _CHOOSE[kind].format(src=src, cond=cond)
    with where_errors(flt.where):
        ((total,),) = reader.rows(f"SELECT count(*) FROM ({sql})", params, untrusted=flt.untrusted)
        rows = reader.rows(f"{sql} ORDER BY ALL LIMIT {limit}", params, untrusted=flt.untrusted)
    return int(total or 0), [(r[0], r[1], r[2]) for r in rows]


def annotate(
    store: Store,
    *,
    name: Annotated[str, Field(description="e.g. correctness.")],
    label: Annotated[str | None, Field(description="e.g. fail.")] = None,
    score: Annotated[float | None, Field(description="A number.")] = None,
    explanation: Annotated[str | None, Field(description="Why.")] = None,
    target: Annotated[
        Literal["span", "trace", "session"], Field(description="ids' kind.")
    ] = "span",
    ids: IdsParam = None,
    where: FilterRef = None,
    annotator_kind: Annotated[
        Literal["HUMAN", "LLM", "CODE"], Field(description="HUMAN: a person's.")
    ] = "LLM",
    annotator: Annotated[str | None, Field(description="Who, or name@version.")] = None,
    confirm: Annotated[bool, Field(description="Past the cap.")] = False,
    max_chars: MaxChars = None,
) -> AnnotateResult:
    """Judge spans, traces or sessions by ids or filters (as in search_spans)."""
    return annotate_targets(
        store,
        name=name,
        label=label,
        score=score,
        explanation=explanation,
        target=target,
        ids=ids,
        flt=_filter(None, None, None, None, where),
        annotator_kind=annotator_kind,
        annotator=annotator,
        confirm=confirm,
        max_chars=max_chars,
    )


def confirm_first(
    settings: Settings, name: str, total: int, kind: str, confirm: bool
) -> AnnotateResult | None:
    """The answer of a write of ``name`` on ``total`` targets chosen by filters when it needs
    ``confirm`` (more than the ``annotate_confirm_over`` setting) and has not got it: how many,
    nothing written. None when it may go ahead."""
    if total <= settings.annotate_confirm_over or confirm:
        return None
    return AnnotateResult(
        matched=total,
        confirm_needed=True,
        note=f"Would write {name!r} on {total} {kind}s; nothing written. Call again with "
        "confirm=true to write them.",
    )


def annotate_targets(
    store: Store,
    *,
    name: str,
    label: str | None = None,
    score: float | None = None,
    explanation: str | None = None,
    target: str = "span",
    ids: list[str] | None = None,
    flt: SpanFilter | None = None,
    project: str | None = None,
    trace_id: str | None = None,
    annotator_kind: str = "LLM",
    annotator: str | None = None,
    identifier: str = "",
    metadata: dict[str, Any] | None = None,
    confirm: bool = False,
    max_chars: int | None = None,
) -> AnnotateResult:
    """What ``annotate`` does, with every filter and the identifier (the CLI's entry). The
    answer is small (counts, at most 20 ids); ``max_chars`` is checked like every tool's."""
    budget(max_chars, store.settings)
    kind = TargetKind(target)
    settings = store.settings
    cap = settings.annotate_max_targets
    if ids is not None and flt is not None and flt != SpanFilter(project=project):
        raise ToolFailure(
            "Pass ids or filters, not both. Use ids for known targets, filters to choose them.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if ids is not None:
        if len(ids) > cap:
            raise ToolFailure(
                f"{len(ids)} ids is more than the {cap} one call writes (setting "
                "annotate_max_targets). Split them into several calls.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        targets: list[tuple[str | None, str | None, str | None]] = [
            (project, trace_id, i) for i in dict.fromkeys(ids)
        ]
    elif flt is not None:
        with store.reader() as reader:
            total, found = _chosen(reader, kind, flt, cap + 1)
        if total > cap:
            raise ToolFailure(
                f"The filters match {total} {kind}s, more than the {cap} one call writes "
                "(setting annotate_max_targets). Narrow them (where, project).",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        waiting = confirm_first(settings, name, total, str(kind), confirm)
        if waiting is not None:
            return waiting
        targets = [(p, t, t if kind is TargetKind.TRACE else s) for p, t, s in found]
    else:
        raise ToolFailure(
            f"Say which {kind}s to annotate: ids, or filters (where, project…).",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    items = [
        AnnotationInput(
            target_kind=kind,
            target_id=str(target_id),
            name=name,
            label=label,
            score=score,
            explanation=explanation,
            metadata=metadata,
            annotator_kind=AnnotatorKind(annotator_kind),
            annotator=annotator,
            identifier=identifier,
            trace_id=trace if kind is TargetKind.SPAN else None,
            project=proj,
        )
        for proj, trace, target_id in targets
    ]
    if not items:
        return AnnotateResult(matched=0, note=f"The filters match no {kind}; nothing written.")
    written = write_annotations(store, items)
    return AnnotateResult(
        matched=len(items),
        created=written.created,
        updated=written.updated,
        unchanged=written.unchanged,
        ids=[i for i in dict.fromkeys(written.ids) if i][:IDS_SHOWN],
    )


# -- get_annotations --------------------------------------------------------------------------


class LabelCount(BaseModel):
    name: str
    label: str | None
    n: int
    mean_score: float | None
    by_kind: dict[str, int] = Field(description="Annotations per annotator kind.")


class AnnotationRow(BaseModel):
    id: str
    target_kind: str
    target_id: str
    trace_id: str | None
    name: str
    label: str | None
    score: float | None
    explanation: str | None
    explanation_cut: int = Field(default=0, description="Characters cut from the explanation.")
    metadata: dict[str, JsonValue] | None = None
    annotator_kind: str
    annotator: str
    identifier: str
    version: int
    updated_at: UtcTime
    current: bool = Field(description="False: an earlier version (history).")
    uncalibrated: bool | None = Field(
        default=None, description="True: an LLM judge's verdict, no passing calibration."
    )


class AnnotationList(BaseModel):
    total: int = Field(description="Annotations matched.")
    counts: list[LabelCount] = Field(description="Per name and label, most first.")
    configs: dict[str, str] | None = Field(
        default=None, description="What each counted name may say, when it has a config."
    )
    counts_cut: int = Field(default=0, description="Count groups left out (budget).")
    rows: list[AnnotationRow]
    truncated: bool
    next_cursor: str | None = None


def _conditions(
    target: str | None,
    ids: list[str] | None,
    trace_id: str | None,
    name: str | None,
    label: str | None,
    annotator_kind: str | None,
    annotator: str | None,
    flt: SpanFilter | None,
) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("target_kind", target),
        ("trace_id", trace_id),
        ("name", name),
        ("label", label),
        ("annotator_kind", annotator_kind),
        ("annotator", annotator),
    ):
        if value is not None:
            conds.append(f"a.{column} = ?")
            params.append(value)
    if ids is not None:
        conds.append("list_contains(?, a.target_id)")
        params.append(ids)
    if flt is not None:
        cond, fparams = flt.sql()
        src = span_source(cond)
        branches = {
            "span": f"(a.trace_id, a.span_id) IN (SELECT trace_id, span_id FROM {src} "
            f"WHERE {cond})",
            "trace": f"(a.project, a.trace_id) IN (SELECT project, trace_id FROM {src} "
            f"WHERE {cond})",
            "session": f"(a.project, a.session_id) IN (SELECT project, session_id FROM "
            f"{span_source(cond, 'session_id')} WHERE {cond})",
        }
        chosen = [k for k in branches if target is None or k == target]
        conds.append(
            "(" + " OR ".join(f"(a.target_kind = '{k}' AND {branches[k]})" for k in chosen) + ")"
        )
        params += fparams * len(chosen)
    return " AND ".join(conds) or "TRUE", params


def get_annotations(
    store: Store,
    *,
    ids: Annotated[list[str] | None, Field(description="Target ids.")] = None,
    name: Annotated[str | None, Field(description="Annotation name.")] = None,
    label: Annotated[str | None, Field(description="e.g. fail.")] = None,
    history: Annotated[bool, Field(description="Old versions too.")] = False,
    where: FilterRef = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> AnnotationList:
    """Annotations of ids or filters (as in search_spans): counts, then rows."""
    return read_annotations(
        store,
        ids=ids,
        name=name,
        label=label,
        history=history,
        flt=_filter(None, None, None, None, where),
        limit=limit,
        cursor=cursor,
        max_chars=max_chars,
    )


def read_annotations(
    store: Store,
    *,
    target: str | None = None,
    ids: list[str] | None = None,
    trace_id: str | None = None,
    name: str | None = None,
    label: str | None = None,
    annotator_kind: str | None = None,
    annotator: str | None = None,
    history: bool = False,
    flt: SpanFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
    max_chars: int | None = None,
) -> AnnotationList:
    """What ``get_annotations`` does, with every filter (the CLI's entry)."""
    chars = budget(max_chars, store.settings)
    where = flt.where if flt is not None else None
    cond, params = _conditions(target, ids, trace_id, name, label, annotator_kind, annotator, flt)
    # The cursor is bound to the query (its conditions and parameters) and holds the offset.
    key = hashlib.sha256(orjson.dumps([cond, params, history], default=str)).hexdigest()[:16]
    offset = 0
    if cursor is not None:
        found = decode_cursor(cursor, "get_annotations", key)
        if len(found) != 1 or not isinstance(found[0], int) or found[0] < 0:
            raise ToolFailure(
                "This cursor belongs to other arguments. Repeat the call's arguments with it, "
                "or omit cursor to start again.",
                code=ErrorCode.INVALID_CURSOR,
            )
        offset = found[0]
    table = "annotation_versions" if history else "annotations"
    current = "a.is_current" if history else "TRUE"
    untrusted = flt is not None and flt.untrusted
    with store.reader() as reader, where_errors(where):
        grouped = reader.rows(
            f"SELECT a.name, a.label, a.annotator_kind, count(*), avg(a.score) FROM {table} a "
            f"WHERE {cond} GROUP BY ALL",
            params,
            untrusted=untrusted,
        )
        rows = reader.dicts(
            f"SELECT a.*, {current} AS current FROM {table} a WHERE {cond} "
            f"ORDER BY a.updated_at DESC, a.id, a.version DESC LIMIT {limit + 1} OFFSET {offset}",
            params,
            untrusted=untrusted,
        )
        configs = get_configs(reader, sorted({row[0] for row in grouped}))
        flags = uncalibrated(reader, rows[:limit])
    every_count = _counts(grouped)
    counts = every_count[:COUNT_GROUPS]
    every_config = {n: config_summary(c) for n, c in configs.items()}
    total = sum(c.n for c in every_count)
    more = len(rows) > limit
    made = [_row(r, flag) for r, flag in zip(rows[:limit], flags, strict=True)]

    def build(n: int, groups: int = len(counts)) -> AnnotationList:
        cut = n < len(made) or more
        shown = {c.name for c in counts[:groups]}
        return AnnotationList(
            total=total,
            counts=counts[:groups],
            configs={k: v for k, v in every_config.items() if k in shown} or None,
            counts_cut=len(every_count) - groups,
            rows=made[:n],
            truncated=cut,
            next_cursor=encode_cursor("get_annotations", key, [offset + n]) if cut else None,
        )

    # The count groups go first, but never crowd out the one row that moves paging on.
    groups = len(counts)
    least = min(1, len(made))
    while groups and size(build(least, groups)) > chars:
        groups -= 1
    if made and size(build(1, groups)) > chars:
        made[0] = _shrunk(made[0], size(build(1, groups)) - chars)
    return build(largest_fit(lambda n: build(n, groups), len(made), chars), groups)


def _shrunk(row: AnnotationRow, over: int) -> AnnotationRow:
    """``row`` with ``over`` characters (and a margin for escapes) fewer: from its explanation,
    then its metadata dropped."""
    text = row.explanation or ""
    keep = max(0, len(text) - over - 8)
    update: dict[str, Any] = {
        "explanation": text[:keep] or None,
        "explanation_cut": row.explanation_cut + len(text) - keep,
    }
    if over > len(text):
        update["metadata"] = None
    return row.model_copy(update=update)


def _counts(grouped: list[tuple[Any, ...]]) -> list[LabelCount]:
    merged: dict[tuple[str, str | None], dict[str, Any]] = {}
    for name, label, kind, n, mean in grouped:
        entry = merged.setdefault((name, label), {"n": 0, "sum": 0.0, "scored": 0, "by": {}})
        entry["n"] += n
        entry["by"][kind] = n
        if mean is not None:
            entry["sum"] += mean * n
            entry["scored"] += n
    out = [
        LabelCount(
            name=name,
            label=label,
            n=e["n"],
            mean_score=round(e["sum"] / e["scored"], 4) if e["scored"] else None,
            by_kind=e["by"],
        )
        for (name, label), e in merged.items()
    ]
    out.sort(key=lambda c: (c.name, -c.n, c.label or ""))
    return out


def _row(row: dict[str, Any], uncalibrated: bool = False) -> AnnotationRow:
    text, cut = clip(row["explanation"], EXPLANATION_CHARS)
    metadata = orjson.loads(row["metadata"]) if row["metadata"] else None
    return AnnotationRow(
        **{k: row[k] for k in AnnotationRow.model_fields if k in row and k != "metadata"}
        | {
            "explanation": text,
            "explanation_cut": cut,
            "metadata": metadata,
            "uncalibrated": True if uncalibrated else None,
        }
    )
