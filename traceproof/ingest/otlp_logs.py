"""OTLP log requests (protobuf and JSON) to log records, and the answers OTLP asks for.

The same wire rules as trace requests (:mod:`traceproof.ingest.otlp`): OTLP/JSON with
lowerCamelCase keys and 64-bit integers as strings, and what generic protobuf-to-JSON tools
produce (snake_case keys, numbers). A record whose attributes cannot be read (a value nested
deeper than :data:`~traceproof.ingest.normalize.MAX_VALUE_DEPTH`, a malformed attribute) is
rejected and counted; a body that is not a log request at all raises
:class:`~traceproof.ingest.otlp.MalformedRequest`.

What becomes of the records is the caller's business (the server turns Claude Code's events
into spans: :mod:`traceproof.trajectories.claude_telemetry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from traceproof.ingest.normalize import REJECTED, SpanRejected, rejection_reason
from traceproof.ingest.otlp import (
    MAX_REASONS,
    MalformedRequest,
    _get,
    _json_attributes,
    _json_int,
    _json_value,
    _list,
    _pb_attributes,
    _pb_value,
)


@dataclass(slots=True)
class LogRecord:
    """One OTLP log record, its attributes flat (dotted keys as sent)."""

    time_ns: int
    observed_ns: int
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str | None = None
    #: The LogRecord ``event_name`` field (OTLP 1.5+), when set.
    event_name: str | None = None


@dataclass
class DecodedLogs:
    """The records of one request, and how many could not be read (with why)."""

    records: list[LogRecord] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)


# -- protobuf ------------------------------------------------------------------------------------


def decode_logs_protobuf(body: bytes) -> DecodedLogs:
    try:
        request = ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise MalformedRequest(f"body is not a valid OTLP protobuf logs request ({exc})") from None
    out = DecodedLogs()
    for resource_logs in request.resource_logs:
        try:
            resource = _pb_attributes(resource_logs.resource.attributes)
        except REJECTED as exc:
            for scope_logs in resource_logs.scope_logs:
                for _ in scope_logs.log_records:
                    out.reject(f"resource: {rejection_reason(exc)}")
            continue
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name or None
            for record in scope_logs.log_records:
                try:
                    attributes = _pb_attributes(record.attributes)
                    body_value = _pb_value(record.body, 0) if record.HasField("body") else None
                except REJECTED as exc:
                    out.reject(f"log record: {rejection_reason(exc)}")
                    continue
                out.records.append(
                    LogRecord(
                        time_ns=record.time_unix_nano,
                        observed_ns=record.observed_time_unix_nano,
                        body=body_value,
                        attributes=attributes,
                        resource=resource,
                        scope_name=scope_name,
                        event_name=record.event_name or None,
                    )
                )
    return out


# -- JSON ----------------------------------------------------------------------------------------


def decode_logs_json(body: bytes | str) -> DecodedLogs:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"body is not valid JSON ({exc})") from None
    if not isinstance(document, Mapping):
        raise MalformedRequest("an OTLP/JSON logs request must be a JSON object")
    out = DecodedLogs()
    for rl in _list(_get(document, "resourceLogs", "resource_logs"), "resourceLogs"):
        if not isinstance(rl, Mapping):
            raise MalformedRequest("each resourceLogs entry must be an object")
        scopes = _list(_get(rl, "scopeLogs", "scope_logs"), "scopeLogs")
        resource_object = rl.get("resource") or {}
        if not isinstance(resource_object, Mapping):
            raise MalformedRequest("resource must be an object")
        try:
            resource = _json_attributes(_get(resource_object, "attributes"))
        except REJECTED as exc:
            for sl in scopes:
                records = _get(sl, "logRecords", "log_records") if isinstance(sl, Mapping) else None
                for _ in records if isinstance(records, list) else []:
                    out.reject(f"resource: {rejection_reason(exc)}")
            continue
        for sl in scopes:
            if not isinstance(sl, Mapping):
                raise MalformedRequest("each scopeLogs entry must be an object")
            scope = sl.get("scope") or {}
            scope_name = scope.get("name") if isinstance(scope, Mapping) else None
            for record in _list(_get(sl, "logRecords", "log_records"), "logRecords"):
                try:
                    out.records.append(_json_record(record, resource, scope_name))
                except REJECTED as exc:
                    out.reject(f"log record: {rejection_reason(exc)}")
    return out


def _json_record(record: Any, resource: dict[str, Any], scope_name: Any) -> LogRecord:
    if not isinstance(record, Mapping):
        raise SpanRejected("a log record must be a JSON object")
    event_name = _get(record, "eventName", "event_name")
    return LogRecord(
        time_ns=_json_int(_get(record, "timeUnixNano", "time_unix_nano"), "record"),
        observed_ns=_json_int(
            _get(record, "observedTimeUnixNano", "observed_time_unix_nano"), "observed"
        ),
        body=_json_value(record.get("body"), 0),
        attributes=_json_attributes(record.get("attributes")),
        resource=resource,
        scope_name=scope_name if isinstance(scope_name, str) and scope_name else None,
        event_name=event_name if isinstance(event_name, str) and event_name else None,
    )


# -- answers -------------------------------------------------------------------------------------


def logs_response_protobuf(rejected: int, message: str) -> bytes:
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return bytes(response.SerializeToString())


def logs_response_json(rejected: int, message: str) -> bytes:
    body: dict[str, Any] = {}
    if rejected or message:
        body["partialSuccess"] = {
            "rejectedLogRecords": str(rejected),
            "errorMessage": message,
        }
    return json.dumps(body).encode()
