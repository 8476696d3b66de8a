"""OTLP decoding (JSON and protobuf) and normalisation into span rows."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traceproof.ingest.normalize import SpanRejected, unflatten
from traceproof.ingest.otlp import (
    Decoded,
    MalformedRequest,
    decode_json,
    decode_protobuf,
    response_json,
    response_protobuf,
)
from traceproof.ingest.spanjson import parse_time
from traceproof.storage import Store

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"
START = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
START_TIME = datetime(2023, 11, 14, 22, 13, 20, 123456)


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP/JSON AnyValue, the way the specification spells it."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 travels as a string
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    if value is None:
        return {}
    return {"stringValue": value}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def span(
    attributes: dict[str, Any] | None = None,
    *,
    span_id: str = SPAN,
    start: int = START,
    duration_ns: int = 250_000_000,
    **fields: Any,
) -> dict[str, Any]:
    """An OTLP/JSON span with hex ids; ``fields`` replace or add top-level keys."""
    out: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "parentSpanId": PARENT,
        "name": "step",
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + duration_ns),
        "attributes": key_values(attributes or {}),
        "status": {},
    }
    out.update(fields)
    return out


def request(
    *spans: dict[str, Any], resource: dict[str, Any] | None = None, scope: str = "tests"
) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource or {"service.name": "svc"})},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def to_proto(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """The same request as a protobuf message (protobuf's JSON mapping wants base64 ids)."""
    doc = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return json_format.ParseDict(doc, ExportTraceServiceRequest())


Wire = Callable[[dict[str, Any], str | None], Decoded]


def _json(doc: dict[str, Any], project: str | None) -> Decoded:
    return decode_json(json.dumps(doc).encode(), default_project="fallback", project=project)


def _protobuf(doc: dict[str, Any], project: str | None) -> Decoded:
    body = to_proto(doc).SerializeToString()
    return decode_protobuf(body, default_project="fallback", project=project)


def _protobuf_json(doc: dict[str, Any], project: str | None) -> Decoded:
    # What protobuf's own JSON printer makes: base64 ids, enum names, int64 as strings.
    body = json_format.MessageToJson(to_proto(doc))
    return decode_json(body, default_project="fallback", project=project)


def _protobuf_json_snake(doc: dict[str, Any], project: str | None) -> Decoded:
    body = json_format.MessageToJson(
        to_proto(doc), preserving_proto_field_name=True, use_integers_for_enums=True
    )
    return decode_json(body, default_project="fallback", project=project)


WIRES: dict[str, Wire] = {
    "otlp-json": _json,
    "protobuf": _protobuf,
    "protobuf-json": _protobuf_json,
    "protobuf-json-snake-case": _protobuf_json_snake,
}


@pytest.fixture(params=list(WIRES))
def decode(request: pytest.FixtureRequest) -> Wire:
    wire: Wire = WIRES[request.param]
    return wire


def rows_of(decoded: Decoded) -> list[dict[str, Any]]:
    return list(decoded.rows.table().to_pylist())


def only_row(decoded: Decoded) -> dict[str, Any]:
    assert decoded.rejected == 0, decoded.reasons
    rows = rows_of(decoded)
    assert len(rows) == 1
    row = rows[0]
    for column in ("attributes", "events", "links", "resource"):
        row[column] = json.loads(row[column])
    return row


def test_every_attribute_value_kind_is_kept(decode: Wire) -> None:
    attributes = {
        "str": "text",
        "yes": True,
        "no": False,
        "count": 42,
        "big": 2**63 - 1,
        "negative": -7,
        "ratio": 0.25,
        "blob": b"\x00\x01\xfe\xff",
        "list": ["a", 1, 2.5, False],
        "empty_list": [],
        "map": {"k": "v", "nested": {"deep": [1, 2]}},
        "nothing": None,
    }
    row = only_row(decode(request(span(attributes)), None))
    assert row["attributes"] == {
        "str": "text",
        "yes": True,
        "no": False,
        "count": 42,
        "big": 2**63 - 1,
        "negative": -7,
        "ratio": 0.25,
        "blob": "AAH+/w==",  # bytes are kept as base64 text
        "list": ["a", 1, 2.5, False],
        "empty_list": [],
        "map": {"k": "v", "nested": {"deep": [1, 2]}},
        "nothing": None,
    }


def test_non_finite_doubles_are_kept_as_the_strings_otlp_json_uses(decode: Wire) -> None:
    doc = request(span())
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "up", "value": {"doubleValue": "Infinity"}},
        {"key": "down", "value": {"doubleValue": "-Infinity"}},
    ]
    row = only_row(decode(doc, None))
    assert row["attributes"] == {"nan": "NaN", "up": "Infinity", "down": "-Infinity"}


