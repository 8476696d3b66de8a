"""OTLP protobuf requests split span by span at the wire level.

The protobuf library refuses a whole message nested deeper than its limit (100 message levels,
about 30 levels of attribute ``kvlist`` inside a request). One span with such a value must not
cost the other spans of its request, so when the whole request is refused for depth, this module
walks the three outer levels (request, resource spans, scope spans) by hand and parses each span
on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """``(field number, bytes)`` of each length-delimited field; other fields are skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(buf, pos)
            continue
        if wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        elif wire == _LENGTH:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise DecodeError("truncated length-delimited field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise DecodeError(f"unsupported wire type {wire}")
    if pos != len(buf):
        raise DecodeError("truncated fixed-width field")


def split_request(body: bytes) -> tuple[ExportTraceServiceRequest, list[DecodeError]]:
    """The request rebuilt from the spans that parse on their own, and each refused span's error.

    Raises :class:`DecodeError` when the outer levels themselves are not valid.
    """
    request = ExportTraceServiceRequest()
    refused: list[DecodeError] = []
    for number, resource_spans_bytes in fields(body):
        if number != 1:  # ExportTraceServiceRequest.resource_spans
            continue
        resource_spans = request.resource_spans.add()
        for rs_number, rs_value in fields(resource_spans_bytes):
            if rs_number == 1:  # ResourceSpans.resource
                resource_spans.resource.MergeFromString(rs_value)
            elif rs_number == 2:  # ResourceSpans.scope_spans
                scope_spans = resource_spans.scope_spans.add()
                for ss_number, ss_value in fields(rs_value):
                    if ss_number == 1:  # ScopeSpans.scope
                        scope_spans.scope.MergeFromString(ss_value)
                    elif ss_number == 2:  # ScopeSpans.spans
                        try:
                            scope_spans.spans.append(Span.FromString(ss_value))
                        except DecodeError as exc:
                            refused.append(exc)
    return request, refused
