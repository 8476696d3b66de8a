"""Claude Code session transcripts (``~/.claude/projects/<project>/<session>.jsonl``).

One line is one record; the records form a tree by ``parentUuid``. What becomes what:

- a user prompt (not a tool result, not a meta or notification record) opens a turn: one trace
  whose root is an ``AGENT`` span ``claude-code turn`` (``claude-code command`` for a slash
  command such as ``/clear`` or ``/mcp``) with the prompt as input and the turn's last assistant
  text as output; ``[Request interrupted by user]`` ends a turn with ``agent.interrupted``;
- an API response (its content blocks are written one per line, sharing ``message.id``) is one
  ``LLM`` span: model, tokens from the last line (prompt = input + cache read + cache write),
  ``llm.stop_reason`` (inferred from the blocks when Claude Code wrote null, and then
  ``llm.stop_reason_inferred``);
- a ``tool_use`` block is a ``TOOL`` span ending at its ``tool_result``; ``is_error`` makes it
  ``ERROR`` with the result's first line as the message;
- a ``Task``/``Agent`` tool call's subagent (``<session>/subagents/agent-<agentId>.jsonl``,
  linked by the result's ``agentId``) is an ``AGENT`` span under that TOOL span, its own calls
  under it; inline sidechain records of older versions likewise;
- a compaction (``system/compact_boundary``) is an ``LLM`` span ``compaction`` in the turn it
  happened in, with the summary as output and the tokens of the compaction call
  (``agent-acompact-*.jsonl``);
- a retried API call forks the ``parentUuid`` chain: the branch that continued is followed, the
  others are kept with ``trajectory.dead_end``.

Re-import adds nothing (ids come from uuids, message ids and tool-use ids). A read ends with a
:class:`~traceproof.trajectories.common.Resume` at the last turn's first line (records may still
join it) keeping the title's line, so a grown file is read from there. The turn still in
progress (no next prompt, no ``turn_duration`` record or interruption, and the last record
newer than ``TRACEPROOF_TRANSCRIPT_IDLE_SECONDS``, default 300) has its root held back, with
its tool calls still waiting for a result and a response still being written: a later import of
the grown file adds them. (A ``stop_hook_summary`` alone does not end a turn here: a stop hook
can make the agent go on, and a root once stored is not replaced.)

Where it is done: :mod:`~traceproof.trajectories.claude_records` reads the lines,
:mod:`~traceproof.trajectories.claude_tree` follows the ``parentUuid`` tree and cuts turns,
:mod:`~traceproof.trajectories.claude_spans` makes an agent's LLM, TOOL and subagent spans; this
module holds the reader, each turn's root span and the compactions. A file past
:data:`~traceproof.trajectories.claude_records.SPILL_BYTES` keeps its records' data in a spill
file while the tree is built, and each turn's data is let go once its spans are made.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from traceproof.trajectories.claude_records import (
    SERVICE,
    SOURCE,
    Parsed,
    Record,
    Skips,
    content_of,
    put_raw,
    resource_of,
    text_of,
)
from traceproof.trajectories.claude_spans import Context, agent_body, agent_spans, llm_span
from traceproof.trajectories.claude_tree import Turn, by_turn, parse, turns_of
from traceproof.trajectories.common import (
    Item,
    Redact,
    Resume,
    StepSpan,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.records import idle_seconds

__all__ = ["ClaudeCodeReader", "idle_seconds"]


class ClaudeCodeReader:
    """The :class:`~traceproof.trajectories.common.Reader` for Claude Code transcripts."""

    name = SOURCE

    def __init__(self, now: float | None = None) -> None:
        #: The clock the idle rule reads (tests pin it); None: the real time.
        self.now = now

    def sniff(self, path: Path, head: bytes) -> bool:
        if path.name.endswith(".jsonl") and (
            (path.parent.name == "subagents" and path.name.startswith("agent-"))
            or "/.claude/projects/" in path.absolute().as_posix()
        ):
            return True  # where Claude Code writes (whatever the first records hold)
        for line in head.split(b"\n")[:40]:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if (
                isinstance(obj.get("sessionId"), str)
                and obj.get("type") in ("user", "assistant", "system", "progress")
                and ("parentUuid" in obj or "isSidechain" in obj)
            ):
                return True
        return False

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        bad: list[Item] = []
        parsed = parse(stream, redact, bad)
        try:
            # The bad lines and the skipped records, in line order.
            yield from heapq.merge(bad, parsed.skipped, key=_line_of)
            del bad[:]
            parsed.skipped = Skips()
            yield from self._read(path, parsed, redact)
        finally:
            parsed.close()

    def _read(self, path: Path, parsed: Parsed, redact: Redact) -> Iterator[Item]:
        records = parsed.records
        if not records:
            return
        first = records[0].data
        session = parsed.session or path.stem
        context = Context(
            session, path, redact, resource_of(first), parsed.by_uuid, copies=parsed.copies
        )
        now = self.now if self.now is not None else time.time()
        open_tail = now * 1e9 - records[-1].ts < idle_seconds() * 1e9
        if all(r.sidechain for r in records) and isinstance(first.get("agentId"), str):
            yield from self._standalone_agent(records, context, open_tail, parsed.title)
            trace_id = trace_id_for(SOURCE, context.session, f"agent:{first['agentId']}")
            # One trace, the whole file: read from the start.
            yield Resume(1, open=open_tail, trace_id=trace_id, pending_ns=context.pending_ns)
            return
        turns = turns_of([r for r in records if not r.sidechain])
        inline = by_turn([r for r in records if r.sidechain], turns)
        for index, turn in enumerate(turns):
            last = index == len(turns) - 1
            held = last and open_tail and not (turn.interrupted or turn.duration_ms is not None)
            context.held = held
            context.last_line = records[-1].line
            yield from _turn_spans(turn, context, parsed.title, inline[index])
            turn.start.release()
            for rec in (*turn.records, *inline[index]):
                rec.release()
        if turns:
            # The last turn may go on while the file is active (a stop hook can make the agent
            # continue after a closing record): its spans still to come are noted, and the
            # file is read again once idle.
            start = turns[-1].start.line
            keep = () if parsed.title_line is None else (parsed.title_line,)
            if open_tail:
                _note_pending(turns[-1], context)
            yield Resume(
                start,
                tuple(k for k in keep if k < start),
                open=open_tail,
                trace_id=trace_id_for(SOURCE, session, turns[-1].key),
                pending_ns=context.pending_ns if open_tail else None,
            )

    def _standalone_agent(
        self, records: list[Record], context: Context, open_tail: bool, title: str | None
    ) -> Iterator[Item]:
        """A subagent transcript without its main file: one trace, the subagent its root."""
        agent_id = str(records[0].data["agentId"])
        trace_id = trace_id_for(SOURCE, context.session, f"agent:{agent_id}")
        context.held = open_tail
        context.last_line = records[-1].line
        spans, _ = agent_spans(
            records, trace_id, None, agent_id, {}, context, root=True, hold_root=open_tail
        )
        yield from spans


def _line_of(item: Item) -> int:
    return item.line or 0


def _turn_spans(
    turn: Turn, context: Context, title: str | None, inline: list[Record]
) -> Iterator[StepSpan]:
    session = context.session
    trace_id = trace_id_for(SOURCE, session, turn.key)
    root_id = span_id_for(SOURCE, session, f"turn:{turn.key}")
    resource = resource_of(turn.start.data) | {"service.name": SERVICE}
    context.resource = resource
    body = [r for r in turn.records if r is not turn.start]
    if turn.start.type == "assistant":
        body = turn.records
    spans, output = agent_body(body, trace_id, root_id, context, inline)
    spans.extend(_compactions(turn, trace_id, root_id, context))
    spans.sort(key=lambda s: (s.start_ns, s.kind != "LLM"))
    if not context.held:
        prompt = text_of(content_of(turn.start)) if turn.start.type == "user" else ""
        attributes: dict[str, Any] = {"session.id": session, "input.value": prompt}
        if output:
            attributes["output.value"] = output
        if turn.command:
            attributes["claude_code.command"] = turn.command
        if turn.interrupted:
            attributes["agent.interrupted"] = True
        if turn.duration_ms is not None:
            attributes["claude_code.turn_duration_ms"] = turn.duration_ms
        if isinstance(turn.start.data.get("permissionMode"), str):
            attributes["permission.mode"] = turn.start.data["permissionMode"]
        if title:
            attributes["session.title"] = title
        put_raw(attributes, turn.start.data)
        end = max([turn.end_ts, turn.start.ts] + [s.end_ns for s in spans])
        spans.insert(
            0,
            StepSpan(
                trace_id,
                root_id,
                None,
                "claude-code command" if turn.command else "claude-code turn",
                "AGENT",
                turn.start.ts,
                end,
                attributes=attributes,
                resource=resource,
                line=turn.start.line,
            ),
        )
    for span in spans:
        span.resource = resource
        if span.line is None:
            span.line = turn.start.line
    yield from spans


def _note_pending(turn: Turn, context: Context) -> None:
    """The earliest start of a span of the open ``turn`` still to come (``Resume.pending_ns``):
    the next model call starts at the turn's last record (the one it answers), and a compaction
    whose call has begun (its transcript beside follows a record of this file, and no boundary
    names it yet) at its call's first record."""
    starts = [turn.end_ts] if context.pending_ns is None else [turn.end_ts, context.pending_ns]
    calls = _compaction_calls(context.path, context.redact)
    if calls:
        done = {
            id(calls[r.data["logicalParentUuid"]])
            for r in context.by_uuid.values()
            if r.type == "system"
            and r.subtype == "compact_boundary"
            and r.data.get("logicalParentUuid") in calls
        }
        for parent, call in calls.items():
            if parent in context.by_uuid and id(call) not in done and call:
                starts.append(call[0].ts)
    context.pending_ns = min(starts)


