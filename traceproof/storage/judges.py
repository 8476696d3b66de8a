"""Judges in the store: evaluator definitions by content hash, calibrations, and what a judge
has already said.

- :func:`save_evaluator_definition` / :func:`get_evaluator_definition` /
  :func:`list_evaluator_definitions`: a definition is stored once under its hash (same hash,
  same content), so an annotation's hash always leads back to the rubric that produced it.
- :func:`save_calibration` / :func:`list_calibrations` / :func:`is_calibrated`: a judge measured
  against people (:mod:`traceproof.evals.calibration`), with the definition hash it measured.
- :func:`calibration_states`: for the hashes (or 12-hex versions) behind judge annotations,
  whether each has a passing calibration. What every surface that shows a judge's results uses
  to say ``uncalibrated``.
- :func:`uncalibrated`: the same, for annotation rows.
- :func:`human_labels` / :func:`judge_verdicts`: the pairs a calibration compares.

Writes run on the store's single writer (:meth:`Store.run_write`), one transaction each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from traceproof.evals.annotations import hash_version, judge_version_of
from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store

__all__ = [
    "Calibration",
    "calibration_states",
    "get_evaluator_definition",
    "human_labels",
    "is_calibrated",
    "judge_verdicts",
    "list_calibrations",
    "list_evaluator_definitions",
    "save_calibration",
    "save_evaluator_definition",
    "uncalibrated",
]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- evaluator definitions --------------------------------------------------------------------


def save_evaluator_definition(
    store: Store, *, hash: str, name: str, kind: str, definition: dict[str, Any]
) -> bool:
    """Store a definition under its content hash; True when it was new (a stored hash is kept
    as it is: same hash, same content)."""
    text = orjson.dumps(definition, option=orjson.OPT_SORT_KEYS).decode()

    def run(cursor: duckdb.DuckDBPyConnection) -> bool:
        if cursor.execute("SELECT 1 FROM evaluator_definitions WHERE hash = ?", [hash]).fetchone():
            return False
        cursor.execute(
            "INSERT INTO evaluator_definitions VALUES (?, ?, ?, ?, ?)",
            [hash, name, kind, text, _now()],
        )
        return True

    return store.run_write(run)


def get_evaluator_definition(reader: Reader, hash: str) -> dict[str, Any] | None:
    """A stored definition (``definition`` parsed), or None."""
    rows = reader.dicts("SELECT * FROM evaluator_definitions WHERE hash = ?", [hash])
    if not rows:
        return None
    return rows[0] | {"definition": orjson.loads(rows[0]["definition"])}


def list_evaluator_definitions(
    reader: Reader, name: str | None = None, *, kind: str | None = None
) -> list[dict[str, Any]]:
    """Stored definitions, newest first (of one name, one kind, when given)."""
    sql = "SELECT * FROM evaluator_definitions WHERE TRUE"
    params: list[Any] = []
    if name is not None:
        sql += " AND name = ?"
        params.append(name)
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    rows = reader.dicts(sql + " ORDER BY created_at DESC, hash", params)
    return [row | {"definition": orjson.loads(row["definition"])} for row in rows]


# -- calibrations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A stored calibration: ``metrics`` is :class:`traceproof.evals.calibration.Calibration`
    as JSON."""

    judge_name: str
    judge_hash: str
    human_name: str
    n: int
    metrics: dict[str, Any]
    passed: bool
    thresholds: dict[str, Any]
    id: str = ""
    created_at: datetime | None = None


def save_calibration(store: Store, calibration: Calibration) -> Calibration:
    """Store a calibration; returns it with its id and time. A calibration whose id is stored
    already is not stored again (the stored one is returned)."""
    stored = replace(calibration, id=calibration.id or uuid.uuid4().hex, created_at=_now())

    def run(cursor: duckdb.DuckDBPyConnection) -> Calibration:
        found = cursor.execute(
            "SELECT created_at FROM calibrations WHERE id = ?", [stored.id]
        ).fetchone()
        if found:
            return replace(stored, created_at=found[0])
        newest = cursor.execute(
            "SELECT id, n, metrics, passed, thresholds, created_at FROM calibrations "
            "WHERE judge_hash = ? AND human_name = ? ORDER BY created_at DESC, id LIMIT 1",
            [stored.judge_hash, stored.human_name],
        ).fetchone()
        if newest is not None and _same_measure(newest, stored):
            return replace(stored, id=newest[0], created_at=newest[5])
        cursor.execute(
            "INSERT INTO calibrations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                stored.id,
                stored.judge_name,
                stored.judge_hash,
                stored.human_name,
                stored.n,
                orjson.dumps(stored.metrics, default=str).decode(),
                stored.passed,
                orjson.dumps(stored.thresholds, default=str).decode(),
                stored.created_at,
            ],
        )
        return stored

    return store.run_write(run)


