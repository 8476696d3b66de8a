"""Reads the wire receivers make before they write: the prompt a Claude Code telemetry event
without ``prompt.id`` belongs to, and which span ids Phoenix's span route already holds."""

from __future__ import annotations

from collections.abc import Sequence

from traceproof.storage.reader import Reader

_LATEST_PROMPT = """
SELECT attributes->>'$.claude_code.prompt_key'
FROM spans
WHERE session_id = ? AND parent_span_id IS NULL AND span_kind = 'AGENT'
  AND (attributes->>'$.trajectory.source') = ?
  AND start_time <= make_timestamp(?)
ORDER BY start_time DESC, span_id
LIMIT 1
"""


def latest_prompt_key(reader: Reader, session: str, before_ns: int, source: str) -> str | None:
    """The prompt key of the latest telemetry root (``trajectory.source`` ``source``) of
    ``session`` starting at or before ``before_ns``, or None."""
    found = reader.scalar(_LATEST_PROMPT, [session, source, before_ns // 1000])
    return found if isinstance(found, str) else None


def stored_span_ids(reader: Reader, span_ids: Sequence[str]) -> set[str]:
    """Which of ``span_ids`` some stored span has (in any trace or project)."""
    if not span_ids:
        return set()
    rows = reader.rows(
        "SELECT DISTINCT span_id FROM spans WHERE span_id IN (SELECT unnest(?))",
        [list(dict.fromkeys(span_ids))],
    )
    return {row[0] for row in rows}
