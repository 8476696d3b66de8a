"""What ``find_first_wrong_step`` reads beyond a trajectory's labels: its tool steps' arguments
and outputs (clipped), its task, and the annotations an earlier run of it wrote."""

from __future__ import annotations

from typing import Any

from traceproof.storage.reader import Reader
from traceproof.storage.trajectories import Scope

__all__ = ["TEXT_CHARS", "candidate_annotations", "step_texts", "trajectory_task"]

#: Characters of an edit's arguments read (a Write's whole content, up to this); of any other
#: step's arguments and output.
EDIT_CHARS = 200_000
TEXT_CHARS = 20_000

_COLUMN = {"trace": "trace_id", "session": "session_id"}


def step_texts(reader: Reader, project: str, scope: Scope, key: str) -> dict[str, dict[str, Any]]:
    """Span id → ``input`` and ``output`` (the status message first when the step failed) of
    every TOOL span of trace (or session) ``key``."""
    sql = f"""
        SELECT s.span_id,
               CASE WHEN s.attributes->>'$.trajectory.action' = 'edit'
                    THEN left(s.input_value, {EDIT_CHARS}) ELSE left(s.input_value, {TEXT_CHARS})
               END AS input,
               concat_ws(chr(10), CASE WHEN s.status = 'ERROR' THEN s.status_message END,
                         left(s.output_value, {TEXT_CHARS})) AS output
        FROM spans s
        WHERE s.project = ? AND s.span_kind = 'TOOL' AND s.trace_id IN (
            SELECT trace_id FROM trace_index WHERE project = ? AND {_COLUMN[scope]} = ?)
    """
    return {row["span_id"]: row for row in reader.dicts(sql, [project, project, key])}


def trajectory_task(reader: Reader, project: str, scope: Scope, key: str) -> str | None:
    """The first turn's prompt (its root span's input), when stored."""
    rows = reader.rows(
        f"SELECT left(root_input, {TEXT_CHARS}) FROM trace_index WHERE project = ? "
        f"AND {_COLUMN[scope]} = ? AND root_input IS NOT NULL ORDER BY start_time LIMIT 1",
        [project, key],
    )
    return rows[0][0] if rows else None


def candidate_annotations(
    reader: Reader, project: str, scope: Scope, key: str, *, name: str, annotator: str,
    identifier: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """The current span annotations ``name`` by ``annotator`` (with ``identifier``) on spans of
    trace (or session) ``key``."""
    return reader.dicts(
        "SELECT span_id, trace_id, label, explanation, metadata FROM annotations "
        "WHERE project = ? AND target_kind = 'span' AND name = ? AND annotator = ? "
        "AND identifier = ? AND trace_id IN (SELECT trace_id FROM trace_index "
        f"WHERE project = ? AND {_COLUMN[scope]} = ?) ORDER BY span_id",
        [project, name, annotator, identifier, project, key],
    )
