"""Claude Code's telemetry over ``/v1/logs``: real OTLP log records from the OpenTelemetry logs
SDK and its OTLP/HTTP exporter (protobuf), and the same requests as OTLP/JSON, sent to a real
server on loopback; every test reads back what the store holds."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from google.protobuf import json_format
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from tests.conftest import LiveServer, ServeProcess
from traceproof.settings import Settings
from traceproof.storage import Store

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SESSION = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
PROMPT = "11111111-2222-3333-4444-555555555555"
T0 = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)


class ClaudeCode:
    """Emits log records the way Claude Code's telemetry does (body ``claude_code.<name>``,
    ``event.name``, ``event.sequence``, ``event.timestamp``, ``session.id``, ``prompt.id``),
    through the real logs SDK into an in-memory exporter."""

    def __init__(self, session: str = SESSION, *, prompt_ids: bool = True) -> None:
        self.session = session
        self.prompt_ids = prompt_ids
        self.memory = InMemoryLogRecordExporter()
        self.provider = LoggerProvider(
            resource=Resource.create({"service.name": "claude-code", "service.version": "2.1.175"})
        )
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.memory))
        self.logger = self.provider.get_logger("com.anthropic.claude_code.events", "2.1.175")
        self.sequence = 0
        self.prompt: str | None = None

    def emit(self, name: str, at: datetime, **attributes: Any) -> None:
        if name == "user_prompt":
            self.prompt = attributes.pop("prompt_id", None) or f"prompt-{self.sequence}"
        attrs: dict[str, Any] = {
            "event.name": name,
            "event.sequence": self.sequence,
            "event.timestamp": at.isoformat().replace("+00:00", "Z"),
            "session.id": self.session,
            "user.id": "install-hash",
            "terminal.type": "xterm-256color",
            **attributes,
        }
        if self.prompt_ids and self.prompt:
            attrs["prompt.id"] = self.prompt
        self.sequence += 1
        self.logger.emit(
            LogRecord(
                timestamp=int(at.timestamp() * 1e9),
                body=f"claude_code.{name}",
                attributes=attrs,
            )
        )

    def take(self) -> list[ReadableLogRecord]:
        records = list(self.memory.get_finished_logs())
        self.memory.clear()
        return records


def one_prompt(code: ClaudeCode, *, fail_test: bool = True) -> None:
    """A prompt: the model reads a file, edits it, runs the tests (failing), errors once."""
    code.emit("user_prompt", T0, prompt_id=PROMPT, prompt="fix the parser", prompt_length=14)
    code.emit(
        "api_request", T0 + timedelta(seconds=3), model="claude-sonnet-4-6", cost_usd=0.05,
        input_tokens=1024, output_tokens=256, cache_read_tokens=512, cache_creation_tokens=8,
        duration_ms=2500, request_id="req_1",
    )  # fmt: skip
    code.emit("tool_decision", T0 + timedelta(seconds=3.1), tool_name="Read", decision="accept",
              source="config", tool_use_id="toolu_1")  # fmt: skip
    code.emit(
        "tool_result", T0 + timedelta(seconds=3.2), tool_name="Read", success="true",
        duration_ms=100, tool_use_id="toolu_1", tool_input='{"file_path": "src/parser.py"}',
    )  # fmt: skip
    code.emit(
        "tool_result", T0 + timedelta(seconds=4), tool_name="Edit", success="true",
        duration_ms=50, tool_use_id="toolu_2",
        tool_input='{"file_path": "src/parser.py", "old_string": "a", "new_string": "b"}',
    )  # fmt: skip
    code.emit(
        "tool_result", T0 + timedelta(seconds=9), tool_name="Bash",
        success="false" if fail_test else "true", duration_ms=4000, tool_use_id="toolu_3",
        error="Exit code 1" if fail_test else None,
        tool_parameters=json.dumps({"bash_command": "pytest", "full_command": "pytest -q",
                                    "description": "Run tests"}),
    )  # fmt: skip
    code.emit("api_error", T0 + timedelta(seconds=12), model="claude-sonnet-4-6",
              error="overloaded", status_code="529", duration_ms=800, attempt=1)  # fmt: skip


def export(server: LiveServer, records: list[ReadableLogRecord], **kwargs: Any) -> None:
    """Send ``records`` in one request with the SDK's own OTLP/HTTP log exporter."""
    exporter = OTLPLogExporter(endpoint=server.url + "/v1/logs", timeout=15, **kwargs)
    try:
        assert exporter.export(records) is LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()


def json_body(records: list[ReadableLogRecord]) -> bytes:
    """The same request as OTLP/JSON (lowerCamelCase, 64-bit integers as strings)."""
    return json.dumps(json_format.MessageToDict(encode_logs(records))).encode()


