"""Small stored coding sessions for find_first_wrong_step: tool calls in order, labelled by
label_trace, stored through emit.py (as an import stores them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from tests.trajectory_fixtures import PROJECT, SOURCE, T0
from traceproof.ingest.normalize import SpanRows
from traceproof.storage import Store
from traceproof.trajectories.actions import label_trace
from traceproof.trajectories.common import StepSpan, span_id_for, trace_id_for
from traceproof.trajectories.emit import add_steps

#: One tool call: (tool name, arguments, output, failed).
Call = tuple[str, dict[str, Any], str, bool]


def read(path: str) -> Call:
    return ("Read", {"file_path": path}, "1\tx = 1", False)


def edit(path: str, old: str = "a", new: str = "b") -> Call:
    return ("Edit", {"file_path": path, "old_string": old, "new_string": new}, "ok", False)


def pytest_run(passed: bool, command: str = "pytest -q tests") -> Call:
    if passed:
        return ("Bash", {"command": command}, "==== 3 passed in 0.1s ====", False)
    return ("Bash", {"command": command}, "Exit code 1\n==== 1 failed, 2 passed in 0.1s ====", True)


def store_turn(
    store: Store, session: str, turn: str, calls: Sequence[Call], *, start_s: int = 0
) -> list[str]:
    """Store one turn (a trace) of ``session``: an LLM call, then ``calls``; the span ids of
    its steps in order."""
    trace = trace_id_for(SOURCE, session, turn)
    root = span_id_for(SOURCE, session, turn)
    clock = T0 + start_s * 1_000_000_000
    spans: list[StepSpan] = []

    def add(name: str, kind: Any, attributes: dict[str, Any], failed: bool = False) -> None:
        nonlocal clock
        clock += 1_000_000_000
        span_id = span_id_for(SOURCE, session, f"{turn}:{len(spans)}")
        spans.append(StepSpan(trace, span_id, root, name, kind, clock, clock + 500_000_000,
                              "ERROR" if failed else "OK", "failed" if failed else None,
                              attributes={"session.id": session, **attributes}))  # fmt: skip

    add("claude.messages", "LLM", {"llm.model_name": "claude-sonnet-4-5",
                                    "llm.token_count.prompt": 100,
                                    "llm.token_count.completion": 10})  # fmt: skip
    for name, args, output, failed in calls:
        add(name, "TOOL", {"tool.name": name, "input.value": orjson.dumps(args).decode(),
                           "input.mime_type": "application/json", "output.value": output},
            failed)  # fmt: skip
    label_trace(spans)
    attributes = {"session.id": session, "input.value": f"task of {session}"}
    top = StepSpan(trace, root, None, "claude-code turn", "AGENT", T0 + start_s * 1_000_000_000,
                   clock + 1_000_000_000, attributes=attributes)  # fmt: skip
    rows = SpanRows()
    assert add_steps(rows, [top, *spans], project=PROJECT, source=SOURCE) == []
    store.write(rows.table())
    return [s.span_id for s in spans]
