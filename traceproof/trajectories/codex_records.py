"""Codex rollout records: the two line formats, what a file's name and first lines look like,
what a ``session_meta`` and a token count give, and the state a rollout's records build up (a
turn, a model call, a tool call).

The current format wraps every line as ``{"timestamp", "type", "payload"}`` with ``type`` one of
``session_meta``, ``turn_context``, ``response_item``, ``event_msg`` and ``compacted``; the
older one (until about September 2025) writes a meta line ``{"id", "timestamp", "instructions",
"git"}`` and then the response items themselves, with no timestamps and no events.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traceproof.trajectories.common import CACHE_READ, CACHE_WRITE, REASONING, Status
from traceproof.trajectories.records import as_dict, as_int, iso_ns

SOURCE = "codex"
_WRAPPED_TYPES = frozenset(
    {"session_meta", "response_item", "event_msg", "turn_context", "compacted"}
)
ITEM_TYPES = frozenset(
    {
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "web_search_call",
    }
)
OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})
#: Tools whose result arrives as ``event_msg/exec_command_end`` / ``patch_apply_end``.
EXEC_TOOLS = frozenset({"exec_command", "shell", "local_shell", "container.exec"})
PATCH_TOOLS = frozenset({"apply_patch"})
INJECTED = ("<environment_context>", "<user_instructions>", "# AGENTS.md")
_ROLLOUT_NAME = re.compile(r"^rollout-.*\.jsonl(\.zst)?$")
SESSION_IN_NAME = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_WRAPPED_HEAD = re.compile(
    rb'^\s*\{\s*"timestamp"\s*:\s*"[^"]*"\s*,\s*"type"\s*:\s*"(session_meta|response_item|'
    rb'event_msg|turn_context|compacted)"\s*,\s*"payload"'
)
CWD = re.compile(r"<cwd>(.*?)</cwd>", re.S)


@dataclass(frozen=True, slots=True)
class Line:
    """One record as a wrapped line: its type, its payload, its own time (older lines: none)."""

    kind: str
    payload: dict[str, Any]
    ns: int | None
    wrapped: bool


def unwrap(record: dict[str, Any]) -> Line | str:
    """The record as a wrapped line (an older one as the type it stands for), or why it is
    skipped."""
    kind = record.get("type")
    payload = record.get("payload")
    if isinstance(kind, str) and isinstance(payload, dict) and "timestamp" in record:
        return Line(kind, payload, iso_ns(record.get("timestamp")), True)
    if record.get("record_type") is not None:
        return f"record_type/{record.get('record_type')}"
    if "type" not in record and "id" in record:
        return Line("session_meta", record, iso_ns(record.get("timestamp")) or None, False)
    if isinstance(kind, str):
        return Line("response_item", record, None, False)
    return "unknown"


def meta_resource(payload: dict[str, Any]) -> dict[str, str]:
    """The resource attributes a ``session_meta`` payload gives."""
    git = as_dict(payload.get("git"))
    resource: dict[str, str] = {}
    for key, value in (
        ("service.version", payload.get("cli_version")),
        ("process.cwd", payload.get("cwd")),
        ("vcs.repository.ref.name", git.get("branch")),
        ("vcs.repository.url.full", git.get("repository_url")),
        ("vcs.ref.head.revision", git.get("commit_hash")),
        ("codex.originator", payload.get("originator")),
    ):
        if isinstance(value, str) and value:
            resource[key] = value
    return resource


def token_counts(usage: dict[str, Any]) -> dict[str, int]:
    """The token counts of a ``token_count`` event's ``last_token_usage``."""
    counts: dict[str, int] = {}
    for name, key in (
        ("llm.token_count.prompt", "input_tokens"),
        ("llm.token_count.completion", "output_tokens"),
        ("llm.token_count.total", "total_tokens"),
        (CACHE_READ, "cached_input_tokens"),
        (CACHE_WRITE, "cache_write_input_tokens"),
        (REASONING, "reasoning_output_tokens"),
    ):
        value = as_int(usage.get(key))
        if value is not None:
            counts[name] = value
    return counts


def looks_like_rollout(path: Path, head: bytes) -> bool:
    """A rollout by its name, its first line's wrapping or an older file's meta line."""
    if _ROLLOUT_NAME.match(path.name):
        return True
    if _WRAPPED_HEAD.match(head):
        return True
    return any(_looks_like_codex(line) for line in _head_objects(head, 3))


def _head_objects(head: bytes, count: int) -> Iterator[dict[str, Any]]:
    import json

    for line in head.splitlines()[:count]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _looks_like_codex(record: dict[str, Any]) -> bool:
    if record.get("type") in _WRAPPED_TYPES and isinstance(record.get("payload"), dict):
        return "timestamp" in record
    if record.get("record_type") == "state":
        return True
    if "type" not in record and "id" in record and "timestamp" in record:
        return "instructions" in record or "git" in record
    return False


def content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = [
        part["text"]
        for part in content
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    return "\n".join(parts) if parts else None


@dataclass(slots=True)
class Tool:
    call_id: str
    name: str
    arguments: str | None
    start_ns: int
    records: list[dict[str, Any]]
    needs_end: bool
    line: int | None = None
    output: str | None = None
    output_ns: int | None = None
    output_seen: bool = False
    end: dict[str, Any] | None = None
    end_ns: int | None = None
    status: Status = "OK"
    message: str | None = None


@dataclass(slots=True)
class Call:
    start_ns: int
    line: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    end_ns: int = 0


@dataclass(slots=True)
class Turn:
    key: str
    trace_id: str
    root_id: str
    start_ns: int
    last_ns: int
    prompt: str | None = None
    prompt_from_event: bool = False
    answer: str | None = None
    model: str | None = None
    status: Status = "OK"
    message: str | None = None
    calls: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    line: int | None = None
