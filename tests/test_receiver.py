"""The OTLP/HTTP receiver end to end: real exporters, real HTTP on loopback, a real DuckDB file.

Every test reads back what the store holds: a status code alone proves nothing. A 200 means
"committed", so stored rows are read right after the answer, without waiting.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pyarrow as pa
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from tests.conftest import (
    CollectingExporter,
    LiveServer,
    encoded,
    make_agent_trace,
    sdk_provider,
    wait_until,
)
from traceproof.ingest.normalize import MAX_VALUE_DEPTH
from traceproof.ingest.otlp import decode_json, decode_protobuf
from traceproof.settings import Settings
from traceproof.storage import Store

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
BASE = datetime(2026, 1, 1)

# google.rpc.Code values the OTLP specification asks for.
INVALID_ARGUMENT = 3
UNAVAILABLE = 14


# -- exporting with the real SDK ------------------------------------------------------------------


class RecordingExporter(OTLPSpanExporter):
    """The real OTLP/HTTP exporter; remembers the spans the server acknowledged."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", 15)
        super().__init__(endpoint=base_url + "/v1/traces", **kwargs)
        self.acked: list[ReadableSpan] = []
        self.failures = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.acked.extend(spans)
            else:
                self.failures += 1
        return result

    @property
    def acked_ids(self) -> set[tuple[str, str]]:
        return {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in self.acked}


def batch_provider(exporter: OTLPSpanExporter, project: str = "tests") -> TracerProvider:
    resource = Resource.create({"service.name": "shop", "openinference.project.name": project})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def agent_spans(*, project: str = "tests", fail_tool: bool = False, turn: int = 0) -> list[Any]:
    """The spans of one agent trace (AGENT → LLM, TOOL), as the SDK hands them to exporters."""
    collector = CollectingExporter()
    make_agent_trace(sdk_provider(collector, project=project), fail_tool=fail_tool, turn=turn)
    return collector.spans


def agent_request(**kwargs: Any) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encoded(agent_spans(**kwargs)))


def with_trace_id(request: ExportTraceServiceRequest, trace_id: bytes) -> ExportTraceServiceRequest:
    out = copy.deepcopy(request)
    for span in iter_spans(out):
        span.trace_id = trace_id
    return out


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[PbSpan]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            yield from scope_spans.spans


def one_span_requests(request: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest]:
    """One request per span, each keeping its resource and scope."""
    out = []
    for span in iter_spans(request):
        single = copy.deepcopy(request)
        scope_spans = single.resource_spans[0].scope_spans[0]
        del scope_spans.spans[:]
        scope_spans.spans.add().CopyFrom(span)
        out.append(single)
    return out


# -- plain HTTP -----------------------------------------------------------------------------------


def post(
    server: LiveServer,
    body: bytes,
    content_type: str | None = PROTOBUF,
    path: str = "/v1/traces",
    **headers: str,
) -> httpx2.Response:
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type is not None:
        sent["content-type"] = content_type
    return httpx2.post(server.url + path, content=body, headers=sent, timeout=60)


def post_json(server: LiveServer, document: Any) -> httpx2.Response:
    return post(server, json.dumps(document).encode(), JSON)


def rpc_status(response: httpx2.Response) -> tuple[int, str]:
    """The ``google.rpc.Status`` of an error answer, in the request's encoding."""
    if response.headers["content-type"].startswith(PROTOBUF):
        status = Status.FromString(response.content)
        return status.code, status.message
    body = response.json()
    return body["code"], body["message"]


def partial_success(response: httpx2.Response) -> tuple[int, str]:
    """(rejected spans, error message) of a 200 answer, in either encoding."""
    assert response.status_code == 200, response.content[:500]
    if response.headers["content-type"].startswith(PROTOBUF):
        parsed = ExportTraceServiceResponse.FromString(response.content)
        return parsed.partial_success.rejected_spans, parsed.partial_success.error_message
    body = response.json().get("partialSuccess", {})
    return int(body.get("rejectedSpans", 0)), body.get("errorMessage", "")


# -- OTLP/JSON as the specification spells it -----------------------------------------------------


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": value}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def json_span(
    trace: int,
    span: int,
    *,
    parent: int | None = None,
    name: str = "step",
    start_ms: int = 0,
    end_ms: int = 10,
    attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": f"{trace:032x}",
        "spanId": f"{span:016x}",
        "name": name,
        "startTimeUnixNano": str(BASE_NS + start_ms * 1_000_000),
        "endTimeUnixNano": str(BASE_NS + end_ms * 1_000_000),
        "attributes": key_values(attributes or {}),
    }
    if parent is not None:
        out["parentSpanId"] = f"{parent:016x}"
    out.update(fields)
    return out


def json_request(*resources: tuple[dict[str, Any] | None, list[dict[str, Any]]]) -> dict[str, Any]:
    """``resources``: (resource attributes, spans) pairs."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(attrs)} if attrs is not None else {},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}],
            }
            for attrs, spans in resources
        ]
    }


# -- reading the store ----------------------------------------------------------------------------


def count_spans(store: Store) -> int:
    with store.reader() as reader:
        return int(reader.scalar("SELECT count(*) FROM spans"))


def snapshot(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every stored span and trace row, in a fixed order."""
    with store.reader() as reader:
        spans = reader.rows("SELECT * FROM spans ORDER BY trace_id, span_id")
        traces = reader.rows("SELECT * FROM traces ORDER BY project, trace_id")
    return spans, traces


def trace_row(store: Store, trace_id: str) -> dict[str, Any]:
    with store.reader() as reader:
        (row,) = reader.dicts("SELECT * FROM traces WHERE trace_id = ?", [trace_id])
    return row


