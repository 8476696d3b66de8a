"""Experiments in the store: the experiment rows, their runs and summaries (baselines:
:mod:`traceproof.storage.comparison`).

- :func:`create_experiment`, :func:`set_status`, :func:`get_experiment`,
  :func:`list_experiments`: one row per experiment (migration 3 in :mod:`.schema`); JSON
  columns come back parsed.
- :func:`upsert_runs`, :func:`list_runs`, :func:`runs_by_key`: one row per (experiment,
  example, repetition), id ``experiment:example:repetition``; a resumed experiment overwrites
  the runs it runs again.
- :func:`run_spans`: the spans a run formed, found by the resource attributes its environment
  set or by the trace id of its ``TRACEPARENT``.
- :func:`experiment_summary`: per evaluator counts and mean (from the runs' current
  ``experiment_run`` annotations), runs by status, latency p50/p95, tokens, cost, tool calls.

Writes run on the store's single writer (:meth:`Store.run_write`), one transaction each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store

__all__ = [
    "create_experiment",
    "experiment_summary",
    "get_experiment",
    "list_experiments",
    "list_runs",
    "run_count",
    "run_spans",
    "runs_by_key",
    "set_status",
    "span_counts",
    "upsert_runs",
]

_JSON = ("evaluators", "provenance", "summary")
RUN_COLUMNS = (
    "id", "experiment_id", "example_id", "repetition", "status", "error", "output", "trace_ids",
    "latency_ms", "tokens", "cost_usd", "tool_calls", "started_at", "finished_at",
)  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def create_experiment(store: Store, row: dict[str, Any]) -> None:
    """Insert an experiment (every column of ``experiments`` but the times, which are set)."""
    values = dict(row) | {"created_at": _now(), "finished_at": None}
    for key in _JSON:
        values[key] = _dumps(values.get(key))
    columns = list(values)

    def run(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute(
            f"INSERT INTO experiments ({', '.join(columns)}) VALUES "
            f"({', '.join('?' for _ in columns)})",
            [values[c] for c in columns],
        )

    store.run_write(run)


def set_status(
    store: Store, experiment_id: str, status: str, *, summary: dict[str, Any] | None = None
) -> None:
    """Set an experiment's status (and summary); a final status sets its end time."""
    finished = None if status == "running" else _now()

    def run(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute(
            "UPDATE experiments SET status = ?, finished_at = ?, "
            "summary = coalesce(?::JSON, summary) WHERE id = ?",
            [status, finished, _dumps(summary), experiment_id],
        )

    store.run_write(run)


def get_experiment(reader: Reader, experiment_id: str) -> dict[str, Any] | None:
    rows = reader.dicts("SELECT * FROM experiments WHERE id = ?", [experiment_id])
    if not rows:
        return None
    row = rows[0]
    return row | {key: _loads(row[key]) for key in _JSON}


def list_experiments(
    reader: Reader, limit: int = 20, *, after: tuple[datetime, str] | None = None
) -> list[dict[str, Any]]:
    """The newest experiments (newest first, then by id), after ``after`` (the last row's
    ``(created_at, id)``): id, name, task, dataset_id, dataset_version, status, created_at,
    finished_at."""
    cond, params = "", []
    if after is not None:
        cond = "WHERE created_at < ? OR (created_at = ? AND id > ?) "
        params = [after[0], after[0], after[1]]
    return reader.dicts(
        "SELECT id, name, task, dataset_id, dataset_version, status, created_at, finished_at "
        f"FROM experiments {cond}ORDER BY created_at DESC, id LIMIT ?",
        [*params, limit],
    )


def run_count(reader: Reader, experiment_id: str) -> int:
    """Runs stored for an experiment."""
    found = reader.rows(
        "SELECT count(*) FROM experiment_runs WHERE experiment_id = ?", [experiment_id]
    )
    return int(found[0][0])


def upsert_runs(store: Store, runs: Sequence[dict[str, Any]]) -> None:
    """Insert or replace runs (dicts of :data:`RUN_COLUMNS`; ``output`` any JSON value)."""
    if not runs:
        return
    placeholders = ", ".join("?" for _ in RUN_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c != "id")
    params = [[_dumps(r.get(c)) if c == "output" else r.get(c) for c in RUN_COLUMNS] for r in runs]

    def run(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.executemany(
            f"INSERT INTO experiment_runs ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            params,
        )

    store.run_write(run)


def runs_by_key(reader: Reader, experiment_id: str) -> dict[tuple[str, int], str]:
    """The status of each stored run of an experiment, by (example id, repetition)."""
    rows = reader.rows(
        "SELECT example_id, repetition, status FROM experiment_runs WHERE experiment_id = ?",
        [experiment_id],
    )
    return {(str(e), int(r)): str(s) for e, r, s in rows}


def list_runs(
    reader: Reader,
    experiment_id: str,
    *,
    after: tuple[str, int] | None,
    limit: int,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Runs in (example id, repetition) order after ``after``, at most ``limit``, each with the
    current ``experiment_run`` annotations on it (``scores``: name -> (label, score))."""
    cond = "r.experiment_id = ?"
    params: list[Any] = [experiment_id]
    if after is not None:
        cond += " AND (r.example_id, r.repetition) > (?, ?)"
        params += [after[0], after[1]]
    if status is not None:
        cond += " AND r.status = ?"
        params.append(status)
    rows = reader.dicts(
        "SELECT r.*, (SELECT list({'name': a.name, 'label': a.label, 'score': a.score, "
        "'error': json_extract_string(a.metadata, '$.error')} ORDER BY a.name) FROM annotations a "
        "WHERE a.target_kind = 'experiment_run' AND a.target_id = r.id) AS scores "
        f"FROM experiment_runs r WHERE {cond} ORDER BY r.example_id, r.repetition LIMIT ?",
        [*params, limit],
    )
    for row in rows:
        row["output"] = _loads(row["output"])
    return rows


_RUN_SPANS = (
    "SELECT * FROM spans WHERE trace_id = ? OR (start_time >= ? AND "
    "json_extract_string(resource, '$.traceproof.experiment.id') = ? AND "
    "json_extract_string(resource, '$.traceproof.example.id') = ? AND "
    "json_extract_string(resource, '$.traceproof.run.repetition') = ?) "
    "ORDER BY start_time, span_id"
)


def run_spans(
    reader: Reader,
    *,
    trace_id: str,
    experiment_id: str,
    example_id: str,
    repetition: int,
    since: datetime,
    count_only: bool = False,
) -> list[dict[str, Any]]:
    """The spans of one run (every column, as stored), in start order; with ``count_only``
    just ``[{"n": count}]``."""
    sql = _RUN_SPANS
    if count_only:
        sql = "SELECT count(*) AS n FROM (" + sql.replace(" ORDER BY start_time, span_id", ")")
    return reader.dicts(sql, [trace_id, since, experiment_id, example_id, str(repetition)])


def span_counts(
    reader: Reader, *, experiment_id: str, since: datetime, trace_ids: Sequence[str]
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Spans stored for an experiment's runs: by (example id, repetition as text) from their
    resource attributes, and by trace id for ``trace_ids`` (the runs' ``TRACEPARENT`` traces).
    One grouped query each, shared by every run waiting for its spans."""
    by_run: dict[tuple[str, str], int] = {}
    for example_id, repetition, n in reader.rows(
        "SELECT json_extract_string(resource, '$.traceproof.example.id'), "
        "json_extract_string(resource, '$.traceproof.run.repetition'), count(*) FROM spans "
        "WHERE start_time >= ? AND "
        "json_extract_string(resource, '$.traceproof.experiment.id') = ? GROUP BY 1, 2",
        [since, experiment_id],
    ):
        by_run[(str(example_id), str(repetition))] = int(n)
    by_trace: dict[str, int] = {}
    if trace_ids:
        for trace_id, n in reader.rows(
            "SELECT trace_id, count(*) FROM spans WHERE trace_id IN "
            "(SELECT unnest(string_split(?, ','))) GROUP BY trace_id",
            [",".join(trace_ids)],
        ):
            by_trace[str(trace_id)] = int(n)
    return by_run, by_trace


def experiment_summary(
    reader: Reader, experiment_id: str, evaluators: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """What :mod:`traceproof.experiments.runner` reports when an experiment ends."""
    status = dict(
        reader.rows(
            "SELECT status, count(*) FROM experiment_runs WHERE experiment_id = ? "
            "GROUP BY status ORDER BY status",
            [experiment_id],
        )
    )
    ops = reader.dicts(
        "SELECT count(*) AS runs, quantile_cont(latency_ms, 0.5) AS latency_p50_ms, "
        "quantile_cont(latency_ms, 0.95) AS latency_p95_ms, sum(tokens) AS tokens, "
        "sum(cost_usd) AS cost_usd, sum(tool_calls) AS tool_calls "
        "FROM experiment_runs WHERE experiment_id = ?",
        [experiment_id],
    )[0]
    scored: dict[str, Any] = {}
    for evaluator in evaluators:
        rows = reader.rows(
            "SELECT a.label, a.score, json_extract_string(a.metadata, '$.error') "
            "FROM annotations a JOIN experiment_runs r ON r.id = a.target_id "
            "WHERE a.target_kind = 'experiment_run' "
            "AND r.experiment_id = ? AND a.name = ? AND a.annotator = ? AND a.identifier = ''",
            [experiment_id, evaluator["name"], evaluator["annotator"]],
        )
        labels: dict[str, int] = {}
        scores = [float(s) for _, s, e in rows if s is not None and e is None]
        errors = 0
        for label, _, error in rows:
            if error is not None:
                errors += 1
            elif label is not None:
                labels[str(label)] = labels.get(str(label), 0) + 1
        scored[evaluator["name"]] = {
            "count": len(rows) - errors,
            "mean": round(sum(scores) / len(scores), 4) if scores else None,
            "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1])),
            "errors": errors,
        }
    rounded = {
        k: (round(v, 3) if isinstance(v, float) else v) for k, v in ops.items() if v is not None
    }
    return {"runs": rounded.pop("runs", 0), "status": status, **rounded, "evaluators": scored}