def post(server: LiveServer, body: bytes, content_type: str = JSON, **headers: str) -> Any:
    return httpx2.post(
        server.url + "/v1/logs",
        content=body,
        headers={
            "content-type": content_type,
            **{k.replace("_", "-"): v for k, v in headers.items()},
        },
        timeout=30,
    )


def spans(store: Store, sql_filter: str = "true") -> list[dict[str, Any]]:
    with store.reader() as reader:
        return reader.dicts(
            "SELECT trace_id, span_id, parent_span_id, name, span_kind, status, status_message, "
            "session_id, model, tool_name, prompt_tokens, completion_tokens, input_value, "
            "start_time, end_time, project, attributes::VARCHAR AS attributes FROM spans "
            f"WHERE {sql_filter} ORDER BY start_time, span_kind, span_id"
        )


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(span["attributes"]))


@pytest.fixture
def code() -> Iterator[ClaudeCode]:
    emitter = ClaudeCode()
    yield emitter
    emitter.provider.shutdown()


# -- the mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["protobuf", "json"])
def test_a_prompt_becomes_a_labelled_trace(live_server: LiveServer, code: ClaudeCode, wire: str):
    one_prompt(code)
    records = code.take()
    if wire == "protobuf":
        export(live_server, records)
    else:
        response = post(live_server, json_body(records))
        assert response.status_code == 200 and response.json() == {}
    stored = spans(live_server.store)
    assert {s["trace_id"] for s in stored} == {stored[0]["trace_id"]}
    root = next(s for s in stored if s["parent_span_id"] is None)
    assert (root["name"], root["span_kind"], root["input_value"]) == (
        "claude-code turn", "AGENT", "fix the parser",
    )  # fmt: skip
    assert root["project"] == "claude-code" and root["session_id"] == SESSION
    assert all(s["parent_span_id"] == root["span_id"] for s in stored if s is not root)
    # the accepted tool_decision adds nothing: 2 LLM spans, 3 TOOL spans
    kinds = [(s["span_kind"], s["name"]) for s in stored if s is not root]
    assert kinds == [
        ("LLM", "claude.messages"), ("TOOL", "Read"), ("TOOL", "Edit"), ("TOOL", "Bash"),
        ("LLM", "claude.messages error"),
    ]  # fmt: skip
    llm = stored[1]
    assert (llm["model"], llm["prompt_tokens"], llm["completion_tokens"]) == (
        "claude-sonnet-4-6", 1024 + 512 + 8, 256,
    )  # fmt: skip
    assert llm["start_time"] == (T0 + timedelta(seconds=0.5)).replace(tzinfo=None)
    assert attrs(llm)["llm"]["cost"]["total"] == 0.05
    labels = {s["tool_name"]: attrs(s)["trajectory"] for s in stored if s["span_kind"] == "TOOL"}
    assert labels["Read"]["action"] == "localize" and labels["Read"]["target"] == "src/parser.py"
    assert labels["Edit"]["action"] == "edit"
    assert labels["Bash"] | {"raw": None} == {
        "action": "verify", "target": "pytest -q", "outcome": "error", "source": "claude_telemetry",
        "raw": None,
    }  # fmt: skip
    bash = next(s for s in stored if s["tool_name"] == "Bash")
    assert (bash["status"], bash["status_message"]) == ("ERROR", "Exit code 1")
    error = stored[-1]
    assert (error["span_kind"], error["status"], error["status_message"]) == (
        "LLM", "ERROR", "overloaded",
    )  # fmt: skip
    with live_server.store.reader() as reader:
        trace = reader.dicts("SELECT * FROM traces")[0]
    assert (trace["session_id"], trace["span_count"], trace["error_count"]) == (SESSION, 6, 2)


def test_a_retried_export_adds_nothing(live_server: LiveServer, code: ClaudeCode) -> None:
    one_prompt(code)
    records = code.take()
    export(live_server, records)
    before = spans(live_server.store)
    export(live_server, records, compression=Compression.Gzip)
    assert post(live_server, json_body(records)).status_code == 200
    assert spans(live_server.store) == before


def test_events_of_one_prompt_in_several_requests_share_its_root(
    live_server: LiveServer, code: ClaudeCode
) -> None:
    one_prompt(code)
    records = code.take()
    export(live_server, records[:2])  # the prompt and the first model call
    export(live_server, records[2:])  # the rest, five seconds later
    stored = spans(live_server.store)
    roots = [s for s in stored if s["parent_span_id"] is None]
    assert len(roots) == 1 and len(stored) == 6
    assert {s["trace_id"] for s in stored} == {roots[0]["trace_id"]}
    assert all("step" not in attrs(s)["trajectory"] for s in stored if s["span_kind"] == "TOOL")


