"""What every tool shares: its error type, the response budget, clipping and paging cursors.

The contract (DESIGN.md): a response never exceeds its character budget (compact JSON); a long
value is clipped with a marker giving the exact call that reads the rest; lists are paged with
opaque cursors and ``truncated`` is exact; bad input raises :class:`ToolFailure`, whose message
is ``[code] what failed. What to do next.``
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import struct
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, Field, PlainSerializer, WithJsonSchema

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings


class ToolFailure(TraceproofError):
    """Bad input to a tool, or a thing it names that does not exist. The message tells an agent
    what to do next."""

    code = ErrorCode.INVALID_ARGUMENT


def iso_time(value: datetime) -> str:
    """RFC 3339 with its offset, in UTC: ``2026-11-01T09:08:00Z``. A naive time is the store's
    (UTC without a zone)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


#: Every time in a tool's answer: held as the store holds it (naive UTC), sent as RFC 3339 with
#: ``Z``, which is what the output schema's ``format: date-time`` promises strict clients.
UtcTime = Annotated[
    datetime,
    AfterValidator(_naive_utc),
    PlainSerializer(iso_time, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

#: Any JSON value (a jq output, a SQL or aggregate cell), with the types spelled out: strict
#: clients (the MCP Inspector) warn about a schema that declares none.
#: ``anyOf`` single-type branches rather than a ``type`` array, which the Inspector's portability
#: check flags (single-type dialects such as Gemini's reject it).
JSON_TYPES = ("string", "number", "boolean", "object", "array", "null")
JsonValue = Annotated[Any, WithJsonSchema({"anyOf": [{"type": t} for t in JSON_TYPES]})]

#: The most characters one tool response may use: the ``max_chars`` schema's maximum, and the
#: highest value the ``response_chars_max`` setting takes (Claude Code rejects a result over
#: 25,000 tokens; 80,000 characters stay below that).
MAX_CHARS_CEILING: int = Settings.model_fields["response_chars_max"].default

#: Every tool's ``max_chars`` parameter.
MaxChars = Annotated[
    int | None,
    Field(ge=1000, le=MAX_CHARS_CEILING),
]

#: Every paged tool's ``cursor`` parameter.
Cursor = Annotated[str | None, Field(description="A next_cursor.")]


def budget(max_chars: int | None, settings: Settings) -> int:
    """The characters a response may use: the call's wish, refused above this server's ceiling
    (``response_chars_max``) rather than cut silently."""
    ceiling = settings.response_chars_max
    if max_chars is not None and max_chars > ceiling:
        raise ToolFailure(
            f"max_chars={max_chars} is above this server's ceiling of {ceiling} characters. "
            f"Ask for at most {ceiling}, or page through the result.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    wanted = min(settings.response_chars if max_chars is None else max_chars, ceiling)
    return max(1000, wanted)


def size(value: BaseModel | Any) -> int:
    """Characters of ``value`` as compact JSON: the unit every budget is counted in."""
    if isinstance(value, BaseModel):
        return len(value.model_dump_json())
    return len(orjson.dumps(value, default=str))


def clip(text: str | None, limit: int) -> tuple[str | None, int]:
    """``text`` cut to ``limit`` characters, and how many characters were cut."""
    if text is None or len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def one_line(text: str | None, limit: int) -> str | None:
    """A preview: whitespace runs collapsed to one space, cut to ``limit`` with an ellipsis."""
    if text is None:
        return None
    flat = " ".join(text[: limit * 4].split())
    if len(flat) <= limit and len(text) <= limit * 4:
        return flat
    return flat[: max(0, limit - 1)] + "…"


#: What a cursor holds: the last row's sort key, value by value.
CursorValue = int | float | str | None

#: Bytes of a cursor's check: a digest of the tool, the call's fingerprint and the key.
_CHECK_BYTES = 6
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
# Value kinds, in the low 3 bits of each value's header (the rest: an int, or a length).
_NONE, _INT, _FLOAT, _TEXT, _HEX_TEXT = range(5)


def encode_cursor(tool: str, fingerprint: str, key: list[CursorValue]) -> str:
    """An opaque cursor resuming ``tool``'s call with ``fingerprint`` (its filters and order)
    after the row whose sort key is ``key``.

    Compact: the key packed as binary (ints as varints, lowercase hex ids as their bytes) behind
    a 6-byte digest of the tool, the fingerprint and the key, in URL-safe base64: about 50
    characters for a trace-id key (the JSON form took 130)."""
    body = bytearray()
    for value in key:
        _pack(value, body)
    return base64.urlsafe_b64encode(_check(tool, fingerprint, body) + body).decode().rstrip("=")


def decode_cursor(cursor: str, tool: str, fingerprint: str) -> list[CursorValue]:
    """The key in a cursor :func:`encode_cursor` made for the same tool and fingerprint.

    Anything else (a cursor of another tool or of other arguments, an altered one, a made-up
    string) is refused with INVALID_CURSOR; the caller still checks the key's shape."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    check, body = raw[:_CHECK_BYTES], raw[_CHECK_BYTES:]
    key = _unpack(body) if check and check == _check(tool, fingerprint, body) else None
    if key is None:
        raise ToolFailure(
            f"The cursor {cursor[:40]!r} is not a next_cursor of this {tool} call (another "
            f"tool, other arguments, or altered). Pass next_cursor unchanged with the same "
            "arguments, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return key


def _check(tool: str, fingerprint: str, body: bytes | bytearray) -> bytes:
    head = orjson.dumps([tool, fingerprint])
    return hashlib.blake2b(head + b"\0" + bytes(body), digest_size=_CHECK_BYTES).digest()


def _varint(number: int, out: bytearray) -> None:
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)


def _pack(value: CursorValue, out: bytearray) -> None:
    if value is None:
        _varint(_NONE, out)
    elif isinstance(value, bool):
        raise TypeError("a cursor key holds no booleans")
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("a cursor key holds 64-bit integers")
        _varint((value << 1 ^ value >> 63) << 3 | _INT, out)  # zigzag: small negatives stay short
    elif isinstance(value, float):
        _varint(_FLOAT, out)
        out += struct.pack(">d", value)
    elif _HEX.fullmatch(value):
        _varint(len(value) // 2 << 3 | _HEX_TEXT, out)
        out += bytes.fromhex(value)
    else:
        data = value.encode()
        _varint(len(data) << 3 | _TEXT, out)
        out += data


def _unpack(body: bytes) -> list[CursorValue] | None:
    """The values packed in ``body``; None unless it is exactly a sequence of packed values."""
    values: list[CursorValue] = []
    at = 0
    try:
        while at < len(body):
            header, at = _read_varint(body, at)
            kind, number = header & 7, header >> 3
            if kind == _NONE and number == 0:
                values.append(None)
            elif kind == _INT and number < 2**64:
                values.append(number >> 1 ^ -(number & 1))
            elif kind == _FLOAT and number == 0:
                (real,) = struct.unpack_from(">d", body, at)
                at += 8
                if not math.isfinite(real):
                    return None
                values.append(real)
            elif kind in (_TEXT, _HEX_TEXT) and at + number <= len(body):
                data = body[at : at + number]
                at += number
                values.append(data.hex() if kind == _HEX_TEXT else data.decode())
            else:
                return None
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    return values


def _read_varint(body: bytes, at: int) -> tuple[int, int]:
    number = shift = 0
    while True:
        if at >= len(body) or shift > 70:  # past 64 bits of value and 3 of kind: not ours
            raise ValueError("bad varint")
        byte = body[at]
        at += 1
        number |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return number, at


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, *, now: datetime | None = None, name: str = "since") -> datetime:
    """An absolute ISO time or a relative one (``30m``, ``2h``, ``7d``: that long ago), as naive
    UTC (the store's timestamps are UTC without a zone)."""
    match = _RELATIVE.match(value)
    if match:
        amount, unit = float(match[1]), match[2].lower()
        now = now or datetime.now(UTC)
        return (now - timedelta(**{_UNITS[unit]: amount})).astimezone(UTC).replace(tzinfo=None)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolFailure(
            f"{name}={value!r} is not a time. Use ISO 8601 (2026-05-01T12:00:00Z) or a "
            "relative time such as 30m, 2h, 7d.",
            code=ErrorCode.INVALID_ARGUMENT,
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed
