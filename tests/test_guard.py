"""The guard in front of every route, and POST /api/v1/spans, over real HTTP on loopback.

Hostile input a web page or a careless client sends: foreign Host/Origin (DNS rebinding,
cross-site POST), wrong content types, oversized bodies, too many bytes in flight, and Arrow IPC
streams whose memory is corrupt. Every refusal leaves the store as it was.
"""

from __future__ import annotations

import http.client
import json
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx2
import pyarrow as pa
import pytest

from tests.conftest import LiveServer, encoded, wait_until
from tests.test_receiver import (
    JSON,
    PROTOBUF,
    UNAVAILABLE,
    agent_spans,
    count_spans,
    json_request,
    json_span,
    rpc_status,
    snapshot,
    stall_writer,
)
from traceproof.errors import ErrorCode
from traceproof.ingest.arrowcheck import InvalidSpanStream, read_span_stream
from traceproof.ingest.otlp import decode_json
from traceproof.remote import RemoteStore
from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Store

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture
def serve_with(tmp_path: Any) -> Iterator[Callable[..., LiveServer]]:
    with ExitStack() as stack:

        def start(**overrides: Any) -> LiveServer:
            settings = Settings(db=tmp_path / "guarded.duckdb", **overrides)
            store = stack.enter_context(Store.open(settings.db, settings))
            return stack.enter_context(LiveServer(store, settings))

        yield start


def span_table(count: int = 3, trace: int = 7) -> pa.Table:
    spans = [json_span(trace, i, name=f"step {i}") for i in range(1, count + 1)]
    document = json_request(({"service.name": "svc"}, spans))
    return decode_json(json.dumps(document).encode(), default_project="p").rows.table()


def ipc(table: pa.Table, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def with_column(table: pa.Table, name: str, array: pa.Array, field: pa.Field | None = None) -> Any:
    index = table.schema.get_field_index(name)
    return table.set_column(index, field or table.schema.field(name), array)


def corrupt_offsets(table: pa.Table, name: str = "name") -> pa.Table:
    """The table with one string column whose offsets point far past its data."""
    column = table.column(name).combine_chunks()
    validity, offsets, data = column.buffers()
    values = list(
        struct.unpack(f"<{len(column) + 1}i", offsets.to_pybytes()[: 4 * (len(column) + 1)])
    )
    values[2] = 50_000_000
    broken = pa.Array.from_buffers(
        pa.string(),
        len(column),
        [validity, pa.py_buffer(struct.pack(f"<{len(values)}i", *values)), data],
    )
    return with_column(table, name, broken)


def post(
    server: LiveServer, path: str, body: bytes, content_type: str | None, **headers: str
) -> Any:
    sent = dict(headers)
    if content_type is not None:
        sent["content-type"] = content_type
    return httpx2.post(server.url + path, content=body, headers=sent, timeout=60)


# -- POST /api/v1/spans: Arrow validated in full ---------------------------------------------------


def test_arrow_spans_with_corrupt_string_offsets_are_refused_with_400_and_the_server_stays_up(
    live_server: LiveServer,
) -> None:
    """These offsets crashed the whole server (SIGSEGV inside DuckDB) before."""
    assert post(live_server, "/api/v1/spans", ipc(span_table(trace=1)), ARROW).status_code == 200
    before = snapshot(live_server.store)
    for column in ("name", "attributes", "project"):
        response = post(
            live_server, "/api/v1/spans", ipc(corrupt_offsets(span_table(), column)), ARROW
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"[{ErrorCode.INVALID_INPUT}] ")
    assert snapshot(live_server.store) == before
    assert httpx2.get(live_server.url + "/api/v1/stats").status_code == 200


def test_arrow_spans_of_the_wrong_shape_are_refused_with_400(live_server: LiveServer) -> None:
    table = span_table()
    invalid_utf8 = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(struct.pack("<2i", 0, 2)), pa.py_buffer(b"\xff\xfe")]
    )
    one = table.slice(0, 1)
    cases = {
        "compressed": ipc(table, compression="zstd"),
        "large strings": ipc(
            table.cast(
                pa.schema(
                    [
                        pa.field(f.name, pa.large_string()) if f.type == pa.string() else f
                        for f in SPAN_SCHEMA
                    ]
                )
            )
        ),
        "null span id": ipc(
            with_column(
                table,
                "span_id",
                pa.array([None, "a", "b"], pa.string()),
                pa.field("span_id", pa.string()),
            )
        ),
        "invalid utf-8": ipc(with_column(one, "name", invalid_utf8)),
        "truncated": ipc(table)[:-100],
        "not arrow": b"\x00" * 64,
    }
    before = snapshot(live_server.store)
    for what, body in cases.items():
        response = post(live_server, "/api/v1/spans", body, ARROW)
        assert response.status_code == 400, (what, response.text)
        assert response.json()["code" if "code" in response.json() else "error"]
    assert snapshot(live_server.store) == before


