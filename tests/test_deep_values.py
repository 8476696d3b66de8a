"""Deeply nested values, and values ingest would never make, on every way in and out.

First found by a probe of main (reproductions kept here, reshaped):

1. A string attribute that ingest parses as JSON text (``tool.parameters``) holding ~1,000
   levels raised ``RecursionError`` in ``SpanRows.add``: an OTLP request answered 400 for all
   its spans and ``traceproof ingest`` died with a traceback. JSON text 31..~980 levels deep was
   stored nested although every wire rejects values deeper than 30 levels. Now such a span is
   rejected with its reason (``partial_success``, the import summary), like any other.
2. ``POST /api/v1/spans`` accepted Arrow batches ingest never makes: attributes 1,000 levels
   deep (the read tools then answered 500), empty or uppercase ids, unknown kinds and statuses,
   NaN or negative latencies, ends before starts. Now 400 ``invalid_input``; and the read tools
   fold a stored value past :data:`~traceproof.tools.spandoc.FOLD_DEPTH` into JSON text, so a
   deep value already in a store cannot make them fail.
"""

from __future__ import annotations

import base64
import json
import math
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import LiveServer
from traceproof.errors import ErrorCode
from traceproof.ingest.arrowcheck import InvalidSpanStream, nesting_exceeds, read_span_stream
from traceproof.ingest.files import import_files
from traceproof.ingest.normalize import (
    MAX_KEY_DEPTH,
    MAX_VALUE_DEPTH,
    Event,
    SpanRejected,
    SpanRows,
    nesting,
)
from traceproof.ingest.otlp import decode_json, decode_protobuf
from traceproof.ingest.spanjson import add_span_object
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.columns import SPAN_SCHEMA
from traceproof.tools.spandoc import FOLD_DEPTH, leaves

DEPTH = 995
NS = 1_796_000_000 * 10**9
ARROW = "application/vnd.apache.arrow.stream"


def nested_list(levels: int) -> str:
    return "[" * levels + "]" * levels


def add(rows: SpanRows, attributes: dict[str, Any], span_id: str = "s" * 16) -> list[str]:
    return rows.add(
        project="p", trace_id="t" * 32, span_id=span_id, parent_span_id=None, name="tool",
        start_ns=NS, end_ns=NS + 10**9, status="OK", status_message=None, attributes=attributes,
    )  # fmt: skip


# -- 1. JSON text in attributes -----------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_VALUE_DEPTH + 1, 500, DEPTH, 5000])
def test_json_text_deeper_than_the_limit_rejects_its_span(levels: int) -> None:
    rows = SpanRows()
    with pytest.raises(SpanRejected, match=f"tool.parameters.*deeper than {MAX_VALUE_DEPTH}"):
        add(rows, {"tool.parameters": nested_list(levels)})
    assert len(rows) == 0  # no partial row left behind


def test_json_text_at_the_limit_is_kept_as_json() -> None:
    rows = SpanRows()
    add(rows, {"tool.parameters": nested_list(MAX_VALUE_DEPTH), "tool.metadata": "[not json"})
    stored = json.loads(rows.table().column("attributes")[0].as_py())
    assert nesting(stored["tool"]["parameters"]) == MAX_VALUE_DEPTH
    assert stored["tool"]["metadata"] == "[not json"  # not JSON: kept as the text it is


def test_span_json_list_values_count_their_own_levels() -> None:
    """A list of lists in span JSON attributes is one value, kept whole: its levels count."""
    deep = json.loads(nested_list(MAX_VALUE_DEPTH + 1))
    span = {"context": {"trace_id": "ab" * 16, "span_id": "cd" * 8}, "name": "x",
            "start_time": NS, "end_time": NS, "attributes": {"a": deep}}  # fmt: skip
    with pytest.raises(SpanRejected, match="deeper than"):
        add_span_object(SpanRows(), span, project="p")
    span["attributes"] = {"a": json.loads(nested_list(MAX_VALUE_DEPTH - 1))}
    add_span_object(SpanRows(), span, project="p")


