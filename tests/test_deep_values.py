"""Probe reproductions (wt/probe): deeply nested JSON reaches the store and breaks its readers.

1. A string attribute that ingest parses as JSON text (``tool.parameters``) holding ~1,000
   levels of nesting raises ``RecursionError`` in ``SpanRows.add``: not a ``SpanRejected``, so an
   OTLP request answers 400 for all its spans (the good ones too) and ``traceproof ingest`` dies
   with a traceback instead of reporting the line. (Shallower JSON text, 31..~980 levels, is
   stored nested although README says values nested deeper than 30 levels reject their span.)
2. ``POST /api/v1/spans`` accepts ``attributes`` JSON 1,000 levels deep (valid JSON, so the Arrow
   check passes); ``get_span_data``, ``find_in_trace`` and ``search_spans`` with a pattern over
   any filter that includes that span then answer 500 ``internal_error`` (RecursionError in
   ``spandoc._walk``).
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import httpx2
import pyarrow as pa
import pytest

from tests.conftest import LiveServer
from traceproof.ingest.normalize import SpanRejected, SpanRows
from traceproof.storage import Store
from traceproof.storage.columns import SPAN_SCHEMA

DEPTH = 995
NS = 1_796_000_000 * 10**9


def test_deep_json_text_attribute_rejects_its_span_not_recursion_error() -> None:
    rows = SpanRows()
    try:
        rows.add(
            project="p", trace_id="t" * 32, span_id="s" * 16, parent_span_id=None, name="tool",
            start_ns=NS, end_ns=NS + 10**9, status="OK", status_message=None,
            attributes={"tool.parameters": "[" * DEPTH + "]" * DEPTH},
        )  # fmt: skip
    except SpanRejected:
        return  # rejected with a reason: what README promises
    except RecursionError:
        pytest.fail("SpanRows.add raised RecursionError on deeply nested JSON text")


def _otlp_span(span_id: str, attributes: dict[str, str]) -> dict[str, object]:
    return {
        "traceId": "ab" * 16, "spanId": span_id, "name": span_id, "kind": 1,
        "startTimeUnixNano": str(NS), "endTimeUnixNano": str(NS + 10**9),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
    }  # fmt: skip


def test_one_span_with_deep_json_text_costs_only_itself(live_server: LiveServer) -> None:
    body = {
        "resourceSpans": [{"scopeSpans": [{"spans": [
            _otlp_span("00000000000000aa", {}),
            _otlp_span("00000000000000bb", {"tool.parameters": "[" * DEPTH + "]" * DEPTH}),
        ]}]}]
    }  # fmt: skip
    answer = httpx2.post(
        f"{live_server.url}/v1/traces",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text  # today: 400 RecursionError, good span lost
    assert answer.json()["partialSuccess"]["rejectedSpans"] == "1"


def _arrow_row(trace_id: str, span_id: str, attributes: str) -> dict[str, object]:
    start = datetime(2026, 12, 1, 12, 0, 0)
    row: dict[str, object] = {f.name: None for f in SPAN_SCHEMA}
    row.update(
        project="deep", trace_id=trace_id, span_id=span_id, name="deep", span_kind="TOOL",
        status="OK", start_time=start, end_time=start + timedelta(seconds=1), latency_ms=1000.0,
        attributes=attributes, events="[]", links="[]", resource="{}",
    )  # fmt: skip
    return row


def test_tools_read_a_span_whose_attributes_are_1000_levels_deep(
    live_server: LiveServer, store: Store
) -> None:
    trace_id = f"{random.Random(1).getrandbits(128):032x}"
    deep = '{"k":' * 1000 + '"needle"' + "}" * 1000
    table = pa.Table.from_pylist([_arrow_row(trace_id, "00000000000000dd", deep)], SPAN_SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SPAN_SCHEMA) as writer:
        writer.write_table(table)
    stored = httpx2.post(
        f"{live_server.url}/api/v1/spans",
        content=sink.getvalue().to_pybytes(),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text  # accepted: valid JSON
    failures = []
    for name, arguments in [
        ("get_span_data", {"span_id": "00000000000000dd"}),
        ("find_in_trace", {"trace_id": trace_id, "pattern": "needle"}),
        ("search_spans", {"project": "deep", "pattern": "needle"}),
    ]:
        answer = httpx2.post(
            f"{live_server.url}/api/v1/tools/{name}",
            content=json.dumps(arguments),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        if answer.status_code >= 500:
            failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
    assert not failures, "\n".join(failures)
