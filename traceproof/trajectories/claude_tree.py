"""The ``parentUuid`` tree of a Claude Code transcript: the branch that continued, the dead
ends a retried API call left, and the turns (a prompt and what answered it).

:func:`parse` is :func:`~traceproof.trajectories.claude_records.read_records` with dead ends
marked; :func:`turns_of` cuts the main chain into turns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import IO

from traceproof.trajectories.claude_records import (
    Parsed,
    Record,
    blocks_of,
    content_of,
    read_records,
    text_of,
)
from traceproof.trajectories.common import Item, Redact

_NOT_PROMPTS = (
    "<local-command-caveat>",
    "<local-command-stdout>",
    "<local-command-stderr>",
    "<task-notification>",
    "<system-reminder>",
    "[Request interrupted by user",
)
_INTERRUPTED = "[Request interrupted by user"
_COMMAND = re.compile(r"<command-name>\s*([^<\s]+)\s*</command-name>")


@dataclass
class Turn:
    start: Record
    key: str
    records: list[Record] = field(default_factory=list)
    closed: bool = False
    interrupted: bool = False
    duration_ms: int | None = None
    end_ts: int = 0
    command: str | None = None


def parse(stream: IO[bytes], redact: Redact, items: list[Item] | None) -> Parsed:
    """The records of a transcript, redacted, dead ends marked; bad lines and skipped records go
    to ``items`` (None: dropped, for files read beside the main one)."""
    parsed = read_records(stream, redact, items)
    mark_dead_ends(parsed.records, parsed.by_uuid)
    return parsed


def prompt_text(rec: Record) -> str | None:
    """The prompt of a user record that opens a turn (or an interruption), else None."""
    if rec.type != "user" or rec.data.get("isMeta") or rec.data.get("isCompactSummary"):
        return None
    content = content_of(rec)
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in blocks_of(rec)):
        return None
    text = text_of(content)
    return text if text.strip() else None


def mark_dead_ends(records: list[Record], by_uuid: dict[str, Record]) -> None:
    """Follow the branch that continued (from the last conversation record back to the root)
    and mark the branches that forked off it and went nowhere (retried API calls)."""
    main = [r for r in records if not r.data.get("isSidechain")] or records
    if not main:
        return
    path: set[str] = set()
    node: Record | None = main[-1]
    while node is not None and node.uuid is not None and node.uuid not in path:
        path.add(node.uuid)
        node = by_uuid.get(node.parent) if node.parent is not None else None
    live_messages: set[str] = set()
    live_tools: set[str] = set()
    for rec in records:
        if rec.uuid in path and rec.type == "assistant":
            _note_live(rec, live_messages, live_tools)
    for rec in records:
        if rec.uuid in path or rec.parent is None:
            continue
        parent = by_uuid.get(rec.parent)
        if parent is None:
            continue  # points outside this file (compaction, subagent copies): not a fork
        if parent.dead:
            rec.dead = True
            continue
        if parent.uuid not in path:
            continue  # a chain off the main path (a sidechain): its own line
        if rec.type == "assistant":
            message = rec.data["message"].get("id")
            if message is not None and message in live_messages:
                _note_live(rec, live_messages, live_tools)
                continue
        elif rec.type == "user":
            ids = [b.get("tool_use_id") for b in blocks_of(rec) if b.get("type") == "tool_result"]
            if ids and all(i in live_tools for i in ids):
                continue
        elif rec.type == "system":
            continue
        rec.dead = True


def _note_live(rec: Record, messages: set[str], tools: set[str]) -> None:
    message = rec.data["message"].get("id")
    if isinstance(message, str):
        messages.add(message)
    for block in blocks_of(rec):
        if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
            tools.add(block["id"])


def within(rec: Record, turn: Turn, turns: list[Turn], index: int) -> bool:
    after = rec.line >= turn.start.line or index == 0
    before = index == len(turns) - 1 or rec.line < turns[index + 1].start.line
    return after and before


def turns_of(records: list[Record]) -> list[Turn]:
    turns: list[Turn] = []
    current: Turn | None = None
    for rec in records:
        text = prompt_text(rec) if not rec.dead else None
        if text is not None and text.lstrip().startswith(_INTERRUPTED):
            if current is not None:
                current.records.append(rec)
                current.interrupted = True
                current.closed = True
                current.end_ts = max(current.end_ts, rec.ts)
            continue
        if text is not None and not text.lstrip().startswith(_NOT_PROMPTS):
            if current is not None:
                current.closed = True
            current = Turn(rec, rec.uuid or f"line:{rec.line}", end_ts=rec.ts)
            command = _COMMAND.search(text)
            if command is not None and text.lstrip().startswith("<command-"):
                current.command = command.group(1)
            turns.append(current)
            continue
        if current is None:
            if rec.type != "assistant":
                continue
            # Records with no prompt before them (a resumed or synthetic file).
            current = Turn(rec, rec.uuid or f"line:{rec.line}", end_ts=rec.ts)
            turns.append(current)
        current.records.append(rec)
        current.end_ts = max(current.end_ts, rec.ts)
        if rec.type == "system" and rec.data.get("subtype") in (
            "turn_duration",
            "stop_hook_summary",
        ):
            current.closed = True
            if isinstance(rec.data.get("durationMs"), int):
                current.duration_ms = rec.data["durationMs"]
    return turns
