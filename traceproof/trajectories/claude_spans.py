"""Claude Code records as step spans: the LLM and TOOL spans of one agent's records, and the
subagents a ``Task``/``Agent`` call started (their transcripts beside the main file, the copies
``progress`` records kept, or sidechain records inline in older files) as ``AGENT`` spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from traceproof.trajectories.claude_records import (
    RAW_LIMIT,
    SOURCE,
    Parsed,
    Record,
    blocks_of,
    clip_line,
    content_of,
    put_raw,
    resource_of,
    text_of,
)
from traceproof.trajectories.claude_tree import parse
from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    DEAD_END,
    STOP_REASON,
    Redact,
    StepSpan,
    span_id_for,
)

_AGENT_ID = re.compile(r"agentId: ([A-Za-z0-9_\-]+)")
SUBAGENT_TOOLS = {"Task", "Agent"}


@dataclass
class Context:
    """What every span of one file shares."""

    session: str
    path: Path
    redact: Redact
    resource: dict[str, Any]
    #: Records of the main file by uuid (an LLM span starts at the record it answers).
    by_uuid: dict[str, Record]
    held: bool = False
    last_line: int = 0
    #: While ``held``: the earliest start of a span held back (see ``Resume.pending_ns``).
    pending_ns: int | None = None
    depth: int = 0
    copies: dict[str, list[Record]] = field(default_factory=dict)


def agent_body(
    records: list[Record],
    trace_id: str,
    parent_id: str,
    context: Context,
    inline: list[Record],
) -> tuple[list[StepSpan], str]:
    """The LLM and TOOL spans of one agent's records (a turn or a subagent), and the agent's
    last text (its answer)."""
    groups: dict[str, list[Record]] = {}
    tool_uses: dict[str, tuple[Record, dict[str, Any], str]] = {}
    results: dict[str, tuple[Record, dict[str, Any]]] = {}
    answer = ""
    for rec in records:
        if rec.type == "assistant":
            message = rec.data["message"]
            key = message.get("id") if isinstance(message.get("id"), str) else rec.uuid
            key = key or f"line:{rec.line}"
            groups.setdefault(key, []).append(rec)
            for block in blocks_of(rec):
                if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                    tool_uses.setdefault(block["id"], (rec, block, key))
            text = text_of([b for b in blocks_of(rec) if b.get("type") == "text"])
            if text.strip() and not rec.dead:
                answer = text
        elif rec.type == "user":
            for block in blocks_of(rec):
                if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
                    results.setdefault(block["tool_use_id"], (rec, block))
    spans: list[StepSpan] = []
    last_line = context.last_line
    for key, lines in groups.items():
        llm = llm_span(key, lines, trace_id, parent_id, context)
        if context.held and lines[-1].line == last_line:
            _pending(context, llm.start_ns)
            continue  # the response may still be being written
        spans.append(llm)
    for tool_id, (rec, block, _) in tool_uses.items():
        result = results.get(tool_id)
        if result is None and context.held:
            _pending(context, rec.ts)
            continue  # its result may still come
        tool = _tool_span(tool_id, rec, block, result, trace_id, parent_id, context)
        spans.append(tool)
        if block.get("name") in SUBAGENT_TOOLS and result is not None:
            spans.extend(_subagent(tool, block, result, trace_id, context))
    if inline:
        spans.extend(_inline_sidechains(inline, tool_uses, trace_id, parent_id, context))
    return spans, answer


def _pending(context: Context, start_ns: int) -> None:
    if context.pending_ns is None or start_ns < context.pending_ns:
        context.pending_ns = start_ns


def llm_span(
    key: str, lines: list[Record], trace_id: str, parent_id: str, context: Context
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
    blocks = [b for rec in lines for b in blocks_of(rec)]
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
        status, status_message = "ERROR", clip_line(summary or "API error")
    if first.dead:
        attributes[DEAD_END] = True
        status_message = status_message or "superseded by a retry"
    put_raw(attributes, [r.data for r in lines])
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
    rec: Record,
    block: dict[str, Any],
    result: tuple[Record, dict[str, Any]] | None,
    trace_id: str,
    parent_id: str,
    context: Context,
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
        output = text_of(result_block.get("content"))
        attributes["output.value"] = output
        if result_block.get("is_error") is True:
            status = "ERROR"
            detail = result_rec.data.get("toolUseResult")
            status_message = clip_line(detail if isinstance(detail, str) and detail else output)
        raw_value["result"] = result_rec.data
    if rec.dead:
        attributes[DEAD_END] = True
    put_raw(attributes, raw_value)
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
    result: tuple[Record, dict[str, Any]],
    trace_id: str,
    context: Context,
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
        parsed = Parsed(copies, {r.uuid: r for r in copies if r.uuid is not None})
        tool.attributes["claude_code.subagent_from_progress"] = True
    else:
        tool.attributes["claude_code.subagent_missing"] = True
        return []
    arguments: dict[str, Any] = block["input"] if isinstance(block.get("input"), dict) else {}
    inner = Context(
        context.session,
        path,
        context.redact,
        context.resource,
        parsed.by_uuid,
        held=False,
        last_line=0,
        depth=context.depth + 1,
    )
    try:
        spans, _ = agent_spans(
            parsed.records, trace_id, tool.span_id, agent_id, arguments, inner, root=False
        )
    finally:
        parsed.close()
        for rec in parsed.records:
            rec.release()
    if spans and tool.attributes.get("claude_code.subagent_from_progress"):
        spans[0].attributes["claude_code.subagent_from_progress"] = True
    return spans


def agent_spans(
    records: list[Record],
    trace_id: str,
    parent_id: str | None,
    agent_id: str,
    arguments: dict[str, Any],
    context: Context,
    *,
    root: bool,
    hold_root: bool = False,
) -> tuple[list[StepSpan], str]:
    agent_span_id = span_id_for(SOURCE, context.session, f"agent:{agent_id}")
    body = records
    prompt = ""
    if records and records[0].type == "user":
        prompt = text_of(content_of(records[0]))
        body = records[1:]
    spans, answer = agent_body(body, trace_id, agent_span_id, context, [])
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
        resource=resource_of(records[0].data) if root else {},
        line=records[0].line if root else None,
    )
    if root:
        for span in spans:
            span.resource = agent.resource
    return [agent, *spans], answer


def _inline_sidechains(
    records: list[Record],
    tool_uses: dict[str, tuple[Record, dict[str, Any], str]],
    trace_id: str,
    parent_id: str,
    context: Context,
) -> list[StepSpan]:
    """Sidechain records written into the main file (older Claude Code): one subagent per
    chain, under the Task call whose prompt started it (else under the turn)."""
    chains: dict[str, list[Record]] = {}
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
        if block.get("name") in SUBAGENT_TOOLS and isinstance(block.get("input"), dict)
    }
    spans: list[StepSpan] = []
    for head, chain in chains.items():
        prompt = text_of(content_of(chain[0])) if chain[0].type == "user" else ""
        parent = by_prompt.get(prompt, parent_id)
        more, _ = agent_spans(chain, trace_id, parent, f"sidechain:{head}", {}, context, root=False)
        spans.extend(more)
    return spans
