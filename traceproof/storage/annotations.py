"""Annotation writes. Configs are in :mod:`traceproof.storage.annotation_configs`, the reads
the tools make in :mod:`traceproof.storage.annotation_reads` (both re-exported here), evaluator
definitions and calibrations in :mod:`traceproof.storage.judges`.

Every write here runs on the store's single writer (:meth:`Store.run_write`): one transaction,
acknowledged after COMMIT, all or nothing. :func:`write_annotations` checks a whole batch before
it writes any of it: each value (:func:`traceproof.evals.annotations.check_input`), each target
(the span, trace or session must be in the store, and be one), each config. With
``partial=True`` (file import) the items that fail are reported and the rest written; otherwise
the first failure refuses the batch and nothing is stored.

Writing an annotation whose key (project, target, name, annotator, identifier) is stored updates
it (``version`` + 1) after copying the stored version into ``annotation_history``; writing the
same content again changes nothing. Different annotators are different rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationInput,
    InvalidAnnotation,
    TargetKind,
    check_config,
    check_input,
)
from traceproof.storage.annotation_configs import (
    ConfigChanges,
    _configs,
    get_configs,
    outside_config,
    set_config,
    set_configs,
)
from traceproof.storage.annotation_reads import (
    span_marks,
    target_annotations,
    target_spans,
    trace_marks,
)
from traceproof.storage.exceptions import NotFound

if TYPE_CHECKING:
    from traceproof.storage.store import Store

__all__ = [
    "ANNOTATION_COLUMNS",
    "AnnotationWrite",
    "ConfigChanges",
    "Rejected",
    "UnknownTarget",
    "get_configs",
    "outside_config",
    "set_config",
    "set_configs",
    "span_marks",
    "target_annotations",
    "target_spans",
    "trace_marks",
    "write_annotations",
]

#: Columns of ``annotations`` in table order.
ANNOTATION_COLUMNS = (
    "id",
    "project",
    "target_kind",
    "target_id",
    "trace_id",
    "span_id",
    "session_id",
    "name",
    "label",
    "score",
    "explanation",
    "metadata",
    "annotator_kind",
    "annotator",
    "identifier",
    "version",
    "created_at",
    "updated_at",
)

_UNKNOWN = {
    TargetKind.SPAN: (ErrorCode.UNKNOWN_SPAN, "search_spans or get_trace_preview lists span ids"),
    TargetKind.TRACE: (ErrorCode.UNKNOWN_TRACE, "search_traces lists trace ids"),
    TargetKind.SESSION: (ErrorCode.UNKNOWN_SESSION, "search_traces shows session ids"),
    TargetKind.EXPERIMENT_RUN: (ErrorCode.NOT_FOUND, "get_experiment lists run ids"),
}


class UnknownTarget(NotFound):
    """An annotation's span, trace or session is not in the store (or is ambiguous)."""


@dataclass(frozen=True)
class Rejected:
    """An item of a batch that was not written, by its index in the batch."""

    index: int
    code: str
    message: str


@dataclass
class AnnotationWrite:
    """What a batch did once committed. ``ids[i]`` is the annotation id of item ``i`` (None for
    a rejected item); ``status[i]`` is ``created``, ``updated``, ``unchanged`` or ``rejected``."""

    ids: list[str | None] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def count(self, status: str) -> int:
        return self.status.count(status)

    @property
    def created(self) -> int:
        return self.count("created")

    @property
    def updated(self) -> int:
        return self.count("updated")

    @property
    def unchanged(self) -> int:
        return self.count("unchanged")


