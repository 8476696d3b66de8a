"""The ``parentUuid`` tree of a Claude Code transcript: the branch that continued, the dead
ends a retried API call left, and the turns (a prompt and what answered it).

:func:`parse` is :func:`~traceproof.trajectories.claude_records.read_records` with dead ends
marked; :func:`turns_of` cuts the main chain into turns.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import IO

from traceproof.trajectories.claude_records import (
    INTERRUPTION,
    PROMPT,
    Ids,
    Parsed,
    Record,
    read_records,
)
from traceproof.trajectories.common import Item, Redact


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


def parse(
    stream: IO[bytes], redact: Redact, items: list[Item] | None, spill_bytes: int | None = None
) -> Parsed:
    """The records of a transcript, redacted, dead ends marked; bad lines go to ``items`` and
    skipped records to the answer's ``skipped`` (``items`` None: neither is kept, for files read
    beside the main one). The caller closes the answer
    (:meth:`~traceproof.trajectories.claude_records.Parsed.close`)."""
    parsed = read_records(stream, redact, items, spill_bytes)
    mark_dead_ends(parsed.records, parsed.by_uuid, parsed.ids)
    parsed.ids = []
    return parsed


def mark_dead_ends(records: list[Record], by_uuid: dict[str, Record], ids: list[Ids]) -> None:
    """Follow the branch that continued (from the last conversation record back to the root)
    and mark the branches that forked off it and went nowhere (retried API calls); ``ids``
    are the records' ids, in the same order."""
    main = [r for r in records if not r.sidechain] or records
    if not main:
        return
    path: set[str] = set()
    node: Record | None = main[-1]
    while node is not None and node.uuid is not None and node.uuid not in path:
        path.add(node.uuid)
        node = by_uuid.get(node.parent) if node.parent is not None else None
    live_messages: set[str] = set()
    live_tools: set[str] = set()
    for rec, found in zip(records, ids, strict=True):
        if rec.uuid in path and rec.type == "assistant":
            _note_live(found, live_messages, live_tools)
    for rec, found in zip(records, ids, strict=True):
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
            if found.message is not None and found.message in live_messages:
                _note_live(found, live_messages, live_tools)
                continue
        elif rec.type == "user":
            results = found.tool_results
            if results and all(i in live_tools for i in results):
                continue
        elif rec.type == "system":
            continue
        rec.dead = True


def _note_live(found: Ids, messages: set[str], tools: set[str]) -> None:
    if found.message is not None:
        messages.add(found.message)
    tools.update(found.tool_uses)


def by_turn(records: list[Record], turns: list[Turn]) -> list[list[Record]]:
    """``records`` (sidechain records written into the main file) by the turn they were
    written in: from a turn's first line to the next turn's (those before the first turn go
    to it); none without turns."""
    starts = [turn.start.line for turn in turns]
    found: list[list[Record]] = [[] for _ in turns]
    if not turns:
        return found
    for rec in records:
        found[max(bisect.bisect_right(starts, rec.line) - 1, 0)].append(rec)
    return found


def turns_of(records: list[Record]) -> list[Turn]:
    turns: list[Turn] = []
    current: Turn | None = None
    for rec in records:
        opening = rec.opening if not rec.dead else None
        if opening == INTERRUPTION:
            if current is not None:
                current.records.append(rec)
                current.interrupted = True
                current.closed = True
                current.end_ts = max(current.end_ts, rec.ts)
            continue
        if opening == PROMPT:
            if current is not None:
                current.closed = True
            current = Turn(rec, rec.uuid or f"line:{rec.line}", end_ts=rec.ts)
            current.command = rec.command
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
        if rec.type == "system" and rec.subtype in ("turn_duration", "stop_hook_summary"):
            current.closed = True
            if rec.duration_ms is not None:
                current.duration_ms = rec.duration_ms
    return turns
