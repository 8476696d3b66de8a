"""Phoenix's span route, ``POST /v1/projects/{project}/spans``, against a real server on
loopback: Phoenix's own Python client (``client.spans.log_spans``) and raw HTTP, read back
from the store."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from phoenix.client import Client
from phoenix.client.exceptions import SpanCreationError

from tests.conftest import LiveServer
from traceproof.settings import Settings
from traceproof.storage import Store

TRACE = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4"


def span(span_id: str, **fields: Any) -> dict[str, Any]:
    """A span in Phoenix's shape, as a hook-based tracer of a coding agent sends it."""
    out: dict[str, Any] = {
        "name": "Bash",
        "context": {"trace_id": TRACE, "span_id": span_id},
        "span_kind": "TOOL",
        "parent_id": "0000000000000001",
        "start_time": "2026-03-15T10:30:00Z",
        "end_time": "2026-03-15T10:30:04.250000+00:00",
        "status_code": "OK",
        "status_message": "",
        "attributes": {
            "tool.name": "Bash",
            "input": {"value": json.dumps({"command": "pytest -q tests/"})},
            "output.value": "3 passed, 1 failed in 0.52s",
            "session.id": "sess-1",
        },
        "events": [],
    }
    out.update(fields)
    return out


def agent_root() -> dict[str, Any]:
    return span(
        "0000000000000001",
        name="claude-code turn",
        span_kind="agent",
        parent_id=None,
        attributes={"input.value": "fix the tests", "session.id": "sess-1"},
    )


def rows(store: Store) -> list[dict[str, Any]]:
    with store.reader() as reader:
        return reader.dicts(
            "SELECT project, span_id, parent_span_id, span_kind, status, tool_name, session_id, "
            "input_value, output_value, latency_ms, attributes::VARCHAR AS attributes "
            "FROM spans ORDER BY start_time, span_id"
        )


def test_phoenix_client_logs_spans_and_coding_tools_get_labels(live_server: LiveServer) -> None:
    client = Client(base_url=live_server.url)
    answer = client.spans.log_spans(
        project_identifier="my-agent",
        spans=[agent_root(), span("00000000000000a1")],  # type: ignore[list-item]
    )
    assert answer == {"total_received": 2, "total_queued": 2}
    stored = rows(live_server.store)
    assert [(r["project"], r["span_kind"], r["parent_span_id"]) for r in stored] == [
        ("my-agent", "AGENT", None),
        ("my-agent", "TOOL", "0000000000000001"),
    ]
    tool = stored[1]
    assert tool["input_value"] == '{"command": "pytest -q tests/"}'
    assert (tool["tool_name"], tool["session_id"], tool["latency_ms"]) == ("Bash", "sess-1", 4250)
    labels = json.loads(tool["attributes"])["trajectory"]
    assert labels == {
        "action": "verify",
        "target": "pytest -q tests/",
        "outcome": "tests_failed",
        "tests": {"passed": 3, "failed": 1},
    }
    assert "trajectory" not in json.loads(stored[0]["attributes"])
    with live_server.store.reader() as reader:
        trace = reader.dicts("SELECT * FROM traces")[0]
    assert (trace["name"], trace["span_count"]) == ("claude-code turn", 2)


def test_other_tools_are_not_labelled(live_server: LiveServer) -> None:
    client = Client(base_url=live_server.url)
    other = span("00000000000000b1", attributes={"tool.name": "get_weather"})
    client.spans.log_spans(project_identifier="p", spans=[other])  # type: ignore[list-item]
    assert "trajectory" not in json.loads(rows(live_server.store)[0]["attributes"])


