"""The reads an evaluation run makes: the spans its targets cover, and the verdicts already
stored for it (so that re-running the same evaluator version skips what it has judged).

Spans come with their session and user filled from their trace when they lack their own (many
instrumentations put ``session.id`` on the root span only), as every span-level tool reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from traceproof.storage.reader import Reader

__all__ = ["session_trace_ids", "stored_verdicts", "trace_rows"]

_SPANS = (
    "SELECT s.* REPLACE (coalesce(s.session_id, t.session_id) AS session_id, "
    "coalesce(s.user_id, t.user_id) AS user_id) FROM spans s LEFT JOIN trace_index t "
    "ON t.project = s.project AND t.trace_id = s.trace_id"
)

#: Pairs of ids given as two texts joined by the unit separator: DuckDB converts one string
#: parameter at once, where a Python list costs it per item.
_SEP = "\x1f"
_PAIRS = "SELECT (unnest(string_split(?, chr(31))), unnest(string_split(?, chr(31))))"


def _pair_params(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [_SEP.join(a for a, _ in pairs), _SEP.join(b for _, b in pairs)]


def trace_rows(reader: Reader, traces: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every span (every column, as stored) of the ``(project, trace_id)`` pairs, in start
    order."""
    if not traces:
        return []
    return reader.dicts(
        f"{_SPANS} WHERE (s.project, s.trace_id) IN ({_PAIRS}) ORDER BY s.start_time, s.span_id",
        _pair_params(traces),
    )


def session_trace_ids(
    reader: Reader, sessions: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """The trace ids of each ``(project, session_id)``, oldest first."""
    if not sessions:
        return {}
    rows = reader.rows(
        f"SELECT project, session_id, trace_id FROM trace_index WHERE (project, session_id) IN "
        f"({_PAIRS}) ORDER BY start_time, trace_id",
        _pair_params(sessions),
    )
    out: dict[tuple[str, str], list[str]] = {}
    for project, session_id, trace_id in rows:
        out.setdefault((project, session_id), []).append(trace_id)
    return out


def stored_verdicts(
    reader: Reader, *, target_kind: str, name: str, annotator: str
) -> dict[tuple[str, str], tuple[str | None, float | None]]:
    """The verdicts (label, score) that ``annotator`` wrote as annotation ``name`` on targets
    of ``target_kind``, by target: ``(trace_id, span_id)`` for spans, ``(project, id)`` for
    traces and sessions. Errors (annotations whose metadata has ``error``) are not verdicts:
    they are left out, so a re-run tries those targets again."""
    rows = reader.rows(
        "SELECT project, trace_id, target_id, label, score FROM annotations "
        "WHERE target_kind = ? AND name = ? AND annotator = ? AND identifier = '' "
        "AND (metadata IS NULL OR json_extract(metadata, '$.error') IS NULL)",
        [target_kind, name, annotator],
    )
    out: dict[tuple[str, str], tuple[str | None, float | None]] = {}
    for project, trace_id, target_id, label, score in rows:
        key = (trace_id, target_id) if target_kind == "span" else (project, target_id)
        out[key] = (label, score)
    return out
