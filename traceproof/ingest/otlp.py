"""OTLP trace requests (protobuf and JSON) to normalised span rows.

OTLP/JSON follows the OpenTelemetry spec: lowerCamelCase keys, trace and span ids as lowercase
hex, enums as numbers, 64-bit integers as strings. We also accept what generic protobuf-to-JSON
tools produce: snake_case keys, base64 ids, enum names, numbers for 64-bit integers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traceproof.ingest.normalize import (
    MAX_VALUE_DEPTH,
    REJECTED,
    Event,
    SpanRejected,
    SpanRows,
    clean_number,
    otel_kind_name,
    project_of,
    rejection_reason,
    resource_json,
    status_name,
)
from traceproof.ingest.pbwire import split_request

#: Rejection reasons kept per request; the count is always exact.
MAX_REASONS = 20


class MalformedRequest(ValueError):
    """The body is not an OTLP trace request at all (answered with 400)."""


@dataclass
class Decoded:
    """Spans decoded from one request, and what could not be kept."""

    rows: SpanRows = field(default_factory=SpanRows)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def warn(self, messages: list[str]) -> None:
        room = MAX_REASONS - len(self.warnings)
        if room > 0:
            self.warnings.extend(messages[:room])

    def message(self) -> str:
        """The partial-success message: reasons first, then warnings."""
        parts = []
        if self.rejected:
            more = self.rejected - len(self.reasons)
            parts.append(
                f"rejected {self.rejected} span(s): "
                + "; ".join(self.reasons)
                + (f"; and {more} more" if more > 0 else "")
            )
        if self.warnings:
            parts.append("warnings: " + "; ".join(self.warnings))
        return " | ".join(parts)


# -- protobuf ------------------------------------------------------------------------------------


def decode_protobuf(
    body: bytes,
    *,
    default_project: str,
    project: str | None = None,
    rows: SpanRows | None = None,
) -> Decoded:
    refused: list[DecodeError] = []
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        # One span may be what is wrong (a value nested past protobuf's limit, a string that is
        # not UTF-8): keep the spans that parse on their own, when the outer levels are sound.
        try:
            request, refused = split_request(body)
        except (DecodeError, RecursionError, ValueError):
            refused = []
        if not refused:
            raise MalformedRequest(
                f"body is not a valid OTLP protobuf trace request ({exc})"
            ) from None
    decoded = decode_message(request, default_project=default_project, project=project, rows=rows)
    for error in refused:
        decoded.reject(
            f"span: an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels"
            if "MaxDepth" in str(error)
            else f"span is not valid protobuf ({str(error).rpartition(': ')[2]})"
        )
    return decoded


def decode_message(
    request: ExportTraceServiceRequest,
    *,
    default_project: str,
    project: str | None = None,
    rows: SpanRows | None = None,
) -> Decoded:
    """Decode a parsed request. With ``rows``, spans are appended to that builder."""
    out = Decoded(rows=rows) if rows is not None else Decoded()
    for resource_spans in request.resource_spans:
        try:
            resource = _pb_attributes(resource_spans.resource.attributes)
            span_project = project or project_of(resource, default_project)
            out.rows.check_keys(resource)
            resource_text = resource_json(resource)
        except REJECTED as exc:
            for scope_spans in resource_spans.scope_spans:
                for _ in scope_spans.spans:
                    out.reject(f"resource: {rejection_reason(exc)}")
            continue
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            for span in scope_spans.spans:
                try:
                    trace_id = _pb_id(span.trace_id, 16, "trace id")
                    span_id = _pb_id(span.span_id, 8, "span id")
                    parent = _pb_parent(span.parent_span_id)
                    events = [
                        Event(e.name, e.time_unix_nano, _pb_attributes(e.attributes))
                        for e in span.events
                    ]
                    links = [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "attributes": _pb_attributes(link.attributes),
                        }
                        for link in span.links
                    ]
                    warnings = out.rows.add(
                        project=span_project,
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=parent,
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status=status_name(span.status.code),
                        status_message=span.status.message,
                        attributes=_pb_attributes(span.attributes),
                        events=events,
                        links=links,
                        resource_json=resource_text,
                        scope_name=scope_name,
                        otel_kind=otel_kind_name(span.kind),
                    )
                except REJECTED as exc:
                    out.reject(f"span {span.span_id.hex() or '?'}: {rejection_reason(exc)}")
                    continue
                if warnings:
                    out.warn(warnings)
    return out


def _pb_id(raw: bytes, size: int, what: str) -> str:
    if not raw or raw == bytes(len(raw)):
        raise SpanRejected(f"{what} is missing or all zeros")
    if len(raw) != size:
        raise SpanRejected(f"{what} has {len(raw)} bytes, expected {size}")
    return raw.hex()


def _pb_parent(raw: bytes) -> str | None:
    return _pb_id(raw, 8, "parent span id") if raw and raw != bytes(len(raw)) else None


def _pb_attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value, 0) for kv in key_values}


def _pb_value(value: Any, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return clean_number(value.double_value)
    if kind == "bool_value":
        return value.bool_value
    if depth >= MAX_VALUE_DEPTH:
        raise SpanRejected(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind == "array_value":
        return [_pb_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def response_protobuf(decoded: Decoded) -> bytes:
    response = ExportTraceServiceResponse()
    message = decoded.message()
    if decoded.rejected or message:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


# -- JSON ----------------------------------------------------------------------------------------


def decode_json(
    body: bytes | str,
    *,
    default_project: str,
    project: str | None = None,
    rows: SpanRows | None = None,
) -> Decoded:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"body is not valid JSON ({exc})") from None
    return decode_json_object(document, default_project=default_project, project=project, rows=rows)


def decode_json_object(
    document: Any,
    *,
    default_project: str,
    project: str | None = None,
    rows: SpanRows | None = None,
) -> Decoded:
    if not isinstance(document, Mapping):
        raise MalformedRequest("an OTLP/JSON trace request must be a JSON object")
    resource_spans = _get(document, "resourceSpans", "resource_spans")
    if resource_spans is None:
        resource_spans = []
    if not isinstance(resource_spans, list):
        raise MalformedRequest("resourceSpans must be a list")
    out = Decoded(rows=rows) if rows is not None else Decoded()
    for rs in resource_spans:
        if not isinstance(rs, Mapping):
            raise MalformedRequest("each resourceSpans entry must be an object")
        scope_list = _list(
            _get(rs, "scopeSpans", "scope_spans", "instrumentationLibrarySpans"), "scopeSpans"
        )
        resource_object = rs.get("resource") or {}
        if not isinstance(resource_object, Mapping):
            raise MalformedRequest("resource must be an object")
        try:
            resource = _json_attributes(_get(resource_object, "attributes"))
            span_project = project or project_of(resource, default_project)
            out.rows.check_keys(resource)
            resource_text = resource_json(resource)
        except REJECTED as exc:
            for ss in scope_list:
                spans = _get(ss, "spans") if isinstance(ss, Mapping) else None
                for _ in spans if isinstance(spans, list) else []:
                    out.reject(f"resource: {rejection_reason(exc)}")
            continue
        for ss in scope_list:
            if not isinstance(ss, Mapping):
                raise MalformedRequest("each scopeSpans entry must be an object")
            scope = _get(ss, "scope", "instrumentationLibrary") or {}
            scope_name = _str(scope.get("name")) if isinstance(scope, Mapping) else None
            for span in _list(_get(ss, "spans"), "spans"):
                try:
                    if not isinstance(span, Mapping):
                        raise SpanRejected("span must be a JSON object")
                    warnings = _add_json_span(
                        out.rows, span, span_project, resource_text, scope_name
                    )
                except REJECTED as exc:
                    sid = span.get("spanId") if isinstance(span, Mapping) else None
                    out.reject(f"span {sid or '?'}: {rejection_reason(exc)}")
                    continue
                if warnings:
                    out.warn(warnings)
    return out


def _add_json_span(
    rows: SpanRows,
    span: Mapping[str, Any],
    project: str,
    resource_text: str,
    scope_name: str | None,
) -> list[str]:
    status = _get(span, "status") or {}
    if not isinstance(status, Mapping):
        raise SpanRejected("status must be an object")
    events = []
    for event in _list(_get(span, "events"), "events", SpanRejected):
        if not isinstance(event, Mapping):
            raise SpanRejected("each event must be an object")
        events.append(
            Event(
                str(event.get("name") or ""),
                _json_int(_get(event, "timeUnixNano", "time_unix_nano"), "event time"),
                _json_attributes(event.get("attributes")),
            )
        )
    links = []
    for link in _list(_get(span, "links"), "links", SpanRejected):
        if not isinstance(link, Mapping):
            raise SpanRejected("each link must be an object")
        links.append(
            {
                "trace_id": json_id(_get(link, "traceId", "trace_id"), 16, "link trace id"),
                "span_id": json_id(_get(link, "spanId", "span_id"), 8, "link span id"),
                "attributes": _json_attributes(link.get("attributes")),
            }
        )
    return rows.add(
        project=project,
        trace_id=json_id(_get(span, "traceId", "trace_id"), 16, "trace id") or "",
        span_id=json_id(_get(span, "spanId", "span_id"), 8, "span id") or "",
        parent_span_id=json_id(
            _get(span, "parentSpanId", "parent_span_id"), 8, "parent span id", optional=True
        ),
        name=str(span.get("name") or ""),
        start_ns=_json_int(_get(span, "startTimeUnixNano", "start_time_unix_nano"), "start"),
        end_ns=_json_int(_get(span, "endTimeUnixNano", "end_time_unix_nano"), "end"),
        status=status_name(status.get("code")),
        status_message=_str(status.get("message")),
        attributes=_json_attributes(span.get("attributes")),
        events=events,
        links=links,
        resource_json=resource_text,
        scope_name=scope_name,
        otel_kind=otel_kind_name(span.get("kind")),
    )


def _list(value: Any, what: str, error: type[ValueError] = MalformedRequest) -> list[Any]:
    """``value`` as a list (missing or null: empty); anything else raises ``error``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise error(f"{what} must be a list, not {type(value).__name__}")
    return value


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (Mapping, list)) else str(value)


