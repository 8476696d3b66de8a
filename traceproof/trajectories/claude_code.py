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

Re-import adds nothing (ids come from uuids, message ids and tool-use ids). The turn still in
progress (no next prompt, no ``turn_duration``/``stop_hook_summary`` record, and the last
record newer than ``TRACEPROOF_TRANSCRIPT_IDLE_SECONDS``, default 300) has its root held back,
with its tool calls still waiting for a result and a response still being written: a later
import of the grown file adds them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    DEAD_END,
    RAW,
    STOP_REASON,
    Item,
    Malformed,
    Redact,
    Skipped,
    StepSpan,
    span_id_for,
    trace_id_for,
)

SOURCE = "claude_code"
SERVICE = "claude-code"
#: The raw record kept on a span is clipped here (``trajectory.raw_clipped`` = original size).
RAW_LIMIT = 64 * 1024
#: A status message is clipped here.
MESSAGE_LIMIT = 500
IDLE_ENV = "TRACEPROOF_TRANSCRIPT_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 300.0

_CONVERSATION = {"user", "assistant", "system"}
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
_AGENT_ID = re.compile(r"agentId: ([A-Za-z0-9_\-]+)")
_SUBAGENT_TOOLS = {"Task", "Agent"}


def idle_seconds() -> float:
    """How long a transcript must be quiet before its last turn counts as closed."""
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


@dataclass(slots=True)
class _Rec:
    line: int
    data: dict[str, Any]
    type: str
    uuid: str | None
    parent: str | None
    ts: int = 0
    dead: bool = False


@dataclass
class _Turn:
    start: _Rec
    key: str
    records: list[_Rec] = field(default_factory=list)
    closed: bool = False
    interrupted: bool = False
    duration_ms: int | None = None
    end_ts: int = 0
    command: str | None = None


@dataclass
class _Parsed:
    records: list[_Rec]
    by_uuid: dict[str, _Rec]
    title: str | None = None
    #: Subagent records copied into ``progress/agent_progress`` records, by agent id: the
    #: subagent when its own transcript is missing.
    copies: dict[str, list[_Rec]] = field(default_factory=dict)