def test_a_duplicate_refuses_the_whole_batch_as_phoenix_does(live_server: LiveServer) -> None:
    client = Client(base_url=live_server.url)
    client.spans.log_spans(project_identifier="p", spans=[span("00000000000000a1")])  # type: ignore[list-item]
    before = rows(live_server.store)
    with pytest.raises(SpanCreationError) as raised:
        client.spans.log_spans(
            project_identifier="p",
            spans=[span("00000000000000a2"), span("00000000000000A1")],  # type: ignore[list-item]
        )
    assert raised.value.total_duplicates == 1 and raised.value.total_queued == 0
    assert raised.value.duplicate_spans == [{"span_id": "00000000000000A1", "trace_id": TRACE}]
    assert rows(live_server.store) == before  # nothing of the batch is kept


def test_an_invalid_span_answers_400_with_the_reason(live_server: LiveServer) -> None:
    bad = span("00000000000000c1", attributes={"x": {"y": 1}, "x.y": 2})
    bad["start_time"] = "1500-01-01T00:00:00Z"  # out of the store's range
    response = httpx2.post(
        live_server.url + "/v1/projects/p/spans", json={"data": [span("00000000000000c2"), bad]}
    )
    assert response.status_code == 400
    detail = json.loads(response.json()["detail"])
    assert (detail["total_received"], detail["total_queued"], detail["total_invalid"]) == (2, 0, 1)
    assert detail["invalid_spans"][0]["span_id"] == "00000000000000c1"
    assert "start time" in detail["invalid_spans"][0]["error"]
    assert rows(live_server.store) == []


def test_request_validation_answers_422_as_fastapi_does(live_server: LiveServer) -> None:
    url = live_server.url + "/v1/projects/p/spans"
    naive = span("00000000000000d1", start_time="2026-03-15T10:30:00")
    missing = span("00000000000000d2")
    del missing["status_code"]
    response = httpx2.post(url, json={"data": [naive, missing]})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["type"], e["loc"]) for e in errors] == [
        ("value_error", ["body", "data", 0]),
        ("missing", ["body", "data", 1, "status_code"]),
    ]
    assert "timezone-naive" in errors[0]["msg"]
    assert httpx2.post(url, json={"spans": []}).json()["detail"][0]["loc"] == ["body", "data"]
    not_json = httpx2.post(url, content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    client = Client(base_url=live_server.url)
    with pytest.raises(SpanCreationError) as raised:
        client.spans.log_spans(project_identifier="p", spans=[naive])  # type: ignore[list-item]
    assert raised.value.invalid_spans[0]["span_id"] == "00000000000000d1"
    assert rows(live_server.store) == []


def test_a_phoenix_project_id_is_not_found(live_server: LiveServer) -> None:
    response = httpx2.post(
        live_server.url + "/v1/projects/UHJvamVjdDox/spans",
        json={"data": [span("00000000000000e1")]},
    )
    assert response.status_code == 404
    assert response.json() == {"detail": "Project with ID UHJvamVjdDox not found"}
    empty = httpx2.post(live_server.url + "/v1/projects/p/spans", json={"data": []})
    assert (empty.status_code, empty.json()) == (202, {"total_received": 0, "total_queued": 0})


@pytest.mark.parametrize("variable", ["PHOENIX_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT"])
def test_a_client_configured_by_the_environment_reaches_traceproof(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """What README tells a hook-based tracer to set: Phoenix's client reads it, unchanged."""
    for name in ("PHOENIX_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT", "PHOENIX_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, live_server.url)
    answer = Client().spans.log_spans(project_identifier="hooks", spans=[agent_root()])  # type: ignore[list-item]
    assert answer["total_queued"] == 1
    assert [r["project"] for r in rows(live_server.store)] == ["hooks"]


def test_the_token_guards_the_route(store: Store, settings: Settings) -> None:
    with LiveServer(store, settings.model_copy(update={"token": "s3cret"})) as server:
        url = server.url + "/v1/projects/p/spans"
        assert httpx2.post(url, json={"data": [agent_root()]}).status_code == 401
        client = Client(base_url=server.url, api_key="s3cret")
        answer = client.spans.log_spans(project_identifier="p", spans=[agent_root()])  # type: ignore[list-item]
    assert answer["total_queued"] == 1
    assert len(rows(store)) == 1