def test_core_span_fields_are_decoded_the_same_from_every_wire_format(decode: Wire) -> None:
    doc = request(
        span(name="lookup", kind=3, status={"code": 2, "message": "boom"}),
        scope="my.library",
    )
    row = only_row(decode(doc, None))
    assert {k: row[k] for k in row if k not in ("attributes", "events", "links", "resource")} == {
        "project": "svc",
        "trace_id": TRACE,
        "span_id": SPAN,
        "parent_span_id": PARENT,
        "name": "lookup",
        "span_kind": "UNKNOWN",
        "otel_kind": "CLIENT",
        "status": "ERROR",
        "status_message": "boom",
        "start_time": START_TIME,
        "end_time": datetime(2023, 11, 14, 22, 13, 20, 373456),
        "latency_ms": 250.0,
        "session_id": None,
        "user_id": None,
        "model": None,
        "tool_name": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "input_value": None,
        "input_mime_type": None,
        "output_value": None,
        "output_mime_type": None,
        "error_type": None,
        "error_message": "boom",
        "scope_name": "my.library",
    }
    assert row["resource"] == {"service": {"name": "svc"}}
    assert (row["events"], row["links"]) == ([], [])


@pytest.mark.parametrize(
    ("kind", "status", "otel_kind", "status_name"),
    [
        (0, {}, None, "UNSET"),
        (1, {"code": 1}, "INTERNAL", "OK"),
        (2, {"code": 2}, "SERVER", "ERROR"),
        ("SPAN_KIND_PRODUCER", {"code": "STATUS_CODE_OK"}, "PRODUCER", "OK"),
        ("SPAN_KIND_CONSUMER", {"code": "STATUS_CODE_ERROR"}, "CONSUMER", "ERROR"),
        ("3", {"code": "2"}, "CLIENT", "ERROR"),
        (99, {"code": 7}, None, "UNSET"),
    ],
)
def test_enums_are_read_as_names_or_numbers(
    kind: Any, status: dict[str, Any], otel_kind: str | None, status_name: str
) -> None:
    row = only_row(_json(request(span(kind=kind, status=status)), None))
    assert (row["otel_kind"], row["status"]) == (otel_kind, status_name)


def test_ids_are_read_from_hex_in_either_case_or_from_base64() -> None:
    raw_trace, raw_span = bytes.fromhex(TRACE), bytes.fromhex(SPAN)
    spans = [
        span(traceId=TRACE.upper(), spanId=SPAN.upper(), parentSpanId=""),
        span(
            traceId=base64.b64encode(raw_trace).decode(),
            spanId=base64.b64encode(raw_span).decode(),
            parentSpanId="0000000000000000",  # all zeros: no parent
        ),
    ]
    for item in spans:
        row = only_row(_json(request(item), None))
        assert (row["trace_id"], row["span_id"], row["parent_span_id"]) == (TRACE, SPAN, None)


def test_invalid_json_spans_are_rejected_with_their_reason_and_the_rest_kept() -> None:
    bad = [
        span(span_id="0000000000000001", traceId="xyz"),
        span(span_id="0000000000000002", traceId="0" * 32),
        span(span_id="0000000000000003", parentSpanId="zz"),
        span(span_id="0000000000000004", traceId=1234),
        span(span_id="0000000000000005", startTimeUnixNano="soon"),
        span(span_id="0000000000000006", startTimeUnixNano="-1"),
        span(span_id="aabbccddeeff00"),
        {**span(), "spanId": None},
        {**span(span_id="0000000000000007"), "attributes": [{"key": 5, "value": {}}]},
    ]
    decoded = _json(request(span(), *bad), None)
    assert [r["span_id"] for r in rows_of(decoded)] == [SPAN]
    assert decoded.rejected == len(bad)
    assert decoded.reasons == [
        "span 0000000000000001: trace id 'xyz' is neither 32 hex digits nor base64 of 16 bytes",
        "span 0000000000000002: trace id is all zeros",
        "span 0000000000000003: parent span id 'zz' is neither 16 hex digits nor base64 of 8 bytes",
        "span 0000000000000004: trace id must be a string",
        "span 0000000000000005: start time 'soon' is not an integer",
        "span 0000000000000006: start time -1 ns is out of range",
        "span aabbccddeeff00: span id 'aabbccddeeff00' is neither 16 hex digits nor base64 of 8 "
        "bytes",
        "span ?: span id is missing",
        "span 0000000000000007: each attribute must be an object with a string key",
    ]