def at_us(ns: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def serve_with(tmp_path: Any) -> Iterator[Callable[..., LiveServer]]:
    """Starts a live server on a store of its own with the given settings."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> LiveServer:
            settings = Settings(db=tmp_path / "custom.duckdb", **overrides)
            store = stack.enter_context(Store.open(settings.db, settings))
            return stack.enter_context(LiveServer(store, settings))

        yield start


@pytest.fixture
def populated(live_server: LiveServer) -> LiveServer:
    """The live server after one acknowledged trace, the data refused requests must not touch."""
    response = post(live_server, encoded(agent_spans(fail_tool=True)))
    assert response.status_code == 200
    assert count_spans(live_server.store) == 3
    return live_server


def stall_writer(store: Store) -> threading.Event:
    """Hold the writer thread between two transactions until the returned event is set.

    A future's done-callbacks run in the thread that resolves it, the writer: a callback that
    waits keeps the writer from taking the next batches, which stay queued. The stall batch is
    one empty table, so it stores nothing.
    """
    release = threading.Event()
    me = threading.current_thread()
    empty = decode_json(b"{}", default_project="x").rows.table()
    for _ in range(20):
        entered, too_late = threading.Event(), threading.Event()

        def hold(_: object, entered: threading.Event = entered, late: threading.Event = too_late):
            if threading.current_thread() is me:
                late.set()  # committed before the callback was added: try again
                return
            entered.set()
            release.wait(30)

        store.submit(empty).add_done_callback(hold)
        wait_until(lambda e=entered, t=too_late: e.is_set() or t.is_set(), what="the writer")
        if entered.is_set():
            return release
    raise AssertionError("could not stall the writer")


# -- what gets stored -----------------------------------------------------------------------------


def test_sdk_exporter_spans_are_stored_with_their_promoted_columns(
    live_server: LiveServer,
) -> None:
    exporter = RecordingExporter(live_server.url)
    provider = batch_provider(exporter)
    make_agent_trace(provider, fail_tool=True)
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert (len(exporter.acked), exporter.failures) == (3, 0)
    sent = {s.name: s for s in exporter.acked}

    with live_server.store.reader() as reader:
        rows = {r["name"]: r for r in reader.dicts("SELECT * FROM spans")}
        tool_parameters = reader.rows(
            "SELECT attributes->>'$.tool.parameters.order_id',"
            " json_type(attributes->'$.tool.parameters')"
            " FROM spans WHERE name = 'lookup_order'"
        )
        first_message = reader.rows(
            "SELECT attributes->>'$.llm.input_messages[0].message.role',"
            " attributes->>'$.llm.input_messages[0].message.content'"
            " FROM spans WHERE name = 'llm'"
        )
        exception_event = reader.rows(
            "SELECT events->>'$[0].name', events->>'$[0].attributes.exception.type'"
            " FROM spans WHERE name = 'lookup_order'"
        )
        service = reader.rows("SELECT DISTINCT resource->>'$.service.name' FROM spans")
    assert set(rows) == {"agent", "llm", "lookup_order"}
    agent, llm, tool = rows["agent"], rows["llm"], rows["lookup_order"]
    trace_id = f"{sent['agent'].context.trace_id:032x}"

    for name, row in rows.items():
        span = sent[name]
        assert row["project"] == "tests"
        assert row["trace_id"] == trace_id
        assert row["span_id"] == f"{span.context.span_id:016x}"
        assert row["start_time"] == at_us(span.start_time)
        assert row["end_time"] == at_us(span.end_time)
        assert row["latency_ms"] == pytest.approx((span.end_time - span.start_time) / 1e6)
        assert row["otel_kind"] == "INTERNAL"
        assert row["scope_name"] == "tests"
    assert agent["parent_span_id"] is None
    assert llm["parent_span_id"] == tool["parent_span_id"] == agent["span_id"]

    assert {k: agent[k] for k in ("span_kind", "status", "session_id", "user_id")} == {
        "span_kind": "AGENT",
        "status": "UNSET",
        "session_id": "session-1",
        "user_id": "user-1",
    }
    assert (agent["input_value"], agent["output_value"]) == ("question 0", "answer 0")
    assert json.loads(agent["attributes"]).get("input") is None  # moved to its column, once

    assert (llm["span_kind"], llm["model"]) == ("LLM", "gpt-4o-mini")
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["total_tokens"]) == (100, 20, 120)
    assert first_message == [("user", "question 0")]

    assert (tool["span_kind"], tool["tool_name"], tool["status"]) == (
        "TOOL",
        "lookup_order",
        "ERROR",
    )
    assert (tool["error_type"], tool["error_message"]) == (
        "TimeoutError",
        "order service timed out",
    )
    assert tool["status_message"] == "TimeoutError: order service timed out"
    assert tool_parameters == [("42", "OBJECT")]  # JSON text parsed: queryable by path
    assert exception_event == [("exception", "TimeoutError")]
    assert service == [("shop",)]

    trace = trace_row(live_server.store, trace_id)
    assert {k: v for k, v in trace.items() if k not in ("start_time", "end_time")} == {
        "project": "tests",
        "trace_id": trace_id,
        "name": "agent",
        "root_span_id": agent["span_id"],
        "has_root": True,
        "span_kind": "AGENT",
        "status": "ERROR",
        "latency_ms": pytest.approx(agent["latency_ms"], abs=0.001),
        "span_count": 3,
        "error_count": 1,
        "llm_span_count": 1,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "session_id": "session-1",
        "user_id": "user-1",
        "input_preview": "question 0",
        "output_preview": "answer 0",
    }
    assert (trace["start_time"], trace["end_time"]) == (agent["start_time"], agent["end_time"])


def test_a_protobuf_request_is_answered_with_a_protobuf_export_response(
    live_server: LiveServer,
) -> None:
    response = post(live_server, encoded(agent_spans()))
    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    assert count_spans(live_server.store) == 3


def test_a_json_request_is_answered_with_a_json_export_response(live_server: LiveServer) -> None:
    document = json_request(({"service.name": "svc"}, [json_span(1, 1), json_span(1, 2, parent=1)]))
    response = post(live_server, json.dumps(document).encode(), "application/json; charset=utf-8")
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.json() == {}  # no partialSuccess: everything was kept
    assert count_spans(live_server.store) == 2


def rich_request(trace_id: bytes) -> ExportTraceServiceRequest:
    """A request that uses every AnyValue kind, both enums, events, links and int64 values."""

    def value(v: Any) -> AnyValue:
        out = AnyValue()
        if isinstance(v, bool):
            out.bool_value = v
        elif isinstance(v, int):
            out.int_value = v
        elif isinstance(v, float):
            out.double_value = v
        elif isinstance(v, bytes):
            out.bytes_value = v
        elif isinstance(v, list):
            out.array_value.SetInParent()
            for item in v:
                out.array_value.values.add().CopyFrom(value(item))
        elif isinstance(v, dict):
            out.kvlist_value.SetInParent()
            for key, item in v.items():
                out.kvlist_value.values.add(key=key).value.CopyFrom(value(item))
        else:
            out.string_value = v
        return out

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    for key, v in {"openinference.project.name": "wire", "service.name": "svc"}.items():
        resource_spans.resource.attributes.add(key=key).value.CopyFrom(value(v))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "wire-scope"
    root = scope_spans.spans.add(
        trace_id=trace_id,
        span_id=bytes.fromhex("a1a1a1a1a1a1a1a1"),
        name="handle request",
        kind=PbSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=BASE_NS + 123_456_789,
        end_time_unix_nano=BASE_NS + 2_000_000_000,
    )
    root.status.code = PbStatus.STATUS_CODE_OK
    for key, v in {"input.value": "hi", "session.id": "s-9"}.items():
        root.attributes.add(key=key).value.CopyFrom(value(v))
    child = scope_spans.spans.add(
        trace_id=trace_id,
        span_id=bytes.fromhex("b2b2b2b2b2b2b2b2"),
        parent_span_id=root.span_id,
        name="call model",
        kind=PbSpan.SPAN_KIND_CLIENT,
        start_time_unix_nano=BASE_NS + 500_000_000,
        end_time_unix_nano=BASE_NS + 1_500_000_000,
    )
    child.status.code = PbStatus.STATUS_CODE_ERROR
    child.status.message = "upstream 529"
    for key, v in CHILD_ATTRIBUTES.items():
        child.attributes.add(key=key).value.CopyFrom(value(v))
    event = child.events.add(name="exception", time_unix_nano=BASE_NS + 1_400_000_000)
    for key, v in {"exception.type": "OverloadedError", "exception.message": "try later"}.items():
        event.attributes.add(key=key).value.CopyFrom(value(v))
    link = child.links.add(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)))
    link.attributes.add(key="why").value.CopyFrom(value("retry of"))
    return request


CHILD_ATTRIBUTES: dict[str, Any] = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "claude",
    "llm.token_count.prompt": 7,
    "llm.token_count.completion": 5,
    "text": "naïve — 日本語 🙂",
    "flag": True,
    "big": 2**53 + 1,  # not exact as a JSON double: must stay an integer all the way
    "ratio": 2.5,
    "raw": b"\x00\x01\xfe\xff",
    "list": ["a", 1, False, 0.5],
    "empty": [],
    "map": {"inner": "x", "n": 7, "deeper": {"list": [1, 2]}},
}

STORED_CHILD_ATTRIBUTES = {
    "openinference": {"span": {"kind": "LLM"}},
    "llm": {"model_name": "claude", "token_count": {"prompt": 7, "completion": 5}},
    "text": "naïve — 日本語 🙂",
    "flag": True,
    "big": 2**53 + 1,
    "ratio": 2.5,
    "raw": base64.b64encode(b"\x00\x01\xfe\xff").decode(),
    "list": ["a", 1, False, 0.5],
    "empty": [],
    "map": {"inner": "x", "n": 7, "deeper": {"list": [1, 2]}},
}


def _ids_to_hex(node: Any) -> Any:
    """Protobuf's JSON mapping (base64 ids) to OTLP/JSON's (hex ids)."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId")
            else _ids_to_hex(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_ids_to_hex(v) for v in node]
    return node


