"""The ``otlp_redact`` setting: secrets in what arrives over ``/v1/traces``, ``/v1/logs`` and
Phoenix's span route are redacted when it is on, kept when it is off (the default); JSON text
in a value stays JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from tests.conftest import LiveServer
from traceproof.settings import Settings
from traceproof.storage import Store

KEY = "sk-ant-api03-" + "A1b2C3d4E5f6G7h8" * 3
TOKEN = "ghp_" + "x7Y8z9" * 6
ARGUMENTS = json.dumps({"command": f"curl -H 'Authorization: Bearer {TOKEN}' https://api.x"})


def otlp_json() -> dict[str, Any]:
    value = {"stringValue": f"export ANTHROPIC_API_KEY={KEY}"}
    return {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "name": "Bash",
                "startTimeUnixNano": "1767225600000000000",
                "endTimeUnixNano": "1767225601000000000",
                "attributes": [
                    {"key": "openinference.span.kind", "value": {"stringValue": "TOOL"}},
                    {"key": "input.value", "value": {"stringValue": ARGUMENTS}},
                    {"key": "tool.parameters", "value": {"stringValue": ARGUMENTS}},
                    {"key": "note", "value": value},
                    {"key": "count", "value": {"intValue": "3"}},
                ],
                "events": [{"name": "log", "timeUnixNano": "1767225600500000000",
                            "attributes": [{"key": "line", "value": value}]}],
            }]}],
        }]
    }  # fmt: skip


def logs_json() -> dict[str, Any]:
    def kv(key: str, value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": value}}

    common = [kv("session.id", "s-1"), kv("prompt.id", "p-1")]
    return {
        "resourceLogs": [{
            "resource": {"attributes": [kv("service.name", "claude-code")]},
            "scopeLogs": [{"logRecords": [
                {"timeUnixNano": "1767225600000000000", "body": {"stringValue":
                 "claude_code.user_prompt"}, "attributes": [*common, kv("prompt",
                 f"use {KEY} please")]},
                {"timeUnixNano": "1767225601000000000", "body": {"stringValue":
                 "claude_code.tool_result"}, "attributes": [*common, kv("tool_name", "Bash"),
                 kv("success", "true"), kv("tool_input", ARGUMENTS)]},
            ]}],
        }]
    }  # fmt: skip


def phoenix_json() -> dict[str, Any]:
    return {
        "data": [
            {
                "name": "Bash",
                "context": {"trace_id": "a" * 32, "span_id": "b" * 16},
                "span_kind": "TOOL",
                "start_time": "2026-01-01T00:00:00Z",
                "end_time": "2026-01-01T00:00:01Z",
                "status_code": "OK",
                "attributes": {"tool.name": "Bash", "input.value": ARGUMENTS, "key": KEY},
            }
        ]
    }


def send_all(server: LiveServer) -> None:
    for path, body, status in (
        ("/v1/traces", otlp_json(), 200),
        ("/v1/logs", logs_json(), 200),
        ("/v1/projects/p/spans", phoenix_json(), 202),
    ):
        response = httpx2.post(server.url + path, json=body, timeout=30)
        assert response.status_code == status, response.text


def stored_text(store: Store) -> list[tuple[str, str, str]]:
    with store.reader() as reader:
        return [
            (str(r[0]), str(r[1] or ""), str(r[2]))
            for r in reader.rows(
                "SELECT name, input_value, attributes::VARCHAR || events::VARCHAR FROM spans "
                "ORDER BY name, span_id"
            )
        ]


@pytest.mark.parametrize("redact", [True, False])
def test_secrets_over_the_wire(store: Store, settings: Settings, redact: bool) -> None:
    with LiveServer(store, settings.model_copy(update={"otlp_redact": redact})) as server:
        send_all(server)
    stored = stored_text(store)
    assert len(stored) == 4  # the OTLP span, the telemetry root and tool, the Phoenix span
    text = json.dumps(stored)
    assert (KEY in text, TOKEN in text) == (not redact, not redact)
    assert ("[REDACTED:anthropic_key]" in text) is redact
    assert ("[REDACTED:" in text) is redact
    tools = [(name, value) for name, value, _ in stored if name == "Bash"]
    assert len(tools) == 3
    for _, value in tools:  # the arguments are still a JSON object, with the command
        assert json.loads(value)["command"].startswith("curl -H 'Authorization: Bearer ")
    with store.reader() as reader:  # JSON text parsed as JSON (tool.parameters) still is
        params = reader.scalar("SELECT attributes->>'$.tool.parameters.command' FROM spans "
                               "WHERE span_id = 'eee19b7ec3c1b174'")  # fmt: skip
        count = reader.scalar("SELECT attributes->'$.count' FROM spans "
                              "WHERE span_id = 'eee19b7ec3c1b174'")  # fmt: skip
    assert params.startswith("curl") and ("[REDACTED:github_token]" in params) is redact
    assert json.loads(count) == 3


def test_redaction_is_off_by_default() -> None:
    assert Settings().otlp_redact is False