def test_the_span_stream_checker_keeps_valid_batches_whole() -> None:
    table = pa.concat_tables([span_table(trace=1), span_table(trace=2)])
    assert read_span_stream(ipc(table), max_bytes=10**7).equals(table)
    with pytest.raises(InvalidSpanStream, match="more than"):
        read_span_stream(ipc(table), max_bytes=100)


def test_arrow_spans_need_their_content_type_and_fit_the_limit(serve_with: Any) -> None:
    server = serve_with(max_spans_request_bytes=64 * 1024)
    body = ipc(span_table())
    for content_type in (None, "text/plain", JSON):
        response = post(server, "/api/v1/spans", body, content_type)
        assert response.status_code == 415, content_type
        assert response.json()["code"] == ErrorCode.UNSUPPORTED_FORMAT
    big = ipc(with_column(span_table(1), "input_value", pa.array(["x" * 100_000])))
    too_large = post(server, "/api/v1/spans", big, ARROW)
    assert (too_large.status_code, too_large.json()["code"]) == (413, ErrorCode.REQUEST_TOO_LARGE)
    assert count_spans(server.store) == 0
    assert post(server, "/api/v1/spans", body, f"{ARROW}; charset=binary").status_code == 200
    assert count_spans(server.store) == 3


def test_the_store_path_is_told_to_local_clients_with_the_token_not_by_healthz(
    serve_with: Any,
) -> None:
    server = serve_with(token="s3cret")
    assert "store" not in httpx2.get(server.url + "/healthz").json()
    assert httpx2.get(server.url + "/api/v1/info").status_code == 401
    info = httpx2.get(server.url + "/api/v1/info", headers={"authorization": "Bearer s3cret"})
    assert info.status_code == 200
    assert info.json()["service"] == "traceproof"
    assert info.json()["store"] == str(server.store.path)


def test_the_remote_store_sends_spans_the_server_accepts(live_server: LiveServer) -> None:
    result = RemoteStore(live_server.url).submit(span_table(4)).result()
    assert (result.received, result.added) == (4, 4)
    assert count_spans(live_server.store) == 4


# -- Host and Origin, on every route ---------------------------------------------------------------

ROUTES = [
    ("GET", "/healthz", None),
    ("GET", "/api/v1/stats", None),
    ("GET", "/api/v1/info", None),
    ("POST", "/api/v1/tools/sql", JSON),
    ("POST", "/api/v1/spans", ARROW),
    ("POST", "/v1/traces", PROTOBUF),
    ("POST", "/mcp", JSON),
]


@pytest.mark.parametrize(("method", "path", "content_type"), ROUTES)
def test_a_foreign_host_is_refused_421_on_every_route(
    live_server: LiveServer, method: str, path: str, content_type: str | None
) -> None:
    """DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    headers = {"host": f"evil.example:{live_server.port}"}
    if content_type:
        headers["content-type"] = content_type
    body = b'{"query": "select 1"}' if content_type == JSON else encoded(agent_spans())
    response = httpx2.request(
        method,
        live_server.url + path,
        headers=headers,
        timeout=30,
        content=body if method == "POST" else None,
    )
    assert response.status_code == 421, response.text
    if path == "/v1/traces":
        assert rpc_status(response)[1].startswith(f"[{ErrorCode.FORBIDDEN_HOST}]")
    else:
        assert response.json()["code"] == ErrorCode.FORBIDDEN_HOST
    assert count_spans(live_server.store) == 0


@pytest.mark.parametrize(("method", "path", "content_type"), ROUTES)
def test_a_foreign_origin_is_refused_403_on_every_route(
    live_server: LiveServer, method: str, path: str, content_type: str | None
) -> None:
    """A cross-site request from a page the user opened carries that page's Origin."""
    headers = {"origin": "https://evil.example"}
    if content_type:
        headers["content-type"] = content_type
    response = httpx2.request(
        method,
        live_server.url + path,
        headers=headers,
        timeout=30,
        content=b"{}" if method == "POST" else None,
    )
    assert response.status_code == 403, response.text
    assert count_spans(live_server.store) == 0


