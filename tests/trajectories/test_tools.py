"""get_trajectory and trajectory_stats over a stored session, through the real MCP client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from tests.trajectory_fixtures import PROJECT, StoredTrajectory, store_trajectory
from traceproof.errors import ErrorCode
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stored(store: Store) -> StoredTrajectory:
    return store_trajectory(store)


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(store: Store, name: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(create_mcp_server(store)) as client:
        return await client.call_tool(name, arguments)


async def test_a_trace_reads_as_numbered_labelled_steps(
    store: Store, stored: StoredTrajectory
) -> None:
    result = await call(store, "get_trajectory", {"trace_id": stored.trace_ids[0]})
    assert not result.is_error
    view = result.structured_content
    assert view is not None
    assert (view["project"], view["truncated"], view.get("next_cursor")) == (PROJECT, False, None)
    rows = [
        (s["n"], s["action"], s.get("tool"), s.get("target"), s.get("outcome"))
        for s in view["steps"]
    ]
    assert rows == [
        (1, "llm", "claude-sonnet-4-5", None, None),
        (2, "localize", "Read", "src/app.py", "ok"),
        (3, "localize", "Grep", "def total in src", "ok"),
        (4, "llm", "claude-sonnet-4-5", None, None),
        (5, "edit", "Edit", "src/app.py", "ok"),
        (6, "llm", "claude-sonnet-4-5", None, None),
        (7, "verify", "Bash", "pytest -q tests", "tests_failed"),
        (8, "verify", "Bash", "pytest -q tests", "tests_failed"),
        (9, "llm", "claude-sonnet-4-5", None, None),
        (10, "edit", "Edit", "src/util.py", "ok"),
        (11, "verify", "Bash", "pytest -q tests", "tests_passed"),
    ]
    steps = view["steps"]
    assert steps[0].get("tokens") == 1050
    assert steps[6].get("tests") == "2 passed, 1 failed"
    assert [s["n"] for s in steps if s.get("recover")] == [8, 10]
    assert [s["span_id"] for s in steps] == stored.steps[0]


async def test_a_step_expands_with_get_span_data(store: Store, stored: StoredTrajectory) -> None:
    result = await call(store, "get_trajectory", {"trace_id": stored.trace_ids[0]})
    assert result.structured_content is not None
    step = result.structured_content["steps"][6]
    span = await call(store, "get_span_data", {"span_id": step["span_id"]})
    assert not span.is_error
    assert "1 failed, 2 passed" in text_of(span)


async def test_a_session_pages_through_every_step_within_a_small_budget(
    store: Store, stored: StoredTrajectory
) -> None:
    seen: list[tuple[int, int, str]] = []
    arguments: dict[str, Any] = {"session_id": stored.session_id, "max_chars": 1000}
    pages = 0
    while True:
        result = await call(store, "get_trajectory", arguments)
        assert not result.is_error, text_of(result)
        assert len(text_of(result)) <= 1000
        view = result.structured_content
        assert view is not None
        seen += [(s["n"], s["turn"], s["span_id"]) for s in view["steps"]]
        pages += 1
        if not view["truncated"]:
            assert view.get("next_cursor") is None
            break
        assert view["next_call"] == "get_trajectory(<same arguments>, cursor=next_cursor)"
        arguments["cursor"] = view.get("next_cursor")
    assert pages > 2
    assert [n for n, _, _ in seen] == list(range(1, 15))
    assert [turn for _, turn, _ in seen] == [1] * 11 + [2] * 3
    assert [span for _, _, span in seen] == stored.steps[0] + stored.steps[1]


async def test_stats_of_a_trace_and_of_the_session(store: Store, stored: StoredTrajectory) -> None:
    result = await call(store, "trajectory_stats", {"trace_id": stored.trace_ids[0]})
    assert not result.is_error, text_of(result)
    stats = result.structured_content
    assert stats is not None
    assert (stats["turns"], stats["steps"], stats["errors"]) == (1, 7, 2)
    assert stats["by_action"] == {"verify": 3, "edit": 2, "localize": 2}
    assert (stats["edits_before_first_verify"], stats["verifies_after_last_edit"]) == (1, 1)
    assert stats["last_verify"] == "tests_passed"
    assert stats["repeated_commands"] == [
        {"tool": "Bash", "target": "pytest -q tests", "count": 3, "steps": [7, 8, 11]}
    ]
    assert stats["errors_without_change"] == [7]
    assert stats["recoveries"] == 2
    assert (stats["files_read"], stats["files_edited"]) == (1, 2)
    assert stats["edited_not_read"] == ["src/util.py"]
    tokens = stats["tokens"]
    assert (tokens["llm_calls"], tokens["prompt"], tokens["completion"]) == (4, 4900, 180)
    assert tokens["cache_read"] == 4100 and "unpriced" not in tokens
    assert tokens["cost_usd"] == pytest.approx((800 * 3 + 180 * 15 + 4100 * 0.3) / 1e6)
    session = await call(store, "trajectory_stats", {"session_id": stored.session_id})
    whole = session.structured_content
    assert whole is not None
    assert (whole["turns"], whole["steps"], whole["tokens"]["llm_calls"]) == (2, 9, 5)
    assert whole["by_action"] == {"verify": 3, "edit": 2, "localize": 2, "plan": 1, "vcs": 1}
    assert (whole["partial"], whole["truncated"]) == (False, False)


async def test_stats_fit_a_small_budget(store: Store, stored: StoredTrajectory) -> None:
    result = await call(
        store, "trajectory_stats", {"session_id": stored.session_id, "max_chars": 1000}
    )
    assert not result.is_error
    assert len(text_of(result)) <= 1000


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"trace_id": "0" * 32}, ErrorCode.UNKNOWN_TRACE),
        ({"session_id": "no-such-session"}, ErrorCode.UNKNOWN_SESSION),
        ({}, ErrorCode.INVALID_ARGUMENT),
        ({"trace_id": "x", "session_id": "y"}, ErrorCode.INVALID_ARGUMENT),
    ],
)
@pytest.mark.parametrize("tool", ["get_trajectory", "trajectory_stats"])
async def test_unknown_or_missing_ids_are_errors_the_model_can_act_on(
    store: Store, stored: StoredTrajectory, tool: str, arguments: dict[str, Any], code: str
) -> None:
    result = await call(store, tool, arguments)
    assert result.is_error
    assert text_of(result).startswith(f"[{code}] ")
    if code != ErrorCode.INVALID_ARGUMENT:
        assert "search_traces" in text_of(result)


async def test_a_trace_of_another_project_is_unknown_in_the_one_named(
    store: Store, stored: StoredTrajectory
) -> None:
    result = await call(
        store, "get_trajectory", {"trace_id": stored.trace_ids[0], "project": "other"}
    )
    assert result.is_error
    assert text_of(result).startswith(f"[{ErrorCode.UNKNOWN_TRACE}] ")


async def test_a_cursor_of_another_trajectory_is_refused(
    store: Store, stored: StoredTrajectory
) -> None:
    first = await call(
        store, "get_trajectory", {"session_id": stored.session_id, "max_chars": 1000}
    )
    assert first.structured_content is not None
    cursor = first.structured_content["next_cursor"]
    other = await call(store, "get_trajectory", {"trace_id": stored.trace_ids[0], "cursor": cursor})
    assert other.is_error
    assert text_of(other).startswith(f"[{ErrorCode.INVALID_CURSOR}] ")
    assert json.loads(json.dumps(first.structured_content))["truncated"] is True
