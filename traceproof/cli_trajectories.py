"""``traceproof trajectory show|stats|diff|first-wrong-step``: a coding agent's trace or
session, step by step (the tools ``get_trajectory``, ``trajectory_stats``,
``diff_trajectories`` and ``find_first_wrong_step``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from traceproof.cli import cli, db_option
from traceproof.cli_render import closed_pipe_ok, drawing_console
from traceproof.cli_tools import call, cursor_option, emit, json_option, max_chars_option
from traceproof.cli_trajectory_diff import draw_diff


@cli.group()
def trajectory() -> None:
    """Coding-agent trajectories: steps with their action labels, and their figures."""


def _which(trace_id: str | None, options: dict[str, Any]) -> dict[str, Any]:
    if (trace_id is None) == (options.get("session_id") is None):
        raise click.UsageError("Give a TRACE_ID or --session, not both.")
    return {"trace_id": trace_id, **options}


@trajectory.command()
@click.argument("trace_id", required=False)
@click.option("--session", "session_id", default=None, help="A session: all its turns.")
@click.option("--project", default=None, help="Project of the trace or session.")
@db_option
@cursor_option
@max_chars_option
@json_option
def show(db: Path | None, as_json: bool, trace_id: str | None, **options: Any) -> None:
    """A trace or session as numbered steps: action, tool, target, outcome, tokens."""
    emit(call(db, "get_trajectory", _which(trace_id, options)), as_json)


@trajectory.command()
@click.argument("trace_id", required=False)
@click.option("--session", "session_id", default=None, help="A session: all its turns.")
@click.option("--project", default=None, help="Project of the trace or session.")
@db_option
@max_chars_option
@json_option
def stats(db: Path | None, as_json: bool, trace_id: str | None, **options: Any) -> None:
    """Figures of a trace or session: steps by action, edits before the first verification,
    repeated commands, errors retried unchanged, recoveries, files, tokens and cost."""
    emit(call(db, "trajectory_stats", _which(trace_id, options)), as_json)


@trajectory.command()
@click.argument("a")
@click.argument("b")
@click.option("--project", default=None, help="Project of both runs (default: each its own).")
@db_option
@cursor_option
@max_chars_option
@json_option
def diff(db: Path | None, as_json: bool, a: str, b: str, **options: Any) -> None:
    """Two runs of one task side by side (A and B: trace or session ids): where they part
    ways, the fix, recover and retry loops one has and the other lacks, each run's figures."""
    result = call(db, "diff_trajectories", {"a": a, "b": b, **options})
    if as_json:
        emit(result, as_json)
        return
    with closed_pipe_ok():
        draw_diff(result, drawing_console())


@trajectory.command("first-wrong-step")
@click.argument("trace_id", required=False)
@click.option("--session", "session_id", default=None, help="A session: all its turns.")
@click.option("--project", default=None, help="Project of the trace or session.")
@click.option("--judge", is_flag=True, help="An LLM chooses among the candidates.")
@click.option("--no-write", "no_write", is_flag=True, help="Do not store annotations.")
@db_option
@max_chars_option
@json_option
def first_wrong_step(
    db: Path | None, as_json: bool, trace_id: str | None, no_write: bool, **options: Any
) -> None:
    """Where a trace or session first went wrong: candidate steps by rule (ignored error,
    reverted edit, edit of an unread file, failed verification never fixed), stored as
    annotations first_wrong_step and wrong_step_candidate unless --no-write."""
    arguments = _which(trace_id, options) | {"write": not no_write}
    emit(call(db, "find_first_wrong_step", arguments), as_json)
