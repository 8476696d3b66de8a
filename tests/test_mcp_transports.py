"""MCP over its real transports: stdio (``traceproof mcp`` spawned by the SDK's client) and
streamable HTTP (``/mcp`` of a running server), with spans sent by the OpenTelemetry SDK's own
OTLP/HTTP exporter; the bearer token and DNS-rebinding protection in front of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.conftest import (
    LiveServer,
    ServeProcess,
    free_port,
    make_agent_trace,
    sdk_provider,
    wait_until,
)
from traceproof.errors import ErrorCode
from traceproof.settings import Settings
from traceproof.storage import Store, owner
from traceproof.tools import registry

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def mcp_command(db: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "traceproof", "mcp", "--db", str(db), *args],
        env={"PYTHONUNBUFFERED": "1"},
    )


def healthy(url: str) -> bool:
    try:
        return httpx2.get(url + "/healthz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def export_agent_traces(endpoint: str, headers: dict[str, str] | None = None) -> list[Any]:
    """Two small agent traces (the second with a failing tool) through the SDK's OTLP/HTTP
    exporter; returns each export's result."""
    results: list[Any] = []

    class Recording(OTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            result = super().export(spans)
            results.append(result)
            return result

    exporter = Recording(endpoint=endpoint, headers=headers, timeout=10)
    provider = sdk_provider(exporter, project="checkout")
    make_agent_trace(provider, turn=1)
    make_agent_trace(provider, fail_tool=True, turn=2)
    provider.shutdown()
    return results


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose settings carry a token."""
    settings = Settings(db=tmp_path / "guarded.duckdb", token=TOKEN)
    with Store.open(settings.db, settings) as store, LiveServer(store, settings) as server:
        yield server


def authorized(token: str = TOKEN) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)


# -- the token and DNS-rebinding protection (in-process server) --------------------------------


async def test_the_token_guards_mcp_otlp_and_the_api_but_not_the_health_check(
    guarded: LiveServer,
) -> None:
    # JSON, as MCP clients send it: the guard refuses other content types (415) before the
    # token is looked at.
    json_type = {"content-type": "application/json"}
    async with httpx2.AsyncClient(timeout=10) as http:
        for method, path in [("POST", "/mcp"), ("POST", "/v1/traces"), ("GET", "/api/v1/stats")]:
            response = await http.request(
                method, guarded.url + path, content=b"{}", headers=json_type
            )
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["code"] == ErrorCode.UNAUTHORIZED
            wrong = await http.request(
                method, guarded.url + path, headers={"Authorization": "Bearer nope", **json_type}
            )
            assert wrong.status_code == 401, path
        assert (await http.get(guarded.url + "/healthz")).status_code == 200
        # No OAuth here: a client probing for it finds nothing, rather than a refusal.
        probe = await http.get(guarded.url + "/.well-known/oauth-protected-resource/mcp")
        assert probe.status_code == 404


async def test_with_the_token_mcp_over_http_answers_and_otlp_is_stored(
    guarded: LiveServer,
) -> None:
    refused = await anyio.to_thread.run_sync(export_agent_traces, guarded.url + "/v1/traces")
    assert refused and all(r is SpanExportResult.FAILURE for r in refused)
    accepted = await anyio.to_thread.run_sync(
        export_agent_traces, guarded.url + "/v1/traces", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert accepted and all(r is SpanExportResult.SUCCESS for r in accepted)
    async with (
        authorized() as http,
        Client(streamable_http_client(guarded.url + "/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("search_traces", {"project": "checkout"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["total"] == 2
    assert sorted(row["error_count"] for row in result.structured_content["traces"]) == [0, 1]


async def test_mcp_without_the_token_cannot_connect(guarded: LiveServer) -> None:
    with pytest.raises(ExceptionGroup) as raised:
        async with (
            authorized("wrong") as http,
            Client(streamable_http_client(guarded.url + "/mcp", http_client=http)) as client,
        ):
            await client.list_tools()
    assert raised.group_contains(MCPError)


async def test_dns_rebinding_protection_refuses_a_foreign_host_header(
    guarded: LiveServer,
) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with authorized() as http:
        evil = await http.post(
            guarded.url + "/mcp", json=body, headers={**headers, "Host": "evil.example:80"}
        )
        bad_origin = await http.post(
            guarded.url + "/mcp", json=body, headers={**headers, "Origin": "http://evil.example"}
        )
        good = await http.post(guarded.url + "/mcp", json=body, headers=headers)
    assert evil.status_code == 421
    assert bad_origin.status_code == 403
    assert good.status_code == 200


# -- stdio: traceproof mcp, spawned ------------------------------------------------------------


@pytest.mark.slow
async def test_mcp_over_stdio_sees_spans_the_otel_exporter_sent_to_its_otlp_port(
    tmp_path: Path,
) -> None:
    db = tmp_path / "stdio.duckdb"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with Client(mcp_command(db, "--port", str(port))) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == [spec.name for spec in registry.TOOLS]
        await anyio.to_thread.run_sync(lambda: wait_until(lambda: healthy(url), 30, "OTLP"))
        found = owner.read(db)
        assert found is not None and found.command == "traceproof mcp" and found.url == url
        results = await anyio.to_thread.run_sync(export_agent_traces, url + "/v1/traces")
        assert results and all(r is SpanExportResult.SUCCESS for r in results)

        projects = await client.call_tool("list_projects", {})
        traces = await client.call_tool("search_traces", {"project": "checkout", "limit": 5})
        missing = await client.call_tool("search_traces", {"project": "nope"})
    assert projects.structured_content is not None
    (checkout,) = projects.structured_content["projects"]
    assert (checkout["project"], checkout["traces"], checkout["spans"]) == ("checkout", 2, 6)
    assert traces.structured_content is not None
    rows = traces.structured_content["traces"]
    assert [row["input"] for row in rows] == ["question 2", "question 1"]  # newest first
    assert [row["error_count"] for row in rows] == [1, 0]
    assert missing.is_error and text_of(missing).startswith("[unknown_project] ")
    assert owner.read(db) is None  # the client closed stdin: the process cleaned up and left


@pytest.mark.slow
async def test_mcp_over_stdio_keeps_serving_when_the_otlp_port_is_taken(tmp_path: Path) -> None:
    db = tmp_path / "taken.duckdb"
    errlog = tmp_path / "stderr.txt"
    with socket.socket() as taken, errlog.open("w") as err:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        transport = stdio_client(mcp_command(db, "--port", str(port)), errlog=err)
        async with Client(transport) as client:
            result = await client.call_tool("list_projects", {})
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["total"] == 0
    said = errlog.read_text()
    assert "warning: OTLP receiver not started" in said and str(port) in said


def notices(result: CallToolResult) -> list[str]:
    """The text blocks after the result's JSON (what the host shows the model beside it)."""
    return [b.text for b in result.content[1:] if isinstance(b, TextContent)]


@pytest.mark.slow
async def test_mcp_tells_the_agent_in_every_answer_that_another_traceproof_has_the_otlp_port(
    tmp_path: Path,
) -> None:
    # A quickstart `serve --demo` on another store holds the port this project's MCP wants.
    other = ServeProcess(tmp_path / "quickstart.duckdb", None, "--demo")
    db = tmp_path / "project.duckdb"
    try:
        async with Client(mcp_command(db, "--port", str(other.port))) as client:
            instructions = client.instructions or ""
            projects = await client.call_tool("list_projects", {})
            missing = await client.call_tool("search_traces", {"project": "nope"})
    finally:
        other.stop()
    assert "[otlp_port_taken]" in instructions and "quickstart.duckdb" in instructions
    # The answer is still this store's (empty) one, and says why it may be empty, with the fix.
    assert projects.structured_content is not None and projects.structured_content["total"] == 0
    [notice] = notices(projects)
    assert notice.startswith("[otlp_port_taken] ")
    assert str(tmp_path / "quickstart.duckdb") in notice and str(db) in notice
    assert f":{other.port}" in notice and "--port" in notice
    assert missing.is_error and text_of(missing).startswith("[unknown_project] ")
    assert "[otlp_port_taken]" in text_of(missing)


@pytest.mark.slow
async def test_mcp_names_a_foreign_program_holding_the_otlp_port(tmp_path: Path) -> None:
    db = tmp_path / "taken.duckdb"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with Client(mcp_command(db, "--port", str(port))) as client:
            result = await client.call_tool("list_projects", {})
    [notice] = notices(result)
    assert notice.startswith("[otlp_port_taken] ") and "not a traceproof" in notice


@pytest.mark.slow
async def test_mcp_on_a_store_held_by_serve_works_through_the_server(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    serve = ServeProcess(db, None, "--demo", "--token", TOKEN)
    try:
        params = mcp_command(db, "--port", str(free_port()))
        params.env = {**(params.env or {}), "TRACEPROOF_TOKEN": TOKEN}
        async with Client(params) as client:
            traces = await client.call_tool("search_traces", {"project": "demo", "limit": 3})
            missing = await client.call_tool("search_traces", {"project": "nope"})
            bad = await client.call_tool("search_traces", {"limit": 1000})
        async with (
            authorized() as http,
            Client(streamable_http_client(serve.url + "/mcp", http_client=http)) as over_http,
        ):
            direct = await over_http.call_tool("search_traces", {"project": "demo", "limit": 3})
    finally:
        serve.stop()
    assert traces.structured_content is not None
    assert traces.structured_content["total"] == 90
    assert len(traces.structured_content["traces"]) == 3
    assert traces.structured_content == direct.structured_content
    assert missing.is_error and text_of(missing).startswith("[unknown_project] No project 'nope'")
    assert bad.is_error and text_of(bad).startswith("[invalid_argument] ")


@pytest.mark.slow
async def test_mcp_without_the_token_of_the_server_holding_the_store_says_where_to_set_it(
    tmp_path: Path,
) -> None:
    """An agent cannot send headers: the fix it is told is TRACEPROOF_TOKEN in its MCP server's
    env, not an Authorization header."""
    db = tmp_path / "held.duckdb"
    serve = ServeProcess(db, None, "--token", TOKEN)
    try:
        async with Client(mcp_command(db, "--port", str(free_port()))) as client:
            refused = await client.call_tool("search_traces", {})
    finally:
        serve.stop()
    assert refused.is_error
    text = text_of(refused)
    assert text.startswith(f"[{ErrorCode.UNAUTHORIZED}] ")
    assert "TRACEPROOF_TOKEN" in text and "env of this MCP server" in text
    assert "Authorization" not in text


def test_a_refused_token_tells_an_agent_and_a_person_their_own_fix(guarded: LiveServer) -> None:
    from traceproof.errors import TraceproofError
    from traceproof.remote import RemoteStore

    answers = {}
    for for_agent in (True, False):
        for token in (None, "wrong"):
            remote = RemoteStore(guarded.url, token=token, for_agent=for_agent)
            for call in (lambda r=remote: r.call_tool("list_projects", {}), remote.stats):
                with pytest.raises(TraceproofError) as refused:
                    call()
                assert refused.value.code == ErrorCode.UNAUTHORIZED
                assert "Authorization" not in refused.value.message
                answers[for_agent, token] = refused.value.message
    assert all("env of this MCP server" in answers[True, t] for t in (None, "wrong"))
    assert all("--token" in answers[False, t] for t in (None, "wrong"))
    assert "does not accept" in answers[True, "wrong"] and "no token" in answers[True, None]


@pytest.mark.slow
async def test_mcp_on_a_store_held_without_a_url_answers_every_call_with_the_lock_error(
    tmp_path: Path,
) -> None:
    db = tmp_path / "held.duckdb"
    async with Client(mcp_command(db, "--no-otlp")) as holder:
        assert not (await holder.call_tool("list_projects", {})).is_error
        async with Client(mcp_command(db, "--no-otlp")) as second:
            assert len((await second.list_tools()).tools) == len(registry.TOOLS)
            result = await second.call_tool("search_traces", {})
    assert result.is_error
    assert text_of(result).startswith("[store_locked] ")
    assert "traceproof mcp" in text_of(result)


@pytest.mark.slow
def test_sigterm_stops_traceproof_mcp_and_closes_the_store(tmp_path: Path) -> None:
    db = tmp_path / "term.duckdb"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceproof", "mcp", "--db", str(db), "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), 30, "traceproof mcp's OTLP")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert owner.read(db) is None
    with Store.open(db, Settings(db=db)):
        pass  # the lock is released: the store opens