def otlp_json_span(span_id: str, attributes: dict[str, str]) -> dict[str, object]:
    return {
        "traceId": "ab" * 16, "spanId": span_id, "name": span_id, "kind": 1,
        "startTimeUnixNano": str(NS), "endTimeUnixNano": str(NS + 10**9),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
    }  # fmt: skip


def otlp_json_request(*spans: dict[str, object]) -> dict[str, object]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def deep_and_good_json() -> dict[str, object]:
    return otlp_json_request(
        otlp_json_span("00000000000000aa", {}),
        otlp_json_span("00000000000000bb", {"tool.parameters": nested_list(DEPTH)}),
    )


def deep_and_good_protobuf() -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for span_id, attributes in (("aa", {}), ("bb", {"tool.parameters": nested_list(DEPTH)})):
        span: Span = spans.add()
        span.trace_id, span.span_id = bytes.fromhex("ab" * 16), bytes.fromhex("00" * 7 + span_id)
        span.name, span.start_time_unix_nano, span.end_time_unix_nano = span_id, NS, NS + 10**9
        for key, value in attributes.items():
            kv = span.attributes.add()
            kv.key, kv.value.string_value = key, value
    return bytes(request.SerializeToString())


def test_one_span_with_deep_json_text_costs_only_itself(live_server: LiveServer) -> None:
    answer = httpx2.post(
        f"{live_server.url}/v1/traces",
        content=json.dumps(deep_and_good_json()),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text  # was: 400 RecursionError, good span lost
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "tool.parameters" in partial["errorMessage"]
    with live_server.store.reader() as reader:
        assert reader.rows("SELECT span_id FROM spans") == [("00000000000000aa",)]


def test_decoders_reject_only_the_deep_span_on_both_wires() -> None:
    for decoded in (
        decode_json(json.dumps(deep_and_good_json()), default_project="p"),
        decode_protobuf(deep_and_good_protobuf(), default_project="p"),
    ):
        assert (len(decoded.rows), decoded.rejected) == (1, 1)
        assert f"deeper than {MAX_VALUE_DEPTH} levels" in decoded.reasons[0]


def test_a_recursion_error_while_decoding_a_span_rejects_only_that_span() -> None:
    """Whatever runs out of stack on a span (here a status message 900 lists deep, written as
    text) costs that span, never the request."""
    spans = [otlp_json_span("00000000000000aa", {}), otlp_json_span("00000000000000bb", {})]
    spans[1]["status"] = {"code": 2, "message": json.loads(nested_list(900))}
    decoded = decode_json(json.dumps(otlp_json_request(*spans)), default_project="p")
    assert len(decoded.rows) + decoded.rejected == 2


def test_file_import_reports_the_deep_line_and_imports_the_rest(
    tmp_path: Path, store: Store
) -> None:
    span_line = {"context": {"trace_id": "ab" * 16, "span_id": "cc" * 8}, "name": "deep",
                 "start_time": NS, "end_time": NS,
                 "attributes": {"tool.parameters": nested_list(DEPTH)}}  # fmt: skip
    good_line = {**span_line, "context": {"trace_id": "ab" * 16, "span_id": "dd" * 8},
                 "attributes": {}}  # fmt: skip
    path = tmp_path / "deep_import.jsonl"
    lines = [deep_and_good_json(), span_line, good_line, {"x": 1}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = import_files([path], store.submit, settings=store.settings)
    assert (summary.spans_added, summary.rejected) == (2, 3)
    assert [(r.line, "deeper than" in r.reason) for r in summary.rejections] == [
        (1, True),
        (2, True),
        (4, False),
    ]


# -- 2. Arrow span streams ----------------------------------------------------------------------


def ipc(table: pa.Table, *, empty_batches: int = 0) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SPAN_SCHEMA) as writer:
        for _ in range(empty_batches):
            writer.write_batch(pa.RecordBatch.from_pylist([], schema=SPAN_SCHEMA))
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def arrow_row(**changes: Any) -> dict[str, object]:
    start = datetime(2026, 12, 1, 12, 0, 0)
    row: dict[str, object] = {f.name: None for f in SPAN_SCHEMA}
    row.update(
        project="deep", trace_id="ab" * 16, span_id="00000000000000dd", name="deep",
        span_kind="TOOL", status="OK", start_time=start, end_time=start + timedelta(seconds=1),
        latency_ms=1000.0, attributes="{}", events="[]", links="[]", resource="{}",
    )  # fmt: skip
    row.update(changes)
    return row


def table_of(*rows: dict[str, object]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), SPAN_SCHEMA)


