"""Action labels over the real transcripts in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from traceproof.trajectories.actions import classify

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"{DATA} is absent: the shared transcripts are not checked out here"
)


def claude_code_tool_calls() -> list[tuple[str, str]]:
    calls = []
    for path in sorted((DATA / "claude-code").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            message = record.get("message") if isinstance(record, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    calls.append((block["name"], json.dumps(block.get("input"))))
    return calls


def simple(command: str | None) -> str:
    """The command when it is one simple command (no ``&&``, ``;``, ``|``), else ``""``."""
    command = command or ""
    return "" if any(sep in command for sep in ("&&", ";", "|", "\n")) else command


def test_claude_code_tool_calls_are_labelled_and_few_are_other() -> None:
    calls = claude_code_tool_calls()
    assert len(calls) > 1000
    labels = [(name, classify(name, args)) for name, args in calls]
    actions = Counter(found.action for _, found in labels)
    assert actions["other"] / len(calls) < 0.03, actions
    for name, found in labels:
        if name in ("Read", "Glob", "Grep"):
            assert found.action == "localize"
        elif name in ("Edit", "Write", "MultiEdit"):
            assert found.action == "edit" and found.files
        elif name == "Bash" and (found.target or "").startswith("mix test"):
            assert found.action == "verify"
        elif name == "Bash" and simple(found.target).startswith("git "):
            assert found.action == "vcs", found.target


def test_codex_calls_are_labelled() -> None:
    actions: Counter[str] = Counter()
    for path in sorted((DATA / "codex").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            payload = json.loads(line).get("payload", {})
            if payload.get("type") in ("function_call", "custom_tool_call"):
                found = classify(payload["name"], payload.get("arguments") or payload.get("input"))
                actions[found.action] += 1
                if payload["name"] == "apply_patch":
                    assert found.action == "edit" and found.files
    assert actions["localize"] > 20 and actions["verify"] >= 3 and actions["edit"] >= 3
    assert actions["other"] == 0
