"""What a comparison of two experiments reads, and the baselines it compares with.

- :func:`find_experiments` / :func:`recent_experiments`: experiment rows (JSON columns parsed).
- :func:`experiment_runs`: an experiment's runs, by example and repetition.
- :func:`run_scores`: the *current* ``experiment_run`` annotations on an experiment's runs
  (name, label, score, annotator), what its evaluators said about each run.
- :func:`example_inputs`: the input and expected output of examples, for previews.
- :func:`score_directions`: whether a higher or a lower score is better, from the annotation
  configs (``MAXIMIZE`` unless a config says ``MINIMIZE``).
- :func:`get_baseline` / :func:`set_baseline` / :func:`list_baselines`: the baseline experiment
  of a (task, dataset) in ``experiment_baselines``.

Writes run on the store's single writer (:meth:`Store.run_write`), one transaction each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store

__all__ = [
    "example_inputs",
    "experiment_runs",
    "find_experiments",
    "get_baseline",
    "list_baselines",
    "recent_experiments",
    "run_scores",
    "score_directions",
    "set_baseline",
]

_JSON_COLUMNS = ("evaluators", "provenance", "summary")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _parsed(row: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    for column in columns:
        value = row.get(column)
        if isinstance(value, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # text not JSON stays text
                row[column] = orjson.loads(value)
    return row


# -- experiments ------------------------------------------------------------------------------


def find_experiments(reader: Reader, id_or_name: str, limit: int = 10) -> list[dict[str, Any]]:
    """The experiment of this id (one row), else those of this name, newest first (at most
    ``limit``); none when neither."""
    rows = reader.dicts(
        "SELECT * FROM experiments WHERE id = ? OR name = ? "
        f"ORDER BY id = ? DESC, created_at DESC, id LIMIT {int(limit)}",
        [id_or_name, id_or_name, id_or_name],
    )
    if rows and rows[0]["id"] == id_or_name:
        rows = rows[:1]
    return [_parsed(row, _JSON_COLUMNS) for row in rows]


def recent_experiments(
    reader: Reader, *, task: str | None = None, dataset_id: str | None = None, limit: int = 5
) -> list[dict[str, Any]]:
    """The newest experiments (of one task and dataset, when given): id, name, task,
    dataset_id, status, created_at."""
    sql = "SELECT id, name, task, dataset_id, status, created_at FROM experiments WHERE TRUE"
    params: list[Any] = []
    if task is not None:
        sql += " AND task = ?"
        params.append(task)
    if dataset_id is not None:
        sql += " AND dataset_id = ?"
        params.append(dataset_id)
    return reader.dicts(sql + f" ORDER BY created_at DESC, id LIMIT {int(limit)}", params)


def experiment_runs(reader: Reader, experiment_id: str) -> list[dict[str, Any]]:
    """Every run of an experiment (``output`` parsed), by example and repetition."""
    rows = reader.dicts(
        "SELECT id, example_id, repetition, status, error, output, trace_ids, latency_ms, "
        "tokens, cost_usd, tool_calls FROM experiment_runs WHERE experiment_id = ? "
        "ORDER BY example_id, repetition",
        [experiment_id],
    )
    return [_parsed(row, ("output",)) for row in rows]


def run_scores(reader: Reader, experiment_id: str) -> list[dict[str, Any]]:
    """The current annotations on an experiment's runs: run_id, name, label, score,
    explanation, error (an evaluator error's kind, ``metadata.error``), annotator_kind,
    annotator, updated_at; by run, name, then newest first."""
    return reader.dicts(
        "SELECT a.target_id AS run_id, a.name, a.label, a.score, a.explanation, "
        "json_extract_string(a.metadata, '$.error') AS error, a.annotator_kind, "
        "a.annotator, a.updated_at FROM annotations a "
        "JOIN experiment_runs r ON r.id = a.target_id "
        "WHERE a.target_kind = 'experiment_run' AND r.experiment_id = ? "
        "ORDER BY a.target_id, a.name, a.updated_at DESC, a.annotator",
        [experiment_id],
    )


def example_inputs(
    reader: Reader, dataset_ids: Iterable[str], example_ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """``{example_id: {"input", "expected"}}`` (parsed) for the examples found in the datasets
    (the newest row of each when an example was removed and added again)."""
    datasets = sorted(set(dataset_ids))
    examples = sorted(set(example_ids))
    if not datasets or not examples:
        return {}
    rows = reader.dicts(
        "SELECT example_id, arg_max(input, added_version) AS input, "
        "arg_max(expected, added_version) AS expected FROM dataset_examples "
        "WHERE list_contains(?, dataset_id) AND list_contains(?, example_id) "
        "GROUP BY example_id",
        [datasets, examples],
    )
    return {row["example_id"]: _parsed(row, ("input", "expected")) for row in rows}


def score_directions(reader: Reader, names: Iterable[str]) -> dict[str, str]:
    """``{name: "MAXIMIZE" | "MINIMIZE"}`` for every name: what its annotation config says
    (``NONE`` or no config: ``MAXIMIZE``, a higher score is better)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    found = dict(
        reader.rows(
            "SELECT name, direction FROM annotation_configs WHERE list_contains(?, name)",
            [wanted],
        )
    )
    return {n: "MINIMIZE" if found.get(n) == "MINIMIZE" else "MAXIMIZE" for n in wanted}


# -- baselines --------------------------------------------------------------------------------


def get_baseline(reader: Reader, task: str, dataset_id: str) -> str | None:
    """The baseline experiment id of (task, dataset), or None."""
    value = reader.scalar(
        "SELECT experiment_id FROM experiment_baselines WHERE task = ? AND dataset_id = ?",
        [task, dataset_id],
    )
    return str(value) if value is not None else None


def set_baseline(store: Store, task: str, dataset_id: str, experiment_id: str) -> str | None:
    """Make ``experiment_id`` the baseline of (task, dataset); the one it replaces, or None."""

    def run(cursor: duckdb.DuckDBPyConnection) -> str | None:
        found = cursor.execute(
            "SELECT experiment_id FROM experiment_baselines WHERE task = ? AND dataset_id = ?",
            [task, dataset_id],
        ).fetchone()
        cursor.execute(
            "INSERT OR REPLACE INTO experiment_baselines VALUES (?, ?, ?, ?)",
            [task, dataset_id, experiment_id, _now()],
        )
        return str(found[0]) if found else None

    return store.run_write(run)


def list_baselines(reader: Reader, task: str | None = None) -> list[dict[str, Any]]:
    """Stored baselines (of one task, when given): task, dataset_id, dataset (its name),
    experiment_id, set_at; by task and dataset."""
    sql = (
        "SELECT b.task, b.dataset_id, d.name AS dataset, b.experiment_id, b.set_at "
        "FROM experiment_baselines b LEFT JOIN datasets d ON d.id = b.dataset_id"
    )
    params: list[Any] = []
    if task is not None:
        sql += " WHERE b.task = ?"
        params.append(task)
    return reader.dicts(sql + " ORDER BY b.task, b.dataset_id", params)