DEEP_ATTRIBUTES = '{"k":' * 1000 + '"needle"' + "}" * 1000
START = datetime(2026, 12, 1, 12, 0, 0)

BAD_ROWS: dict[str, dict[str, Any]] = {
    "attributes 1,000 levels deep": {"attributes": DEEP_ATTRIBUTES},
    "events 200 levels deep": {"events": nested_list(200)},
    "empty trace id": {"trace_id": ""},
    "empty span id": {"span_id": ""},
    "empty parent id": {"parent_span_id": ""},
    "uppercase hex id": {"span_id": "00000000000000DD"},
    "0x id": {"trace_id": "0x" + "ab" * 16},
    "id with spaces": {"span_id": " dd "},
    "id too long": {"trace_id": "z" * 129},
    "span_kind BOGUS": {"span_kind": "BOGUS"},
    "status WHATEVER": {"status": "WHATEVER"},
    "otel_kind BOGUS": {"otel_kind": "BOGUS"},
    "NaN latency": {"latency_ms": math.nan},
    "infinite latency": {"latency_ms": math.inf},
    "negative latency": {"latency_ms": -5.0},
    "end before start": {"end_time": START - timedelta(seconds=1)},
}


@pytest.mark.parametrize("what", list(BAD_ROWS))
def test_the_span_stream_checker_refuses_what_ingest_never_makes(what: str) -> None:
    body = ipc(table_of(arrow_row(span_id="00000000000000aa"), arrow_row(**BAD_ROWS[what])))
    with pytest.raises(InvalidSpanStream):
        read_span_stream(body, max_bytes=10**8)


def test_post_spans_refuses_what_ingest_never_makes(live_server: LiveServer) -> None:
    for what, changes in BAD_ROWS.items():
        answer = post_spans(live_server, ipc(table_of(arrow_row(**changes))))
        assert answer.status_code == 400, (what, answer.text)
        assert ErrorCode.INVALID_INPUT in answer.json()["error"], what
    with live_server.store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == 0


def post_spans(server: LiveServer, body: bytes) -> httpx2.Response:
    return httpx2.post(
        f"{server.url}/api/v1/spans", content=body, headers={"content-type": ARROW}, timeout=60
    )


def decoded_tables() -> dict[str, pa.Table]:
    """What the local decoders make, as ``traceproof ingest`` sends it to a server: OTLP/JSON
    with hex and base64 ids, protobuf, span JSON lines with ids that are not hex, and the
    deepest document the limits allow (a 64-segment key over a 30-level value, in an event)."""
    hex_span = otlp_json_span("00000000000000aa", {"tool.parameters": nested_list(30)})
    b64_span = {**otlp_json_span("x", {}), "traceId": base64.b64encode(b"\xab" * 16).decode(),
                "spanId": base64.b64encode(b"\x00" * 7 + b"\xbb").decode(),
                "parentSpanId": base64.b64encode(b"\x00" * 7 + b"\xaa").decode()}  # fmt: skip
    rows = SpanRows()
    for obj in (
        {"context": {"trace_id": "run-1", "span_id": "step-1"}, "name": "a", "start_time": NS},
        {"context": {"trace_id": "0xABCDEF", "span_id": 12345}, "parent_id": "0XAB",
         "name": "b", "start_time": NS},
    ):  # fmt: skip
        add_span_object(rows, obj, project="p")
    deepest_key = ".".join(f"k{i}" for i in range(MAX_KEY_DEPTH))
    deepest = json.loads(nested_list(MAX_VALUE_DEPTH))
    rows.add(
        project="p", trace_id="ab" * 16, span_id="ee" * 8, parent_span_id=None, name="deep",
        start_ns=NS, end_ns=NS, status="OK", status_message=None, attributes={deepest_key: deepest},
        events=[Event("e", NS, {deepest_key: deepest})],
        links=[{"trace_id": "ab" * 16, "span_id": "aa" * 8, "attributes": {"a": deepest}}],
    )  # fmt: skip
    return {
        "otlp json": decode_json(
            json.dumps(otlp_json_request(hex_span, b64_span)), default_project="p"
        ).rows.table(),
        "otlp protobuf": decode_protobuf(
            deep_and_good_protobuf(), default_project="p"
        ).rows.table(),
        "span json lines and the deepest document": rows.table(),
    }


