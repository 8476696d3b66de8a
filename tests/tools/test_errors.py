"""categorize_errors: the demo's real errors, exact counts, stacks, filters, budget, MCP errors."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from mcp import Client
from mcp_types import TextContent

from tests.tools.test_spans import T0, add_spans, ns
from traceproof.evals.fingerprint import frames_sql, top_frames
from traceproof.ingest.normalize import Event
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store
from traceproof.tools.common import size
from traceproof.tools.errors import categorize_errors


def test_the_demo_errors_fall_into_the_clusters_a_person_would_make(demo_store: Store) -> None:
    result = categorize_errors(demo_store, project="demo")
    assert result.errors == 22 and result.total_clusters == 6 and not result.truncated
    found = [(c.error_type, c.template, c.count, c.variants) for c in result.clusters]
    assert found == [
        ("TimeoutError", "<*> tracking API did not respond within <duration>", 7, 3),
        ("OrderNotFound", "no order NW-<num> found for user-<num>", 6, 1),
        ("OrderAlreadyShipped",
         "order NW-<num> left the warehouse and can no longer be cancelled", 4, 1),
        ("PermissionError", "refund of $<num> exceeds the agent approval limit of $<num>", 3, 1),
        ("AgentExecutionError", "giving up after PermissionError from issue_refund", 1, 1),
        ("AgentExecutionError", "giving up after TimeoutError from get_shipping_status", 1, 1),
    ]  # fmt: skip
    timeouts = result.clusters[0]
    assert timeouts.tools == ["get_shipping_status"] == timeouts.span_names
    assert timeouts.frames == ["clients/http.py:call", "agent/tools.py:get_shipping_status"]
    assert round(timeouts.share, 4) == round(7 / 22, 4)
    with demo_store.reader() as reader:
        expected = reader.rows(
            "SELECT count(DISTINCT s.trace_id), count(DISTINCT coalesce(s.session_id, "
            "t.session_id)), min(s.start_time), max(s.start_time) FROM spans s JOIN trace_index "
            "t USING (project, trace_id) WHERE s.error_type = 'TimeoutError'"
        )[0]
        ids = {r[0] for r in reader.rows("SELECT span_id FROM spans WHERE status = 'ERROR'")}
    assert (timeouts.traces, timeouts.sessions) == expected[:2]
    assert (timeouts.first_seen, timeouts.last_seen) == expected[2:]
    assert len(timeouts.examples) == 3
    assert {e.span_id for c in result.clusters for e in c.examples} <= ids
    assert "tracking API did not respond within 5000 ms" in timeouts.examples[0].message
    assert categorize_errors(demo_store, project="demo") == result  # deterministic


def test_errors_are_spans_with_error_status_or_an_exception_event(store: Store) -> None:
    at = ns(T0)
    exception = Event("exception", at, {"exception.type": "KeyError", "exception.message": "'a'"})
    add_spans(
        store,
        [
            {"span_id": "ok", "name": "fine", "attributes": {}},
            {"span_id": "st", "name": "failed", "attributes": {}, "status": "ERROR",
             "status_message": "ValueError: bad value 17"},
            {"span_id": "ev", "name": "handled", "attributes": {}, "events": [exception]},
            {"span_id": "ev2", "name": "handled", "attributes": {}, "events": [exception],
             "trace_id": "trace-2", "start_ms": 5},
        ],
    )  # fmt: skip
    result = categorize_errors(store)
    assert result.errors == 3
    assert [(c.error_type, c.template, c.count, c.traces) for c in result.clusters] == [
        ("KeyError", "'<str>'", 2, 2),
        ("ValueError", "bad value <num>", 1, 1),
    ]
    assert categorize_errors(store, name="failed").errors == 1
    assert categorize_errors(store, where="latency_ms > 1000").errors == 0


PY_STACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/agent/tools.py", line {line}, in fetch\n    return call()\n'
    '  File "/srv/app/clients/http.py", line 77, in call\n    raise TimeoutError(msg)\n'
    "TimeoutError: {message}"
)


def _timeouts(store: Store, stacks: list[str | None]) -> None:
    spans = []
    for i, stack in enumerate(stacks):
        message = f"request to https://h{i}.example.com/x timed out after {i}.5s"
        attributes = {"exception.type": "TimeoutError", "exception.message": message}
        if stack is not None:
            attributes["exception.stacktrace"] = stack.format(line=100 + i, message=message)
        spans.append(
            {
                "span_id": f"s{i}",
                "trace_id": f"t{i}",
                "name": "fetch",
                "start_ms": i,
                "status": "ERROR",
                "attributes": {"tool.name": "fetch", "session.id": f"sess{i % 2}"},
                "events": [Event("exception", ns(T0 + timedelta(milliseconds=i)), attributes)],
            }
        )
    add_spans(store, spans)


def test_line_numbers_do_not_split_a_cluster_but_other_frames_do(store: Store) -> None:
    other = PY_STACK.replace("in fetch", "in retry")
    _timeouts(store, [PY_STACK, PY_STACK, PY_STACK, other, None])
    result = categorize_errors(store)
    assert [(c.count, c.frames) for c in result.clusters] == [
        (3, ["clients/http.py:call", "agent/tools.py:fetch"]),
        (1, ["clients/http.py:call", "agent/tools.py:retry"]),
        (1, []),
    ]
    assert {c.template for c in result.clusters} == {"request to <url> timed out after <duration>"}
    assert result.clusters[0].sessions == 2 and result.clusters[0].tools == ["fetch"]


def test_the_frames_read_in_duckdb_are_the_frames_of_the_whole_trace(store: Store) -> None:
    js = (
        "TypeError: x is undefined\n    at getUser (/app/src/users.js:42:17)\n"
        "    at async Router.handle (file:///app/lib/router.js:281:3)\n    at /app/index.js:10:5"
    )
    stacks = [PY_STACK.format(line=12, message="m 1"), js, "no frames here", ""]
    with store.reader() as reader:
        reduced = [reader.scalar(f"SELECT {frames_sql('?')}", [text]) for text in stacks]
    assert [top_frames(text) for text in reduced] == [top_frames(text) for text in stacks]
    assert top_frames(reduced[1]) == (
        "src/users.js:getUser",
        "lib/router.js:Router.handle",
        "app/index.js:?",
    )


def _word(i: int) -> str:
    return "".join(chr(97 + (i // 26**k) % 26) for k in range(3))


def test_the_answer_keeps_to_its_budget_and_says_what_it_left_out(store: Store) -> None:
    add_spans(
        store,
        [
            {"span_id": f"s{i}", "name": f"step_{i}", "status": "ERROR", "attributes": {},
             "status_message": f"{_word(i)}Error: " + f"{_word(i)} " * 200, "start_ms": i}
            for i in range(60)
        ],
    )  # fmt: skip
    result = categorize_errors(store, max_chars=3000)
    assert size(result) <= 3000
    assert result.truncated and 0 < len(result.clusters) < 60 and result.total_clusters == 60
    assert result.note and "max_chars" in result.note
    limited = categorize_errors(store, limit=5)
    assert len(limited.clusters) == 5 and limited.truncated and "limit" in (limited.note or "")
    whole = categorize_errors(store, limit=200, max_chars=80_000)
    assert not whole.truncated and len(whole.clusters) == 60 and whole.note is None
    assert all(len(e.message) <= 300 for c in whole.clusters for e in c.examples)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_over_mcp_the_answer_fits_and_bad_calls_are_coded_errors(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        ok = await client.call_tool("categorize_errors", {"project": "demo", "max_chars": 1000})
        calls: list[tuple[dict[str, Any], str]] = [
            ({"annotation": "no_such_annotation"}, "invalid_argument"),
            ({"where": "latency_ms >"}, "invalid_filter"),
            ({"span_kind": "BOGUS"}, "invalid_argument"),
            ({"since": "yesterday-ish"}, "invalid_argument"),
            ({"limit": 0}, "invalid_argument"),
            ({"max_chars": 10}, "invalid_argument"),
        ]
        answers = [await client.call_tool("categorize_errors", args) for args, _ in calls]
    spec = tools["categorize_errors"]
    assert spec.annotations is not None and spec.annotations.read_only_hint is False
    visible = {"name": spec.name, "description": spec.description, "inputSchema": spec.input_schema}
    # 694 before annotation, llm, save and confirm did anything; the family's average is
    # held to 727 by tests/test_mcp.py.
    assert len(json.dumps(visible, separators=(",", ":"))) <= 770
    assert not ok.is_error and ok.structured_content is not None
    (block,) = ok.content
    assert isinstance(block, TextContent) and len(block.text) <= 1000
    assert ok.structured_content["errors"] == 22 and ok.structured_content["truncated"]
    for (args, code), answer in zip(calls, answers, strict=True):
        (text,) = answer.content
        assert answer.is_error and isinstance(text, TextContent), args
        assert text.text.startswith(f"[{code}] "), (args, text.text)