def test_loopback_names_the_own_origin_and_allowed_hosts_are_accepted(serve_with: Any) -> None:
    server = serve_with(allowed_hosts=["traceproof.internal"])
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"traceproof.internal:{port}"):
        response = httpx2.get(server.url + "/api/v1/stats", headers={"host": host})
        assert response.status_code == 200, host
    own = httpx2.get(server.url + "/api/v1/stats", headers={"origin": f"http://localhost:{port}"})
    assert own.status_code == 200
    other_port = httpx2.get(server.url + "/healthz", headers={"host": "localhost:1"})
    assert other_port.status_code == 421


MCP_INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
).encode()
MCP_ACCEPT = "application/json, text/event-stream"


def test_host_names_are_case_insensitive_on_every_route_mcp_included(
    live_server: LiveServer,
) -> None:
    """``LOCALHOST:port`` is loopback: neither the guard nor the SDK's own check on /mcp
    refuses it (both compare lowercased names)."""
    port = live_server.port
    for host, origin in (
        (f"LOCALHOST:{port}", None),
        (f"LocalHost:{port}", f"HTTP://LOCALHOST:{port}"),
    ):
        headers = {"host": host, **({"origin": origin} if origin else {})}
        for method, path, content_type in ROUTES:
            sent = dict(headers)
            if content_type:
                sent["content-type"] = content_type
            body = b"{}" if content_type == JSON else b""
            if path == "/mcp":
                body, sent["accept"] = MCP_INITIALIZE, MCP_ACCEPT
            response = httpx2.request(
                method,
                live_server.url + path,
                headers=sent,
                timeout=30,
                content=body if method == "POST" else None,
            )
            assert response.status_code not in (403, 421), (host, path, response.text)
            if path == "/mcp":
                assert response.status_code == 200, response.text


def test_mcp_posts_need_json_like_every_api_route(live_server: LiveServer) -> None:
    """/mcp answers a wrong content type like /api: 415 unsupported_format from the guard (not
    the SDK's bare 400); its GET (SSE stream) and DELETE (end a session) carry no body."""
    for content_type in ("text/plain", None, "application/x-www-form-urlencoded"):
        headers = {"accept": MCP_ACCEPT, **({"content-type": content_type} if content_type else {})}
        response = httpx2.post(
            live_server.url + "/mcp", content=MCP_INITIALIZE, headers=headers, timeout=30
        )
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["code"] == ErrorCode.UNSUPPORTED_FORMAT
    opened = httpx2.post(
        live_server.url + "/mcp",
        content=MCP_INITIALIZE,
        headers={"accept": MCP_ACCEPT, "content-type": f"{JSON}; charset=utf-8"},
        timeout=30,
    )
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers.get("mcp-session-id", "")}
    ended = httpx2.delete(live_server.url + "/mcp", headers=session, timeout=30)
    assert ended.status_code != 415, ended.text


def test_a_text_plain_post_to_a_tool_is_refused_415(live_server: LiveServer) -> None:
    """A cross-site form or fetch without preflight can send text/plain, never JSON."""
    for content_type in ("text/plain", None, "application/x-www-form-urlencoded"):
        response = post(live_server, "/api/v1/tools/sql", b'{"query": "select 42"}', content_type)
        assert response.status_code == 415, content_type
        assert response.json()["code"] == ErrorCode.UNSUPPORTED_FORMAT
    ok = post(live_server, "/api/v1/tools/sql", b'{"query": "select 42 as x"}', JSON)
    assert ok.status_code == 200, ok.text


# -- body limits and bytes in flight ---------------------------------------------------------------