WIRES: dict[str, Callable[[ExportTraceServiceRequest], tuple[bytes, str]]] = {
    # The SDK's encoding.
    "protobuf": lambda r: (r.SerializeToString(), PROTOBUF),
    # The OTLP/JSON specification: hex ids, enums as numbers, int64 as strings.
    "otlp-json": lambda r: (
        json.dumps(_ids_to_hex(json_format.MessageToDict(r, use_integers_for_enums=True))).encode(),
        JSON,
    ),
    # What generic protobuf-to-JSON tools write: base64 ids, enum names like SPAN_KIND_SERVER.
    "protobuf-json": lambda r: (json.dumps(json_format.MessageToDict(r)).encode(), JSON),
    # The same with the proto's own snake_case field names.
    "protobuf-json-snake-case": lambda r: (
        json.dumps(json_format.MessageToDict(r, preserving_proto_field_name=True)).encode(),
        JSON,
    ),
}


def test_every_wire_spelling_stores_the_same_rows_and_every_value_kind(
    live_server: LiveServer,
) -> None:
    stored: dict[str, list[dict[str, Any]]] = {}
    for i, (wire, encode) in enumerate(WIRES.items(), start=1):
        trace_id = bytes([i]) * 16
        body, content_type = encode(rich_request(trace_id))
        if wire == "otlp-json":  # the spellings each wire is here for
            assert b'"kind": 2' in body and trace_id.hex().encode() in body
        elif wire.startswith("protobuf-json"):
            assert b'"SPAN_KIND_SERVER"' in body and b'"STATUS_CODE_ERROR"' in body
            assert base64.b64encode(trace_id) in body
        if content_type == JSON:
            assert b'"9007199254740993"' in body  # int64 as a string
        response = post(live_server, body, content_type)
        assert partial_success(response) == (0, ""), wire
        assert response.headers["content-type"] == content_type
        with live_server.store.reader() as reader:
            rows = reader.dicts(
                "SELECT * EXCLUDE (trace_id) FROM spans WHERE trace_id = ? ORDER BY span_id",
                [trace_id.hex()],
            )
        stored[wire] = rows

    root, child = stored["protobuf"]
    for wire, rows in stored.items():
        assert rows == stored["protobuf"], f"{wire} stored other values than protobuf"

    assert json.loads(child["attributes"]) == STORED_CHILD_ATTRIBUTES
    assert (root["otel_kind"], root["status"], child["otel_kind"], child["status"]) == (
        "SERVER",
        "OK",
        "CLIENT",
        "ERROR",
    )
    assert root["start_time"] == BASE + timedelta(microseconds=123_456)  # ns cut to µs
    assert root["end_time"] == BASE + timedelta(seconds=2)
    assert root["latency_ms"] == pytest.approx(2000 - 123.456789)
    assert (root["span_id"], child["parent_span_id"]) == ("a1a1a1a1a1a1a1a1", "a1a1a1a1a1a1a1a1")
    assert (root["project"], root["scope_name"], root["session_id"]) == (
        "wire",
        "wire-scope",
        "s-9",
    )
    assert (root["input_value"], child["status_message"]) == ("hi", "upstream 529")
    assert (child["span_kind"], child["model"], child["total_tokens"]) == ("LLM", "claude", 12)
    assert (child["error_type"], child["error_message"]) == ("OverloadedError", "try later")
    assert json.loads(child["links"]) == [
        {
            "trace_id": bytes(range(1, 17)).hex(),
            "span_id": bytes(range(1, 9)).hex(),
            "attributes": {"why": "retry of"},
        }
    ]
    with live_server.store.reader() as reader:
        by_path = reader.rows(
            "SELECT DISTINCT CAST(attributes->>'$.big' AS HUGEINT),"
            " attributes->>'$.map.deeper.list[1]', attributes->>'$.text'"
            " FROM spans WHERE name = 'call model'"
        )
        projects = reader.rows("SELECT name FROM projects")
    assert by_path == [(2**53 + 1, "2", "naïve — 日本語 🙂")]
    assert projects == [("wire",)]