@dataclass(frozen=True)
class _Target:
    project: str
    trace_id: str | None
    span_id: str | None
    session_id: str | None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _metadata_text(metadata: dict[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    return orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS).decode()


def _error_of(exc: TraceproofError) -> tuple[str, str]:
    return str(exc.code), exc.message


def write_annotations(
    store: Store, items: Sequence[AnnotationInput], *, partial: bool = False
) -> AnnotationWrite:
    """Write ``items`` as one transaction on the store's writer; see the module docstring.

    Raises :class:`InvalidAnnotation` (a value or its config), :class:`UnknownTarget`
    (``unknown_span`` / ``unknown_trace`` / ``unknown_session``, or ``invalid_argument`` for an
    id found in several places) unless ``partial``; :class:`StoreError` when the store fails.
    """
    limit = store.settings.annotation_text_max_chars
    checked: list[AnnotationInput | None] = []
    early: list[Rejected] = []
    for index, item in enumerate(items):
        try:
            checked.append(check_input(item, text_max_chars=limit))
        except InvalidAnnotation as exc:
            if not partial:
                raise _in_batch(exc, index, len(items)) from None
            early.append(Rejected(index, *_error_of(exc)))
            checked.append(None)
    if not items:
        return AnnotationWrite()
    result = store.run_write(lambda cursor: _write(cursor, checked, partial))
    result.rejected = sorted([*early, *result.rejected], key=lambda r: r.index)
    return result


def _in_batch(exc: TraceproofError, index: int, total: int) -> TraceproofError:
    if total == 1:
        return exc
    return type(exc)(
        f"Item {index} of {total}: {exc.message} Nothing of this batch was written.", code=exc.code
    )


def _write(
    cursor: duckdb.DuckDBPyConnection, items: list[AnnotationInput | None], partial: bool
) -> AnnotationWrite:
    now = _now()
    result = AnnotationWrite(ids=[None] * len(items), status=["rejected"] * len(items))
    targets = _resolve(cursor, items)
    configs = _configs(cursor, {item.name for item in items if item is not None})
    ready: dict[tuple[Any, ...], tuple[int, AnnotationInput, _Target]] = {}
    same_key: list[tuple[int, tuple[Any, ...]]] = []
    for index, given in enumerate(items):
        if given is None:
            continue
        try:
            target = _one_target(given, targets.get(index, []))
            item = check_config(given, configs.get(given.name))
        except TraceproofError as exc:
            if not partial:
                raise _in_batch(exc, index, len(items)) from None
            result.rejected.append(Rejected(index, *_error_of(exc)))
            continue
        key = (
            target.project,
            str(item.target_kind),
            item.target_id,
            target.trace_id if item.target_kind is TargetKind.SPAN else None,
            item.name,
            item.author,
            item.identifier,
        )
        if key in ready:  # the same key twice in a batch: the later one is written
            same_key.append((ready[key][0], key))
        ready[key] = (index, item, target)
    existing = _existing(cursor, list(ready))
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for key, (index, item, target) in ready.items():
        old = existing.get(key)
        row: dict[str, Any] = {
            "project": target.project,
            "target_kind": str(item.target_kind),
            "target_id": item.target_id,
            "trace_id": target.trace_id,
            "span_id": target.span_id,
            "session_id": target.session_id,
            "name": item.name,
            "label": item.label,
            "score": item.score,
            "explanation": item.explanation,
            "metadata": _metadata_text(item.metadata),
            "annotator_kind": str(item.annotator_kind),
            "annotator": item.author,
            "identifier": item.identifier,
            "updated_at": now,
        }
        if old is None:
            row |= {"id": uuid.uuid4().hex, "version": 1, "created_at": now}
            new_rows.append(row)
            status = "created"
        elif _same(old, row):
            row = old
            status = "unchanged"
        else:
            row |= {"id": old["id"], "version": old["version"] + 1, "created_at": old["created_at"]}
            changed.append(row)
            status = "updated"
        result.ids[index], result.status[index] = row["id"], status
    for earlier, key in same_key:
        result.ids[earlier] = result.ids[ready[key][0]]
        result.status[earlier] = "unchanged"
    _insert(cursor, new_rows, changed, now)
    return result


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    fields = ("label", "score", "explanation", "metadata", "annotator_kind", "session_id")
    return all(old[f] == new[f] for f in fields)


def _rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema(
        [
            (c, pa.float64() if c == "score" else pa.int32() if c == "version" else pa.string())
            if c not in ("created_at", "updated_at")
            else (c, pa.timestamp("us"))
            for c in ANNOTATION_COLUMNS
        ]
    )
    return pa.Table.from_pylist([{c: r[c] for c in ANNOTATION_COLUMNS} for r in rows], schema)


def _insert(
    cursor: duckdb.DuckDBPyConnection,
    new_rows: list[dict[str, Any]],
    changed: list[dict[str, Any]],
    now: datetime,
) -> None:
    columns = ", ".join(ANNOTATION_COLUMNS)
    if changed:
        cursor.register("changed_annotations", _rows_table(changed))
        try:
            cursor.execute(
                "INSERT INTO annotation_history SELECT a.*, ? FROM annotations a "
                "SEMI JOIN changed_annotations c ON a.id = c.id",
                [now],
            )
            sets = ", ".join(f"{c} = c.{c}" for c in ANNOTATION_COLUMNS if c != "id")
            cursor.execute(
                f"UPDATE annotations SET {sets} FROM changed_annotations c "
                "WHERE annotations.id = c.id"
            )
        finally:
            cursor.unregister("changed_annotations")
    if new_rows:
        cursor.register("new_annotations", _rows_table(new_rows))
        try:
            cursor.execute(
                f"INSERT INTO annotations ({columns}) SELECT {columns} FROM new_annotations"
            )
        finally:
            cursor.unregister("new_annotations")


_RESOLVE = """
SELECT i.idx, s.project, s.trace_id, s.span_id, coalesce(s.session_id, t.session_id)
FROM wanted_targets i
JOIN spans s ON s.span_id = i.target_id
    AND (i.trace_id IS NULL OR s.trace_id = i.trace_id)
    AND (i.project IS NULL OR s.project = i.project)
LEFT JOIN trace_index t ON t.project = s.project AND t.trace_id = s.trace_id
WHERE i.kind = 'span'
UNION ALL
SELECT i.idx, t.project, t.trace_id, NULL, t.session_id
FROM wanted_targets i
JOIN trace_index t ON t.trace_id = i.target_id AND (i.project IS NULL OR t.project = i.project)
WHERE i.kind = 'trace'
UNION ALL
SELECT DISTINCT i.idx, t.project, NULL, NULL, t.session_id
FROM wanted_targets i
JOIN trace_index t ON t.session_id = i.target_id AND (i.project IS NULL OR t.project = i.project)
WHERE i.kind = 'session'
UNION ALL
SELECT i.idx, e.project, r.trace_ids[1], NULL, NULL
FROM wanted_targets i
JOIN experiment_runs r ON r.id = i.target_id
JOIN experiments e ON e.id = r.experiment_id AND (i.project IS NULL OR e.project = i.project)
WHERE i.kind = 'experiment_run'
"""


def _resolve(
    cursor: duckdb.DuckDBPyConnection, items: list[AnnotationInput | None]
) -> dict[int, list[_Target]]:
    """Every item's matching targets in the store (none: unknown; several: ambiguous)."""
    wanted = [(i, item) for i, item in enumerate(items) if item is not None]
    table = pa.table(
        {
            "idx": pa.array([i for i, _ in wanted], pa.int64()),
            "kind": pa.array([str(item.target_kind) for _, item in wanted], pa.string()),
            "target_id": pa.array([item.target_id for _, item in wanted], pa.string()),
            "trace_id": pa.array([item.trace_id for _, item in wanted], pa.string()),
            "project": pa.array([item.project for _, item in wanted], pa.string()),
        }
    )
    cursor.register("wanted_targets", table)
    try:
        rows = cursor.execute(_RESOLVE).fetchall()
    finally:
        cursor.unregister("wanted_targets")
    found: dict[int, list[_Target]] = {}
    for idx, project, trace_id, span_id, session_id in rows:
        found.setdefault(idx, []).append(_Target(project, trace_id, span_id, session_id))
    return found


def _one_target(item: AnnotationInput, found: list[_Target]) -> _Target:
    kind = item.target_kind
    if not found:
        code, hint = _UNKNOWN[kind]
        where = f" in trace {item.trace_id!r}" if item.trace_id else ""
        where += f" in project {item.project!r}" if item.project else ""
        raise UnknownTarget(
            f"No {kind} {item.target_id[:200]!r}{where} in the store. Annotate a stored "
            f"{kind}: {hint}.",
            code=code,
        )
    if len(found) > 1:
        places = ", ".join(sorted({f"{t.project}/{t.trace_id or '-'}" for t in found})[:5])
        narrow = "trace_id" if kind is TargetKind.SPAN else "project"
        raise UnknownTarget(
            f"The {kind} id {item.target_id!r} is in several places ({places}). Pass "
            f"{narrow} (or project) to say which.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return found[0]


def _existing(
    cursor: duckdb.DuckDBPyConnection, keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    if not keys:
        return {}
    names = ("project", "target_kind", "target_id", "trace_id", "name", "annotator", "identifier")
    table = pa.table({n: pa.array([k[i] for k in keys], pa.string()) for i, n in enumerate(names)})
    cursor.register("annotation_keys", table)
    try:
        cur = cursor.execute(
            "SELECT a.* FROM annotations a JOIN annotation_keys k ON a.project = k.project "
            "AND a.target_kind = k.target_kind AND a.target_id = k.target_id "
            "AND (a.target_kind <> 'span' OR a.trace_id = k.trace_id) AND a.name = k.name "
            "AND a.annotator = k.annotator AND a.identifier = k.identifier"
        )
        columns = [d[0] for d in cur.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    finally:
        cursor.unregister("annotation_keys")
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        trace = row["trace_id"] if row["target_kind"] == TargetKind.SPAN else None
        key = (
            row["project"],
            row["target_kind"],
            row["target_id"],
            trace,
            row["name"],
            row["annotator"],
            row["identifier"],
        )
        out[key] = row
    return out
