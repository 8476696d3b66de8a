"""Shared fixtures: real DuckDB files, a real server on loopback, real OTel SDK spans."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from traceproof.server.app import create_app
from traceproof.settings import Settings
from traceproof.storage import Store

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"shared test data not found at {SHARED_DATA} (it sits beside the repository)",
)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns a truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db=tmp_path / "store.duckdb")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store.open(settings.db, settings) as opened:
        yield opened


class LiveServer:
    """The ASGI app (OTLP, the tools' API and MCP at /mcp, with its lifespan) served by uvicorn
    in a thread, on a loopback port."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bound = settings.model_copy(update={"port": self.port})
        config = uvicorn.Config(
            create_app(store, bound),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(store: Store, settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(store, settings) as server:
        yield server


class ServeProcess:
    """``traceproof serve`` in a child process, for restart and kill -9 tests."""

    def __init__(self, db: Path, port: int | None = None, *args: str) -> None:
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "traceproof",
                "serve",
                "--db",
                str(db),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        import httpx2

        def ready() -> bool:
            if self.proc.poll() is not None:
                output = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"traceproof serve exited early:\n{output}")
            try:
                return httpx2.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx2.HTTPError:
                return False

        wait_until(ready, timeout=60, what="traceproof serve to answer /healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()


class CollectingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def sdk_provider(
    exporter: SpanExporter, project: str | None = "tests", service: str = "test-service"
) -> TracerProvider:
    attributes: dict[str, Any] = {"service.name": service}
    if project is not None:
        attributes["openinference.project.name"] = project
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def make_agent_trace(provider: TracerProvider, *, fail_tool: bool = False, turn: int = 0) -> None:
    """One small OpenInference trace: AGENT → LLM, TOOL (optionally failing)."""
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span(
        "agent",
        attributes={
            "openinference.span.kind": "AGENT",
            "input.value": f"question {turn}",
            "output.value": f"answer {turn}",
            "session.id": "session-1",
            "user.id": "user-1",
        },
    ):
        with tracer.start_as_current_span(
            "llm",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.token_count.prompt": 100,
                "llm.token_count.completion": 20,
                "llm.token_count.total": 120,
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": f"question {turn}",
            },
        ):
            pass
        try:
            with tracer.start_as_current_span(
                "lookup_order",
                attributes={
                    "openinference.span.kind": "TOOL",
                    "tool.name": "lookup_order",
                    "tool.parameters": '{"order_id": 42}',
                },
            ):
                if fail_tool:
                    raise TimeoutError("order service timed out")
        except TimeoutError:
            pass


def encoded(spans: list[ReadableSpan]) -> bytes:
    """The SDK's own OTLP protobuf encoding of ``spans``."""
    return bytes(encode_spans(spans).SerializeToString())


# -- stores with data, for the tools ------------------------------------------------------------


#: SQL over ``annotations``: not the demo's own judgments (traceproof.demo_judgments: its
#: reviewer's labels and its judge's verdicts), for tests that count what they wrote.
NOT_THE_DEMOS = "annotator <> 'demo-reviewer' AND annotator NOT LIKE 'resolved@%'"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file holding the demo project at the fixed times of its script, 2026-11-01
    09:08 to 14:38 UTC (built once per test session; copy before use)."""
    from traceproof.demo import REFERENCE_NOW
    from traceproof.server.run import load_demo

    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    settings = Settings(db=path)
    with Store.open(path, settings) as opened:
        load_demo(opened, settings, now=REFERENCE_NOW)
    return path


@pytest.fixture
def demo_store(demo_db: Path, tmp_path: Path) -> Iterator[Store]:
    """A store of its own holding the demo project: 25 sessions, 90 traces, 1,064 spans, 22
    error spans, one LLM span with a 400,000-character input."""
    import shutil

    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, path)
    settings = Settings(db=path)
    with Store.open(path, settings) as opened:
        yield opened
