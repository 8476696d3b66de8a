"""Claude Code transcript records: one JSON object a line, parsed and redacted.

:func:`read_records` keeps the conversation records (``user``, ``assistant``, ``system``) in
file order as :class:`Record` (line number, redacted data, ``parentUuid``, a timestamp in ns,
filled from the record before when missing); a ``summary`` record gives the session title, and
``progress/agent_progress`` records keep copies of a subagent's records. The helpers here read a
record's message content. See :mod:`traceproof.trajectories.claude_code` for what the records
become.
"""

from __future__ import annotations

import re
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, NamedTuple

import orjson

from traceproof.trajectories.common import RAW, Item, Malformed, Redact, Skipped

SOURCE = "claude_code"
SERVICE = "claude-code"
#: The raw record kept on a span is clipped here (``trajectory.raw_clipped`` = original size).
RAW_LIMIT = 64 * 1024
#: A status message is clipped here.
MESSAGE_LIMIT = 500

#: The conversation record types, each its own value: a record keeps this string, not its own copy.
_CONVERSATION = {kind: kind for kind in ("user", "assistant", "system")}
#: A transcript longer than this keeps its records' data in a :class:`Spill` (from the record
#: that crossed it on): a session of hundreds of MB is then read in memory that grows with its
#: records' count (about 0.4 KB each, its skipped records included) and its largest turn,
#: not its size.
SPILL_BYTES = 16 * 1024 * 1024