def test_without_prompt_id_events_follow_the_latest_prompt_by_time(
    live_server: LiveServer,
) -> None:
    code = ClaudeCode(prompt_ids=False)
    code.emit("user_prompt", T0, prompt="first")
    code.emit("tool_result", T0 + timedelta(seconds=1), tool_name="Glob", success=True,
              duration_ms=5, tool_parameters="{}")  # fmt: skip
    code.emit("user_prompt", T0 + timedelta(seconds=10), prompt="second")
    export(live_server, code.take())
    # a later request: no prompt of its own, so it belongs to the second (stored) prompt
    code.emit("tool_result", T0 + timedelta(seconds=11), tool_name="Grep", success=True,
              duration_ms=5, tool_input='{"pattern": "TODO"}')  # fmt: skip
    export(live_server, code.take())
    code.provider.shutdown()
    stored = spans(live_server.store)
    roots = {s["trace_id"]: s["input_value"] for s in stored if s["parent_span_id"] is None}
    assert sorted(roots.values()) == ["first", "second"]
    tools = {s["tool_name"]: roots[s["trace_id"]] for s in stored if s["span_kind"] == "TOOL"}
    assert tools == {"Glob": "first", "Grep": "second"}


def test_a_rejected_tool_call_is_an_error_step(live_server: LiveServer, code: ClaudeCode) -> None:
    code.emit("user_prompt", T0, prompt_id=PROMPT)
    code.emit("tool_decision", T0 + timedelta(seconds=1), tool_name="Write", decision="reject",
              source="user_reject", tool_use_id="toolu_9")  # fmt: skip
    export(live_server, code.take())
    tool = spans(live_server.store, "span_kind = 'TOOL'")
    assert [(s["tool_name"], s["status"], s["status_message"]) for s in tool] == [
        ("Write", "ERROR", "tool call rejected (user_reject)")
    ]
    assert attrs(tool[0])["trajectory"]["action"] == "edit"


# -- what is not stored --------------------------------------------------------------------------


def test_other_log_records_are_counted_not_stored(live_server: LiveServer, code: ClaudeCode):
    code.emit("user_prompt", T0, prompt_id=PROMPT)
    code.emit("hook_execution_complete", T0, hook_name="lint", num_hooks=1)  # read, not stored
    code.logger.emit(LogRecord(timestamp=int(T0.timestamp() * 1e9), body="GET /health 200"))
    code.logger.emit(
        LogRecord(body="claude_code.api_request", attributes={"model": "x"})  # no session
    )
    records = code.take()
    response = post(live_server, bytes(encode_logs(records).SerializeToString()), PROTOBUF)
    assert response.status_code == 200
    answer = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert answer.rejected_log_records == 1
    assert "claude_code.api_request has no session.id" in answer.error_message
    assert "1 log record(s) are not Claude Code events" in answer.error_message
    assert [s["span_kind"] for s in spans(live_server.store)] == ["AGENT"]
    as_json = post(live_server, json_body(records)).json()["partialSuccess"]
    assert as_json["rejectedLogRecords"] == "1"


def test_malformed_bodies_answer_400_in_the_otlp_shape(live_server: LiveServer) -> None:
    bad = post(live_server, b"\xff\x00 not protobuf", PROTOBUF)
    assert bad.status_code == 400
    assert post(live_server, b"{nope").json()["code"] == 3  # google.rpc INVALID_ARGUMENT
    assert post(live_server, b"{}", "text/plain").status_code == 415
    gz = post(live_server, gzip.compress(b'{"resourceLogs": []}'), content_encoding="gzip")
    assert (gz.status_code, gz.json()) == (200, {})
    assert spans(live_server.store) == []


def test_the_token_guards_logs(store: Store, settings: Settings) -> None:
    guarded = settings.model_copy(update={"token": "s3cret-token-value"})
    with LiveServer(store, guarded) as server:
        code = ClaudeCode()
        one_prompt(code)
        records = code.take()
        assert post(server, json_body(records)).status_code == 401
        export(server, records, headers={"Authorization": "Bearer s3cret-token-value"})
        code.provider.shutdown()
    assert len(spans(store)) == 6


def test_a_body_over_the_limit_answers_413(store: Store, settings: Settings) -> None:
    small = settings.model_copy(update={"max_request_bytes": 2048})
    with LiveServer(store, small) as server:
        response = post(server, b'{"resourceLogs": [' + b" " * 4096 + b"]}")
    assert response.status_code == 413
    assert spans(store) == []


