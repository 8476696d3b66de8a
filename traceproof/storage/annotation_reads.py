"""Annotation reads for the read tools: the compact marks a trace preview shows per span
(:func:`span_marks`) and per trace (:func:`trace_marks`), a target's current annotations
(:func:`target_annotations`) and the spans of annotated targets (:func:`target_spans`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from traceproof.evals.annotations import (
    JUDGE_VERSION_CHARS,
    JUDGE_VERSION_SQL,
    TargetKind,
)
from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    pass


#: An annotation's value as a mark shows it: its label, else its score, with ``?`` when an LLM
#: judge whose definition has no passing calibration gave it.
_MARK_VALUE = (
    "coalesce(a.label, CAST(round(a.score, 3) AS VARCHAR), '…') || CASE WHEN "
    f"{JUDGE_VERSION_SQL} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM calibrations c "
    f"WHERE c.passed AND left(replace(c.judge_hash, 'sha256:', ''), "
    f"{JUDGE_VERSION_CHARS}) = {JUDGE_VERSION_SQL}) THEN '?' ELSE '' END"
)


def span_marks(reader: Reader, trace_id: str, project: str | None = None) -> dict[str, str]:
    """Span id → its annotations as a compact mark, ``correctness=fail,tone=0.8``: per name
    the distinct labels (else scores) of every annotator, ``|``-joined when they disagree. A
    value an LLM judge gave whose definition has no passing calibration ends with ``?``
    (``helpfulness=fail?``)."""
    inner = (
        f"SELECT a.span_id, a.name, {_MARK_VALUE} AS v FROM annotations a "
        "WHERE a.target_kind = 'span' AND a.trace_id = ?"
    )
    params: list[Any] = [trace_id]
    if project is not None:
        inner += " AND a.project = ?"
        params.append(project)
    sql = (
        f"SELECT span_id, name, string_agg(DISTINCT v, '|' ORDER BY v) FROM ({inner}) "
        "GROUP BY span_id, name ORDER BY name"
    )
    marks: dict[str, list[str]] = {}
    for span_id, name, values in reader.rows(sql, params):
        marks.setdefault(span_id, []).append(f"{name}={values}")
    return {span_id: ",".join(parts) for span_id, parts in marks.items()}


def trace_marks(
    reader: Reader, trace_id: str, session_id: str | None, project: str | None = None
) -> str | None:
    """A trace's own annotations, then its session's, as the marks of :func:`span_marks`
    read: ``trace: [resolved=fail|pass?] session: [csat=4]`` (None when it has neither)."""
    where = (
        "((a.target_kind = 'trace' AND a.trace_id = ?) "
        "OR (a.target_kind = 'session' AND a.target_id = ?))"
    )
    params: list[Any] = [trace_id, session_id]
    if project is not None:
        where += " AND a.project = ?"
        params.append(project)
    inner = (
        f"SELECT a.target_kind AS kind, a.name, {_MARK_VALUE} AS v FROM annotations a WHERE {where}"
    )
    sql = (
        f"SELECT kind, name, string_agg(DISTINCT v, '|' ORDER BY v) FROM ({inner}) "
        "GROUP BY kind, name ORDER BY kind DESC, name"
    )
    parts: dict[str, list[str]] = {}
    for kind, name, values in reader.rows(sql, params):
        parts.setdefault(kind, []).append(f"{name}={values}")
    shown = [f"{kind}: [{','.join(marks)}]" for kind, marks in parts.items()]
    return " ".join(shown) or None


def target_annotations(
    reader: Reader, kind: TargetKind | str, target_id: str, trace_id: str | None = None
) -> list[dict[str, Any]]:
    """The current annotations of one target, by name then annotator."""
    sql = "SELECT * FROM annotations WHERE target_kind = ? AND target_id = ?"
    params: list[Any] = [str(kind), target_id]
    if trace_id is not None:
        sql += " AND trace_id = ?"
        params.append(trace_id)
    return reader.dicts(sql + " ORDER BY name, annotator, identifier", params)


def target_spans(
    reader: Reader,
    kind: TargetKind | str,
    target_id: str,
    *,
    trace_id: str | None = None,
    project: str | None = None,
) -> list[dict[str, Any]]:
    """The spans an evaluator reads for a target, as stored (every column): the span itself;
    every span of a trace; every span of a session's traces. Ordered by start time. Empty when
    the target is not stored."""
    kind = TargetKind(str(kind))
    conditions = {
        TargetKind.SPAN: "span_id = ?",
        TargetKind.TRACE: "trace_id = ?",
        TargetKind.SESSION: (
            "trace_id IN (SELECT trace_id FROM trace_index WHERE session_id = ?"
            + (" AND project = ?" if project is not None else "")
            + ")"
        ),
    }
    params: list[Any] = [target_id]
    if kind is TargetKind.SESSION and project is not None:
        params.append(project)
    sql = f"SELECT * FROM spans WHERE {conditions[kind]}"
    if trace_id is not None and kind is TargetKind.SPAN:
        sql += " AND trace_id = ?"
        params.append(trace_id)
    if project is not None:
        sql += " AND project = ?"
        params.append(project)
    return reader.dicts(sql + " ORDER BY start_time, span_id", params)
