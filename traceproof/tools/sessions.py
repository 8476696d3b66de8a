"""get_session: a multi-turn session read as a conversation.

A session is the traces sharing a ``session_id`` in one project, in time order: one turn per
trace. Each turn shows its root input and output (longer previews than search_traces', since a
session is read as a dialogue) and, when it failed, the first error to happen in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Reader, Store
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    UtcTime,
    budget,
    decode_cursor,
    encode_cursor,
    one_line,
    size,
)
from traceproof.tools.filters import ProjectParam
from traceproof.tools.paging import (
    ID_CHARS,
    NEXT_CALL_DESCRIPTION,
    check_project,
    cut,
    largest_fit,
    next_call,
    tidy,
)

#: Characters of a turn's input/output preview (a session reads as a dialogue).
TURN_PREVIEW_CHARS = 300
#: Characters of a failed turn's first error message.
ERROR_CHARS = 300


class SessionTurn(BaseModel):
    turn: int = Field(description="Position of the turn in the session, from 1.")
    trace_id: str = Field(description="The turn's trace (pass to get_trace_preview).")
    start_time: UtcTime = Field(description="Start of the turn (UTC).")
    latency_ms: float = Field(description="Duration of the turn's trace, in ms.")
    total_tokens: int = Field(description="Tokens of the turn's LLM spans.")
    span_count: int = Field(description="Spans in the turn's trace.")
    error_count: int = Field(description="ERROR spans in the turn's trace.")
    name: str = Field(description="Root span name.")
    input: str | None = Field(description="The root span's input (preview).")
    output: str | None = Field(description="The root span's output (preview).")
    error: str | None = Field(
        default=None, description="When the turn has ERROR spans: the first error to happen."
    )
    error_span_id: str | None = Field(
        default=None, description="The span of that error (pass to get_span_data)."
    )


class SessionView(BaseModel):
    project: str = Field(description="Project of the session.")
    session_id: str = Field(description="Session id.")
    user_id: str | None = Field(description="User of the session, if recorded.")
    turn_count: int = Field(description="Traces (turns) in the session.")
    error_turns: int = Field(description="Turns with at least one ERROR span.")
    span_count: int = Field(description="Spans over all turns.")
    error_count: int = Field(description="ERROR spans over all turns.")
    total_tokens: int = Field(description="LLM tokens over all turns.")
    start_time: UtcTime = Field(description="Start of the first turn (UTC).")
    end_time: UtcTime = Field(description="End of the last turn (UTC).")
    turns: list[SessionTurn] = Field(description="Turns in time order (this page).")
    truncated: bool = Field(description="True when more turns follow this page.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page.")
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)


def get_session(
    store: Store,
    *,
    session_id: str,
    project: ProjectParam = None,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> SessionView:
    """A session as a conversation: totals, then each turn (trace) with input, output,
    latency, tokens and first error."""
    after: dict[str, Any] | None = None
    if cursor:
        after = _session_keyset(cursor, session_id, project)
    limit_chars = budget(max_chars, store.settings)
    fetch = min(200, limit_chars // 300 + 1)
    with store.reader() as reader:
        if project is not None:
            check_project(reader, project)
        totals = _session_totals(reader, session_id, project)
        raw_turns = _session_turns(reader, totals["project"], session_id, after, fetch + 1)
    first_turn = 1 + (after["n"] if after else 0)
    turns = [_turn(raw, first_turn + i) for i, raw in enumerate(raw_turns[:fetch])]
    view = SessionView(**totals, turns=turns, truncated=len(raw_turns) > fetch)
    return _fit_session(view, raw_turns[:fetch], project, limit_chars)


def _session_totals(reader: Reader, session_id: str, project: str | None) -> dict[str, Any]:
    rows = reader.dicts(
        """
        SELECT project, session_id, min(user_id) AS user_id, count(*) AS turn_count,
               count(*) FILTER (WHERE error_count > 0) AS error_turns,
               sum(span_count) AS span_count, sum(error_count) AS error_count,
               sum(total_tokens) AS total_tokens, min(start_time) AS start_time,
               max(end_time) AS end_time
        FROM traces
        WHERE session_id = ? AND (CAST(? AS VARCHAR) IS NULL OR project = ?)
        GROUP BY project, session_id
        ORDER BY project
        """,
        [session_id, project, project],
    )
    where = f" in project {project!r}" if project is not None else ""
    if not rows:
        raise ToolFailure(
            f"No session {session_id[:ID_CHARS]!r}{where}. Call search_traces with "
            "session_id unset to see recent traces and their session_id, or sql over the "
            "sessions view to list sessions.",
            code=ErrorCode.UNKNOWN_SESSION,
        )
    if len(rows) > 1:
        projects = ", ".join(repr(row["project"]) for row in rows[:10])
        raise ToolFailure(
            f"Session {session_id[:ID_CHARS]!r} exists in several projects ({projects}). "
            "Pass project to choose one.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return rows[0]


def _session_turns(
    reader: Reader, project: str, session_id: str, after: dict[str, Any] | None, fetch: int
) -> list[dict[str, Any]]:
    """The session's traces in time order after the keyset, each with its first error (the
    ERROR span that ended first: the root cause tends to end before the spans it fails)."""
    keyset, params = "TRUE", [project, session_id]
    if after is not None:
        keyset = "(epoch_us(t.start_time) > ? OR (epoch_us(t.start_time) = ? AND t.trace_id > ?))"
        params += [after["s"], after["s"], after["id"]]
    sql = f"""
        WITH turns AS (
            SELECT t.trace_id, t.start_time, epoch_us(t.start_time) AS start_us, t.latency_ms,
                   t.total_tokens, t.span_count, t.error_count, t.name,
                   left(t.input_preview, {TURN_PREVIEW_CHARS * 4}) AS input,
                   left(t.output_preview, {TURN_PREVIEW_CHARS * 4}) AS output
            FROM traces t
            WHERE t.project = ? AND t.session_id = ? AND {keyset}
            ORDER BY t.start_time, t.trace_id
            LIMIT ?
        ),
        errors AS (
            SELECT s.trace_id,
                   arg_min(
                       left(coalesce(s.status_message,
                                     nullif(concat_ws(': ', s.error_type, s.error_message), ''),
                                     'status ERROR'), {ERROR_CHARS * 2}),
                       (s.end_time, s.span_id)) AS error,
                   arg_min(s.span_id, (s.end_time, s.span_id)) AS error_span_id,
                   arg_min(s.name, (s.end_time, s.span_id)) AS error_span
            FROM spans s
            WHERE s.project = ? AND s.status = 'ERROR'
              AND s.trace_id IN (SELECT trace_id FROM turns WHERE error_count > 0)
            GROUP BY s.trace_id
        )
        SELECT turns.*, errors.error, errors.error_span_id, errors.error_span
        FROM turns LEFT JOIN errors USING (trace_id)
        ORDER BY turns.start_time, turns.trace_id
    """
    return reader.dicts(sql, [*params, fetch, project])


def _turn(raw: dict[str, Any], number: int) -> SessionTurn:
    error = None
    if raw["error"] is not None:
        error = one_line(f"{raw['error_span']}: {raw['error']}", ERROR_CHARS)
    return SessionTurn(
        turn=number,
        trace_id=raw["trace_id"],
        start_time=raw["start_time"],
        latency_ms=tidy(float(raw["latency_ms"])),
        total_tokens=int(raw["total_tokens"]),
        span_count=int(raw["span_count"]),
        error_count=int(raw["error_count"]),
        name=cut(raw["name"]) or "",
        input=one_line(raw["input"], TURN_PREVIEW_CHARS),
        output=one_line(raw["output"], TURN_PREVIEW_CHARS),
        error=error,
        error_span_id=raw["error_span_id"],
    )


def _session_keyset(cursor: str, session_id: str, project: str | None) -> dict[str, Any]:
    key = decode_cursor(cursor, "get_session", _session_fingerprint(session_id, project))
    if len(key) != 3 or not (
        type(key[0]) is int and isinstance(key[1], str) and type(key[2]) is int
    ):
        raise ToolFailure(
            "The cursor is damaged. Pass next_cursor unchanged, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return {"s": key[0], "id": key[1], "n": key[2]}


def _session_fingerprint(session_id: str, project: str | None) -> str:
    return hashlib.sha256(orjson.dumps([session_id, project])).hexdigest()[:12]


def _fit_session(
    view: SessionView,
    raw_turns: Sequence[dict[str, Any]],
    project: str | None,
    limit_chars: int,
) -> SessionView:
    """The turns that fit in the budget; the cursor continues after the last one shown."""
    all_turns = list(view.turns)
    more = view.truncated

    def finish(shown: int) -> SessionView:
        view.turns = all_turns[:shown]
        view.truncated = more or shown < len(all_turns)
        view.next_cursor = view.next_call = None
        if view.truncated and shown:
            last = raw_turns[shown - 1]
            key = [last["start_us"], last["trace_id"], all_turns[shown - 1].turn]
            fingerprint = _session_fingerprint(view.session_id, project)
            view.next_cursor = encode_cursor("get_session", fingerprint, key)
            view.next_call = next_call("get_session")
        return view

    shown = largest_fit(finish, len(all_turns), limit_chars)
    finish(shown)
    if shown == 1 and size(view) > limit_chars:
        turn = all_turns[0]
        all_turns[0] = turn.model_copy(
            update={"input": one_line(turn.input, 60), "output": one_line(turn.output, 60)}
        )
        finish(1)
    return view
