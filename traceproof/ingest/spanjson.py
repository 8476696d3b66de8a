"""Span JSON objects in the shape Phoenix exports: one span per object.

``{"name", "context": {"trace_id", "span_id"}, "parent_id", "span_kind", "start_time",
"end_time", "status_code", "status_message", "attributes", "events"}``. Times are ISO 8601
strings (UTC when no offset is given) or integer nanoseconds since the epoch; attributes may be
flat with dotted keys or nested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from traceproof.ingest.normalize import Event, SpanRejected, SpanRows, flatten, status_name

_FRACTION = re.compile(r"(\.\d{6})\d+")
_HEXISH = re.compile(r"^(0x)?[0-9a-fA-F]+$")


def is_span_object(obj: Mapping[str, Any]) -> bool:
    context = obj.get("context")
    return (isinstance(context, Mapping) and "span_id" in context) or "span_id" in obj


def add_span_object(rows: SpanRows, obj: Mapping[str, Any], *, project: str) -> list[str]:
    """Normalise one span object into ``rows``; raises :class:`SpanRejected`."""
    context = obj.get("context")
    if not isinstance(context, Mapping):
        context = obj
    trace_id = _id(context.get("trace_id"), "trace id")
    span_id = _id(context.get("span_id"), "span id")
    parent = obj.get("parent_id", obj.get("parent_span_id"))
    raw_attributes = obj.get("attributes") or {}
    if not isinstance(raw_attributes, Mapping):
        raise SpanRejected("attributes must be an object")
    attributes = flatten(raw_attributes)
    kind = obj.get("span_kind")
    if kind and "openinference.span.kind" not in attributes:
        attributes["openinference.span.kind"] = str(kind)
    events = []
    for event in obj.get("events") or []:
        if not isinstance(event, Mapping):
            raise SpanRejected("each event must be an object")
        event_attributes = event.get("attributes") or {}
        if not isinstance(event_attributes, Mapping):
            raise SpanRejected("event attributes must be an object")
        events.append(
            Event(
                str(event.get("name") or ""),
                parse_time(event.get("timestamp"), "event timestamp"),
                flatten(event_attributes),
            )
        )
    return rows.add(
        project=project,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_id(parent, "parent id") if parent else None,
        name=str(obj.get("name") or ""),
        start_ns=parse_time(obj.get("start_time"), "start_time"),
        end_ns=parse_time(obj.get("end_time") or obj.get("start_time"), "end_time"),
        status=status_name(obj.get("status_code")),
        status_message=obj.get("status_message") or None,
        attributes=attributes,
        events=events,
    )


def _id(value: Any, what: str) -> str:
    if value is None or value == "":
        raise SpanRejected(f"{what} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SpanRejected(f"{what} must be a string")
    text = str(value).strip()
    if len(text) > 128:
        raise SpanRejected(f"{what} is longer than 128 characters")
    if _HEXISH.match(text):
        text = text.lower().removeprefix("0x")
    return text


def parse_time(value: Any, what: str) -> int:
    """ISO 8601 text or integer nanoseconds to nanoseconds since the epoch."""
    if value is None or value == "":
        raise SpanRejected(f"{what} is missing")
    if isinstance(value, bool):
        raise SpanRejected(f"{what} must be a time")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if not isinstance(value, str):
        raise SpanRejected(f"{what} must be ISO 8601 text or nanoseconds")
    text = value.strip()
    if text.isdigit():
        return int(text)
    nanos = 0
    fraction = re.search(r"\.(\d+)", text)
    if fraction:
        nanos = int(fraction.group(1)[:9].ljust(9, "0")) % 1000
    try:
        stamp = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        raise SpanRejected(f"{what} {text[:40]!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1000 + nanos