def _same_measure(row: tuple[Any, ...], new: Calibration) -> bool:
    """Whether the stored calibration ``row`` measured what ``new`` does: the same n, metrics,
    verdict and thresholds (then ``new`` is not stored again: a repeated call adds no row)."""
    _, n, metrics, passed, thresholds, _ = row
    as_stored = orjson.loads(orjson.dumps(new.metrics, default=str))
    limits = orjson.loads(orjson.dumps(new.thresholds, default=str))
    return bool(
        n == new.n
        and passed == new.passed
        and orjson.loads(metrics) == as_stored
        and orjson.loads(thresholds) == limits
    )


def list_calibrations(
    reader: Reader,
    *,
    judge_name: str | None = None,
    judge_hash: str | None = None,
    calibration_id: str | None = None,
    limit: int | None = None,
) -> list[Calibration]:
    """Stored calibrations, newest first, optionally of one judge (name or definition hash)
    or the one of an id."""
    sql = "SELECT * FROM calibrations WHERE TRUE"
    params: list[Any] = []
    if calibration_id is not None:
        sql += " AND id = ?"
        params.append(calibration_id)
    if judge_name is not None:
        sql += " AND judge_name = ?"
        params.append(judge_name)
    if judge_hash is not None:
        sql += " AND judge_hash = ?"
        params.append(judge_hash)
    sql += " ORDER BY created_at DESC, id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = reader.dicts(sql, params)
    return [
        Calibration(
            **(
                row
                | {
                    "metrics": orjson.loads(row["metrics"]),
                    "thresholds": orjson.loads(row["thresholds"]),
                }
            )
        )
        for row in rows
    ]


def is_calibrated(reader: Reader, judge_hash: str) -> bool:
    """Whether the judge definition ``judge_hash`` has a passing calibration."""
    return bool(
        reader.scalar(
            "SELECT count(*) FROM calibrations WHERE judge_hash = ? AND passed", [judge_hash]
        )
    )


#: SQL: the 12-hex version of a calibration's ``judge_hash`` (``sha256:`` and hex digits).
CALIBRATED_VERSION_SQL = "left(replace(judge_hash, 'sha256:', ''), 12)"


def calibration_states(reader: Reader, hashes: Iterable[str]) -> dict[str, bool]:
    """For each judge definition hash (``sha256:…``) or its 12-hex version (what a judge's
    annotator string ends with, :func:`traceproof.evals.annotations.judge_annotator`):
    True when it has a passing calibration. Every hash given is a key."""
    wanted = sorted({h for h in hashes if h})
    if not wanted:
        return {}
    versions = {h: hash_version(h) for h in wanted}
    passing = {
        row[0]
        for row in reader.rows(
            f"SELECT DISTINCT {CALIBRATED_VERSION_SQL} FROM calibrations WHERE passed "
            f"AND list_contains(?, {CALIBRATED_VERSION_SQL})",
            [sorted(set(versions.values()))],
        )
    }
    return {h: versions[h] in passing for h in wanted}


def uncalibrated(reader: Reader, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """For annotation rows (``annotator_kind``, ``annotator``): True for each written by an LLM
    judge (annotator ``name@version``) whose definition has no passing calibration."""
    versions = [judge_version_of(str(r["annotator_kind"]), str(r["annotator"])) for r in rows]
    states = calibration_states(reader, [v for v in versions if v])
    return [v is not None and not states.get(v, False) for v in versions]


# -- the pairs a calibration compares --------------------------------------------------------


def human_labels(
    reader: Reader, name: str, *, target_kind: str | None = None
) -> list[dict[str, Any]]:
    """The current HUMAN annotations named ``name`` that have a label, one per target (the most
    recently updated when several people labelled it), oldest target first. Rows: target_kind,
    target_id, trace_id, project, label, explanation, annotator."""
    sql = (
        "SELECT target_kind, target_id, any_value(trace_id) AS trace_id, "
        "any_value(project) AS project, arg_max(label, updated_at) AS label, "
        "arg_max(explanation, updated_at) AS explanation, "
        "arg_max(annotator, updated_at) AS annotator, min(created_at) AS created_at "
        "FROM annotations WHERE annotator_kind = 'HUMAN' AND name = ? AND label IS NOT NULL"
    )
    params: list[Any] = [name]
    if target_kind is not None:
        sql += " AND target_kind = ?"
        params.append(target_kind)
    sql += (
        " GROUP BY target_kind, target_id, CASE WHEN target_kind = 'span' THEN trace_id END"
        " ORDER BY created_at, target_kind, target_id"
    )
    return reader.dicts(sql, params)


def judge_verdicts(reader: Reader, annotator: str, name: str) -> list[dict[str, Any]]:
    """The current LLM annotations of ``annotator`` named ``name``: target_kind, target_id,
    trace_id, label, explanation."""
    return reader.dicts(
        "SELECT target_kind, target_id, trace_id, label, explanation FROM annotations "
        "WHERE annotator_kind = 'LLM' AND annotator = ? AND name = ?",
        [annotator, name],
    )
