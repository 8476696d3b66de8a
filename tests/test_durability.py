"""``traceproof serve`` as a process: restarts, kill -9, signals, and a store held by another.

The promise under test: a span the receiver acknowledged (HTTP 200) is in the store, whatever
happens to the process afterwards, and the store file opens again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.conftest import ServeProcess, free_port, wait_until
from tests.test_receiver import RecordingExporter, agent_spans
from traceproof.storage import Store
from traceproof.storage.owner import owner_path

pytestmark = pytest.mark.slow


def send_traces(url: str, count: int, *, project: str = "durable") -> RecordingExporter:
    """``count`` agent traces through the real exporter, one request per trace."""
    exporter = RecordingExporter(url)
    for turn in range(count):
        spans = agent_spans(project=project, fail_tool=turn % 3 == 0, turn=turn)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    return exporter


def stats(url: str) -> dict[str, Any]:
    response = httpx2.get(url + "/api/v1/stats", timeout=30)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def stored_ids(db: Path) -> set[tuple[str, str]]:
    with Store.open(db) as store, store.reader() as reader:
        return set(reader.rows("SELECT trace_id, span_id FROM spans"))


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traceproof", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_acknowledged_traces_survive_a_stop_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "durable.duckdb"
    server = ServeProcess(db)
    try:
        exporter = send_traces(server.url, 12)
        before = stats(server.url)
    finally:
        server.stop()
    (project,) = before["projects"]
    assert (project["traces"], project["spans"], project["error_traces"]) == (12, 36, 4)

    restarted = ServeProcess(db)
    try:
        assert stats(restarted.url) == before
        again = RecordingExporter(restarted.url)
        assert again.export(exporter.acked) is SpanExportResult.SUCCESS  # a resend: no change
        assert stats(restarted.url) == before
    finally:
        restarted.stop()
    assert stored_ids(db) == exporter.acked_ids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_closes_the_store_and_removes_the_owner_record(
    tmp_path: Path, sig: signal.Signals
) -> None:
    db = tmp_path / "signalled.duckdb"
    server = ServeProcess(db)
    try:
        exporter = send_traces(server.url, 2)
        assert json.loads(owner_path(db).read_text())["pid"] == server.proc.pid
    finally:
        server.proc.send_signal(sig)
        server.proc.wait(timeout=30)
    # A clean close checkpoints the write-ahead log into the file and clears the owner record;
    # both are left behind only when the process dies without closing the store.
    assert not owner_path(db).exists()
    assert not db.with_name(db.name + ".wal").exists()
    assert stored_ids(db) == exporter.acked_ids


def test_every_acknowledged_span_survives_kill_9_during_ingest(tmp_path: Path) -> None:
    db = tmp_path / "killed.duckdb"
    server = ServeProcess(db)
    senders = 3
    exporters = [RecordingExporter(server.url, timeout=2) for _ in range(senders)]
    stop = threading.Event()

    def send(i: int) -> None:
        turn = 0
        while not stop.is_set():
            exporters[i].export(agent_spans(project=f"killed-{i}", turn=turn))
            turn += 1

    threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(senders)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(len(e.acked) for e in exporters) >= 90, what="90 acknowledged spans")
        server.kill9()  # while the senders are still sending
        wait_until(lambda: any(e.failures for e in exporters), what="an export to fail")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    acked = set().union(*(e.acked_ids for e in exporters))
    assert len(acked) >= 90

    # The killed server's owner record names a dead process: the CLI opens the file itself.
    direct = run_cli("stats", "--db", db, "--json")
    assert direct.returncode == 0, direct.stderr
    assert "store_locked" not in direct.stderr

    with Store.open(db) as store, store.reader() as reader:
        stored = set(reader.rows("SELECT trace_id, span_id FROM spans"))
        # Every trace row agrees with its spans: no transaction was half applied.
        disagreeing = reader.rows(
            "SELECT t.trace_id FROM traces t"
            " JOIN (SELECT trace_id, count(*) AS n FROM spans GROUP BY 1) s USING (trace_id)"
            " WHERE t.span_count <> s.n"
        )
        orphans = reader.scalar(
            "SELECT count(*) FROM spans WHERE trace_id NOT IN (SELECT trace_id FROM traces)"
        )
        readable = reader.scalar("SELECT sum(length(attributes) + length(events)) FROM spans")
    assert acked <= stored  # nothing acknowledged is lost
    assert (disagreeing, orphans) == ([], 0)
    assert readable > 0
    direct_spans = sum(p["spans"] for p in json.loads(direct.stdout)["projects"])
    assert direct_spans == len(stored)

    restarted = ServeProcess(db)
    try:
        assert sum(p["spans"] for p in stats(restarted.url)["projects"]) == len(stored)
        send_traces(restarted.url, 1, project="after-restart")
        assert stats(restarted.url)["projects"][0]["project"] == "after-restart"
    finally:
        restarted.stop()


def test_a_second_serve_on_a_held_store_names_the_holder_and_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    server = ServeProcess(db)
    try:
        send_traces(server.url, 2)
        before = stats(server.url)
        pid = server.proc.pid

        second = run_cli("serve", "--db", db, "--port", str(free_port()), "--log-level", "warning")
        assert second.returncode == 1
        message = " ".join(second.stderr.split())
        assert message.startswith("error: [store_locked] The store ")
        assert f"traceproof serve (process {pid})" in message
        assert f"{server.url}/v1/traces" in message  # where to send traces instead
        assert f"kill {pid}" in message and "--db" in message  # or how to free it
        for raw in ("IO Error", "Conflicting lock", "Traceback", "IOException"):
            assert raw not in second.stderr

        # A reading command does not fail: it goes through the server that holds the store.
        through = run_cli("stats", "--db", db, "--json")
        assert through.returncode == 0, through.stderr
        assert json.loads(through.stdout) == before

        # The first server was not disturbed.
        send_traces(server.url, 1, project="still-serving")
        assert len(stats(server.url)["projects"]) == 2
    finally:
        server.stop()


# -- a fatal DuckDB error inside a running server ---------------------------------------------

# `traceproof serve` with the writer's fault seam armed: the first transaction raises a real
# duckdb.FatalException inside the transaction; reopening then waits for a file to appear
# (TP_FAULT=recover) or fails every time (TP_FAULT=broken).
FAULTY_SERVE = """
import os, sys, time
import duckdb
from traceproof.storage import Store