def test_invalid_protobuf_ids_are_rejected_with_their_reason() -> None:
    message = to_proto(request(span(), span(span_id="0000000000000002")))
    spans = message.resource_spans[0].scope_spans[0].spans
    extra = [spans.add() for _ in range(3)]
    for item in extra:
        item.CopyFrom(spans[0])
    spans[1].trace_id = b"\x01" * 5
    extra[0].span_id = bytes(8)
    extra[1].span_id = b"\x02" * 8
    extra[1].parent_span_id = b"\x03" * 3
    extra[2].span_id = b"\x04" * 8
    extra[2].trace_id = bytes(16)
    decoded = decode_protobuf(message.SerializeToString(), default_project="fallback")
    assert [r["span_id"] for r in rows_of(decoded)] == [SPAN]
    assert decoded.reasons == [
        "span 0000000000000002: trace id has 5 bytes, expected 16",
        "span 0000000000000000: span id is missing or all zeros",
        "span 0202020202020202: parent span id has 3 bytes, expected 8",
        "span 0404040404040404: trace id is missing or all zeros",
    ]


def test_partial_success_responses_count_the_rejected_spans() -> None:
    decoded = _json(request(span(), span(span_id="0000000000000009", traceId="xyz")), None)
    body = json.loads(response_json(decoded))
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert body["partialSuccess"]["errorMessage"].startswith("rejected 1 span(s): span 00000")
    response = ExportTraceServiceResponse.FromString(response_protobuf(decoded))
    assert response.partial_success.rejected_spans == 1
    assert "trace id 'xyz'" in response.partial_success.error_message

    clean = _json(request(span()), None)
    assert json.loads(response_json(clean)) == {}
    assert response_protobuf(clean) == b""


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"resourceSpans": 5}', b'{"resourceSpans": [1]}'],
)
def test_a_body_that_is_not_an_otlp_json_request_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_json(body, default_project="fallback")


def test_a_body_that_is_not_protobuf_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        decode_protobuf(b"\xff\xff\xff\xff", default_project="fallback")


OPENINFERENCE_LLM = {
    "openinference.span.kind": "LLM",
    "input.value": '{"messages": [{"role": "user", "content": "Where is my order?"}]}',
    "input.mime_type": "application/json",
    "output.value": "It ships tomorrow.",
    "output.mime_type": "text/plain",
    "llm.model_name": "gpt-4o-mini",
    "llm.token_count.prompt": 120,
    "llm.token_count.completion": 30,
    "llm.token_count.total": 150,
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": "Where is my order?",
    "llm.invocation_parameters": '{"temperature": 0.2}',
    "session.id": "sess-1",
    "user.id": "user-1",
}


def test_openinference_attributes_fill_the_promoted_columns(decode: Wire) -> None:
    row = only_row(decode(request(span(OPENINFERENCE_LLM)), None))
    expected = {
        "span_kind": "LLM",
        "model": "gpt-4o-mini",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "session_id": "sess-1",
        "user_id": "user-1",
        "input_value": OPENINFERENCE_LLM["input.value"],
        "input_mime_type": "application/json",
        "output_value": "It ships tomorrow.",
        "output_mime_type": "text/plain",
    }
    assert {k: row[k] for k in expected} == expected
    # input.value / output.value live in their columns only; the rest is nested JSON.
    assert row["attributes"] == {
        "openinference": {"span": {"kind": "LLM"}},
        "input": {"mime_type": "application/json"},
        "output": {"mime_type": "text/plain"},
        "llm": {
            "model_name": "gpt-4o-mini",
            "token_count": {"prompt": 120, "completion": 30, "total": 150},
            "input_messages": [{"message": {"role": "user", "content": "Where is my order?"}}],
            "invocation_parameters": {"temperature": 0.2},
        },
        "session": {"id": "sess-1"},
        "user": {"id": "user-1"},
    }


