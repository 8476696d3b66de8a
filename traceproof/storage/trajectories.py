"""Trajectory reads: the labelled LLM and TOOL steps of a trace or a session.

A step's labels are span attributes (``trajectory.*``, written by
:mod:`traceproof.trajectories.actions` before a transcript's spans are stored); these reads turn
them back into rows, in the trajectory's order: the trace's start, then ``trajectory.step``
(start order for spans without one).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from traceproof.storage.reader import Reader

__all__ = ["Scope", "trajectory_projects", "trajectory_roots", "trajectory_steps"]

Scope = Literal["trace", "session"]

_COLUMN = {"trace": "trace_id", "session": "session_id"}


def trajectory_projects(reader: Reader, scope: Scope, key: str, project: str | None) -> list[str]:
    """The projects holding trace (or session) ``key`` (``project`` given: it alone, when it
    holds it)."""
    sql = f"SELECT DISTINCT project FROM trace_index WHERE {_COLUMN[scope]} = ?"
    params: list[Any] = [key]
    if project is not None:
        sql += " AND project = ?"
        params.append(project)
    return [row[0] for row in reader.rows(sql + " ORDER BY project LIMIT 11", params)]


#: Resource attributes naming a run's working directory (SWE-agent's sandbox under its own).
_ROOTS = ("process.cwd", "swe_agent.working_dir", "mini_swe_agent.working_dir")


def trajectory_roots(reader: Reader, project: str, scope: Scope, key: str) -> list[str]:
    """The working directories of trace (or session) ``key``'s spans, sorted (at most 20)."""
    values = " UNION ".join(
        f"SELECT s.resource->>'$.{path}' AS root FROM spans s JOIN tr USING (trace_id) "
        "WHERE s.project = ?"
        for path in _ROOTS
    )
    sql = (
        f"WITH tr AS (SELECT trace_id FROM trace_index WHERE project = ? AND {_COLUMN[scope]} = ?) "
        f"SELECT DISTINCT root FROM ({values}) WHERE root IS NOT NULL AND root <> '' "
        "ORDER BY root LIMIT 20"
    )
    return [row[0] for row in reader.rows(sql, [project, key, *[project] * len(_ROOTS)])]


def _attr(path: str) -> str:
    return f"s.attributes->>'$.{path}'"


_STEPS_SQL = """
WITH tr AS (
    SELECT trace_id, epoch_us(start_time) AS trace_start
    FROM trace_index WHERE project = ? AND {column} = ?
),
st AS (
    SELECT s.trace_id, s.span_id, s.span_kind AS kind, s.tool_name AS tool, s.model,
           coalesce(s.prompt_tokens, 0) AS prompt_tokens,
           coalesce(s.completion_tokens, 0) AS completion_tokens,
           coalesce(s.total_tokens, 0) AS total_tokens,
           {action} AS action, {target} AS target, {outcome} AS outcome,
           s.attributes->'$.trajectory.files' AS files,
           TRY_CAST({passed} AS BIGINT) AS tests_passed,
           TRY_CAST({failed} AS BIGINT) AS tests_failed,
           coalesce({recover} = 'true', false) AS recover,
           coalesce(TRY_CAST({cache_read} AS BIGINT), 0) AS cache_read_tokens,
           coalesce(TRY_CAST({cache_write} AS BIGINT), 0) AS cache_write_tokens,
           tr.trace_start,
           row_number() OVER (
               PARTITION BY s.trace_id
               ORDER BY TRY_CAST({step} AS BIGINT) NULLS LAST, s.start_time,
                        CASE s.span_kind WHEN 'LLM' THEN 0 ELSE 1 END, s.end_time, s.span_id
           ) AS pos,
           dense_rank() OVER (ORDER BY tr.trace_start, s.trace_id) AS turn
    FROM spans s JOIN tr USING (trace_id)
    WHERE s.project = ? AND s.span_kind IN ('LLM', 'TOOL')
)
SELECT * FROM st
WHERE {keyset}
ORDER BY trace_start, trace_id, pos
LIMIT ?
"""


def trajectory_steps(
    reader: Reader,
    project: str,
    scope: Scope,
    key: str,
    *,
    after: tuple[int, str, int] | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """The steps of trace (or session) ``key`` after the keyset ``after`` (trace start in
    µs, trace id, position in the trace), at most ``limit``; each a dict with the span's
    columns, its labels (``files`` a list), ``pos`` (in its trace) and ``turn`` (its trace's
    place in the session, from 1)."""
    keyset, params = "TRUE", []
    if after is not None:
        keyset = (
            "(trace_start > ? OR (trace_start = ? AND trace_id > ?) "
            "OR (trace_start = ? AND trace_id = ? AND pos > ?))"
        )
        start, trace, pos = after
        params = [start, start, trace, start, trace, pos]
    sql = _STEPS_SQL.format(
        column=_COLUMN[scope],
        action=_attr("trajectory.action"),
        target=_attr("trajectory.target"),
        outcome=_attr("trajectory.outcome"),
        passed=_attr("trajectory.tests.passed"),
        failed=_attr("trajectory.tests.failed"),
        recover=_attr("trajectory.recover"),
        step=_attr("trajectory.step"),
        cache_read=_attr("llm.token_count.prompt_details.cache_read"),
        cache_write=_attr("llm.token_count.prompt_details.cache_write"),
        keyset=keyset,
    )
    rows = reader.dicts(sql, [project, key, project, *params, limit])
    for row in rows:
        row["files"] = _files(row["files"])
    return rows


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    try:
        parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
    except orjson.JSONDecodeError:
        return []
    if isinstance(parsed, list):
        return [str(v) for v in parsed if isinstance(v, str)]
    return []