# -- compression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_the_sdk_exporter_compressed_bodies_are_stored(
    live_server: LiveServer, compression: Compression
) -> None:
    exporter = RecordingExporter(live_server.url, compression=compression)
    provider = batch_provider(exporter)
    for turn in range(3):
        make_agent_trace(provider, turn=turn)
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert (len(exporter.acked), exporter.failures) == (9, 0)
    with live_server.store.reader() as reader:
        inputs = reader.rows("SELECT input_value FROM spans WHERE name = 'agent' ORDER BY 1")
    assert inputs == [("question 0",), ("question 1",), ("question 2",)]
    assert count_spans(live_server.store) == 9


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_json_bodies_are_stored(
    live_server: LiveServer, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    document = json_request(
        ({"service.name": "zipped"}, [json_span(7, 1), json_span(7, 2, parent=1)])
    )
    response = post(
        live_server, compress(json.dumps(document).encode()), JSON, content_encoding=encoding
    )
    assert partial_success(response) == (0, "")
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT project, span_id FROM spans ORDER BY 2") == [
            ("zipped", f"{1:016x}"),
            ("zipped", f"{2:016x}"),
        ]


def test_a_gzip_body_of_several_members_is_read_to_the_end(live_server: LiveServer) -> None:
    """RFC 1952: a gzip body is a series of members. Acknowledging it means storing all of it."""
    first = encoded(agent_spans(project="first"))
    second = encoded(agent_spans(project="second"))
    body = gzip.compress(first) + gzip.compress(second)
    assert gzip.decompress(body) == first + second  # concatenated protobuf: one valid request
    response = post(live_server, body, content_encoding="gzip")
    assert partial_success(response) == (0, "")
    with live_server.store.reader() as reader:
        stored = reader.rows("SELECT project, count(*) FROM spans GROUP BY 1 ORDER BY 1")
    assert stored == [("first", 3), ("second", 3)]


# -- refused requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/grpc", "text/json"])
def test_other_content_types_are_refused_with_415(
    populated: LiveServer, content_type: str | None
) -> None:
    before = snapshot(populated.store)
    response = post(populated, encoded(agent_spans()), content_type)
    assert response.status_code == 415
    assert PROTOBUF in response.text and JSON in response.text  # says what to send instead
    assert snapshot(populated.store) == before


def _truncated_protobuf() -> bytes:
    return encoded(agent_spans())[:-7]