def test_stdio_answers_lines_the_sdk_cannot_read_and_keeps_serving(tmp_path: Path) -> None:
    """A lone surrogate escape (``"\\ud800"``, which JSON can carry but the SDK's parser
    refuses) gets a JSON-RPC error for its id naming the argument; a line that is not JSON gets
    a parse error with a null id; a notification gets nothing; later calls are served."""
    import json
    import queue
    import threading

    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    lines = [
        json.dumps(initialize),
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_dataset",'
        '"arguments":{"name":"s\\ud800","examples":[{"input":1}]}}}',
        '{"jsonrpc":"2.0","id":3,"method":"tools/list"',
        '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"\\udc00"}}',
        '{"jsonrpc":"2.0","id":"four","method":"ping","params":{"_meta":{"x":"\\udfff"}}}',
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_datasets",'
        '"arguments":{}}}',
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceproof", "mcp", "--no-otlp", "--db", str(tmp_path / "s.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    answers: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            answers.put(json.loads(raw))

    threading.Thread(target=read, daemon=True).start()
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(line + "\n" for line in lines).encode())
        proc.stdin.flush()
        got: dict[Any, dict[str, Any]] = {}
        while 5 not in got:
            answer = answers.get(timeout=60)  # an unanswered id leaves this waiting: a failure
            got[answer.get("id")] = answer
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert sorted(got, key=str) == sorted([1, 2, None, "four", 5], key=str)
    assert got[2]["error"]["code"] == -32602
    assert got[2]["error"]["message"].startswith("[invalid_argument] name holds text")
    assert got[None]["error"]["code"] == -32700
    assert got["four"]["error"]["code"] == -32602
    assert "message.params._meta.x" in got["four"]["error"]["message"]
    assert got[5]["result"]["isError"] is False
    assert got[5]["result"]["structuredContent"]["total"] == 0