def test_openinference_tool_span_promotes_its_name_and_parses_json_text(decode: Wire) -> None:
    attributes = {
        "openinference.span.kind": "TOOL",
        "tool.name": "lookup_order",
        "tool.parameters": '{"order_id": 42}',
        "metadata": '{"tier": "gold", "tags": ["a", "b"]}',
        "tool.description": '{"looks like": "json", but only parameters/metadata are parsed}',
        "output.note": '{"x": 1}',
    }
    row = only_row(decode(request(span(attributes)), None))
    assert (row["span_kind"], row["tool_name"]) == ("TOOL", "lookup_order")
    assert row["attributes"]["tool"] == {
        "name": "lookup_order",
        "parameters": {"order_id": 42},
        "description": attributes["tool.description"],
    }
    assert row["attributes"]["metadata"] == {"tier": "gold", "tags": ["a", "b"]}
    assert row["attributes"]["output"] == {"note": '{"x": 1}'}


def test_json_text_that_does_not_parse_is_kept_as_text() -> None:
    row = only_row(_json(request(span({"tool.parameters": "{oops", "metadata": "[1,"})), None))
    assert row["attributes"] == {"tool": {"parameters": "{oops"}, "metadata": "[1,"}


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ({"llm.token_count.prompt": "12", "llm.token_count.completion": 3.0}, (12, 3, 15)),
        ({"llm.token_count.prompt": 12}, (12, None, 12)),
        ({"llm.token_count.total": 99}, (None, None, 99)),
        ({"llm.token_count.prompt": "many", "llm.token_count.completion": True}, (None,) * 3),
    ],
)
def test_token_counts_are_read_from_numbers_and_numeric_text(
    tokens: dict[str, Any], expected: tuple[int | None, ...]
) -> None:
    row = only_row(_json(request(span({"openinference.span.kind": "LLM", **tokens})), None))
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == expected


def test_genai_attributes_fill_the_same_promoted_columns(decode: Wire) -> None:
    messages = '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]'
    reply = '[{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]'
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.usage.input_tokens": 50,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.input.messages": messages,
        "gen_ai.output.messages": reply,
    }
    row = only_row(decode(request(span(attributes)), None))
    expected = {
        "span_kind": "LLM",
        "model": "gpt-4.1",
        "prompt_tokens": 50,
        "completion_tokens": 7,
        "total_tokens": 57,
        "session_id": "conv-1",
        "input_value": messages,
        "output_value": reply,
    }
    assert {k: row[k] for k in expected} == expected
    with_response = only_row(
        decode(request(span({**attributes, "gen_ai.response.model": "gpt-4.1-2025"})), None)
    )
    assert with_response["model"] == "gpt-4.1-2025"


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("chat", "LLM"),
        ("text_completion", "LLM"),
        ("embeddings", "EMBEDDING"),
        ("execute_tool", "TOOL"),
        ("invoke_agent", "AGENT"),
        ("create_agent", "AGENT"),
        ("something_new", "UNKNOWN"),
    ],
)
def test_genai_operation_name_gives_the_span_kind(operation: str, kind: str) -> None:
    attributes = {"gen_ai.operation.name": operation, "gen_ai.tool.name": "get_weather"}
    row = only_row(_json(request(span(attributes)), None))
    assert (row["span_kind"], row["tool_name"]) == (kind, "get_weather")


