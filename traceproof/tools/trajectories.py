"""get_trajectory and trajectory_stats: a coding agent's trace or session, step by step.

Steps are the LLM and TOOL spans in order; a tool step shows the labels
:mod:`traceproof.trajectories.actions` gave it at import (action, target, outcome). Spans
without labels (traces that did not come from a transcript) show their tool or model only.
The figures of ``trajectory_stats`` come from :mod:`traceproof.trajectories.analysis`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.storage.trajectories import Scope, trajectory_projects, trajectory_steps
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    one_line,
    size,
)
from traceproof.tools.filters import ProjectParam
from traceproof.tools.paging import ID_CHARS, NEXT_CALL_DESCRIPTION, largest_fit, next_call
from traceproof.trajectories import analysis
from traceproof.trajectories.analysis import Step

__all__ = ["TrajectoryStats", "TrajectoryStep", "TrajectoryView", "get_trajectory", "step_of",
           "trajectory_stats"]  # fmt: skip

#: Characters of a step's target in get_trajectory.
TARGET_CHARS = 160
#: Steps one trajectory_stats call reads at most (a longer trajectory: ``partial``).
STATS_MAX_STEPS = 100_000
#: Items of each list trajectory_stats shows at most.
LIST_MAX = 20

TraceParam = Annotated[str | None, Field()]
SessionParam = Annotated[str | None, Field()]


class TrajectoryStep(BaseModel):
    n: int = Field(description="Step number in the trajectory, from 1.")
    turn: int = Field(description="Its trace's place in the session, from 1.")
    span_id: str = Field(description="Pass to get_span_data for the full step.")
    action: str = Field(description="localize, edit, execute, verify, vcs, plan, delegate, "
                        "web, other; llm for a model call.")  # fmt: skip
    tool: str | None = Field(description="Tool name; the model of a model call.")
    target: str | None = Field(description="File or command (clipped).")
    outcome: str | None = Field(description="ok, error, tests_passed, tests_failed.")
    tests: str | None = Field(default=None, description="Test counts when the output gave them.")
    recover: bool = Field(default=False, description="Follows an error or failed tests.")
    tokens: int | None = Field(default=None, description="Tokens of a model call.")


class TrajectoryView(BaseModel):
    project: str
    trace_id: str | None
    session_id: str | None
    steps: list[TrajectoryStep] = Field(description="This page of steps, in order.")
    truncated: bool = Field(description="True when more steps follow this page.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page.")
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)


class RepeatedCommand(BaseModel):
    tool: str | None
    target: str
    count: int
    steps: list[int] = Field(description="Step numbers of its runs.")


class TrajectoryTokens(BaseModel):
    llm_calls: int
    prompt: int = Field(description="Prompt tokens, cache reads and writes included.")
    completion: int
    cache_read: int
    cache_write: int
    cost_usd: float | None = Field(description="Over the priced models; None: none priced.")
    unpriced: list[str] = Field(description="Models without a price (not in cost_usd).")


class TrajectoryStats(BaseModel):
    project: str
    trace_id: str | None
    session_id: str | None
    turns: int
    steps: int = Field(description="Tool steps.")
    by_action: dict[str, int] = Field(description="Tool steps per action.")
    errors: int = Field(description="Tool steps with outcome error or tests_failed.")
    edits_before_first_verify: int
    verifies_after_last_edit: int | None = Field(description="None: nothing was edited.")
    last_verify: str | None = Field(description="Outcome of the last verification.")
    repeated_commands: list[RepeatedCommand] = Field(description="Commands run more than once.")
    errors_without_change: list[int] = Field(
        description="Steps that failed and were retried unchanged (same tool and target)."
    )
    recoveries: int = Field(description="Steps after an error or failed tests.")
    files_read: int
    files_edited: int
    edited_not_read: list[str] = Field(description="Files edited but never read.")
    tokens: TrajectoryTokens
    partial: bool = Field(description=f"True past {STATS_MAX_STEPS} steps (the first counted).")
    truncated: bool = Field(description="True when lists were cut to fit max_chars.")


def scope_of(trace_id: str | None, session_id: str | None) -> tuple[Scope, str]:
    if (trace_id is None) == (session_id is None):
        raise ToolFailure(
            "Pass exactly one of trace_id and session_id. search_traces lists both.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return ("trace", trace_id) if trace_id is not None else ("session", session_id or "")


def project_of(store: Store, scope: Scope, key: str, project: str | None) -> str:
    with store.reader() as reader:
        projects = trajectory_projects(reader, scope, key, project)
    if not projects:
        where = f" in project {project!r}" if project is not None else ""
        code = ErrorCode.UNKNOWN_TRACE if scope == "trace" else ErrorCode.UNKNOWN_SESSION
        raise ToolFailure(
            f"No {scope} {key[:ID_CHARS]!r}{where}. Call search_traces to list traces and "
            "their session_id.",
            code=code,
        )
    if len(projects) > 1:
        names = ", ".join(repr(p) for p in projects[:10])
        raise ToolFailure(
            f"{scope.capitalize()} {key[:ID_CHARS]!r} exists in several projects ({names}). "
            "Pass project to choose one.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return projects[0]


def _fingerprint(scope: Scope, key: str, project: str | None) -> str:
    return hashlib.sha256(orjson.dumps([scope, key, project])).hexdigest()[:12]


def _tests(row: dict[str, Any]) -> str | None:
    parts = [f"{row[k]} {w}" for k, w in (("tests_passed", "passed"), ("tests_failed", "failed"))
             if row[k] is not None]  # fmt: skip
    return ", ".join(parts) or None


def _view_step(row: dict[str, Any], n: int) -> TrajectoryStep:
    llm = row["kind"] == "LLM"
    return TrajectoryStep(
        n=n,
        turn=int(row["turn"]),
        span_id=row["span_id"],
        action="llm" if llm else (row["action"] or "other"),
        tool=one_line(row["model"] if llm else row["tool"], ID_CHARS),
        target=None if llm else one_line(row["target"], TARGET_CHARS),
        outcome=None if llm else row["outcome"],
        tests=None if llm else _tests(row),
        recover=bool(row["recover"]) and not llm,
        tokens=int(row["total_tokens"]) if llm else None,
    )


def get_trajectory(
    store: Store,
    *,
    trace_id: TraceParam = None,
    session_id: SessionParam = None,
    project: ProjectParam = None,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> TrajectoryView:
    """A coding agent's trace or session as numbered steps: action, tool, target, outcome,
    tokens. Expand a step with get_span_data(span_id)."""
    scope, key = scope_of(trace_id, session_id)
    limit_chars = budget(max_chars, store.settings)
    fingerprint = _fingerprint(scope, key, project)
    after: tuple[int, str, int] | None = None
    shown_before = 0
    if cursor:
        after, shown_before = _keyset(decode_cursor(cursor, "get_trajectory", fingerprint))
    resolved = project_of(store, scope, key, project)
    fetch = min(500, limit_chars // 80 + 1)
    with store.reader() as reader:
        rows = trajectory_steps(reader, resolved, scope, key, after=after, limit=fetch + 1)
    more = len(rows) > fetch
    rows = rows[:fetch]
    steps = [_view_step(row, shown_before + i) for i, row in enumerate(rows, 1)]
    view = TrajectoryView(
        project=resolved,
        trace_id=trace_id,
        session_id=session_id,
        steps=steps,
        truncated=more,
    )

    def build(count: int) -> TrajectoryView:
        view.steps = steps[:count]
        view.truncated = more or count < len(steps)
        view.next_cursor = view.next_call = None
        if view.truncated and count:
            last = rows[count - 1]
            key_values = [int(last["trace_start"]), last["trace_id"], int(last["pos"]),
                          shown_before + count]  # fmt: skip
            view.next_cursor = encode_cursor("get_trajectory", fingerprint, key_values)
            view.next_call = next_call("get_trajectory")
        return view

    return build(largest_fit(build, len(steps), limit_chars))


def _keyset(key: list[Any]) -> tuple[tuple[int, str, int], int]:
    if len(key) != 4 or not (
        type(key[0]) is int and isinstance(key[1], str) and type(key[2]) is int
        and type(key[3]) is int
    ):  # fmt: skip
        raise ToolFailure(
            "The cursor is damaged. Pass next_cursor unchanged, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return (key[0], key[1], key[2]), key[3]


def step_of(row: dict[str, Any]) -> Step:
    """A stored step (a row of trajectory_steps) as analysis reads it."""
    return Step(
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        kind=row["kind"],
        action=row["action"],
        tool=row["tool"],
        target=row["target"],
        outcome=row["outcome"],
        files=tuple(row["files"]),
        tests_passed=row["tests_passed"],
        tests_failed=row["tests_failed"],
        recover=bool(row["recover"]),
        model=row["model"],
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        cache_read_tokens=int(row["cache_read_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
    )


def trajectory_stats(
    store: Store,
    *,
    trace_id: TraceParam = None,
    session_id: SessionParam = None,
    project: ProjectParam = None,
    max_chars: MaxChars = None,
) -> TrajectoryStats:
    """Figures of a coding agent's trace or session: steps by action, edits before the first
    verification, repeated commands, errors retried unchanged, recoveries, files read vs
    edited, tokens, cost."""
    scope, key = scope_of(trace_id, session_id)
    limit_chars = budget(max_chars, store.settings)
    resolved = project_of(store, scope, key, project)
    with store.reader() as reader:
        rows = trajectory_steps(reader, resolved, scope, key, limit=STATS_MAX_STEPS + 1)
    partial = len(rows) > STATS_MAX_STEPS
    steps = [step_of(row) for row in rows[:STATS_MAX_STEPS]]
    tools = [s for s in steps if s.is_tool]
    read, edited = analysis.files_read_and_edited(steps)
    spent = analysis.tokens(steps, store.settings.llm_prices)
    verifies = [s.outcome for s in tools if s.action == "verify"]
    repeats = [
        RepeatedCommand(tool=r.tool, target=one_line(r.target, TARGET_CHARS) or "",
                        count=r.count, steps=list(r.steps[:LIST_MAX]))
        for r in analysis.repeated_commands(steps)[:LIST_MAX]
    ]  # fmt: skip
    unread = [f for f in edited if f not in set(read)]
    stats = TrajectoryStats(
        project=resolved,
        trace_id=trace_id,
        session_id=session_id,
        turns=len({s.trace_id for s in steps}),
        steps=len(tools),
        by_action=analysis.by_action(steps),
        errors=sum(s.outcome in analysis.FAILED for s in tools),
        edits_before_first_verify=analysis.edits_before_first_verify(steps),
        verifies_after_last_edit=analysis.verifies_after_last_edit(steps),
        last_verify=verifies[-1] if verifies else None,
        repeated_commands=repeats,
        errors_without_change=analysis.errors_without_change(steps)[:LIST_MAX],
        recoveries=analysis.recoveries(steps),
        files_read=len(read),
        files_edited=len(edited),
        edited_not_read=[one_line(f, TARGET_CHARS) or "" for f in unread[:LIST_MAX]],
        tokens=TrajectoryTokens(
            llm_calls=spent.llm_calls,
            prompt=spent.prompt,
            completion=spent.completion,
            cache_read=spent.cache_read,
            cache_write=spent.cache_write,
            cost_usd=spent.cost_usd,
            unpriced=list(spent.unpriced[:LIST_MAX]),
        ),
        partial=partial,
        truncated=len(unread) > LIST_MAX,
    )
    return _fit_stats(stats, limit_chars)


def _fit_stats(stats: TrajectoryStats, limit: int) -> TrajectoryStats:
    """Lists cut (longest first) until the answer fits."""
    while size(stats) > limit:
        lists = [
            ("repeated_commands", len(stats.repeated_commands)),
            ("edited_not_read", len(stats.edited_not_read)),
            ("errors_without_change", len(stats.errors_without_change)),
        ]
        name, count = max(lists, key=lambda item: item[1])
        if count == 0:
            for repeat in stats.repeated_commands:
                repeat.target = one_line(repeat.target, 40) or ""
            break
        setattr(stats, name, getattr(stats, name)[: count // 2])
        stats.truncated = True
    return stats