class Record:
    """One conversation record: its line, type, ``uuid``/``parentUuid`` and timestamp, what the
    ``parentUuid`` tree and the turns are cut from (read once, when the record is read), and its
    redacted ``data``. A record of a large file keeps its data in the file's :class:`Spill`
    instead, and reads it back when asked; :meth:`release` lets it go again."""

    __slots__ = (
        "_at",
        "_data",
        "_spill",
        "command",
        "dead",
        "duration_ms",
        "line",
        "opening",
        "parent",
        "sidechain",
        "subtype",
        "ts",
        "type",
        "uuid",
    )

    def __init__(
        self,
        line: int,
        data: dict[str, Any],
        type: str,
        uuid: str | None,
        parent: str | None,
        ts: int = 0,
        dead: bool = False,
    ) -> None:
        self.line, self.type, self.uuid, self.parent, self.ts = line, type, uuid, parent, ts
        self.dead = dead
        self._data: dict[str, Any] | None = data
        self._spill: Spill | None = None
        #: Its data's number in the spill.
        self._at = 0
        self.sidechain = bool(data.get("isSidechain"))
        message = data.get("message")
        message = message if isinstance(message, dict) else {}
        content = message.get("content")
        results = type == "user" and any(b.get("type") == "tool_result" for b in _blocks(content))
        subtype = data.get("subtype")
        self.subtype: str | None = subtype if isinstance(subtype, str) else None
        duration = data.get("durationMs")
        self.duration_ms: int | None = duration if isinstance(duration, int) else None
        self.opening, self.command = _opening(type, data, content, results)

    @property
    def data(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            assert self._spill is not None
            data = self._data = self._spill.get(self._at)
        return data

    def spill(self, spill: Spill) -> None:
        """Keep the data in ``spill`` from now on (it is read back when asked for)."""
        if self._spill is None and self._data is not None:
            self._at = spill.put(self._data)
            self._spill, self._data = spill, None

    def release(self) -> None:
        """Let the data go (it stays in the spill); a record not spilled keeps it."""
        if self._spill is not None:
            self._data = None


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


class Ids(NamedTuple):
    """What tells a record of a fork off the ``parentUuid`` chain that went on (the same
    response, the same tool calls' results) from a retried call's dead end: an assistant
    record's ``message.id`` (a str, else None) and ``tool_use`` block ids, a user record's
    ``tool_result`` ids. Kept for every record of a file until its dead ends are marked
    (:func:`~traceproof.trajectories.claude_tree.mark_dead_ends`), then let go."""

    message: str | None = None
    tool_uses: tuple[str, ...] = ()
    tool_results: tuple[str | None, ...] = ()


NO_IDS = Ids()


def ids_of(kind: str, data: dict[str, Any], names: dict[str, str]) -> Ids:
    """A record's :class:`Ids`, each the string of the records before it with the same id (the
    lines of one response each carry its message id; a tool result, its call's id): ``names``
    holds the first of each."""
    message = data.get("message")
    message = message if isinstance(message, dict) else {}
    blocks = _blocks(message.get("content"))
    if kind == "assistant":
        found = message.get("id")
        uses = tuple(
            names.setdefault(b["id"], b["id"])
            for b in blocks
            if b.get("type") == "tool_use" and isinstance(b.get("id"), str)
        )
        if isinstance(found, str):
            return Ids(names.setdefault(found, found), uses)
        return Ids(None, uses) if uses else NO_IDS
    if kind == "user":
        results = tuple(
            names.setdefault(i, i) if isinstance(i := b.get("tool_use_id"), str) else None
            for b in blocks
            if b.get("type") == "tool_result"
        )
        return Ids(tool_results=results) if results else NO_IDS
    return NO_IDS


#: What a user record is to the turns (:attr:`Record.opening`): nothing, a prompt that opens a
#: turn, an interruption (``[Request interrupted by user]``: it ends the turn), or text that is
#: not a prompt (command output, notifications, reminders).
NOTHING, PROMPT, INTERRUPTION, NOT_PROMPT = 0, 1, 2, 3
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


def _opening(
    kind: str, data: dict[str, Any], content: Any, results: bool
) -> tuple[int, str | None]:
    """:attr:`Record.opening` and the slash command a prompt runs (``/clear``: ``clear``)."""
    if kind != "user" or data.get("isMeta") or data.get("isCompactSummary") or results:
        return NOTHING, None
    text = text_of(content)
    if not text.strip():
        return NOTHING, None
    stripped = text.lstrip()
    if stripped.startswith(_INTERRUPTED):
        return INTERRUPTION, None
    if stripped.startswith(_NOT_PROMPTS):
        return NOT_PROMPT, None
    command = _COMMAND.search(text) if stripped.startswith("<command-") else None
    return PROMPT, command.group(1) if command is not None else None


class Spill:
    """Where the records of a large transcript keep their (redacted) data while the file's
    ``parentUuid`` tree is built: a temporary file of JSON values, read back one record at a
    time when its turn is made into spans. Memory then grows with the records' count, not
    their size: the spill keeps where each value ends (8 bytes), a record its value's number."""

    def __init__(self) -> None:
        # Closed by close(), when the reader is done with the file's records.
        self._file = tempfile.TemporaryFile(prefix="traceproof-spill-")  # noqa: SIM115
        self._ends = array("q")

    def put(self, data: dict[str, Any]) -> int:
        """Keep ``data``; the answer is its number, to :meth:`get` it back."""
        blob = orjson.dumps(data)
        at = self._ends[-1] if self._ends else 0
        self._file.seek(at)
        self._file.write(blob)
        self._ends.append(at + len(blob))
        return len(self._ends) - 1

    def get(self, number: int) -> dict[str, Any]:
        at = self._ends[number - 1] if number else 0
        self._file.seek(at)
        value: dict[str, Any] = orjson.loads(self._file.read(self._ends[number] - at))
        return value

    def close(self) -> None:
        self._file.close()


class Skips:
    """The records a read skipped, as the :class:`Skipped` items they are (in line order),
    kept as a line and a kind's index each: a large session skips ~90k ``progress`` records,
    ~140 B each as items, ~12 B here."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self._index: dict[str, int] = {}
        self._kind = array("I")
        self._line = array("q")

    def add(self, kind: str, line: int) -> None:
        index = self._index.get(kind)
        if index is None:
            index = self._index[kind] = len(self.kinds)
            self.kinds.append(kind)
        self._kind.append(index)
        self._line.append(line)

    def __len__(self) -> int:
        return len(self._line)

    def __iter__(self) -> Iterator[Skipped]:
        kinds = self.kinds
        for index, line in zip(self._kind, self._line, strict=True):
            yield Skipped(kinds[index], line)


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
    #: The first ``sessionId`` of the records.
    session: str | None = None
    #: Where the records keep their data when the file is large (else None).
    spill: Spill | None = None
    #: The records skipped (none kept when the read had no ``items``).
    skipped: Skips = field(default_factory=Skips)
    #: The records' :class:`Ids`, in the same order (let go once the dead ends are marked).
    ids: list[Ids] = field(default_factory=list)

    def close(self) -> None:
        """Drop the spill (records that kept their data there can no longer read it)."""
        if self.spill is not None:
            self.spill.close()


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


def read_records(
    stream: IO[bytes], redact: Redact, items: list[Item] | None, spill_bytes: int | None = None
) -> Parsed:
    """The records of a transcript, redacted and in file order (dead ends not yet marked: see
    :func:`~traceproof.trajectories.claude_tree.parse`); bad lines go to ``items`` and skipped
    records to :attr:`Parsed.skipped` (``items`` None: neither is kept, for files read beside
    the main one). Past ``spill_bytes`` read (default :data:`SPILL_BYTES`) the records keep
    their data in a :class:`Spill`: the caller closes the answer (:meth:`Parsed.close`) when
    done with it."""
    limit = SPILL_BYTES if spill_bytes is None else spill_bytes
    records: list[Record] = []
    by_uuid: dict[str, Record] = {}
    title: str | None = None
    title_line: int | None = None
    session: str | None = None
    copies: dict[str, dict[str, Record]] = {}
    spill: Spill | None = None
    skipped = Skips()
    ids: list[Ids] = []
    #: One string object per message and tool id (see ids_of).
    names: dict[str, str] = {}
    read = 0
    for number, line in enumerate(stream, start=1):
        read += len(line)
        if spill is None and read > limit:
            spill = Spill()
            for rec in records:
                rec.spill(spill)
            for agent_copies in copies.values():
                for rec in agent_copies.values():
                    rec.spill(spill)
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
            _keep_copy(obj, line, number, redact, copies, spill)
        if not isinstance(kind, str) or kind not in _CONVERSATION:
            if items is not None:
                skipped.add(str(kind) if isinstance(kind, str) else "untyped", number)
            continue
        if kind in ("user", "assistant") and not isinstance(obj.get("message"), dict):
            if items is not None:
                items.append(Malformed(number, f"a {kind} record without a message object"))
            continue
        uuid = obj.get("uuid") if isinstance(obj.get("uuid"), str) else None
        if uuid is not None and uuid in by_uuid:
            if items is not None:
                skipped.add("duplicate", number)
            continue
        data = redact.value_of(line, obj)
        parent = obj.get("parentUuid")
        if parent is None and isinstance(obj.get("logicalParentUuid"), str):
            parent = obj["logicalParentUuid"]
        if not isinstance(parent, str):
            parent = None
        elif parent in by_uuid:
            parent = by_uuid[parent].uuid  # the parent's string, not a copy
        ts = _ns(obj.get("timestamp")) or 0
        rec = Record(number, data, _CONVERSATION[kind], uuid, parent, ts)
        ids.append(ids_of(kind, data, names))
        if session is None and isinstance(data.get("sessionId"), str):
            session = data["sessionId"]
        if spill is not None:
            rec.spill(spill)
        records.append(rec)
        if uuid is not None:
            by_uuid[uuid] = rec
    fill_times(records)
    kept = {agent: list(found.values()) for agent, found in copies.items()}
    for found in kept.values():
        fill_times(found)
    return Parsed(records, by_uuid, title, title_line, kept, session, spill, skipped, ids)


def _keep_copy(
    obj: dict[str, Any],
    line: bytes,
    number: int,
    redact: Redact,
    copies: dict[str, dict[str, Record]],
    spill: Spill | None,
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
    record = redact.value_of(line, copy) | {"isSidechain": True, "agentId": agent}
    rec = Record(number, record, _CONVERSATION[kind], uuid, None, _ns(copy.get("timestamp")) or 0)
    if spill is not None:
        rec.spill(spill)
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