def _compactions(turn: Turn, trace_id: str, parent_id: str, context: Context) -> list[StepSpan]:
    spans: list[StepSpan] = []
    boundaries = [r for r in turn.records if r.type == "system" and r.subtype == "compact_boundary"]
    if not boundaries:
        return spans
    summaries = [r for r in turn.records if r.data.get("isCompactSummary")]
    calls = _compaction_calls(context.path, context.redact)
    for boundary in boundaries:
        logical = boundary.data.get("logicalParentUuid")
        meta = boundary.data.get("compactMetadata")
        meta = meta if isinstance(meta, dict) else {}
        attributes: dict[str, Any] = {"session.id": context.session}
        if isinstance(meta.get("trigger"), str):
            attributes["compaction.trigger"] = meta["trigger"]
        if isinstance(meta.get("preTokens"), int):
            attributes["compaction.pre_tokens"] = meta["preTokens"]
        summary = next((s for s in summaries if s.parent == boundary.uuid), None)
        start = boundary.ts
        call = calls.get(logical) if isinstance(logical, str) else None
        if call is not None:
            answers = [r for r in call if r.type == "assistant"]
            if answers:
                llm = llm_span("compaction-call", answers, trace_id, parent_id, context)
                attributes.update({k: v for k, v in llm.attributes.items() if k.startswith("llm.")})
                start = min(call[0].ts, boundary.ts)
        if summary is not None:
            attributes["output.value"] = text_of(content_of(summary))
        put_raw(attributes, boundary.data)
        spans.append(
            StepSpan(
                trace_id,
                span_id_for(SOURCE, context.session, f"compaction:{boundary.uuid}"),
                parent_id,
                "compaction",
                "LLM",
                start,
                boundary.ts,
                attributes=attributes,
                line=boundary.line,
            )
        )
    return spans


def _compaction_calls(path: Path, redact: Redact) -> dict[str, list[Record]]:
    """The compaction calls' transcripts beside ``path``, by the main-file uuid they follow."""
    found: dict[str, list[Record]] = {}
    folder = path.parent / path.stem / "subagents"
    if not folder.is_dir():
        return found
    for candidate in sorted(folder.glob("agent-acompact-*.jsonl")):
        with candidate.open("rb") as stream:
            # Read whole (never spilled): its records outlive this function.
            parsed = parse(stream, redact, None, spill_bytes=sys.maxsize)
        for rec in parsed.records:
            if rec.parent is not None and rec.parent not in parsed.by_uuid:
                found.setdefault(rec.parent, parsed.records)
    return found