def test_tool_bodies_over_the_limit_are_refused_413_declared_or_streamed(serve_with: Any) -> None:
    server = serve_with(max_api_request_bytes=64 * 1024)
    big = json.dumps({"query": "select 1", "pad": "x" * 100_000}).encode()
    declared = post(server, "/api/v1/tools/sql", big, JSON)
    streamed = httpx2.post(
        server.url + "/api/v1/tools/sql",
        content=iter([big[i : i + 8192] for i in range(0, len(big), 8192)]),
        headers={"content-type": JSON},
        timeout=60,
    )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == ErrorCode.REQUEST_TOO_LARGE
    assert httpx2.get(server.url + "/healthz").status_code == 200


def _big_otlp(trace: int, size: int) -> bytes:
    document = json_request(
        ({"service.name": "svc"}, [json_span(trace, 1, attributes={"blob": "x" * size})])
    )
    return json.dumps(document).encode()


def test_bytes_in_flight_past_the_budget_answer_503_unread_until_room_is_made(
    serve_with: Any,
) -> None:
    mib = 1024 * 1024
    server = serve_with(max_body_bytes_in_flight=mib, retry_after_seconds=3)
    held_body = _big_otlp(1, 700_000)
    release = stall_writer(server.store)
    results: list[httpx2.Response] = []
    try:
        # Admitted (nothing else in flight), decoded, then waiting for the stalled writer.
        held = threading.Thread(
            target=lambda: results.append(post(server, "/v1/traces", held_body, JSON))
        )
        held.start()
        wait_until(lambda: _in_flight(server), what="the first request to hold its bytes")
        declared = post(server, "/v1/traces", _big_otlp(2, 500_000), JSON)
        streamed = httpx2.post(
            server.url + "/v1/traces",
            content=iter([_big_otlp(3, 500_000)]),
            headers={"content-type": PROTOBUF},
            timeout=60,
        )
        for response in (declared, streamed):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "3"
            assert rpc_status(response)[0] == UNAVAILABLE
        small = post(server, "/api/v1/tools/sql", b'{"query": "select 1 as x"}', JSON)
        assert small.status_code == 200  # small requests still fit beside the held one
    finally:
        release.set()
    held.join(30)
    assert results[0].status_code == 200
    assert post(server, "/v1/traces", _big_otlp(2, 500_000), JSON).status_code == 200
    assert count_spans(server.store) == 2


def _in_flight(server: LiveServer) -> bool:
    guard = _guard_of(server)
    return guard.budget.used > 600_000


def _guard_of(server: LiveServer) -> Any:
    """The app's RequestGuard (Starlette builds its middleware stack at the first request)."""
    from traceproof.server.guard import RequestGuard

    layer = server.server.config.app.middleware_stack
    while layer is not None and not isinstance(layer, RequestGuard):
        layer = getattr(layer, "app", None)
    assert layer is not None, "no RequestGuard in the app"
    return layer


def test_a_large_body_refused_for_the_budget_gets_its_503_not_a_reset(serve_with: Any) -> None:
    """An exporter sends its whole body before it reads the answer: the guard reads and drops
    the refused body (memory stays flat) and answers 503 with Retry-After on a connection that
    stays usable, instead of closing it under the sender (a reset, seen as a network error)."""
    server = serve_with(max_body_bytes_in_flight=1024 * 1024, retry_after_seconds=2)
    release = stall_writer(server.store)
    results: list[httpx2.Response] = []
    try:
        held = threading.Thread(
            target=lambda: results.append(post(server, "/v1/traces", _big_otlp(1, 700_000), JSON))
        )
        held.start()
        wait_until(lambda: _in_flight(server), what="the first request to hold its bytes")
        body = _big_otlp(2, 24 * 1024 * 1024)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        answers = []
        for _ in range(2):  # the same connection answers twice: it was neither reset nor closed
            connection.request("POST", "/v1/traces", body, {"content-type": JSON})
            answer = connection.getresponse()
            answers.append((answer.status, answer.getheader("retry-after"), answer.read()))
        connection.close()
    finally:
        release.set()
    held.join(30)
    assert [(status, retry) for status, retry, _ in answers] == [(503, "2"), (503, "2")]
    assert b"server_busy" in answers[0][2]
    assert results[0].status_code == 200