mode, release = os.environ["TP_FAULT"], os.environ.get("TP_FAULT_RELEASE", "")
fired = []

def hook(at):
    if at == "spans" and (not fired or mode == "broken"):
        fired.append(at)
        raise duckdb.FatalException("FATAL Error: Failed to rollback transaction.")
    if at == "reopen":
        if mode == "broken":
            raise duckdb.FatalException("FATAL Error: could not reopen")
        while not os.path.exists(release):
            time.sleep(0.02)

opened = Store.open.__func__

def open_with_fault(cls, *args, **kwargs):
    store = opened(cls, *args, **kwargs)
    store._fault = hook
    return store

Store.open = classmethod(open_with_fault)
from traceproof.cli import main
main()
"""


def faulty_serve(db: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAULTY_SERVE, "serve", "--db", str(db), "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"serve exited early: {proc.stdout.read() if proc.stdout else ''!r}"
            )
        try:
            return httpx2.get(url + "/healthz", timeout=1).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_until(ready, timeout=60, what="the server to answer /healthz")
    return proc


def healthz(url: str) -> httpx2.Response | None:
    try:
        return httpx2.get(url + "/healthz", timeout=2)
    except httpx2.HTTPError:
        return None


def test_healthz_turns_503_while_the_server_reopens_the_store_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    db, release, port = tmp_path / "fatal.duckdb", tmp_path / "release", free_port()
    proc = faulty_serve(db, port, TP_FAULT="recover", TP_FAULT_RELEASE=str(release))
    url = f"http://127.0.0.1:{port}"
    exporter = RecordingExporter(url, timeout=60)
    results: list[SpanExportResult] = []
    try:
        before = RecordingExporter(url)
        sending = threading.Thread(
            target=lambda: results.append(exporter.export(agent_spans(project="fatal")))
        )
        sending.start()
        unhealthy = wait_until(
            lambda: (r := healthz(url)) is not None and r.status_code == 503 and r,
            what="/healthz to answer 503",
        )
        assert unhealthy.json()["status"] == "reopening"
        assert "fatal" in unhealthy.json()["detail"].lower()
        assert str(db) not in unhealthy.text and "store" not in unhealthy.json()
        # Meanwhile a tool call is told to retry, not answered with a traceback.
        busy = httpx2.post(url + "/api/v1/tools/list_projects", json={}, timeout=10)
        assert busy.status_code == 503
        assert busy.json()["code"] == "store_busy"
        release.touch()
        sending.join(60)
        assert results == [SpanExportResult.SUCCESS]  # acknowledged after the reopen
        ok = wait_until(lambda: (r := healthz(url)) is not None and r.status_code == 200 and r)
        assert ok.json() == {"status": "ok"}
        assert before.export(agent_spans(project="after", turn=1)) is SpanExportResult.SUCCESS
    finally:
        proc.terminate()
        proc.wait(30)
    stored = stored_ids(db)
    assert exporter.acked_ids and exporter.acked_ids <= stored
    assert before.acked_ids <= stored
    with Store.open(db) as store, store.reader() as reader:
        assert reader.scalar("SELECT sum(span_count) FROM traces") == len(stored)


def test_serve_exits_non_zero_when_the_store_cannot_be_reopened(tmp_path: Path) -> None:
    db, port = tmp_path / "broken.duckdb", free_port()
    proc = faulty_serve(
        db,
        port,
        TP_FAULT="broken",
        TRACEPROOF_STORE_REOPEN_ATTEMPTS="2",
        TRACEPROOF_STORE_REOPEN_BACKOFF_SECONDS="0",
    )
    url = f"http://127.0.0.1:{port}"
    exporter = RecordingExporter(url, timeout=5)
    try:
        exporter.export(agent_spans(project="lost"))
        assert proc.wait(timeout=60) == 3  # for a supervisor to restart it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "could not be reopened" in output
    assert "Traceback" not in output
    assert exporter.acked == []  # nothing was acknowledged that was not stored
    assert stored_ids(db) == set()