@pytest.mark.parametrize(
    "what", ["otlp json", "otlp protobuf", "span json lines and the deepest document"]
)
def test_what_the_decoders_make_passes_the_span_stream_checker(what: str) -> None:
    table = decoded_tables()[what]
    assert table.num_rows >= 1
    assert read_span_stream(ipc(table), max_bytes=10**8).equals(table)


def test_record_batches_per_body_are_capped_and_empty_ones_are_not_kept() -> None:
    one = table_of(arrow_row())
    body = ipc(one, empty_batches=3000)
    with pytest.raises(InvalidSpanStream, match="more than 1024 record batches"):
        read_span_stream(body, max_bytes=10**8)
    read = read_span_stream(body, max_bytes=10**8, max_batches=3001)
    assert read.num_rows == 1 and read.column("project").num_chunks == 1


def test_the_batch_cap_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "s.duckdb", max_spans_request_batches=2)
    with Store.open(settings.db, settings) as store, LiveServer(store, settings) as server:
        refused = post_spans(server, ipc(table_of(arrow_row()), empty_batches=2))
        assert refused.status_code == 400 and "record batches" in refused.text
        assert post_spans(server, ipc(table_of(arrow_row()), empty_batches=1)).status_code == 200


def test_nesting_is_measured_on_the_text() -> None:
    assert not nesting_exceeds('{"a": "[[[[[[[[", "b": [1]}', 2)
    assert nesting_exceeds('{"a": "\\"[", "b": [[1]]}', 2)
    assert not nesting_exceeds('{"a": "\\"[", "b": [[1]]}', 3)
    assert nesting_exceeds(nested_list(5000), 96)


# -- 3. reading a deep stored value ---------------------------------------------------------------


def test_leaves_fold_past_the_fold_depth_into_json_text() -> None:
    found = leaves({"attributes": DEEP_ATTRIBUTES, "name": "x"})
    deep = [leaf for leaf in found if leaf.path.startswith("attributes.")]
    assert len(deep) == 1
    assert deep[0].path.count(".") == FOLD_DEPTH
    assert "needle" in deep[0].text
    shallow = leaves({"attributes": '{"a": {"b": [1, {"c": 2}]}}'})
    assert [(leaf.path, leaf.value) for leaf in shallow] == [
        ("attributes.a.b.0", 1),
        ("attributes.a.b.1.c", 2),
    ]


def test_tools_read_a_span_whose_attributes_are_1000_levels_deep(
    live_server: LiveServer, store: Store
) -> None:
    """Written past the checks (as an older server may have stored it): no tool fails on it."""
    trace_id = f"{random.Random(1).getrandbits(128):032x}"
    store.write(table_of(arrow_row(trace_id=trace_id, attributes=DEEP_ATTRIBUTES)))
    failures = []
    for name, arguments, found in [
        ("get_span_data", {"span_id": "00000000000000dd"}, "needle"),
        ("find_in_trace", {"trace_id": trace_id, "pattern": "needle"}, "needle"),
        ("search_spans", {"project": "deep", "pattern": "needle"}, "00000000000000dd"),
        ("jq", {"span_id": "00000000000000dd", "program": "."}, "needle"),
    ]:
        answer = httpx2.post(
            f"{live_server.url}/api/v1/tools/{name}",
            content=json.dumps(arguments),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        if answer.status_code != 200 or found not in answer.text:
            failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
    assert not failures, "\n".join(failures)
