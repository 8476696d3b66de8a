"""Annotation writes and reads, and annotation configs.

Evaluator definitions and calibrations are in :mod:`traceproof.storage.judges`.

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

import math
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
    JUDGE_VERSION_CHARS,
    JUDGE_VERSION_SQL,
    AnnotationConfig,
    AnnotationInput,
    ConfigKind,
    Direction,
    InvalidAnnotation,
    LabelChoice,
    TargetKind,
    check_config,
    check_input,
)
from traceproof.storage.exceptions import NotFound
from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store

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


# -- configs ----------------------------------------------------------------------------------


def _config_of(row: tuple[Any, ...]) -> AnnotationConfig:
    name, kind, labels, low, high, direction, description = row
    choices = tuple(
        LabelChoice(str(c["label"]), None if c.get("score") is None else float(c["score"]))
        for c in (orjson.loads(labels) if labels else [])
    )
    return AnnotationConfig(
        name=name,
        kind=ConfigKind(kind),
        labels=choices,
        lower_bound=low,
        upper_bound=high,
        direction=Direction(direction),
        description=description,
    )


_CONFIG_COLUMNS = "name, kind, labels, lower_bound, upper_bound, direction, description"


def _configs(cursor: duckdb.DuckDBPyConnection, names: set[str]) -> dict[str, AnnotationConfig]:
    if not names:
        return {}
    rows = cursor.execute(
        f"SELECT {_CONFIG_COLUMNS} FROM annotation_configs WHERE list_contains(?, name)",
        [sorted(names)],
    ).fetchall()
    return {row[0]: _config_of(row) for row in rows}


def set_config(store: Store, config: AnnotationConfig) -> None:
    """Store ``config`` (replacing one of the same name). Annotations already written are not
    checked again; later writes are."""
    labels = orjson.dumps([{"label": c.label, "score": c.score} for c in config.labels]).decode()

    def run(cursor: duckdb.DuckDBPyConnection) -> None:
        now = _now()
        created = cursor.execute(
            "SELECT created_at FROM annotation_configs WHERE name = ?", [config.name]
        ).fetchone()
        cursor.execute("DELETE FROM annotation_configs WHERE name = ?", [config.name])
        cursor.execute(
            "INSERT INTO annotation_configs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                config.name,
                str(config.kind),
                labels if config.kind is ConfigKind.CATEGORICAL else None,
                config.lower_bound,
                config.upper_bound,
                str(config.direction),
                config.description,
                created[0] if created else now,
                now,
            ],
        )

    store.run_write(run)


def get_configs(reader: Reader, names: Sequence[str] | None = None) -> dict[str, AnnotationConfig]:
    """Stored configs by name (all of them when ``names`` is None)."""
    sql = f"SELECT {_CONFIG_COLUMNS} FROM annotation_configs"
    params: list[Any] = []
    if names is not None:
        sql += " WHERE list_contains(?, name)"
        params.append(list(names))
    return {row[0]: _config_of(row) for row in reader.rows(sql + " ORDER BY name", params)}


# -- reads ------------------------------------------------------------------------------------


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


# -- configs, in bulk (traceproof.toml, `traceproof annotation-config`) -------------------------


@dataclass(frozen=True)
class ConfigChanges:
    """What :func:`set_configs` and :func:`delete_configs` did, by name."""

    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def set_configs(
    store: Store, configs: Sequence[AnnotationConfig], *, remove: Sequence[str] = ()
) -> ConfigChanges:
    """Store ``configs`` and delete the configs named in ``remove``, as one transaction on the
    writer: all of it or none. A config equal to the stored one is left as it is (its
    ``updated_at`` too), so applying the same file again writes nothing. Annotations already
    written are not checked again; later writes are."""
    wanted = {config.name: config for config in configs}

    def run(cursor: duckdb.DuckDBPyConnection) -> ConfigChanges:
        now = _now()
        names = sorted({*wanted, *remove})
        stored = {
            row[0]: (_config_of(row[:7]), row[7])
            for row in cursor.execute(
                f"SELECT {_CONFIG_COLUMNS}, created_at FROM annotation_configs "
                "WHERE list_contains(?, name)",
                [names],
            ).fetchall()
        }
        changed, unchanged = [], []
        for name, config in wanted.items():
            old = stored.get(name)
            if old is not None and old[0].as_dict() == config.as_dict():
                unchanged.append(name)
                continue
            labels = orjson.dumps([{"label": c.label, "score": c.score} for c in config.labels])
            cursor.execute("DELETE FROM annotation_configs WHERE name = ?", [name])
            cursor.execute(
                "INSERT INTO annotation_configs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    str(config.kind),
                    labels.decode() if config.kind is ConfigKind.CATEGORICAL else None,
                    config.lower_bound,
                    config.upper_bound,
                    str(config.direction),
                    config.description,
                    old[1] if old is not None else now,
                    now,
                ],
            )
            changed.append(name)
        removed = [n for n in dict.fromkeys(remove) if n in stored and n not in wanted]
        if removed:
            cursor.execute("DELETE FROM annotation_configs WHERE list_contains(?, name)", [removed])
        return ConfigChanges(tuple(changed), tuple(unchanged), tuple(removed))

    if not wanted and not remove:
        return ConfigChanges()
    return store.run_write(run)


#: An annotation that gives a label or a score (what a config constrains).
_SAYS = "(label IS NOT NULL OR score IS NOT NULL)"


def outside_config(reader: Reader, config: AnnotationConfig) -> int:
    """How many current annotations named ``config.name`` it would refuse (written before it
    was set, or under another config)."""
    if config.kind is ConfigKind.FREEFORM:
        return 0
    if config.kind is ConfigKind.CATEGORICAL:
        return int(
            reader.scalar(
                f"SELECT count(*) FROM annotations WHERE name = ? AND {_SAYS} AND (label IS "
                "NULL OR NOT list_contains(?, label))",
                [config.name, [c.label for c in config.labels]],
            )
            or 0
        )
    low = -math.inf if config.lower_bound is None else config.lower_bound
    high = math.inf if config.upper_bound is None else config.upper_bound
    return int(
        reader.scalar(
            f"SELECT count(*) FROM annotations WHERE name = ? AND {_SAYS} AND (score IS NULL "
            "OR score < ? OR score > ?)",
            [config.name, low, high],
        )
        or 0
    )
