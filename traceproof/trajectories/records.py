"""Small helpers the transcript readers share: JSON lines, timestamps, raw records, idleness."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from traceproof.trajectories.common import RAW, Malformed, Redact

#: Most characters of ``trajectory.raw`` per span; longer raw text is clipped with a marker.
RAW_LIMIT = 64 * 1024
#: ``true`` on spans whose times a reader made up (the transcript records none).
TIME_ESTIMATED = "trajectory.time_estimated"
#: Seconds after its last record's timestamp that an open turn counts as finished.
IDLE_ENV = "TRACEPROOF_TRANSCRIPT_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 300.0

_FRACTION = re.compile(r"(\.\d{6})\d+")


def idle_seconds() -> float:
    """``TRACEPROOF_TRANSCRIPT_IDLE_SECONDS``, else 300."""
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


@dataclass(slots=True)
class Clock:
    """When an open turn is finished: its last record is older than ``idle`` seconds."""

    now: Callable[[], float] = time.time
    idle: float | None = None

    def is_idle(self, last_ns: int | None) -> bool:
        if last_ns is None:
            return True
        idle = idle_seconds() if self.idle is None else self.idle
        return self.now() - last_ns / 1e9 > idle


def iso_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 timestamp (no zone: UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[:limit]}…[clipped {cut} characters of {len(text)}]"


#: On a span whose ``trajectory.raw`` was clipped: the raw text's full length.
RAW_CLIPPED = "trajectory.raw_clipped"


def raw(value: Any) -> dict[str, Any]:
    """The attributes keeping a record (already redacted): its JSON text in
    ``trajectory.raw``, clipped at :data:`RAW_LIMIT` characters, and then its full length in
    ``trajectory.raw_clipped``."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= RAW_LIMIT:
        return {RAW: text}
    return {RAW: text[:RAW_LIMIT], RAW_CLIPPED: len(text)}


def dumps(value: Any) -> str:
    """JSON text of a value (for ``input.value``)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def text_of(value: Any) -> str | None:
    """A string as it is; any other value but None as JSON text."""
    if value is None:
        return None
    return value if isinstance(value, str) else dumps(value)


def first_lines(text: str | None, lines: int = 3, limit: int = 500) -> str | None:
    """The first non-empty lines of ``text`` (for a status message)."""
    if not text:
        return None
    kept = [line for line in text.splitlines() if line.strip()][:lines]
    return clip("\n".join(kept), limit) if kept else None


def lines(stream: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """The lines of a stream that may only support ``read`` (a zstd decompressor, say)."""
    rest = b""
    while True:
        block = stream.read(chunk)
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def json_lines(
    stream: IO[bytes], redact: Redact
) -> Iterator[tuple[int, dict[str, Any]] | Malformed]:
    """``(line number, redacted object)`` per non-blank line, or a :class:`Malformed` for a
    line that is not a JSON object (a truncated last line, say)."""
    for number, line in enumerate(lines(stream), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            yield Malformed(number, f"not JSON: {str(exc)[:200]}")
            continue
        if not isinstance(record, dict):
            yield Malformed(number, f"a JSON {type(record).__name__}, not an object")
            continue
        yield number, redact.value_of(line, record)


def load_json(stream: IO[bytes], redact: Redact) -> Any | Malformed:
    """The one JSON value of a file, redacted, or a :class:`Malformed` saying why not."""
    data = stream.read()
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        line = None
        if isinstance(exc, json.JSONDecodeError):
            line = exc.lineno
        return Malformed(line, f"not JSON: {str(exc)[:200]}")
    return redact.value(value)


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is an object; JSON text of an object parsed; else empty."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