def test_json_as_a_javascript_exporter_writes_it(live_server: LiveServer) -> None:
    """Claude Code is a Node program: its http/json exporter may write 64-bit integers as
    numbers and put the event's name only in the body."""

    def kv(key: str, value: Any) -> dict[str, Any]:
        typed = {"intValue": value} if isinstance(value, int) else {"stringValue": value}
        return {"key": key, "value": typed}

    start = int(T0.timestamp() * 1e9)
    records = [
        {"timeUnixNano": start, "body": {"stringValue": "claude_code.user_prompt"},
         "attributes": [kv("session.id", "js"), kv("event.sequence", 0)]},
        {"timeUnixNano": start + 2_000_000_000, "body": {"stringValue": "claude_code.api_request"},
         "attributes": [kv("session.id", "js"), kv("event.sequence", 1), kv("model", "m"),
                        kv("input_tokens", 10), kv("output_tokens", 5), kv("duration_ms", 1000)]},
    ]  # fmt: skip
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [kv("service.name", "claude-code")]},
                "scopeLogs": [
                    {"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": records}
                ],
            }
        ]
    }
    response = post(live_server, json.dumps(body).encode())
    assert (response.status_code, response.json()) == (200, {})
    stored = spans(live_server.store)
    assert [(s["span_kind"], s["session_id"]) for s in stored] == [("AGENT", "js"), ("LLM", "js")]
    assert stored[1]["start_time"] == (T0 + timedelta(seconds=1)).replace(tzinfo=None)
    assert stored[1]["prompt_tokens"] == 10


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_get_trajectory_reads_a_live_session_in_time_order(
    live_server: LiveServer, code: ClaudeCode
) -> None:
    from mcp import Client

    from traceproof.server.mcp import create_mcp_server

    one_prompt(code)
    records = code.take()
    export(live_server, records[4:])  # the later events first: order comes from time
    export(live_server, records[:4])
    async with Client(create_mcp_server(live_server.store)) as client:
        result = await client.call_tool("get_trajectory", {"session_id": SESSION})
    assert not result.is_error and result.structured_content is not None
    steps = [(s["n"], s["action"], s.get("tool"), s.get("outcome"))
             for s in result.structured_content["steps"]]  # fmt: skip
    assert steps == [
        (1, "llm", "claude-sonnet-4-6", None),
        (2, "localize", "Read", "ok"),
        (3, "edit", "Edit", "ok"),
        (4, "verify", "Bash", "error"),
        (5, "llm", "claude-sonnet-4-6", None),
    ]


def test_serve_labels_wire_steps_with_the_projects_action_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`traceproof serve` in a child process, with a traceproof.toml naming a tool of its own:
    both wire routes label that tool's steps by the project's rule."""
    config = tmp_path / "traceproof.toml"
    config.write_text('[trajectories.actions.verify]\ntools = ["run_checks"]\n')
    monkeypatch.setenv("TRACEPROOF_CONFIG", str(config))
    db = tmp_path / "served.duckdb"
    server = ServeProcess(db)
    try:
        code = ClaudeCode()
        code.emit("user_prompt", T0, prompt_id=PROMPT)
        code.emit("tool_result", T0 + timedelta(seconds=1), tool_name="run_checks",
                  success="true", duration_ms=10, tool_use_id="toolu_rc")  # fmt: skip
        body = json_body(code.take())
        code.provider.shutdown()
        assert httpx2.post(server.url + "/v1/logs", content=body,
                           headers={"content-type": JSON}).status_code == 200  # fmt: skip
        phoenix = {"data": [{
            "name": "run_checks", "context": {"trace_id": "c" * 32, "span_id": "d" * 16},
            "span_kind": "TOOL", "start_time": "2026-03-15T10:30:00Z",
            "end_time": "2026-03-15T10:30:01Z", "status_code": "OK",
            "attributes": {"tool.name": "run_checks"},
        }]}  # fmt: skip
        assert httpx2.post(server.url + "/v1/projects/p/spans", json=phoenix).status_code == 202
    finally:
        server.stop()
    settings = Settings(db=db)
    with Store.open(db, settings) as store:
        tools = spans(store, "span_kind = 'TOOL'")
    assert [attrs(s)["trajectory"]["action"] for s in tools] == ["verify", "verify"]


def test_a_resumed_session_whose_sequence_starts_again_keeps_both_runs(
    live_server: LiveServer,
) -> None:
    for run, at in enumerate((T0, T0 + timedelta(hours=1))):
        code = ClaudeCode()  # event.sequence starts at 0 again
        code.emit("user_prompt", at, prompt_id=f"prompt-{run}")
        code.emit("api_request", at + timedelta(seconds=2), model="m", duration_ms=1000)
        export(live_server, code.take())
        code.provider.shutdown()
    assert [s["span_kind"] for s in spans(live_server.store)] == ["AGENT", "LLM"] * 2
