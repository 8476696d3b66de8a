"""Hostile input to the tools answers 4xx / ``[code]``, never ``internal_error`` (issue 8 §4).

Every tool is tried through the HTTP API and MCP with a lone surrogate in each text argument;
search_spans and find_in_trace with forged cursors (well formed, right fingerprint, keys of the
wrong types or length); and a stored span whose attribute key has hundreds of dotted segments.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, get_args

import httpx2
import pytest
from mcp import Client
from mcp_types import TextContent

from tests.conftest import LiveServer
from tests.tools.test_spans import add_spans
from traceproof.ingest.normalize import SpanRows
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store
from traceproof.tools import registry
from traceproof.tools.common import encode_cursor
from traceproof.tools.find import fingerprint
from traceproof.tools.invoke import arguments_model

SURROGATE = "\ud800"

#: Arguments that make each tool run (its required ones).
BASE: dict[str, dict[str, Any]] = {
    "get_trace_preview": {"trace_id": "t"},
    "get_span_data": {"span_id": "s"},
    "find_in_trace": {"trace_id": "t", "pattern": "x"},
    "jq": {"program": ".", "project": "demo"},
    "sql": {"query": "select 1"},
    "get_session": {"session_id": "s"},
}


def _text_parameters(name: str) -> list[tuple[str, bool]]:
    """(parameter, is a list) for each text parameter of tool ``name``."""
    found = []
    for parameter, field in arguments_model(registry.tool(name).fn).model_fields.items():
        shown = str(field.annotation)
        if "Literal" in shown:
            continue
        if "list[str]" in shown:
            found.append((parameter, True))
        elif field.annotation is str or str in get_args(field.annotation):
            found.append((parameter, False))
    return found


SURROGATE_CASES = [
    (spec.name, {**BASE.get(spec.name, {}), parameter: [SURROGATE] if is_list else SURROGATE})
    for spec in registry.TOOLS
    for parameter, is_list in _text_parameters(spec.name)
] + [
    ("sql", {"query": f"select '{SURROGATE}'"}),
    ("search_spans", {"where": f"name = '{SURROGATE}'"}),
    ("find_in_trace", {"trace_id": "t", "pattern": f"a{SURROGATE}b"}),
]


def _spans_digest(order_by: str) -> str:
    return fingerprint(*([None] * 9), None, False, order_by)


def _spans_cursor(order_by: str, key: list[Any]) -> str:
    return encode_cursor("search_spans", _spans_digest(order_by), key)


def _find_cursor(trace_id: str, key: list[Any]) -> str:
    return encode_cursor("find_in_trace", fingerprint(trace_id, "order", False), key)


#: Start times are microseconds since 1970 in a search_spans cursor.
SPANS_KEYS: list[Any] = [
    [],
    [1_700_000_000_000_000],
    ["2026-01-01T00:00:00", "t", "s"],
    ["not a time", "t", "s"],
    [None, None, None],
    [1.5, "t", "s"],
    [2**62, "t", "s"],  # past datetime's range
    [-(2**62), "t", "s"],
    [1_700_000_000_000_000, 1, 2],
    [1_700_000_000_000_000, None, "s"],
    [1_700_000_000_000_000, "t", "s", "extra"],
]
LATENCY_KEYS: list[Any] = [["fast", "t", "s"], [None, "t", "s"], [1.0, None, "s"], [1.0, "t"]]
FIND_KEYS: list[Any] = [
    [],
    [0, "x", 0],
    [0, "x", 0, 0, 0],
    ["0", "x", 0, 0],
    [0, 1, 0, 0],
    [0, "x", 0.5, 0],
    [None, None, None, None],
    [0, "x", "0", 0],
    ["0,x,0,0"],
]


def _cursor_cases(trace_id: str) -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []
    for key in SPANS_KEYS:
        cases.append(("search_spans", {"cursor": _spans_cursor("newest", key)}))
    for key in LATENCY_KEYS:
        cursor = _spans_cursor("latency", key)
        cases.append(("search_spans", {"order_by": "latency", "cursor": cursor}))
    for key in FIND_KEYS:
        cursor = _find_cursor(trace_id, key)
        cases.append(
            ("find_in_trace", {"trace_id": trace_id, "pattern": "order", "cursor": cursor})
        )
    cases.append(("search_spans", {"cursor": encode_cursor("search_spans", "other", [1, 2, 3])}))
    cases.append(("search_spans", {"cursor": "eyJ0Ijoic2VhcmNoX3NwYW5zIn0"}))  # an old JSON one
    return cases


DEEP_400 = ".".join(["k"] * 400)
DEEP_300 = ".".join(["d"] * 300)


@pytest.fixture
def hostile_server(demo_store: Store) -> Iterator[LiveServer]:
    add_spans(
        demo_store,
        [
            {"span_id": "root", "name": "agent", "trace_id": "deep-trace", "project": "deep",
             "attributes": {"input.value": "go"}},
            {"span_id": "deep", "parent_span_id": "root", "name": "llm", "trace_id": "deep-trace",
             "project": "deep", "attributes": {DEEP_400: "v400", DEEP_300: "v300"}},
        ],
        # Stored before ingest capped key depth (by an older traceproof): reads must cope.
        SpanRows(max_key_depth=10_000, max_key_chars=100_000),
    )  # fmt: skip
    with LiveServer(demo_store, demo_store.settings) as server:
        yield server


def _post(server: LiveServer, name: str, arguments: dict[str, Any]) -> httpx2.Response:
    body = json.dumps(arguments)  # ASCII escapes: "\\ud800" reaches the server as JSON allows
    return httpx2.post(
        f"{server.url}/api/v1/tools/{name}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )


def _mcp_answers(store: Store, cases: list[tuple[str, dict[str, Any]]]) -> list[tuple[bool, str]]:
    async def run() -> list[tuple[bool, str]]:
        out = []
        async with Client(create_mcp_server(store)) as client:
            for name, arguments in cases:
                result = await client.call_tool(name, arguments)
                first = result.content[0] if result.content else None
                out.append((result.is_error, first.text if isinstance(first, TextContent) else ""))
        return out

    return asyncio.run(run())


def _trace_id(store: Store) -> str:
    with store.reader() as reader:
        return str(reader.scalar("SELECT trace_id FROM spans WHERE project = 'demo' LIMIT 1"))


def test_a_lone_surrogate_in_any_text_argument_is_invalid_argument(
    hostile_server: LiveServer, demo_store: Store
) -> None:
    assert {name for name, _ in SURROGATE_CASES} == {spec.name for spec in registry.TOOLS} - {
        "list_projects"  # no text parameter
    }
    for name, arguments in SURROGATE_CASES:
        answer = _post(hostile_server, name, arguments)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_argument"), (
            name,
            arguments,
            answer.text,
        )
    for (name, arguments), (is_error, text) in zip(
        SURROGATE_CASES, _mcp_answers(demo_store, SURROGATE_CASES), strict=True
    ):
        assert is_error and text.startswith("[invalid_argument] "), (name, arguments, text)


def test_forged_cursors_are_invalid_cursor_never_a_server_error(
    hostile_server: LiveServer, demo_store: Store
) -> None:
    cases = _cursor_cases(_trace_id(demo_store))
    assert len(cases) >= 23
    for name, arguments in cases:
        answer = _post(hostile_server, name, arguments)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_cursor"), (
            name,
            arguments,
            answer.text,
        )
    for (name, arguments), (is_error, text) in zip(
        cases, _mcp_answers(demo_store, cases), strict=True
    ):
        assert is_error and text.startswith("[invalid_cursor] "), (name, arguments, text)


def test_a_good_cursor_from_far_in_the_future_still_pages(hostile_server: LiveServer) -> None:
    cursor = _spans_cursor("newest", [32_503_680_000_000_000, "t", "s"])  # year 3000
    answer = _post(hostile_server, "search_spans", {"cursor": cursor, "limit": 1})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["spans"]) == 1


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("jq", {"program": ".attributes | keys", "span_id": "deep"}),
        ("jq", {"program": "[.[].name]", "trace_id": "deep-trace"}),
        ("jq", {"program": "length", "project": "deep"}),
        ("jq", {"program": "length", "where": "name = 'llm'"}),
        ("get_span_data", {"span_id": "deep"}),
        ("get_trace_preview", {"trace_id": "deep-trace"}),
        ("find_in_trace", {"trace_id": "deep-trace", "pattern": "v400"}),
        ("search_spans", {"project": "deep", "pattern": "v300"}),
        ("search_traces", {"project": "deep", "regex": "v400"}),
        ("sql", {"query": "select attributes from spans where span_id = 'deep'"}),
    ],
)
def test_a_span_with_a_key_of_hundreds_of_segments_never_fails_a_tool(
    hostile_server: LiveServer, name: str, arguments: dict[str, Any]
) -> None:
    answer = _post(hostile_server, name, arguments)
    assert answer.status_code == 200, answer.text


def test_jq_sees_the_deep_part_of_such_a_span_folded_into_dotted_keys(
    hostile_server: LiveServer,
) -> None:
    answer = _post(
        hostile_server,
        "jq",
        {"program": '[paths(type == "string") | join(".")] | length', "span_id": "deep"},
    )
    assert answer.status_code == 200, answer.text
    values = _post(
        hostile_server,
        "jq",
        {"program": '[.attributes | .. | strings | select(startswith("v"))]', "span_id": "deep"},
    )
    assert values.json()["results"] == [["v400", "v300"]] or values.json()["results"] == [
        ["v300", "v400"]
    ]
