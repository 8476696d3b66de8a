"""Ingest and queries do not starve each other (issue 8 §3).

Heavy tool calls run in slots of their own; beyond the limit a call answers ``[busy]``; light
calls and OTLP decoding have threads of their own; time spent waiting for a worker counts
against a call's time limit; several jq programs run at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp_types import TextContent

from tests.conftest import (
    CollectingExporter,
    LiveServer,
    encoded,
    make_agent_trace,
    sdk_provider,
    wait_until,
)
from traceproof.ingest.otlp import decode_protobuf
from traceproof.server.mcp import create_mcp_server
from traceproof.server.pools import Pools, ServerBusy, is_heavy, pools_for
from traceproof.settings import Settings
from traceproof.storage import QueryTimeout, Store
from traceproof.storage.reader import call_deadline, time_left
from traceproof.tools.jqtool import jq
from traceproof.tools.jqworker import runner

#: A query that runs until its time limit interrupts it.
ENDLESS_SQL = "select count(*) from range(100000000000000) t(a) where a % 7 = 3"
#: As many heavy calls as asyncio's default thread pool has threads (what every call shared).
DEFAULT_THREADS = min(32, 2 + 4)


def _store(tmp_path: Path, **limits: Any) -> Store:
    settings = Settings(db=tmp_path / "store.duckdb", **limits)
    return Store.open(settings.db, settings)


@pytest.fixture
def busy_store(tmp_path: Path) -> Iterator[Store]:
    with _store(tmp_path, heavy_queries=DEFAULT_THREADS, sql_timeout_seconds=10) as store:
        exporter = CollectingExporter()
        make_agent_trace(sdk_provider(exporter))
        store.write(decode_protobuf(encoded(exporter.spans), default_project="d").rows.table())
        yield store


def _call(server: LiveServer, name: str, arguments: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(f"{server.url}/api/v1/tools/{name}", json=arguments, timeout=60)


def _fill_heavy_slots(
    server: LiveServer, store: Store, count: int
) -> tuple[ThreadPoolExecutor, list[Future[httpx2.Response]]]:
    callers = ThreadPoolExecutor(count)
    heavy = [callers.submit(_call, server, "sql", {"query": ENDLESS_SQL}) for _ in range(count)]
    wait_until(
        lambda: pools_for(store)._heavy_running == count, what=f"{count} heavy calls running"
    )
    return callers, heavy


def test_light_calls_and_otlp_answer_while_every_heavy_slot_runs_a_long_query(
    busy_store: Store,
) -> None:
    exporter = CollectingExporter()
    make_agent_trace(sdk_provider(exporter, project="ingested"))
    body = encoded(exporter.spans)
    with LiveServer(busy_store, busy_store.settings) as server:
        callers, heavy = _fill_heavy_slots(server, busy_store, DEFAULT_THREADS)
        projects = _call(server, "list_projects", {})
        posted = httpx2.post(
            server.url + "/v1/traces",
            content=body,
            headers={"content-type": "application/x-protobuf"},
            timeout=60,
        )
        still_running = [not f.done() for f in heavy]
        with busy_store.reader() as reader:
            trace_id = reader.scalar("SELECT trace_id FROM spans LIMIT 1")
        preview = _call(server, "get_trace_preview", {"trace_id": trace_id})
        preview_while_running = [not f.done() for f in heavy]
        results = [f.result() for f in heavy]
        callers.shutdown()
    assert projects.status_code == 200
    assert posted.status_code == 200
    assert preview.status_code == 200, preview.text
    # The light calls and the OTLP POST were answered while every heavy query still ran.
    assert all(still_running) and all(preview_while_running)
    assert {r.json()["code"] for r in results} == {"query_timeout"}
    with busy_store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans WHERE project = 'ingested'") == 3


def test_the_heavy_call_past_the_limit_answers_busy_over_http_and_mcp(tmp_path: Path) -> None:
    store = _store(tmp_path, heavy_queries=2, heavy_queue_max=0, sql_timeout_seconds=10)

    async def over_mcp() -> Any:
        async with Client(create_mcp_server(store)) as client:
            return await client.call_tool("jq", {"program": ".", "project": "p"})

    with store, LiveServer(store, store.settings) as server:
        callers, heavy = _fill_heavy_slots(server, store, 2)
        refused = _call(server, "sql", {"query": "select 1"})
        filtered = _call(server, "search_spans", {"pattern": "x"})
        light = _call(server, "search_spans", {})
        answer = asyncio.run(over_mcp())
        running = [not f.done() for f in heavy]
        for f in heavy:
            f.result()
        callers.shutdown()
    assert (refused.status_code, refused.json()["code"]) == (503, "busy")
    assert refused.json()["error"].startswith("[busy] ")
    assert int(refused.headers["retry-after"]) >= 1
    assert (filtered.status_code, filtered.json()["code"]) == (503, "busy")
    assert light.status_code == 200, light.text
    assert answer.is_error
    assert isinstance(answer.content[0], TextContent)
    assert answer.content[0].text.startswith("[busy] ")
    assert all(running)


def test_a_heavy_call_beyond_the_slots_waits_for_one_and_one_past_the_queue_is_busy(
    tmp_path: Path,
) -> None:
    settings = Settings(
        db=tmp_path / "x.duckdb", heavy_queries=1, heavy_queue_max=1, sql_timeout_seconds=30
    )
    pools = Pools(settings)
    release = threading.Event()

    async def scenario() -> tuple[BaseException | None, str]:
        first = asyncio.ensure_future(pools.run_tool("sql", {}, lambda: release.wait(30)))
        while pools._heavy_running < 1:
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(pools.run_tool("jq", {}, lambda: "second ran"))
        while pools._heavy_waiting < 1:
            await asyncio.sleep(0.01)
        refused: BaseException | None = None
        try:
            await pools.run_tool("aggregate", {}, lambda: "third ran")
        except ServerBusy as exc:
            refused = exc
        release.set()
        await first
        return refused, await second

    refused, second = asyncio.run(scenario())
    pools.close()
    assert isinstance(refused, ServerBusy)
    assert str(refused).startswith("[busy] ")
    assert second == "second ran"
    assert (pools._heavy_running, pools._heavy_waiting) == (0, 0)


def test_a_waiting_heavy_call_answers_busy_when_its_deadline_passes(tmp_path: Path) -> None:
    settings = Settings(
        db=tmp_path / "x.duckdb", heavy_queries=1, heavy_queue_max=4, sql_timeout_seconds=0.3
    )
    pools = Pools(settings)
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> tuple[BaseException | None, bool]:
        first = asyncio.ensure_future(pools.run_tool("sql", {}, lambda: release.wait(30)))
        while pools._heavy_running < 1:
            await asyncio.sleep(0.01)
        error: BaseException | None = None
        try:
            await pools.run_tool("sql", {}, lambda: ran.append("ran"))
        except ServerBusy as exc:
            error = exc
        first_still_running = not first.done()
        release.set()
        await first
        return error, first_still_running

    error, first_still_running = asyncio.run(scenario())
    pools.close()
    # Answered at its deadline while the slot was still taken, not when the slot freed.
    assert isinstance(error, ServerBusy)
    assert first_still_running
    assert ran == []
    assert (pools._heavy_running, pools._heavy_waiting) == (0, 0)


@pytest.mark.parametrize(
    ("name", "arguments", "heavy"),
    [
        ("sql", {"query": "select 1"}, True),
        ("jq", {"program": "."}, True),
        ("aggregate", {}, True),
        ("search_spans", {"pattern": "x"}, True),
        ("search_spans", {"where": "latency_ms > 1"}, True),
        ("search_spans", {"status": "ERROR"}, False),
        ("search_traces", {"regex": "x"}, True),
        ("search_traces", {"where": "x"}, True),
        ("search_traces", {"project": "p"}, False),
        ("list_projects", {}, False),
        ("get_trace_preview", {"trace_id": "t"}, False),
        ("find_in_trace", {"trace_id": "t", "pattern": "x"}, False),
    ],
)
def test_which_calls_are_heavy(name: str, arguments: dict[str, Any], heavy: bool) -> None:
    assert is_heavy(name, arguments) is heavy


def test_time_waiting_for_a_thread_counts_against_the_calls_limit(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "x.duckdb", query_threads=1, sql_timeout_seconds=30)
    pools = Pools(settings)
    release = threading.Event()
    seen: dict[str, float | None] = {}

    def blocker() -> None:
        release.wait(30)

    def second() -> None:
        seen["left"] = time_left(settings.sql_timeout_seconds)

    async def scenario() -> float:
        first = asyncio.ensure_future(pools.run_tool("list_projects", {}, blocker))
        await asyncio.sleep(0)
        submitted = time.monotonic()
        waiting = asyncio.ensure_future(pools.run_tool("list_projects", {}, second))
        while pools._light_waiting < 1:
            await asyncio.sleep(0.01)
        while time.monotonic() - submitted < 0.5:  # let it wait a measurable while
            await asyncio.sleep(0.05)
        waited = time.monotonic() - submitted
        release.set()
        await first
        await waiting
        return waited

    waited = asyncio.run(scenario())
    pools.close()
    left = seen["left"]
    assert left is not None
    assert left <= settings.sql_timeout_seconds - waited


def test_a_call_that_waited_its_whole_limit_answers_busy_without_running(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "x.duckdb", query_threads=1, sql_timeout_seconds=0.3)
    pools = Pools(settings)
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> BaseException | None:
        first = asyncio.ensure_future(pools.run_tool("list_projects", {}, lambda: release.wait(30)))
        await asyncio.sleep(0)
        start = time.monotonic()
        waiting = asyncio.ensure_future(
            pools.run_tool("list_projects", {}, lambda: ran.append("ran"))
        )
        while time.monotonic() - start < settings.sql_timeout_seconds * 2:
            await asyncio.sleep(0.05)
        release.set()
        await first
        try:
            await waiting
        except ServerBusy as exc:
            return exc
        return None

    error = asyncio.run(scenario())
    pools.close()
    assert isinstance(error, ServerBusy)
    assert str(error).startswith("[busy] ")
    assert ran == []


def test_queries_stop_at_the_calls_deadline_not_a_fresh_limit(store: Store) -> None:
    with (
        call_deadline(time.monotonic() + 0.5),
        store.reader(timeout=60) as reader,
        pytest.raises(QueryTimeout),
    ):
        reader.scalar(ENDLESS_SQL)


def test_several_jq_programs_run_at_once_and_stop_at_their_deadline(store: Store) -> None:
    exporter = CollectingExporter()
    make_agent_trace(sdk_provider(exporter, project="p"))
    store.write(decode_protobuf(encoded(exporter.spans), default_project="d").rows.table())
    workers = store.settings.jq_workers
    jq_runner = runner(workers)
    errors: list[BaseException] = []

    def endless() -> None:
        try:
            with call_deadline(time.monotonic() + 20):
                jq(store, program="last(range(1e15))", project="p")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=endless) for _ in range(workers)]
    for thread in threads:
        thread.start()
    # Every program runs in a child of its own at the same time (no lock serialises them).
    wait_until(lambda: jq_runner.children() >= workers, what=f"{workers} jq children")
    jq_runner.close()  # stop them now rather than wait out the limit
    for thread in threads:
        thread.join(30)
    assert len(errors) == workers
    # A program whose deadline passes while it waits for a child never starts.
    with call_deadline(time.monotonic()), pytest.raises(QueryTimeout):
        jq(store, program=".", project="p")