def test_openinference_wins_over_genai_when_a_span_has_both() -> None:
    attributes = {
        "openinference.span.kind": "CHAIN",
        "gen_ai.operation.name": "chat",
        "llm.model_name": "from-openinference",
        "gen_ai.request.model": "from-genai",
        "llm.token_count.prompt": 1,
        "gen_ai.usage.input_tokens": 1000,
        "session.id": "oi-session",
        "gen_ai.conversation.id": "genai-session",
    }
    row = only_row(_json(request(span(attributes)), None))
    assert (row["span_kind"], row["model"], row["prompt_tokens"], row["session_id"]) == (
        "CHAIN",
        "from-openinference",
        1,
        "oi-session",
    )


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"openinference.span.kind": "WIDGET"}, "UNKNOWN"),
        ({"openinference.span.kind": "llm"}, "LLM"),
        ({"openinference.span.kind": "retriever"}, "RETRIEVER"),
        ({"openinference.span.kind": "GUARDRAIL"}, "GUARDRAIL"),
        ({}, "UNKNOWN"),
        ({"openinference.span.kind": ""}, "UNKNOWN"),
    ],
)
def test_span_kind_is_an_openinference_kind_or_unknown(
    attributes: dict[str, Any], kind: str
) -> None:
    row = only_row(_json(request(span(attributes)), None))
    assert row["span_kind"] == kind
    if attributes:  # the original text is kept
        assert (
            row["attributes"]["openinference"]["span"]["kind"]
            == attributes["openinference.span.kind"]
        )


def test_the_first_exception_event_gives_the_error_type_and_message(decode: Wire) -> None:
    events = [
        {"name": "retry", "timeUnixNano": str(START + 1_000), "attributes": key_values({"n": 1})},
        {
            "name": "exception",
            "timeUnixNano": str(START + 2_000),
            "attributes": key_values(
                {
                    "exception.type": "TimeoutError",
                    "exception.message": "order service timed out",
                    "exception.stacktrace": "Traceback (most recent call last): ...",
                }
            ),
        },
        {
            "name": "exception",
            "timeUnixNano": str(START + 3_000),
            "attributes": key_values({"exception.type": "Later", "exception.message": "no"}),
        },
    ]
    status = {"code": 2, "message": "TimeoutError: order service timed out"}
    row = only_row(decode(request(span(events=events, status=status)), None))
    assert (row["error_type"], row["error_message"]) == ("TimeoutError", "order service timed out")
    assert row["status"] == "ERROR"
    assert row["events"] == [
        {"name": "retry", "timestamp": "2023-11-14T22:13:20.123457789Z", "attributes": {"n": 1}},
        {
            "name": "exception",
            "timestamp": "2023-11-14T22:13:20.123458789Z",
            "attributes": {
                "exception": {
                    "type": "TimeoutError",
                    "message": "order service timed out",
                    "stacktrace": "Traceback (most recent call last): ...",
                }
            },
        },
        {
            "name": "exception",
            "timestamp": "2023-11-14T22:13:20.123459789Z",
            "attributes": {"exception": {"type": "Later", "message": "no"}},
        },
    ]


def test_without_an_exception_event_errors_come_from_status_and_error_type() -> None:
    failed = only_row(_json(request(span(status={"code": 2, "message": "HTTP 500"})), None))
    assert (failed["error_type"], failed["error_message"]) == (None, "HTTP 500")
    typed = span({"error.type": "ServerError"}, status={"code": 2, "message": "HTTP 500"})
    row = only_row(_json(request(typed), None))
    assert (row["error_type"], row["error_message"]) == ("ServerError", "HTTP 500")
    ok = only_row(_json(request(span(status={"code": 1, "message": "fine"})), None))
    assert (ok["error_type"], ok["error_message"]) == (None, None)


def test_links_keep_their_ids_and_attributes() -> None:
    expected = [{"trace_id": TRACE, "span_id": PARENT, "attributes": {"why": "retry"}}]
    links = [{"traceId": TRACE, "spanId": PARENT, "attributes": key_values({"why": "retry"})}]
    assert only_row(_json(request(span(links=links)), None))["links"] == expected

    message = to_proto(request(span()))
    link = message.resource_spans[0].scope_spans[0].spans[0].links.add()
    link.trace_id, link.span_id = bytes.fromhex(TRACE), bytes.fromhex(PARENT)
    attribute = link.attributes.add()
    attribute.key, attribute.value.string_value = "why", "retry"
    decoded = decode_protobuf(message.SerializeToString(), default_project="fallback")
    assert only_row(decoded)["links"] == expected


def test_pre_1_0_otlp_json_with_instrumentation_library_spans_is_read() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values({"service.name": "old"})},
                "instrumentationLibrarySpans": [
                    {"instrumentationLibrary": {"name": "legacy.lib"}, "spans": [span()]}
                ],
            }
        ]
    }
    row = only_row(_json(doc, None))
    assert (row["project"], row["scope_name"], row["span_id"]) == ("old", "legacy.lib", SPAN)