def _ns(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _text(content: Any) -> str:
    """The text of a message's content (a string or blocks); images become a placeholder."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "image":
            parts.append("[image]")
        elif kind == "tool_result":
            parts.append(_text(block.get("content")))
    return "\n".join(parts)


def _content(rec: _Rec) -> Any:
    message = rec.data.get("message")
    return message.get("content") if isinstance(message, dict) else None


def _blocks(rec: _Rec) -> list[dict[str, Any]]:
    content = _content(rec)
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _prompt_text(rec: _Rec) -> str | None:
    """The prompt of a user record that opens a turn (or an interruption), else None."""
    if rec.type != "user" or rec.data.get("isMeta") or rec.data.get("isCompactSummary"):
        return None
    content = _content(rec)
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in _blocks(rec)):
        return None
    text = _text(content)
    return text if text.strip() else None


def _put_raw(attributes: dict[str, Any], value: Any) -> None:
    """Keep ``value`` as a span's raw record (``trajectory.raw``), clipped at ``RAW_LIMIT``
    (``trajectory.raw_clipped``: the original size)."""
    text = orjson.dumps(value).decode()
    attributes[RAW] = text[:RAW_LIMIT]
    if len(text) > RAW_LIMIT:
        attributes["trajectory.raw_clipped"] = len(text)


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    first_line = text.strip().split("\n", 1)[0]
    return first_line if len(first_line) <= limit else first_line[: limit - 1] + "…"


def parse(stream: IO[bytes], redact: Redact, items: list[Item] | None) -> _Parsed:
    """The records of a transcript, redacted; bad lines and skipped records go to ``items``
    (None: dropped, for files read beside the main one)."""
    records: list[_Rec] = []
    by_uuid: dict[str, _Rec] = {}
    title: str | None = None
    copies: dict[str, dict[str, _Rec]] = {}
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if items is not None:
                reason = str(exc).split("\n")[0][:120]
                items.append(Malformed(number, f"not valid JSON ({reason})"))
            continue
        if not isinstance(obj, dict):
            if items is not None:
                items.append(Malformed(number, "expected a JSON object"))
            continue
        kind = obj.get("type")
        if kind == "summary":
            if title is None and isinstance(obj.get("summary"), str):
                title = redact(obj["summary"])
            continue
        if kind == "progress":
            _keep_copy(obj, number, redact, copies)
        if kind not in _CONVERSATION:
            if items is not None:
                items.append(Skipped(str(kind) if isinstance(kind, str) else "untyped", number))
            continue
        if kind in ("user", "assistant") and not isinstance(obj.get("message"), dict):
            if items is not None:
                items.append(Malformed(number, f"a {kind} record without a message object"))
            continue
        uuid = obj.get("uuid") if isinstance(obj.get("uuid"), str) else None
        if uuid is not None and uuid in by_uuid:
            if items is not None:
                items.append(Skipped("duplicate", number))
            continue
        data = redact.value(obj)
        parent = obj.get("parentUuid")
        if parent is None and isinstance(obj.get("logicalParentUuid"), str):
            parent = obj["logicalParentUuid"]
        rec = _Rec(
            number,
            data,
            kind,
            uuid,
            parent if isinstance(parent, str) else None,
            _ns(obj.get("timestamp")) or 0,
        )
        records.append(rec)
        if uuid is not None:
            by_uuid[uuid] = rec
    _fill_times(records)
    _mark_dead_ends(records, by_uuid)
    kept = {agent: list(found.values()) for agent, found in copies.items()}
    for found in kept.values():
        _fill_times(found)
    return _Parsed(records, by_uuid, title, kept)


def _keep_copy(
    obj: dict[str, Any], number: int, redact: Redact, copies: dict[str, dict[str, _Rec]]
) -> None:
    data = obj.get("data")
    if not isinstance(data, dict) or data.get("type") != "agent_progress":
        return
    agent, copy = data.get("agentId"), data.get("message")
    if not isinstance(agent, str) or not isinstance(copy, dict):
        return
    kind, uuid = copy.get("type"), copy.get("uuid")
    if kind not in ("user", "assistant") or not isinstance(copy.get("message"), dict):
        return
    if not isinstance(uuid, str) or uuid in copies.get(agent, {}):
        return
    record = redact.value(copy) | {"isSidechain": True, "agentId": agent}
    rec = _Rec(number, record, kind, uuid, None, _ns(copy.get("timestamp")) or 0)
    copies.setdefault(agent, {})[uuid] = rec


def _fill_times(records: list[_Rec]) -> None:
    known = next((r.ts for r in records if r.ts), 0)
    for rec in records:
        if rec.ts:
            known = rec.ts
        else:
            rec.ts = known


def _mark_dead_ends(records: list[_Rec], by_uuid: dict[str, _Rec]) -> None:
    """Follow the branch that continued (from the last conversation record back to the root)
    and mark the branches that forked off it and went nowhere (retried API calls)."""
    main = [r for r in records if not r.data.get("isSidechain")] or records
    if not main:
        return
    path: set[str] = set()
    node: _Rec | None = main[-1]
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
            ids = [b.get("tool_use_id") for b in _blocks(rec) if b.get("type") == "tool_result"]
            if ids and all(i in live_tools for i in ids):
                continue
        elif rec.type == "system":
            continue
        rec.dead = True


def _note_live(rec: _Rec, messages: set[str], tools: set[str]) -> None:
    message = rec.data["message"].get("id")
    if isinstance(message, str):
        messages.add(message)
    for block in _blocks(rec):
        if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
            tools.add(block["id"])


@dataclass
class _Context:
    """What every span of one file shares."""

    session: str
    path: Path
    redact: Redact
    resource: dict[str, Any]
    #: Records of the main file by uuid (an LLM span starts at the record it answers).
    by_uuid: dict[str, _Rec]
    held: bool = False
    last_line: int = 0
    depth: int = 0
    copies: dict[str, list[_Rec]] = field(default_factory=dict)


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
        items: list[Item] = []
        parsed = parse(stream, redact, items)
        yield from items
        records = parsed.records
        if not records:
            return
        first = records[0].data
        session = next(
            (r.data["sessionId"] for r in records if isinstance(r.data.get("sessionId"), str)),
            path.stem,
        )
        context = _Context(
            session, path, redact, _resource(first), parsed.by_uuid, copies=parsed.copies
        )
        now = self.now if self.now is not None else time.time()
        open_tail = now * 1e9 - records[-1].ts < idle_seconds() * 1e9
        if all(r.data.get("isSidechain") for r in records) and isinstance(
            first.get("agentId"), str
        ):
            yield from self._standalone_agent(records, context, open_tail, parsed.title)
            return
        turns = _turns([r for r in records if not r.data.get("isSidechain")])
        sidechains = [r for r in records if r.data.get("isSidechain")]
        for index, turn in enumerate(turns):
            last = index == len(turns) - 1
            held = last and not turn.closed and open_tail
            context.held = held
            context.last_line = records[-1].line
            inline = [r for r in sidechains if _within(r, turn, turns, index)]
            yield from _turn_spans(turn, context, parsed.title, inline)

    def _standalone_agent(
        self, records: list[_Rec], context: _Context, open_tail: bool, title: str | None
    ) -> Iterator[Item]:
        """A subagent transcript without its main file: one trace, the subagent its root."""
        agent_id = str(records[0].data["agentId"])
        trace_id = trace_id_for(SOURCE, context.session, f"agent:{agent_id}")
        context.held = open_tail
        context.last_line = records[-1].line
        spans, _ = _agent_spans(
            records, trace_id, None, agent_id, {}, context, root=True, hold_root=open_tail
        )
        yield from spans


def _resource(data: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {"service.name": SERVICE}
    for key, name in (
        ("version", "service.version"),
        ("cwd", "process.cwd"),
        ("gitBranch", "vcs.repository.ref.name"),
    ):
        if isinstance(data.get(key), str) and data[key]:
            resource[name] = data[key]
    return resource


def _within(rec: _Rec, turn: _Turn, turns: list[_Turn], index: int) -> bool:
    after = rec.line >= turn.start.line or index == 0
    before = index == len(turns) - 1 or rec.line < turns[index + 1].start.line
    return after and before


def _turns(records: list[_Rec]) -> list[_Turn]:
    turns: list[_Turn] = []
    current: _Turn | None = None
    for rec in records:
        text = _prompt_text(rec) if not rec.dead else None
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
            current = _Turn(rec, rec.uuid or f"line:{rec.line}", end_ts=rec.ts)
            command = _COMMAND.search(text)
            if command is not None and text.lstrip().startswith("<command-"):
                current.command = command.group(1)
            turns.append(current)
            continue
        if current is None:
            if rec.type != "assistant":
                continue
            # Records with no prompt before them (a resumed or synthetic file).
            current = _Turn(rec, rec.uuid or f"line:{rec.line}", end_ts=rec.ts)
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


def _turn_spans(
    turn: _Turn, context: _Context, title: str | None, inline: list[_Rec]
) -> Iterator[StepSpan]:
    session = context.session
    trace_id = trace_id_for(SOURCE, session, turn.key)
    root_id = span_id_for(SOURCE, session, f"turn:{turn.key}")
    resource = _resource(turn.start.data) | {"service.name": SERVICE}
    context.resource = resource
    body = [r for r in turn.records if r is not turn.start]
    if turn.start.type == "assistant":
        body = turn.records
    spans, output = _agent_body(body, trace_id, root_id, context, inline)
    spans.extend(_compactions(turn, trace_id, root_id, context))
    spans.sort(key=lambda s: (s.start_ns, s.kind != "LLM"))
    if not context.held:
        prompt = _text(_content(turn.start)) if turn.start.type == "user" else ""
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
        _put_raw(attributes, turn.start.data)
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


def _agent_body(
    records: list[_Rec],
    trace_id: str,
    parent_id: str,
    context: _Context,
    inline: list[_Rec],
) -> tuple[list[StepSpan], str]:
    """The LLM and TOOL spans of one agent's records (a turn or a subagent), and the agent's
    last text (its answer)."""
    groups: dict[str, list[_Rec]] = {}
    tool_uses: dict[str, tuple[_Rec, dict[str, Any], str]] = {}
    results: dict[str, tuple[_Rec, dict[str, Any]]] = {}
    answer = ""
    for rec in records:
        if rec.type == "assistant":
            message = rec.data["message"]
            key = message.get("id") if isinstance(message.get("id"), str) else rec.uuid
            key = key or f"line:{rec.line}"
            groups.setdefault(key, []).append(rec)
            for block in _blocks(rec):
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    tool_uses.setdefault(block["id"], (rec, block, key))
            text = _text([b for b in _blocks(rec) if b.get("type") == "text"])
            if text.strip() and not rec.dead:
                answer = text
        elif rec.type == "user":
            for block in _blocks(rec):
                if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
                    results.setdefault(block["tool_use_id"], (rec, block))
    spans: list[StepSpan] = []
    last_line = context.last_line
    for key, lines in groups.items():
        if context.held and lines[-1].line == last_line:
            continue  # the response may still be being written
        spans.append(_llm_span(key, lines, trace_id, parent_id, context))
    for tool_id, (rec, block, _) in tool_uses.items():
        result = results.get(tool_id)
        if result is None and context.held:
            continue  # its result may still come
        tool = _tool_span(tool_id, rec, block, result, trace_id, parent_id, context)
        spans.append(tool)
        if block.get("name") in _SUBAGENT_TOOLS and result is not None:
            spans.extend(_subagent(tool, block, result, trace_id, context))
    if inline:
        spans.extend(_inline_sidechains(inline, tool_uses, trace_id, parent_id, context))
    return spans, answer


def _llm_span(
    key: str, lines: list[_Rec], trace_id: str, parent_id: str, context: _Context
) -> StepSpan:
    first, last = lines[0], lines[-1]
    message = last.data["message"]
    asked = context.by_uuid.get(first.parent) if first.parent else None
    start = asked.ts if asked is not None and asked.ts <= first.ts else first.ts
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    fresh = _int(usage.get("input_tokens"))
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    completion = _int(usage.get("output_tokens"))
    prompt = fresh + cache_read + cache_write
    blocks = [b for rec in lines for b in _blocks(rec)]
    texts = [
        b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)
    ]
    uses = [b for b in blocks if b.get("type") == "tool_use"]
    summary = "\n".join(texts)
    for use in uses:
        arguments = orjson.dumps(use.get("input")).decode()
        summary += ("\n" if summary else "") + f"tool_use {use.get('name')}: {arguments[:200]}"
    attributes: dict[str, Any] = {
        "session.id": context.session,
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
        "llm.token_count.total": prompt + completion,
        CACHE_READ: cache_read,
        CACHE_WRITE: cache_write,
        "llm.provider": "anthropic",
    }
    if isinstance(message.get("model"), str):
        attributes["llm.model_name"] = message["model"]
    stop = next(
        (
            r.data["message"].get("stop_reason")
            for r in reversed(lines)
            if r.data["message"].get("stop_reason")
        ),
        None,
    )
    if isinstance(stop, str):
        attributes[STOP_REASON] = stop
    else:
        attributes[STOP_REASON] = "tool_use" if uses else "end_turn"
        attributes["llm.stop_reason_inferred"] = True
    if isinstance(last.data.get("requestId"), str):
        attributes["llm.request_id"] = last.data["requestId"]
    thinking = [b.get("thinking") for b in blocks if b.get("type") == "thinking"]
    if any(isinstance(t, str) and t for t in thinking):
        attributes["llm.thinking"] = "\n".join(t for t in thinking if isinstance(t, str))[
            :RAW_LIMIT
        ]
    if summary:
        attributes["output.value"] = summary
    if isinstance(message.get("model"), str) and message["model"] == "<synthetic>":
        attributes["llm.synthetic"] = True
    status: Any = "OK"
    status_message = None
    if first.data.get("isApiErrorMessage"):
        status, status_message = "ERROR", _clip(summary or "API error")
    if first.dead:
        attributes[DEAD_END] = True
        status_message = status_message or "superseded by a retry"
    _put_raw(attributes, [r.data for r in lines])
    return StepSpan(
        trace_id,
        span_id_for(SOURCE, context.session, f"llm:{key}"),
        parent_id,
        "claude.messages",
        "LLM",
        start,
        last.ts,
        status,
        status_message,
        attributes,
        line=first.line,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tool_span(
    tool_id: str,
    rec: _Rec,
    block: dict[str, Any],
    result: tuple[_Rec, dict[str, Any]] | None,
    trace_id: str,
    parent_id: str,
    context: _Context,
) -> StepSpan:
    name = str(block["name"]) if isinstance(block.get("name"), str) else "tool"
    attributes: dict[str, Any] = {
        "session.id": context.session,
        "tool.name": name,
        "input.value": orjson.dumps(block.get("input")).decode(),
        "input.mime_type": "application/json",
        "tool.call_id": tool_id,
    }
    status: Any = "OK"
    status_message = None
    end = rec.ts
    raw_value: dict[str, Any] = {"tool_use": block}
    if result is None:
        status = "UNSET"
        attributes["trajectory.incomplete"] = True
    else:
        result_rec, result_block = result
        end = max(rec.ts, result_rec.ts)
        output = _text(result_block.get("content"))
        attributes["output.value"] = output
        if result_block.get("is_error") is True:
            status = "ERROR"
            detail = result_rec.data.get("toolUseResult")
            status_message = _clip(detail if isinstance(detail, str) and detail else output)
        raw_value["result"] = result_rec.data
    if rec.dead:
        attributes[DEAD_END] = True
    _put_raw(attributes, raw_value)
    return StepSpan(
        trace_id,
        span_id_for(SOURCE, context.session, f"tool:{tool_id}"),
        parent_id,
        name,
        "TOOL",
        rec.ts,
        end,
        status,
        status_message,
        attributes,
        line=rec.line,
    )


def _subagent(
    tool: StepSpan,
    block: dict[str, Any],
    result: tuple[_Rec, dict[str, Any]],
    trace_id: str,
    context: _Context,
) -> list[StepSpan]:
    """The subagent a Task/Agent tool call started, from its transcript beside the main one."""
    detail = result[0].data.get("toolUseResult")
    agent_id = detail.get("agentId") if isinstance(detail, dict) else None
    if not isinstance(agent_id, str):
        found = _AGENT_ID.search(str(tool.attributes.get("output.value", "")))
        agent_id = found.group(1) if found else None
    if agent_id is None or context.depth > 4:
        return []
    path = context.path.parent / context.path.stem / "subagents" / f"agent-{agent_id}.jsonl"
    tool.attributes["agent.id"] = agent_id
    if path.is_file():
        with path.open("rb") as stream:
            parsed = parse(stream, context.redact, None)
    elif agent_id in context.copies:
        # The transcript is gone; the progress records kept a copy of each of its records.
        copies = context.copies[agent_id]
        parsed = _Parsed(copies, {r.uuid: r for r in copies if r.uuid is not None})
        tool.attributes["claude_code.subagent_from_progress"] = True
    else:
        tool.attributes["claude_code.subagent_missing"] = True
        return []
    arguments: dict[str, Any] = block["input"] if isinstance(block.get("input"), dict) else {}
    inner = _Context(
        context.session,
        path,
        context.redact,
        context.resource,
        parsed.by_uuid,
        held=False,
        last_line=0,
        depth=context.depth + 1,
    )
    spans, _ = _agent_spans(
        parsed.records, trace_id, tool.span_id, agent_id, arguments, inner, root=False
    )
    if spans and tool.attributes.get("claude_code.subagent_from_progress"):
        spans[0].attributes["claude_code.subagent_from_progress"] = True
    return spans


def _agent_spans(
    records: list[_Rec],
    trace_id: str,
    parent_id: str | None,
    agent_id: str,
    arguments: dict[str, Any],
    context: _Context,
    *,
    root: bool,
    hold_root: bool = False,
) -> tuple[list[StepSpan], str]:
    agent_span_id = span_id_for(SOURCE, context.session, f"agent:{agent_id}")
    body = records
    prompt = ""
    if records and records[0].type == "user":
        prompt = _text(_content(records[0]))
        body = records[1:]
    spans, answer = _agent_body(body, trace_id, agent_span_id, context, [])
    if hold_root or not records:
        return spans, answer
    kind = (
        arguments.get("subagent_type") if isinstance(arguments.get("subagent_type"), str) else None
    )
    attributes: dict[str, Any] = {
        "session.id": context.session,
        "agent.id": agent_id,
        "input.value": prompt or str(arguments.get("prompt", "")),
    }
    if kind:
        attributes["agent.type"] = kind
    if isinstance(arguments.get("description"), str):
        attributes["agent.description"] = arguments["description"]
    if answer:
        attributes["output.value"] = answer
    start = records[0].ts
    end = max([records[-1].ts] + [s.end_ns for s in spans])
    agent = StepSpan(
        trace_id,
        agent_span_id,
        parent_id,
        f"subagent:{kind or 'agent'}",
        "AGENT",
        start,
        end,
        attributes=attributes,
        resource=_resource(records[0].data) if root else {},
        line=records[0].line if root else None,
    )
    if root:
        for span in spans:
            span.resource = agent.resource
    return [agent, *spans], answer


def _inline_sidechains(
    records: list[_Rec],
    tool_uses: dict[str, tuple[_Rec, dict[str, Any], str]],
    trace_id: str,
    parent_id: str,
    context: _Context,
) -> list[StepSpan]:
    """Sidechain records written into the main file (older Claude Code): one subagent per
    chain, under the Task call whose prompt started it (else under the turn)."""
    chains: dict[str, list[_Rec]] = {}
    root_of: dict[str, str] = {}
    for rec in records:
        head = root_of.get(rec.parent or "") or rec.uuid or f"line:{rec.line}"
        if rec.uuid:
            root_of[rec.uuid] = head
        chains.setdefault(head, []).append(rec)
    by_prompt = {
        str(block.get("input", {}).get("prompt")): span_id_for(
            SOURCE, context.session, f"tool:{tid}"
        )
        for tid, (_, block, _) in tool_uses.items()
        if block.get("name") in _SUBAGENT_TOOLS and isinstance(block.get("input"), dict)
    }
    spans: list[StepSpan] = []
    for head, chain in chains.items():
        prompt = _text(_content(chain[0])) if chain[0].type == "user" else ""
        parent = by_prompt.get(prompt, parent_id)
        more, _ = _agent_spans(
            chain, trace_id, parent, f"sidechain:{head}", {}, context, root=False
        )
        spans.extend(more)
    return spans


def _compactions(turn: _Turn, trace_id: str, parent_id: str, context: _Context) -> list[StepSpan]:
    spans: list[StepSpan] = []
    boundaries = [
        r
        for r in turn.records
        if r.type == "system" and r.data.get("subtype") == "compact_boundary"
    ]
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
                llm = _llm_span("compaction-call", answers, trace_id, parent_id, context)
                attributes.update({k: v for k, v in llm.attributes.items() if k.startswith("llm.")})
                start = min(call[0].ts, boundary.ts)
        if summary is not None:
            attributes["output.value"] = _text(_content(summary))
        _put_raw(attributes, boundary.data)
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


def _compaction_calls(path: Path, redact: Redact) -> dict[str, list[_Rec]]:
    """The compaction calls' transcripts beside ``path``, by the main-file uuid they follow."""
    found: dict[str, list[_Rec]] = {}
    folder = path.parent / path.stem / "subagents"
    if not folder.is_dir():
        return found
    for candidate in sorted(folder.glob("agent-acompact-*.jsonl")):
        with candidate.open("rb") as stream:
            parsed = parse(stream, redact, None)
        for rec in parsed.records:
            if rec.parent is not None and rec.parent not in parsed.by_uuid:
                found.setdefault(rec.parent, parsed.records)
    return found
