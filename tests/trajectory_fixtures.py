"""A stored coding-agent session: StepSpans labelled by label_trace, stored through emit.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from traceproof.ingest.normalize import SpanRows
from traceproof.storage import Store
from traceproof.trajectories.actions import label_trace
from traceproof.trajectories.common import StepSpan, span_id_for, trace_id_for
from traceproof.trajectories.emit import add_steps

PROJECT = "agents"
SOURCE = "claude_code"
SESSION = "sess-traj-1"
#: 1 Jan 2026, in ns.
T0 = 1_767_225_600_000_000_000


@dataclass
class StoredTrajectory:
    session_id: str
    trace_ids: list[str]
    #: The span ids of each turn's steps (LLM and TOOL), in order.
    steps: list[list[str]]


class _Turn:
    def __init__(self, key: str, start_s: int) -> None:
        self.trace = trace_id_for(SOURCE, SESSION, key)
        self.root = span_id_for(SOURCE, SESSION, key)
        self.clock = T0 + start_s * 1_000_000_000
        self.start = self.clock
        self.spans: list[StepSpan] = []
        self.key = key

    def _next(self, name: str, kind: Any, status: Any, message: str | None,
              attributes: dict[str, Any]) -> StepSpan:  # fmt: skip
        self.clock += 1_000_000_000
        key = f"{self.key}:{len(self.spans)}"
        span = StepSpan(self.trace, span_id_for(SOURCE, SESSION, key), self.root, name, kind,
                        self.clock, self.clock + 500_000_000, status, message,
                        attributes={"session.id": SESSION, **attributes})  # fmt: skip
        self.spans.append(span)
        return span

    def llm(self, prompt: int, completion: int, cache_read: int = 0) -> None:
        self._next("claude.messages", "LLM", "OK", None, {
            "llm.model_name": "claude-sonnet-4-5", "llm.token_count.prompt": prompt,
            "llm.token_count.completion": completion,
            "llm.token_count.total": prompt + completion,
            "llm.token_count.prompt_details.cache_read": cache_read,
        })  # fmt: skip

    def tool(
        self, name: str, args: dict[str, Any], output: str = "", *, error: bool = False
    ) -> None:
        self._next(name, "TOOL", "ERROR" if error else "OK", output[:80] if error else None, {
            "tool.name": name, "input.value": orjson.dumps(args).decode(),
            "input.mime_type": "application/json", "output.value": output,
        })  # fmt: skip

    def finish(self, prompt: str) -> list[StepSpan]:
        root = StepSpan(self.trace, self.root, None, "claude-code turn", "AGENT", self.start,
                        self.clock + 1_000_000_000, attributes={"session.id": SESSION,
                                                                "input.value": prompt},
                        resource={"service.name": "claude-code"})  # fmt: skip
        label_trace(self.spans)
        return [root, *self.spans]


def trajectory_spans() -> tuple[list[StepSpan], StoredTrajectory]:
    one = _Turn("u1", 0)
    one.llm(1000, 50, 800)
    one.tool("Read", {"file_path": "src/app.py"}, "1\timport os")
    one.tool("Grep", {"pattern": "def total", "path": "src"}, "src/app.py:3")
    one.llm(1200, 40, 1000)
    one.tool("Edit", {"file_path": "src/app.py", "old_string": "a", "new_string": "b"}, "ok")
    one.llm(1300, 30, 1100)
    failing = "F..\n==== 1 failed, 2 passed in 0.10s ===="
    one.tool("Bash", {"command": "pytest -q tests"}, f"Exit code 1\n{failing}", error=True)
    one.tool("Bash", {"command": "pytest -q tests"}, f"Exit code 1\n{failing}", error=True)
    one.llm(1400, 60, 1200)
    one.tool("Edit", {"file_path": "src/util.py", "old_string": "x", "new_string": "y"}, "ok")
    one.tool("Bash", {"command": "pytest -q tests"}, "...\n==== 3 passed in 0.10s ====")
    two = _Turn("u2", 100)
    two.llm(2000, 20, 1900)
    two.tool("Bash", {"command": "git status --short"}, " M src/app.py")
    two.tool("TodoWrite", {"todos": [{"content": "commit", "status": "pending"}]}, "ok")
    spans = one.finish("fix the total") + two.finish("commit it")
    stored = StoredTrajectory(
        SESSION,
        [one.trace, two.trace],
        [[s.span_id for s in turn.spans] for turn in (one, two)],
    )
    return spans, stored


def store_trajectory(store: Store) -> StoredTrajectory:
    """Store the session (two turns, 14 steps) in ``store``'s project ``agents``."""
    spans, stored = trajectory_spans()
    rows = SpanRows()
    assert add_steps(rows, spans, project=PROJECT, source=SOURCE) == []
    store.write(rows.table())
    return stored