@pytest.mark.parametrize(
    ("resource", "project"),
    [
        ({"openinference.project.name": "support", "service.name": "svc"}, "support"),
        ({"service.name": "svc"}, "svc"),
        ({"openinference.project.name": "", "service.name": "svc"}, "svc"),
        ({"host.name": "box"}, "fallback"),
    ],
)
def test_project_is_openinference_project_then_service_then_default(
    decode: Wire, resource: dict[str, Any], project: str
) -> None:
    doc = request(span(), resource=resource)
    assert only_row(decode(doc, None))["project"] == project
    assert only_row(decode(doc, "forced"))["project"] == "forced"


def test_each_resource_gives_its_own_project() -> None:
    doc = request(span(), resource={"service.name": "a"})
    other = request(span(span_id="0000000000000002"), resource={"service.name": "b"})
    doc["resourceSpans"] += other["resourceSpans"]
    doc["resourceSpans"].append({"scopeSpans": [{"spans": [span(span_id="0000000000000003")]}]})
    rows = rows_of(_json(doc, None))
    assert [(r["span_id"], r["project"]) for r in rows] == [
        (SPAN, "a"),
        ("0000000000000002", "b"),
        ("0000000000000003", "fallback"),
    ]


def test_a_span_ending_before_it_starts_is_kept_with_zero_duration(decode: Wire) -> None:
    decoded = decode(request(span(duration_ns=-5_000_000)), None)
    row = only_row(decoded)
    assert (row["start_time"], row["end_time"], row["latency_ms"]) == (START_TIME, START_TIME, 0.0)
    assert decoded.warnings == [
        f"span {SPAN}: end time before start time; stored with zero duration"
    ]
    assert "warnings: span" in decoded.message()


def test_dotted_keys_that_collide_lose_nothing() -> None:
    assert unflatten({"a": 1, "a.b": 2}) == {"a": 1, "a.b": 2}
    assert unflatten({"a.b": 2, "a": 1}) == {"a": {"b": 2, "": 1}}
    assert unflatten({"x.0": "p", "x.1": "q"}) == {"x": ["p", "q"]}
    assert unflatten({"x.0": "p", "x.2": "q"}) == {"x": {"0": "p", "2": "q"}}


def test_decoded_attributes_are_queryable_json_in_the_store(store: Store) -> None:
    attributes = {
        **OPENINFERENCE_LLM,
        "tool.parameters": '{"order_id": 42}',
        "blob": b"\x00\x01",
        "list": [1, "two"],
    }
    store.write(_protobuf(request(span(attributes)), None).rows.table())
    with store.reader() as reader:
        found = reader.rows(
            """SELECT attributes->>'$.tool.parameters.order_id',
                      attributes->>'$.llm.input_messages[0].message.role',
                      attributes->>'$.blob',
                      attributes->>'$.list[1]',
                      json_type(attributes->'$.llm.invocation_parameters'),
                      input_value
               FROM spans"""
        )
    assert found == [("42", "user", "AAE=", "two", "OBJECT", OPENINFERENCE_LLM["input.value"])]


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("2023-11-14T22:13:20.123456789Z", START),
        ("2023-11-14T22:13:20.123456789+00:00", START),
        ("2023-11-15T00:13:20.123456789+02:00", START),
        ("2023-11-14T17:13:20.123456789-05:00", START),
        ("2023-11-14T22:13:20.123456789", START),  # no offset: UTC
        ("2023-11-14T22:13:20Z", 1_700_000_000_000_000_000),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000_500_000_000),
        ("2023-11-14 22:13:20.123456+00:00", START - 789),
        ("1700000000123456789", START),
        (START, START),
    ],
)
def test_span_json_times_are_iso_text_or_nanoseconds(text: Any, nanoseconds: int) -> None:
    assert parse_time(text, "start_time") == nanoseconds


@pytest.mark.parametrize("bad", ["yesterday", "", None, True, {"t": 1}])
def test_span_json_times_that_are_not_times_are_rejected(bad: Any) -> None:
    with pytest.raises(SpanRejected, match="start_time"):
        parse_time(bad, "start_time")
