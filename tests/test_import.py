"""File import: format detection from content, bad lines, re-import, project override, size."""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tests.conftest import (
    SHARED_DATA,
    CollectingExporter,
    make_agent_trace,
    needs_shared_data,
    sdk_provider,
)
from traceproof.ingest.files import ImportSummary, import_files
from traceproof.settings import Settings
from traceproof.storage import Store

# --- the same two SDK traces, written in every format ------------------------------------------


def agent_spans() -> list[ReadableSpan]:
    """Two traces of three spans (AGENT → LLM, TOOL); the second trace's tool fails."""
    exporter = CollectingExporter()
    provider = sdk_provider(exporter, project="support")
    make_agent_trace(provider, turn=0)
    make_agent_trace(provider, fail_tool=True, turn=1)
    return exporter.spans


def hex_ids(node: Any) -> Any:
    """protobuf's JSON (base64 ids) to OTLP/JSON as the specification writes it (hex ids)."""
    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId")
            else hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [hex_ids(v) for v in node]
    return node


def otlp_dict(spans: list[ReadableSpan]) -> dict[str, Any]:
    return hex_ids(json_format.MessageToDict(encode_spans(spans)))


def by_trace(spans: list[ReadableSpan]) -> list[list[ReadableSpan]]:
    groups: dict[int, list[ReadableSpan]] = {}
    for s in spans:
        assert s.context is not None
        groups.setdefault(s.context.trace_id, []).append(s)
    return list(groups.values())