MALFORMED: dict[str, tuple[str, Callable[[], bytes], dict[str, str]]] = {
    "malformed JSON": (JSON, lambda: b'{"resourceSpans": [{"scopeSpans": [', {}),
    "JSON that is not an object": (JSON, lambda: b'[{"resourceSpans": []}]', {}),
    "resourceSpans that is not a list": (JSON, lambda: b'{"resourceSpans": {"a": 1}}', {}),
    "JSON nested past any sense": (JSON, lambda: b"[" * 200_000 + b"]" * 200_000, {}),
    "JSON that is not UTF-8": (JSON, lambda: b'{"resourceSpans": "\xff\xfe"}', {}),
    "truncated protobuf": (PROTOBUF, _truncated_protobuf, {}),
    "garbage bytes": (PROTOBUF, lambda: bytes(range(255, -1, -1)) * 4, {}),
    "text sent as protobuf": (PROTOBUF, lambda: b"hello, world", {}),
    "JSON sent as protobuf": (PROTOBUF, lambda: b'{"resourceSpans": []}', {}),
    "truncated gzip": (
        PROTOBUF,
        lambda: gzip.compress(encoded(agent_spans()))[:-12],
        {"content_encoding": "gzip"},
    ),
    "gzip header on plain bytes": (
        PROTOBUF,
        lambda: encoded(agent_spans()),
        {"content_encoding": "gzip"},
    ),
    "unsupported content encoding": (
        PROTOBUF,
        lambda: encoded(agent_spans()),
        {"content_encoding": "br"},
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bodies_are_refused_with_400_and_an_rpc_status(
    populated: LiveServer, case: str
) -> None:
    content_type, body, headers = MALFORMED[case]
    before = snapshot(populated.store)
    response = post(populated, body(), content_type, **headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == content_type  # the request's own encoding
    code, message = rpc_status(response)
    assert code == INVALID_ARGUMENT
    assert len(message) > 10
    assert snapshot(populated.store) == before
    # The server is still fine: the next good request is stored.
    assert post(populated, encoded(agent_spans())).status_code == 200
    assert count_spans(populated.store) == 6


def _shape(spans: Any = None, **parts: Any) -> dict[str, Any]:
    """A one-span OTLP/JSON request with one part replaced by a value of the wrong type."""
    span = json_span(10, 1, name="odd")
    span.update(parts.pop("span", {}))
    scope_spans: dict[str, Any] = {"spans": [span] if spans is None else spans}
    if "scope" in parts:
        scope_spans["scope"] = parts.pop("scope")
    resource_spans: dict[str, Any] = {"scopeSpans": parts.pop("scope_spans", [scope_spans])}
    if "resource" in parts:
        resource_spans["resource"] = parts.pop("resource")
    return {"resourceSpans": [resource_spans]}


WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "spans that is not a list": _shape(spans=5),
    "scopeSpans that is not a list": _shape(scope_spans=5),
    "resource that is not an object": _shape(resource=5),
    "events that is not a list": _shape(span={"events": 5}),
    "links that is not a list": _shape(span={"links": 5}),
    "arrayValue values that is not a list": _shape(
        span={"attributes": [{"key": "a", "value": {"arrayValue": {"values": 5}}}]}
    ),
    "kvlistValue values that is not a list": _shape(
        span={"attributes": [{"key": "a", "value": {"kvlistValue": {"values": 5}}}]}
    ),
    "scope name that is not a string": _shape(scope={"name": 5}),
    "status message that is not a string": _shape(span={"status": {"code": 2, "message": 5}}),
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES))
def test_json_of_the_wrong_shape_is_answered_per_otlp_and_never_with_500(
    populated: LiveServer, case: str
) -> None:
    """Malformed as a whole: 400. Malformed inside a span: that span is rejected, or kept with
    its value as text. Either way every span sent is accounted for and nothing else changes."""
    before = snapshot(populated.store)
    response = post_json(populated, WRONG_SHAPES[case])
    if response.status_code not in (200, 400):
        # pytrace=False: the server thread may still be printing the traceback of its error,
        # and CPython 3.11's ast parser (used by both tracebacks) is not thread-safe.
        pytest.fail(
            f"answered {response.status_code} {response.text[:200]!r}: expected 400, or 200"
            " with the span rejected or kept",
            pytrace=False,
        )
    if response.status_code == 400:
        assert rpc_status(response)[0] == INVALID_ARGUMENT
        assert snapshot(populated.store) == before
    else:
        rejected, _ = partial_success(response)
        added = count_spans(populated.store) - len(before[0])
        assert rejected + added == 1
    assert post(populated, encoded(agent_spans())).status_code == 200  # still serving


def test_bodies_over_the_size_limit_are_refused_with_413(serve_with: Any) -> None:
    server = serve_with(max_request_bytes=4096)
    small = json_request(({"service.name": "svc"}, [json_span(1, 1, name="fits")]))
    assert partial_success(post_json(server, small)) == (0, "")
    before = snapshot(server.store)

    big_document = json_request(
        ({"service.name": "svc"}, [json_span(2, 1, attributes={"blob": "x" * 8000})])
    )
    big = json.dumps(big_document).encode()
    declared = post(server, big, JSON)  # Content-Length says it at once
    streamed = httpx2.post(  # chunked: no length given, the limit holds while reading
        server.url + "/v1/traces",
        content=iter([big[i : i + 1000] for i in range(0, len(big), 1000)]),
        headers={"content-type": JSON},
        timeout=60,
    )
    bomb = post(server, gzip.compress(big), JSON, content_encoding="gzip")  # small until inflated
    assert len(gzip.compress(big)) < 4096 < len(big)
    for response in (declared, streamed, bomb):
        assert response.status_code == 413
        assert "4096" in rpc_status(response)[1]
    assert snapshot(server.store) == before


# -- awkward but valid data -----------------------------------------------------------------------


def test_a_span_that_ends_before_it_starts_is_kept_with_zero_duration(
    live_server: LiveServer,
) -> None:
    collector = CollectingExporter()
    tracer = sdk_provider(collector).get_tracer("tests")
    span = tracer.start_span("backwards", start_time=BASE_NS + 5_000_000_000)
    span.end(end_time=BASE_NS + 2_000_000_000)
    response = post(live_server, encoded(collector.spans))
    rejected, message = partial_success(response)
    assert rejected == 0
    assert "end time before start time" in message  # kept, with a warning to the sender
    with live_server.store.reader() as reader:
        (row,) = reader.dicts("SELECT trace_id, start_time, end_time, latency_ms FROM spans")
    start = BASE + timedelta(seconds=5)
    assert (row["start_time"], row["end_time"], row["latency_ms"]) == (start, start, 0.0)
    trace = trace_row(live_server.store, row["trace_id"])
    assert (trace["latency_ms"], trace["start_time"], trace["end_time"]) == (0.0, start, start)


def test_ten_megabyte_values_are_stored_intact(live_server: LiveServer) -> None:
    unit = "0123456789 abcdefghijklmnopqrstuvwxyz é 日本 🙂\n"
    big_input = (unit * (10_000_000 // len(unit) + 1))[:10_000_000]
    big_blob = big_input[::-1]
    exporter = RecordingExporter(live_server.url, timeout=60)
    provider = batch_provider(exporter)
    with provider.get_tracer("tests").start_as_current_span(
        "huge", attributes={"input.value": big_input, "blob": big_blob}
    ):
        pass
    assert provider.force_flush(60_000)
    provider.shutdown()
    assert (len(exporter.acked), exporter.failures) == (1, 0)
    with live_server.store.reader() as reader:
        stored = reader.rows(
            "SELECT length(input_value), sha256(input_value),"
            " length(attributes->>'$.blob'), sha256(attributes->>'$.blob') FROM spans"
        )
    # Lengths and digests: a failure must not print ten megabytes.
    sha = hashlib.sha256
    expected = (10_000_000, sha(big_input.encode()).hexdigest())
    expected += (10_000_000, sha(big_blob.encode()).hexdigest())
    assert stored == [expected]


def _nested_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for level in range(depth):
        value = {"kvlistValue": {"values": [{"key": f"k{level}", "value": value}]}}
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = {f"k{level}": value}
    return value


def _nested_pb(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for level in range(depth):
        outer = AnyValue()
        outer.kvlist_value.values.add(key=f"k{level}").value.CopyFrom(value)
        value = outer
    return value


@pytest.mark.parametrize("wire", ["json", "protobuf"])
@pytest.mark.parametrize("depth", [MAX_VALUE_DEPTH, MAX_VALUE_DEPTH + 1, 200])
def test_values_nested_up_to_the_limit_are_kept_and_deeper_ones_reject_only_their_span(
    live_server: LiveServer, wire: str, depth: int
) -> None:
    """The same nesting gets the same answer over either wire (the limit is MAX_VALUE_DEPTH)."""
    if wire == "json":
        deep = json_span(3, 1, name="deep")
        deep["attributes"] = [{"key": "tree", "value": _nested_json(depth)}]
        document = json_request(({"service.name": "svc"}, [deep, json_span(3, 2, name="sibling")]))
        response = post_json(live_server, document)
    else:
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        for span_id, name in ((1, "deep"), (2, "sibling")):
            spans.add(
                trace_id=(3).to_bytes(16, "big"),
                span_id=span_id.to_bytes(8, "big"),
                name=name,
                start_time_unix_nano=BASE_NS,
                end_time_unix_nano=BASE_NS + 1000,
            )
        spans[0].attributes.add(key="tree").value.CopyFrom(_nested_pb(depth))
        response = post(live_server, request.SerializeToString())
    rejected, message = partial_success(response)
    with live_server.store.reader() as reader:
        names = reader.rows("SELECT name FROM spans ORDER BY 1")
        trees = reader.rows("SELECT attributes->'$.tree' FROM spans WHERE name = 'deep'")
    if depth <= MAX_VALUE_DEPTH:
        assert (rejected, message) == (0, "")
        assert names == [("deep",), ("sibling",)]
        assert json.loads(trees[0][0]) == _nested_dict(depth)
    else:
        assert rejected == 1
        assert f"nested deeper than {MAX_VALUE_DEPTH} levels" in message
        assert names == [("sibling",)]  # the rest of the request is kept


def test_json_spans_that_cannot_be_kept_are_counted_and_the_rest_stored(
    live_server: LiveServer,
) -> None:
    no_trace = json_span(4, 1, name="no trace id")
    del no_trace["traceId"]
    bad_span_id = json_span(4, 2, name="bad span id", spanId="xyz")
    bad_time = json_span(4, 3, name="bad time", startTimeUnixNano="soon")
    zero_trace = json_span(0, 4, name="zero trace id")
    good = [json_span(4, 5, name="good"), json_span(4, 6, parent=5, name="good child")]
    document = json_request(
        ({"service.name": "svc"}, [no_trace, good[0], bad_span_id, bad_time, zero_trace, good[1]])
    )
    response = post_json(live_server, document)
    rejected, message = partial_success(response)
    assert response.json()["partialSuccess"]["rejectedSpans"] == "4"  # int64 as a string
    assert rejected == 4
    for reason in ("trace id is missing", "'xyz'", "'soon'", "trace id is all zeros"):
        assert reason in message
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans ORDER BY 1") == [("good",), ("good child",)]
    assert trace_row(live_server.store, f"{4:032x}")["span_count"] == 2


def test_protobuf_spans_that_cannot_be_kept_are_counted_and_the_rest_stored(
    live_server: LiveServer,
) -> None:
    request = agent_request()
    spans = list(iter_spans(request))
    spans[0].trace_id = b"\x01\x02\x03\x04\x05"
    spans[1].span_id = bytes(8)
    rejected, message = partial_success(post(live_server, request.SerializeToString()))
    assert rejected == 2
    assert "trace id has 5 bytes, expected 16" in message
    assert "span id is missing or all zeros" in message
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [(spans[2].name,)]


def test_project_is_the_openinference_project_else_the_service_else_the_default(
    serve_with: Any,
) -> None:
    server = serve_with(default_project="fallback")
    document = json_request(
        ({"openinference.project.name": "named", "service.name": "svc-a"}, [json_span(5, 1)]),
        ({"service.name": "svc-b"}, [json_span(5, 2)]),
        ({"openinference.project.name": "", "service.name": "svc-c"}, [json_span(5, 3)]),
        ({"host.name": "box"}, [json_span(5, 4)]),
        (None, [json_span(5, 5)]),
    )
    assert partial_success(post_json(server, document)) == (0, "")
    with server.store.reader() as reader:
        spans = reader.rows("SELECT span_id, project FROM spans ORDER BY 1")
        projects = reader.rows("SELECT name FROM projects ORDER BY 1")
    assert [project for _, project in spans] == ["named", "svc-b", "svc-c", "fallback", "fallback"]
    assert projects == [("fallback",), ("named",), ("svc-b",), ("svc-c",)]


def test_the_default_project_is_default(live_server: LiveServer) -> None:
    assert partial_success(post_json(live_server, json_request((None, [json_span(6, 1)])))) == (
        0,
        "",
    )
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT project FROM spans") == [("default",)]


# -- many senders, resends, order -----------------------------------------------------------------


def test_concurrent_exporters_store_exact_counts(live_server: LiveServer) -> None:
    threads, traces_each = 4, 8
    exporters = [RecordingExporter(live_server.url) for _ in range(threads)]
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            provider = sdk_provider(exporters[i], project=f"sender-{i}")  # one request per span
            for turn in range(traces_each):
                make_agent_trace(provider, fail_tool=turn % 2 == 0, turn=turn)
            provider.shutdown()
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert [(len(e.acked), e.failures) for e in exporters] == [(3 * traces_each, 0)] * threads

    with live_server.store.reader() as reader:
        per_project = reader.rows(
            "SELECT project, count(*), sum(span_count), sum(error_count), sum(total_tokens),"
            " count(DISTINCT input_preview) FROM traces GROUP BY 1 ORDER BY 1"
        )
        stored = set(reader.rows("SELECT trace_id, span_id FROM spans"))
    assert per_project == [
        (f"sender-{i}", traces_each, 3 * traces_each, traces_each // 2, 120 * traces_each, 8)
        for i in range(threads)
    ]
    assert stored == set().union(*(e.acked_ids for e in exporters))


def test_resending_spans_adds_nothing(live_server: LiveServer) -> None:
    spans = agent_spans(fail_tool=True)
    exporter = RecordingExporter(live_server.url)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    before = snapshot(live_server.store)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(list(reversed(spans))) is SpanExportResult.SUCCESS
    assert snapshot(live_server.store) == before

    # A resend that carries one new span adds that span, and counts only it in the trace.
    request = ExportTraceServiceRequest.FromString(encoded(spans))
    tool = next(s for s in iter_spans(request) if s.name == "lookup_order")
    retry = request.resource_spans[0].scope_spans[0].spans.add()
    retry.CopyFrom(tool)
    retry.span_id = bytes.fromhex("00000000000000ff")
    retry.name = "lookup_order retry"
    assert partial_success(post(live_server, request.SerializeToString())) == (0, "")
    trace = trace_row(live_server.store, tool.trace_id.hex())
    assert (trace["span_count"], trace["error_count"], trace["total_tokens"]) == (4, 2, 120)
    assert count_spans(live_server.store) == 4


@pytest.mark.parametrize("order", ["children first, root last", "root first", "root between"])
def test_a_trace_sent_span_by_span_in_any_order_equals_the_trace_sent_whole(
    live_server: LiveServer, order: str
) -> None:
    request = agent_request(fail_tool=True)
    whole = with_trace_id(request, bytes.fromhex("aa" * 16))
    pieces = one_span_requests(with_trace_id(request, bytes.fromhex("bb" * 16)))
    by_name = {next(iter_spans(p)).name: p for p in pieces}
    sequence = {
        "children first, root last": ["lookup_order", "llm", "agent"],
        "root first": ["agent", "llm", "lookup_order"],
        "root between": ["llm", "agent", "lookup_order"],
    }[order]
    for name in sequence:
        assert post(live_server, by_name[name].SerializeToString()).status_code == 200
    assert post(live_server, whole.SerializeToString()).status_code == 200

    in_pieces = trace_row(live_server.store, "bb" * 16)
    at_once = trace_row(live_server.store, "aa" * 16)
    in_pieces.pop("trace_id"), at_once.pop("trace_id")
    assert in_pieces == at_once
    assert {k: at_once[k] for k in ("name", "span_count", "error_count", "total_tokens")} == {
        "name": "agent",
        "span_count": 3,
        "error_count": 1,
        "total_tokens": 120,
    }
    assert (at_once["session_id"], at_once["input_preview"]) == ("session-1", "question 0")
    root = next(s for s in iter_spans(request) if s.name == "agent")
    assert at_once["start_time"] == at_us(root.start_time_unix_nano)
    assert at_once["end_time"] == at_us(root.end_time_unix_nano)


def test_spans_repeated_across_batches_committed_together_are_stored_once(
    live_server: LiveServer,
) -> None:
    """Batches queued while the writer is busy are committed as one group. A span repeated
    across them (an exporter retrying a request it thinks was lost) is stored once, and the
    new spans of the group are not lost with the duplicates."""
    store = live_server.store
    body = encoded(agent_spans(fail_tool=True))
    fresh = json.dumps(json_request((None, [json_span(8, 1, name="fresh")]))).encode()
    release = stall_writer(store)
    try:
        futures = [
            store.submit(decode_protobuf(body, default_project="x").rows.table()) for _ in range(3)
        ]
        futures.append(store.submit(decode_json(fresh, default_project="x").rows.table()))
    finally:
        release.set()
    results = [(f.result(timeout=30).received, f.result().added) for f in futures]
    assert results == [(3, 3), (3, 0), (3, 0), (1, 1)]
    assert partial_success(post(live_server, body)) == (0, "")  # and once more over HTTP
    with store.reader() as reader:
        counts = reader.rows("SELECT name, count(*) FROM spans GROUP BY 1 ORDER BY 1")
        trace = reader.dicts(
            "SELECT span_count, error_count, total_tokens FROM traces WHERE name = 'agent'"
        )
    assert counts == [("agent", 1), ("fresh", 1), ("llm", 1), ("lookup_order", 1)]
    assert trace == [{"span_count": 3, "error_count": 1, "total_tokens": 120}]


# -- overload -------------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_full_write_queue_answers_503_with_retry_after_and_loses_nothing_acknowledged(
    serve_with: Any,
) -> None:
    server = serve_with(queue_max_batches=1, retry_after_seconds=1)
    store = server.store
    acked_before = post(server, encoded(agent_spans(turn=0)))
    assert acked_before.status_code == 200

    exporter = RecordingExporter(server.url)
    retried = _Records()
    exporter_log = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    exporter_log.addHandler(retried)
    release = stall_writer(store)
    try:
        filler_table = decode_json(
            json.dumps(json_request((None, [json_span(9, 1, name="filler")]))).encode(),
            default_project="queued",
        ).rows.table()
        filler = store.submit(filler_table)  # the queue holds one batch: now it is full

        refused_pb = post(server, encoded(agent_spans(turn=1)))
        refused_json = post_json(server, json_request((None, [json_span(9, 2, name="refused")])))
        for response, content_type in ((refused_pb, PROTOBUF), (refused_json, JSON)):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == content_type
            assert rpc_status(response)[0] == UNAVAILABLE

        # The real exporter is refused too, and keeps retrying after Retry-After.
        spans = agent_spans(turn=2)
        sender = threading.Thread(target=exporter.export, args=(spans,))
        sender.start()
        wait_until(lambda: any("retrying" in m for m in retried.messages), what="a 503 retry")
        assert exporter.acked == []
    finally:
        release.set()
        exporter_log.removeHandler(retried)
    sender.join(30)
    assert filler.result(timeout=30).added == 1
    assert (len(exporter.acked), exporter.failures) == (3, 0)

    with store.reader() as reader:
        names = reader.rows("SELECT name FROM spans WHERE project = 'queued'")
        inputs = reader.rows("SELECT input_value FROM spans WHERE name = 'agent' ORDER BY 1")
    assert names == [("filler",)]  # the refused JSON span was not stored
    assert inputs == [("question 0",), ("question 2",)]  # turn 1 was refused, not half-stored
    assert count_spans(store) == 7

    # Once the overload is over, resending what was refused stores it.
    assert post(server, encoded(agent_spans(turn=1))).status_code == 200
    assert count_spans(store) == 10


def test_too_many_requests_in_flight_answer_503_until_one_finishes(serve_with: Any) -> None:
    server = serve_with(max_requests_in_flight=1, retry_after_seconds=2)
    empty = json.dumps({"resourceSpans": []}).encode()
    release = stall_writer(server.store)
    results: list[httpx2.Response] = []

    def send_held() -> None:
        # A probe in flight at the same moment refuses this request too: then it tries again.
        while not results or results[-1].status_code == 503:
            results.append(post(server, encoded(agent_spans(turn=7))))

    try:
        held = threading.Thread(target=send_held)
        held.start()  # admitted, decoded, queued, then waiting for the stalled writer
        busy = wait_until(
            lambda: (r := post(server, empty, JSON)).status_code == 503 and r,
            what="the receiver to be busy",
        )
        assert busy.headers["retry-after"] == "2"
        assert rpc_status(busy)[0] == UNAVAILABLE
        assert [r.status_code for r in results if r.status_code != 503] == []
    finally:
        release.set()
    held.join(30)
    assert results[-1].status_code == 200
    assert count_spans(server.store) == 3
    assert post(server, empty, JSON).status_code == 200


# -- the other endpoints --------------------------------------------------------------------------


def test_metrics_are_not_found(populated: LiveServer) -> None:
    before = snapshot(populated.store)
    response = post(populated, encoded(agent_spans()), path="/v1/metrics")
    assert response.status_code == 404
    assert "not metrics" in response.text
    assert snapshot(populated.store) == before


def test_healthz_answers_ok_without_naming_the_store(live_server: LiveServer) -> None:
    response = httpx2.get(live_server.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # the store's path is nobody's business


def test_stats_reports_what_the_receiver_stored(live_server: LiveServer) -> None:
    empty = httpx2.get(live_server.url + "/api/v1/stats")
    assert (empty.status_code, empty.json()) == (200, {"projects": []})
    for request in (
        encoded(agent_spans(project="shop", fail_tool=True)),
        encoded(agent_spans(project="shop", turn=1)),
        encoded(agent_spans(project="bank")),
    ):
        assert post(live_server, request).status_code == 200
    stats = httpx2.get(live_server.url + "/api/v1/stats").json()
    with live_server.store.reader() as reader:
        ranges = {
            project: (first, last)
            for project, first, last in reader.rows(
                "SELECT project, min(start_time), max(end_time) FROM spans GROUP BY 1"
            )
        }
    assert [
        {**p, "first_span": datetime.fromisoformat(p["first_span"].removesuffix("Z")),
         "last_span": datetime.fromisoformat(p["last_span"].removesuffix("Z"))}
        for p in stats["projects"]
    ] == [
        {"project": "bank", "traces": 1, "spans": 3, "errors": 0, "error_traces": 0,
         "first_span": ranges["bank"][0], "last_span": ranges["bank"][1]},
        {"project": "shop", "traces": 2, "spans": 6, "errors": 1, "error_traces": 1,
         "first_span": ranges["shop"][0], "last_span": ranges["shop"][1]},
    ]  # fmt: skip


def test_an_arrow_body_that_is_not_spans_is_refused(populated: LiveServer) -> None:
    before = snapshot(populated.store)
    sink = pa.BufferOutputStream()
    wrong = pa.table({"x": [1, 2]})
    with pa.ipc.new_stream(sink, wrong.schema) as writer:
        writer.write_table(wrong)
    for body in (sink.getvalue().to_pybytes(), b"not arrow at all"):
        response = post(
            populated, body, "application/vnd.apache.arrow.stream", path="/api/v1/spans"
        )
        assert response.status_code == 400
        assert response.json()["error"].startswith("[invalid_input] ")
    assert snapshot(populated.store) == before


# -- one bad span costs only itself ----------------------------------------------------------------

DEEP_KEY = ".".join(f"k{i}" for i in range(1_000))


def _pb_pair(first_name: str = "bad") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for span_id, name in ((1, first_name), (2, "sibling")):
        spans.add(
            trace_id=(5).to_bytes(16, "big"),
            span_id=span_id.to_bytes(8, "big"),
            name=name,
            start_time_unix_nano=BASE_NS,
            end_time_unix_nano=BASE_NS + 1000,
        )
    return request


@pytest.mark.parametrize("wire", ["json", "protobuf"])
def test_an_attribute_key_of_a_thousand_segments_rejects_only_its_span(
    live_server: LiveServer, wire: str
) -> None:
    """Before, this key failed the whole request (RecursionError encoding its nested JSON)."""
    if wire == "json":
        bad = json_span(5, 1, name="bad", attributes={DEEP_KEY: "x"})
        response = post_json(
            live_server,
            json_request(({"service.name": "svc"}, [bad, json_span(5, 2, name="sibling")])),
        )
    else:
        request = _pb_pair()
        request.resource_spans[0].scope_spans[0].spans[0].attributes.add(
            key=DEEP_KEY
        ).value.string_value = "x"
        response = post(live_server, request.SerializeToString())
    rejected, message = partial_success(response)
    assert rejected == 1
    assert "more than 64 dotted segments" in message
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("sibling",)]


def test_attribute_keys_past_the_length_setting_reject_their_span(serve_with: Any) -> None:
    server = serve_with(max_attribute_key_chars=100, max_attribute_key_depth=4)
    spans = [
        json_span(6, 1, name="long", attributes={"k" * 101: 1}),
        json_span(6, 2, name="deep", attributes={"a.b.c.d.e": 1}),
        json_span(6, 3, name="fits", attributes={"a.b.c.d": 1, "k" * 100: 2}),
    ]
    rejected, message = partial_success(post_json(server, json_request((None, spans))))
    assert rejected == 2
    assert "longer than 100 characters" in message and "more than 4 dotted segments" in message
    with server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("fits",)]


def test_a_lone_surrogate_in_otlp_json_rejects_only_its_span(live_server: LiveServer) -> None:
    """JSON can spell text that is not Unicode ("\\ud800"); such a span is rejected, not stored
    with a replacement character, and its siblings are kept."""
    marker = "SURROGATE"
    spans = [
        json_span(7, 1, name="in a value", attributes={"note": marker}),
        json_span(7, 2, name=marker),
        json_span(7, 3, name="in a key", attributes={marker: 1}),
        json_span(7, 4, name="sibling"),
    ]
    body = json.dumps(json_request(({"service.name": "svc"}, spans))).replace(marker, "\\ud800")
    rejected, message = partial_success(post(live_server, body.encode(), JSON))
    assert rejected == 3
    assert "lone UTF-16 surrogate" in message
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("sibling",)]


def test_a_lone_surrogate_in_a_resource_rejects_its_spans_only(live_server: LiveServer) -> None:
    document = json_request(
        ({"service.name": "SURROGATE"}, [json_span(8, 1, name="bad resource")]),
        ({"service.name": "svc"}, [json_span(8, 2, name="good resource")]),
    )
    body = json.dumps(document).replace("SURROGATE", "\\udfff")
    rejected, _ = partial_success(post(live_server, body.encode(), JSON))
    assert rejected == 1
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("good resource",)]


def test_a_protobuf_span_with_invalid_utf8_rejects_only_that_span(live_server: LiveServer) -> None:
    body = _pb_pair("BAD").SerializeToString().replace(b"BAD", b"B\xffD")
    rejected, message = partial_success(post(live_server, body))
    assert rejected == 1
    assert "UTF-8" in message
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("sibling",)]