def _get(obj: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


_HEX = frozenset("0123456789abcdefABCDEF")


def json_id(value: Any, size: int, what: str, *, optional: bool = False) -> str | None:
    """An id as lowercase hex: from hex (the OTLP/JSON form) or base64 (protobuf JSON)."""
    if value is None or value == "":
        if optional:
            return None
        raise SpanRejected(f"{what} is missing")
    if not isinstance(value, str):
        raise SpanRejected(f"{what} must be a string")
    if len(value) == size * 2 and _HEX.issuperset(value):
        raw = bytes.fromhex(value)
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size:
            raise SpanRejected(
                f"{what} {value[:40]!r} is neither {size * 2} hex digits nor base64 of {size} bytes"
            )
    if raw == bytes(size):
        if optional:
            return None
        raise SpanRejected(f"{what} is all zeros")
    return raw.hex()


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise SpanRejected(f"{what} time must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SpanRejected(f"{what} time {str(value)[:40]!r} is not an integer") from None


def _json_attributes(key_values: Any) -> dict[str, Any]:
    if key_values is None:
        return {}
    if not isinstance(key_values, list):
        raise SpanRejected("attributes must be a list of {key, value}")
    out: dict[str, Any] = {}
    for kv in key_values:
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise SpanRejected("each attribute must be an object with a string key")
        out[kv["key"]] = _json_value(kv.get("value"), 0)
    return out


def _json_value(value: Any, depth: int) -> Any:
    if not isinstance(value, Mapping) or not value:
        return None
    for name, item in value.items():
        if name in ("stringValue", "string_value"):
            return item if isinstance(item, str) else str(item)
        if name in ("intValue", "int_value"):
            try:
                return int(item)
            except (TypeError, ValueError):
                raise SpanRejected(f"intValue {str(item)[:40]!r} is not an integer") from None
        if name in ("doubleValue", "double_value"):
            try:
                return clean_number(float(item))
            except (TypeError, ValueError):
                raise SpanRejected(f"doubleValue {str(item)[:40]!r} is not a number") from None
        if name in ("boolValue", "bool_value"):
            return bool(item)
        if name in ("bytesValue", "bytes_value"):
            return item if isinstance(item, str) else None
        if depth >= MAX_VALUE_DEPTH:
            raise SpanRejected(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
        if name in ("arrayValue", "array_value"):
            values = item.get("values") if isinstance(item, Mapping) else None
            return [_json_value(v, depth + 1) for v in _list(values, "arrayValue", SpanRejected)]
        if name in ("kvlistValue", "kvlist_value"):
            values = item.get("values") if isinstance(item, Mapping) else None
            out = {}
            for kv in _list(values, "kvlistValue", SpanRejected):
                if isinstance(kv, Mapping) and isinstance(kv.get("key"), str):
                    out[kv["key"]] = _json_value(kv.get("value"), depth + 1)
            return out
    return None


def response_json(decoded: Decoded) -> bytes:
    body: dict[str, Any] = {}
    message = decoded.message()
    if decoded.rejected or message:
        body["partialSuccess"] = {
            "rejectedSpans": str(decoded.rejected),
            "errorMessage": message,
        }
    return json.dumps(body).encode()