def nest(flat: dict[str, Any]) -> Any:
    """Dotted keys to nested objects and lists, as Phoenix exports attributes."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value

    def lists(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = {k: lists(v) for k, v in node.items()}
        if node and sorted(node) == [str(i) for i in range(len(node))]:
            return [node[str(i)] for i in range(len(node))]
        return node

    return lists(out)


def iso(ns: int) -> str:
    stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    return stamp.isoformat()  # 2024-05-01T12:00:00.123456+00:00, as Phoenix writes it


def phoenix_span(s: ReadableSpan, times: Callable[[int], Any]) -> dict[str, Any]:
    assert s.context is not None and s.start_time is not None and s.end_time is not None
    attributes = dict(s.attributes or {})
    return {
        "name": s.name,
        "context": {
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
        },
        "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
        "span_kind": attributes.get("openinference.span.kind"),
        "start_time": times(s.start_time),
        "end_time": times(s.end_time),
        "status_code": s.status.status_code.name,
        "status_message": s.status.description or "",
        "attributes": nest(attributes),
        "events": [
            {
                "name": e.name,
                "timestamp": times(e.timestamp),
                "attributes": nest(dict(e.attributes or {})),
            }
            for e in s.events
        ],
    }


def write_otlp_json_document(spans: list[ReadableSpan]) -> bytes:
    return json.dumps(otlp_dict(spans), indent=2).encode()


def write_otlp_json_lines(spans: list[ReadableSpan]) -> bytes:
    return "".join(json.dumps(otlp_dict(t)) + "\n" for t in by_trace(spans)).encode()


def write_protobuf(spans: list[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


def write_phoenix_iso(spans: list[ReadableSpan]) -> bytes:
    return "".join(json.dumps(phoenix_span(s, iso)) + "\n" for s in spans).encode()


def write_phoenix_ns(spans: list[ReadableSpan]) -> bytes:
    return "".join(json.dumps(phoenix_span(s, int)) + "\n" for s in spans).encode()


FORMATS: dict[str, Callable[[list[ReadableSpan]], bytes]] = {
    "otlp-json-document": write_otlp_json_document,
    "otlp-json-lines": write_otlp_json_lines,
    "otlp-protobuf": write_protobuf,
    "phoenix-iso-times": write_phoenix_iso,
    "phoenix-ns-times": write_phoenix_ns,
}

COMPARED = (
    "trace_id span_id parent_span_id name span_kind status start_time end_time session_id "
    "user_id model tool_name prompt_tokens completion_tokens total_tokens input_value "
    "output_value error_type error_message attributes"
)


def expected_rows(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    """What the store must hold for ``spans``, worked out from the SDK's own span objects."""
    out = []
    for s in spans:
        assert s.context is not None and s.start_time is not None and s.end_time is not None
        a = dict(s.attributes or {})
        failed = s.status.status_code is StatusCode.ERROR
        out.append(
            {
                "trace_id": f"{s.context.trace_id:032x}",
                "span_id": f"{s.context.span_id:016x}",
                "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
                "name": s.name,
                "span_kind": a["openinference.span.kind"],
                "status": s.status.status_code.name,
                "start_time": datetime(1970, 1, 1) + timedelta(microseconds=s.start_time // 1000),
                "end_time": datetime(1970, 1, 1) + timedelta(microseconds=s.end_time // 1000),
                "session_id": a.get("session.id"),
                "user_id": a.get("user.id"),
                "model": a.get("llm.model_name"),
                "tool_name": a.get("tool.name"),
                "prompt_tokens": a.get("llm.token_count.prompt"),
                "completion_tokens": a.get("llm.token_count.completion"),
                "total_tokens": a.get("llm.token_count.total"),
                "input_value": a.get("input.value"),
                "output_value": a.get("output.value"),
                "error_type": "TimeoutError" if failed else None,
                "error_message": "order service timed out" if failed else None,
            }
        )
    return sorted(out, key=lambda r: r["span_id"])


def stored(store: Store, columns: str = COMPARED) -> list[dict[str, Any]]:
    with store.reader() as reader:
        rows = reader.dicts(f"SELECT {', '.join(columns.split())} FROM spans ORDER BY span_id")
    for row in rows:
        if "attributes" in row:
            row["attributes"] = json.loads(row["attributes"])
    return rows


def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def run_import(store: Store, *paths: Path, **kwargs: Any) -> ImportSummary:
    return import_files(list(paths), store.submit, settings=store.settings, **kwargs)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_is_detected_from_its_content(
    store: Store, tmp_path: Path, fmt: str, compress: bool
) -> None:
    spans = agent_spans()
    # A neutral file name: only the content can tell the format.
    path = write(tmp_path / "traces.data", FORMATS[fmt](spans), compress=compress)
    summary = run_import(store, path)
    phoenix = fmt.startswith("phoenix")
    assert summary.as_dict() == {
        "files": 1,
        "spans_read": 6,
        "spans_added": 6,
        "duplicates": 0,
        "traces": 2,
        "projects": ["default" if phoenix else "support"],
        "rejected": 0,
        "rejections": [],
    }
    rows = stored(store)
    attributes = [r.pop("attributes") for r in rows]
    assert rows == expected_rows(spans)
    tools = [a["tool"] for a in attributes if "tool" in a]
    assert tools == [{"name": "lookup_order", "parameters": {"order_id": 42}}] * 2
    with store.reader() as reader:
        traces = reader.rows("SELECT name, span_count, error_count FROM traces ORDER BY 3")
    assert traces == [("agent", 3, 0), ("agent", 3, 1)]


def test_every_format_stores_the_same_attributes(tmp_path: Path, settings: Settings) -> None:
    spans = agent_spans()
    found = {}
    for fmt, writer in FORMATS.items():
        with Store.open(tmp_path / f"{fmt}.duckdb", settings) as store:
            run_import(store, write(tmp_path / fmt, writer(spans)))
            found[fmt] = stored(store)
    reference = found.pop("otlp-protobuf")
    for fmt, rows in found.items():
        assert rows == reference, fmt


def test_bad_lines_are_reported_by_number_and_the_rest_is_imported(
    store: Store, tmp_path: Path
) -> None:
    spans = agent_spans()
    good = [json.dumps(phoenix_span(s, iso)) for s in spans]
    bad_time = phoenix_span(spans[0], iso) | {"start_time": "yesterday"}
    otlp_line = otlp_dict(spans[3:4])
    otlp_line["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
        otlp_dict(spans[4:5])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        | {"traceId": "not-an-id"}
    )
    lines = [
        good[0],
        "this is not json",
        good[1],
        json.dumps(bad_time),
        "[1, 2]",
        '{"hello": "world"}',
        "",
        json.dumps(otlp_line),
        good[2],
        '{"name": "cut off", "context": {"trace_',  # a truncated last line
    ]
    path = write(tmp_path / "mixed.jsonl", "\n".join(lines).encode())
    summary = run_import(store, path)
    assert (summary.spans_read, summary.spans_added, summary.rejected) == (4, 4, 6)
    assert [(r.path, r.line) for r in summary.rejections] == [
        (str(path), 2),
        (str(path), 4),
        (str(path), 5),
        (str(path), 6),
        (str(path), 8),
        (str(path), 10),
    ]
    reasons = [r.reason for r in summary.rejections]
    assert reasons[0].startswith("not valid JSON (")
    assert reasons[1] == "start_time 'yesterday' is not an ISO 8601 time"
    assert reasons[2] == "expected a JSON object"
    assert reasons[3].startswith("neither an OTLP trace request (resourceSpans) nor a span")
    span_id = f"{spans[4].context.span_id:016x}"  # type: ignore[union-attr]
    assert reasons[4] == (
        f"span {span_id}: trace id 'not-an-id' is neither 32 hex digits nor base64 of 16 bytes"
    )
    assert reasons[5].startswith("not valid JSON (")
    assert str(summary.rejections[0]) == f"{path}:2: {reasons[0]}"
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == 4


def test_spans_with_deep_keys_or_lone_surrogates_are_rejected_by_line_and_the_rest_kept(
    store: Store, tmp_path: Path
) -> None:
    """One bad span in an OTLP line costs only that span; a bad span line only that line."""
    spans = agent_spans()
    deep = phoenix_span(spans[0], iso)
    deep["attributes"] = {".".join(["a"] * 200): 1}
    otlp_line = otlp_dict(spans[1:3])
    otlp_spans = otlp_line["resourceSpans"][0]["scopeSpans"][0]["spans"]
    otlp_spans[0]["name"] = "SURROGATE"
    lines = [
        json.dumps(deep),
        json.dumps(phoenix_span(spans[3], iso) | {"name": "SURROGATE"}),
        json.dumps(otlp_line),
        json.dumps(phoenix_span(spans[4], iso)),
    ]
    text = "\n".join(lines).replace("SURROGATE", "\\ud800")
    path = write(tmp_path / "hostile.jsonl", text.encode())
    summary = run_import(store, path)
    assert (summary.spans_read, summary.spans_added, summary.rejected) == (2, 2, 3)
    assert [r.line for r in summary.rejections] == [1, 2, 3]
    assert "more than 64 dotted segments" in summary.rejections[0].reason
    assert "lone UTF-16 surrogate" in summary.rejections[1].reason
    assert "lone UTF-16 surrogate" in summary.rejections[2].reason


@pytest.mark.parametrize(
    "first_line",
    ["", '{"name": "cut off", "context": {"trace_', "[1, 2]"],
    ids=["blank", "truncated", "array"],
)
def test_a_bad_or_blank_first_line_does_not_lose_the_rest_of_the_file(
    store: Store, tmp_path: Path, first_line: str
) -> None:
    spans = agent_spans()
    lines = [first_line, *(json.dumps(phoenix_span(s, int)) for s in spans)]
    path = write(tmp_path / "spans.jsonl", "\n".join(lines).encode())
    summary = run_import(store, path)
    assert summary.spans_added == 6
    expected = [] if not first_line else [(str(path), 1)]
    assert [(r.path, r.line) for r in summary.rejections] == expected
    assert summary.rejected == len(expected)


def test_a_cut_off_json_document_is_rejected_whole_with_the_json_error(
    store: Store, tmp_path: Path
) -> None:
    text = write_otlp_json_document(agent_spans())
    path = write(tmp_path / "cut.json", text[: len(text) // 2])
    summary = run_import(store, path)
    assert (summary.spans_added, summary.rejected) == (0, 1)
    (rejection,) = summary.rejections
    assert (rejection.path, rejection.line) == (str(path), None)
    assert rejection.reason.startswith("not valid JSON or JSON lines (")


def test_a_truncated_gzip_file_keeps_what_was_read_and_says_so(
    store: Store, tmp_path: Path
) -> None:
    rng = random.Random(3)
    spans = []
    for i in range(20_000):
        spans.append(
            {
                "name": "step",
                "context": {"trace_id": f"{i // 10:032x}", "span_id": f"{i + 1:016x}"},
                "parent_id": None,
                "start_time": 1_700_000_000_000_000_000 + i,
                "end_time": 1_700_000_000_000_000_000 + i + 1000,
                "attributes": {"noise": rng.random()},
            }
        )
    data = gzip.compress("".join(json.dumps(s) + "\n" for s in spans).encode())
    path = write(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    summary = run_import(store, path)
    assert 0 < summary.spans_added < len(spans)
    assert summary.rejected == 1
    (rejection,) = summary.rejections
    assert (rejection.path, rejection.line) == (str(path), None)
    assert "compressed" in rejection.reason.lower() or "gzip" in rejection.reason.lower()
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == summary.spans_added


@pytest.mark.parametrize("length", [123, 91], ids=["brace", "bracket"])
def test_protobuf_whose_first_length_byte_looks_like_json_is_still_protobuf(
    store: Store, tmp_path: Path, length: int
) -> None:
    # An OTLP request starts with 0x0a (field 1) and the varint length of its first
    # ResourceSpans: a length of 123 is the byte '{', 91 is '['.
    for name_length in range(length):
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id = bytes(range(1, 17)), bytes(range(1, 9))
        span.name = "n" * name_length
        span.start_time_unix_nano = 1_700_000_000_000_000_000
        span.end_time_unix_nano = 1_700_000_001_000_000_000
        if request.resource_spans[0].ByteSize() == length:
            break
    body = request.SerializeToString()
    assert body[:2] == b"\n" + bytes([length])
    path = write(tmp_path / "one.pb", body)
    summary = run_import(store, path)
    assert (summary.spans_added, summary.rejected, summary.rejections) == (1, 0, [])
    assert stored(store, "name") == [{"name": "n" * name_length}]


@pytest.mark.parametrize("fmt", ["otlp-json-document", "phoenix-iso-times"])
def test_json_with_a_utf8_byte_order_mark_is_still_json(
    store: Store, tmp_path: Path, fmt: str
) -> None:
    path = write(tmp_path / "windows.json", b"\xef\xbb\xbf" + FORMATS[fmt](agent_spans()))
    summary = run_import(store, path)
    assert (summary.spans_added, summary.rejected) == (6, 0)


def test_reimporting_a_file_adds_nothing(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "spans.pb", write_protobuf(agent_spans()))
    first = run_import(store, path)
    again = run_import(store, path, path)
    assert (first.spans_read, first.spans_added) == (6, 6)
    assert (again.files, again.spans_read, again.spans_added, again.duplicates) == (2, 12, 0, 12)
    assert again.traces == 2
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == 6
        assert reader.rows("SELECT span_count FROM traces") == [(3,), (3,)]


@pytest.mark.parametrize("fmt", ["otlp-protobuf", "otlp-json-lines", "phoenix-iso-times"])
def test_project_override_puts_every_span_in_that_project(
    store: Store, tmp_path: Path, fmt: str
) -> None:
    path = write(tmp_path / "spans", FORMATS[fmt](agent_spans()))
    summary = run_import(store, path, project="override")
    assert summary.projects == {"override"}
    with store.reader() as reader:
        assert reader.rows("SELECT DISTINCT project FROM spans") == [("override",)]
        assert reader.rows("SELECT name FROM projects") == [("override",)]
        assert reader.rows("SELECT DISTINCT project FROM traces") == [("override",)]


def test_a_file_with_thousands_of_spans_imports_with_exact_counts(
    tmp_path: Path, settings: Settings
) -> None:
    settings = settings.model_copy(update={"import_batch_spans": 700})
    rng = random.Random(11)
    lines, errors, tokens = [], 0, 0
    for t in range(600):
        trace_id = f"{t + 1:032x}"
        base = 1_700_000_000_000_000_000 + t * 10_000_000_000
        for k in range(10):
            failed = rng.random() < 0.1
            errors += failed
            attributes: dict[str, Any] = {"openinference": {"span": {"kind": "CHAIN"}}}
            if k % 3 == 1:
                prompt, completion = rng.randint(1, 500), rng.randint(1, 100)
                tokens += prompt + completion
                attributes = {
                    "openinference": {"span": {"kind": "LLM"}},
                    "llm": {"token_count": {"prompt": prompt, "completion": completion}},
                }
            lines.append(
                json.dumps(
                    {
                        "name": "root" if k == 0 else f"step-{k}",
                        "context": {"trace_id": trace_id, "span_id": f"{t * 10 + k + 1:016x}"},
                        "parent_id": None if k == 0 else f"{t * 10 + 1:016x}",
                        "start_time": base + k * 1_000_000,
                        "end_time": base + k * 1_000_000 + 500_000,
                        "status_code": "ERROR" if failed else "OK",
                        "attributes": attributes,
                    }
                )
            )
    path = write(tmp_path / "big.jsonl.gz", "\n".join(lines).encode(), compress=True)
    progress: list[int] = []
    with Store.open(settings.db, settings) as store:
        summary = import_files([path], store.submit, settings=settings, on_progress=progress.append)
        with store.reader() as reader:
            counts = reader.rows(
                "SELECT count(*), sum(span_count), sum(error_count), sum(total_tokens), "
                "count(*) FILTER (WHERE name = 'root' AND span_count = 10) FROM traces"
            )
    assert (summary.spans_read, summary.spans_added, summary.traces) == (6000, 6000, 600)
    assert summary.rejected == 0
    assert counts == [(600, 6000, errors, tokens, 600)]
    assert sum(progress) == path.stat().st_size  # progress counts bytes on disk


def test_unreadable_empty_and_foreign_files_are_rejected_whole(
    store: Store, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.jsonl"
    empty = write(tmp_path / "empty.jsonl", b"  \n\n")
    foreign = write(tmp_path / "photo.jpg", bytes(range(256)) * 4)
    good = write(tmp_path / "good.pb", write_protobuf(agent_spans()))
    summary = run_import(store, missing, empty, foreign, good)
    assert (summary.files, summary.spans_added, summary.rejected) == (4, 6, 3)
    found = [(r.path, r.line, r.reason) for r in summary.rejections]
    assert found[0][:2] == (str(missing), None)
    assert found[0][2].startswith("cannot read the file: ")
    assert found[1] == (str(empty), None, "the file is empty")
    assert found[2][:2] == (str(foreign), None)
    assert found[2][2].startswith("not OTLP/JSON, OTLP protobuf or span JSON lines")


@needs_shared_data
def test_the_opentelemetry_proto_example_trace_imports(store: Store) -> None:
    summary = run_import(store, SHARED_DATA / "otlp" / "trace.json")
    assert (summary.spans_added, summary.traces, summary.rejected) == (1, 1, 0)
    assert summary.projects == {"my.service"}
    row = stored(
        store,
        "project trace_id span_id parent_span_id name otel_kind span_kind status start_time "
        "end_time latency_ms scope_name attributes",
    )
    assert row == [
        {
            "project": "my.service",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "parent_span_id": "eee19b7ec3c1b173",
            "name": "I'm a server span",
            "otel_kind": "SERVER",
            "span_kind": "UNKNOWN",
            "status": "UNSET",
            "start_time": datetime(2018, 12, 13, 14, 51, 0),
            "end_time": datetime(2018, 12, 13, 14, 51, 1),
            "latency_ms": 1000.0,
            "scope_name": "my.library",
            "attributes": {"my": {"span": {"attr": "some value"}}},
        }
    ]
    with store.reader() as reader:
        # Its parent is not in the file: the trace is named by its earliest span.
        assert reader.rows("SELECT name, has_root, span_count FROM traces") == [
            ("I'm a server span", False, 1)
        ]


@needs_shared_data
def test_an_otlp_logs_file_is_rejected_as_not_traces(store: Store) -> None:
    path = SHARED_DATA / "otlp" / "logs.json"
    summary = run_import(store, path)
    assert (summary.spans_read, summary.rejected) == (0, 1)
    (rejection,) = summary.rejections
    assert (rejection.path, rejection.line) == (str(path), None)
    assert rejection.reason.startswith("neither an OTLP trace request (resourceSpans)")


# --- through a server that dies mid-import -------------------------------------------------------


def test_an_import_through_a_server_that_dies_says_what_was_committed_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    """Before, this said only "could not reach the server"."""
    from tests.conftest import LiveServer
    from traceproof.errors import ErrorCode
    from traceproof.ingest.files import ImportInterrupted
    from traceproof.remote import RemoteStore

    spans = agent_spans()
    lines = [
        json.dumps(phoenix_span(s, iso) | {"context": {"trace_id": f"{t:032x}",
                                                     "span_id": f"{t * 10 + i:016x}"}})
        for t in range(1, 21)
        for i, s in enumerate(spans[:3])
    ]  # fmt: skip
    path = write(tmp_path / "sixty.jsonl", "\n".join(lines).encode())
    settings = Settings(db=tmp_path / "store.duckdb", import_batch_spans=10)

    with Store.open(settings.db, settings) as store:
        server = LiveServer(store, settings).__enter__()
        remote = RemoteStore(server.url, timeout=10)
        sent = 0

        def dying_sink(table: Any) -> Any:
            nonlocal sent
            if sent == 2:  # after two acknowledged batches the server goes away
                server.__exit__(None, None, None)
            sent += 1
            return remote.submit(table, wait=None)

        with pytest.raises(ImportInterrupted) as caught:
            import_files([path], dying_sink, settings=settings)
        error = caught.value
        assert error.code == ErrorCode.STORE_ERROR
        assert (error.batches_acknowledged, error.spans_acknowledged) == (2, 20)
        assert error.resume == (str(path), 21)
        message = str(error)
        assert "2 batch(es), 20 span(s)" in message and f"{path} line 21" in message
        with store.reader() as reader:
            assert reader.scalar("SELECT count(*) FROM spans") == 20

        with LiveServer(store, settings) as again:
            summary = import_files([path], RemoteStore(again.url).submit, settings=settings)
        assert (summary.spans_read, summary.spans_added) == (60, 40)
        with store.reader() as reader:
            assert reader.scalar("SELECT count(*) FROM spans") == 60
            assert reader.scalar("SELECT count(DISTINCT span_id) FROM spans") == 60


@pytest.mark.parametrize(
    ("count", "nbytes", "flushed"),
    [
        (2048, 1_000, True),  # a whole row group
        (1000, 9_000_000, False),  # 9 KB spans: 2048 of them fit 20 MB, so it grows on
        (2000, 20_000_000, True),  # the most a batch that fills a row group may hold
        (200, 8_000_000, True),  # 40 KB spans: no row group within 20 MB, so it ends at 8 MB
        (200, 7_000_000, False),
    ],
)
def test_a_batch_ends_at_a_row_group_or_at_the_smaller_size_for_large_spans(
    tmp_path: Path, count: int, nbytes: int, flushed: bool
) -> None:
    from traceproof.ingest.batcher import _Batcher

    settings = Settings(
        db=tmp_path / "s.duckdb",
        import_batch_spans=2048,
        import_batch_bytes=8_000_000,
        import_full_batch_bytes=20_000_000,
    )
    batcher = _Batcher(lambda table: None, settings, ImportSummary())  # type: ignore[arg-type]
    sent: list[bool] = []
    batcher.rows = type("Rows", (), {"__len__": lambda self: count, "nbytes": nbytes})()  # type: ignore[assignment]
    batcher.flush = lambda: sent.append(True)  # type: ignore[method-assign]
    batcher.flush_if_full()
    assert bool(sent) == flushed
