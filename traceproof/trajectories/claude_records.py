"""Claude Code transcript records: one JSON object a line, parsed and redacted.

:func:`read_records` keeps the conversation records (``user``, ``assistant``, ``system``) in
file order as :class:`Record` (line number, redacted data, ``parentUuid``, a timestamp in ns,
filled from the record before when missing); a ``summary`` record gives the session title, and
``progress/agent_progress`` records keep copies of a subagent's records. The helpers here read a
record's message content. See :mod:`traceproof.trajectories.claude_code` for what the records
become.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson

from traceproof.trajectories.common import RAW, Item, Malformed, Redact, Skipped

SOURCE = "claude_code"
SERVICE = "claude-code"
#: The raw record kept on a span is clipped here (``trajectory.raw_clipped`` = original size).
RAW_LIMIT = 64 * 1024
#: A status message is clipped here.
MESSAGE_LIMIT = 500

_CONVERSATION = {"user", "assistant", "system"}


@dataclass(slots=True)
class Record:
    line: int
    data: dict[str, Any]
    type: str
    uuid: str | None
    parent: str | None
    ts: int = 0
    dead: bool = False


@dataclass
class Parsed:
    records: list[Record]
    by_uuid: dict[str, Record]
    title: str | None = None
    #: The line of the ``summary`` record the title came from.
    title_line: int | None = None
    #: Subagent records copied into ``progress/agent_progress`` records, by agent id: the
    #: subagent when its own transcript is missing.
    copies: dict[str, list[Record]] = field(default_factory=dict)


def _ns(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def text_of(content: Any) -> str:
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
            parts.append(text_of(block.get("content")))
    return "\n".join(parts)


def content_of(rec: Record) -> Any:
    message = rec.data.get("message")
    return message.get("content") if isinstance(message, dict) else None


def blocks_of(rec: Record) -> list[dict[str, Any]]:
    content = content_of(rec)
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def put_raw(attributes: dict[str, Any], value: Any) -> None:
    """Keep ``value`` as a span's raw record (``trajectory.raw``), clipped at ``RAW_LIMIT``
    (``trajectory.raw_clipped``: the original size)."""
    text = orjson.dumps(value).decode()
    attributes[RAW] = text[:RAW_LIMIT]
    if len(text) > RAW_LIMIT:
        attributes["trajectory.raw_clipped"] = len(text)


def clip_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    first_line = text.strip().split("\n", 1)[0]
    return first_line if len(first_line) <= limit else first_line[: limit - 1] + "…"


def read_records(stream: IO[bytes], redact: Redact, items: list[Item] | None) -> Parsed:
    """The records of a transcript, redacted and in file order (dead ends not yet marked: see
    :func:`~traceproof.trajectories.claude_tree.parse`); bad lines and skipped records go to
    ``items`` (None: dropped, for files read beside the main one)."""
    records: list[Record] = []
    by_uuid: dict[str, Record] = {}
    title: str | None = None
    title_line: int | None = None
    copies: dict[str, dict[str, Record]] = {}
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
                title, title_line = redact(obj["summary"]), number
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
        rec = Record(
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
    fill_times(records)
    kept = {agent: list(found.values()) for agent, found in copies.items()}
    for found in kept.values():
        fill_times(found)
    return Parsed(records, by_uuid, title, title_line, kept)


def _keep_copy(
    obj: dict[str, Any], number: int, redact: Redact, copies: dict[str, dict[str, Record]]
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
    rec = Record(number, record, kind, uuid, None, _ns(copy.get("timestamp")) or 0)
    copies.setdefault(agent, {})[uuid] = rec


def fill_times(records: list[Record]) -> None:
    known = next((r.ts for r in records if r.ts), 0)
    for rec in records:
        if rec.ts:
            known = rec.ts
        else:
            rec.ts = known


def resource_of(data: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {"service.name": SERVICE}
    for key, name in (
        ("version", "service.version"),
        ("cwd", "process.cwd"),
        ("gitBranch", "vcs.repository.ref.name"),
    ):
        if isinstance(data.get(key), str) and data[key]:
            resource[name] = data[key]
    return resource
