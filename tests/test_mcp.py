"""The MCP server through the SDK's real in-memory client, on the demo store."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.server.mcp import INSTRUCTIONS, UnavailableBackend, create_mcp_server
from traceproof.server.schemas import trimmed, without_titles
from traceproof.storage import Store, StoreLocked
from traceproof.tools import registry
from traceproof.tools.projects import list_projects
from traceproof.tools.traces import search_traces

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


async def test_tools_list_offers_every_registered_tool_read_only_with_output_schemas(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        tools = (await client.list_tools()).tools
        assert client.instructions == INSTRUCTIONS
    assert [tool.name for tool in tools] == [spec.name for spec in registry.TOOLS]
    for tool, spec in zip(tools, registry.TOOLS, strict=True):
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is spec.read_only
        assert tool.annotations.open_world_hint is spec.open_world
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.description and tool.description == (spec.fn.__doc__ or "").strip().replace(
            "\n    ", "\n"
        )
        assert "store" not in tool.input_schema.get("properties", {})


async def test_the_tools_that_may_call_an_llm_say_they_reach_an_open_world(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        tools = (await client.list_tools()).tools
    open_world = {t.name for t in tools if t.annotations and t.annotations.open_world_hint}
    assert open_world == {"evaluate", "calibrate_judge", "categorize_errors", "run_experiment",
                          "find_first_wrong_step"}  # fmt: skip


#: Parameters whose name and type say all a model needs (a description would be noise).
SELF_EVIDENT = frozenset(
    {"project", "session_id", "user_id", "trace_id", "span_id", "status", "ignore_case"}
    | {"order_by", "limit", "max_matches", "max_chars", "min_latency_ms"}
    | {"dataset", "split", "repetitions", "concurrency", "name"}
)


async def test_input_schema_carries_each_parameters_description_and_bounds(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    limit = tools["search_traces"].input_schema["properties"]["limit"]
    assert limit["minimum"] == 1 and limit["maximum"] == 100 and limit["default"] == 20
    shared = tools["search_spans"].input_schema["properties"]
    for tool in tools.values():
        for name, prop in tool.input_schema.get("properties", {}).items():
            if prop.get("description") or name in SELF_EVIDENT:
                continue
            # A shared filter said once: the tool refers to search_spans, which describes it.
            assert "search_spans" in (tool.description or ""), f"{tool.name}.{name}"
            assert shared[name].get("description"), f"search_spans.{name}"


def model_visible(tools: list[Any]) -> int:
    """Characters of what a model reads of tools/list: names, descriptions, input schemas."""
    dumped = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    return compact([{k: d[k] for k in ("name", "description", "inputSchema")} for d in dumped])


#: The model-visible budget of tools/list for the 11 trace-inspection tools, and so the
#: average every tool (those of later issues too) must keep to.
MODEL_VISIBLE_BUDGET = 8_000
INSPECT_TOOLS = 11


async def test_tools_list_stays_small(demo_store: Store) -> None:
    """What every agent turn pays: the part a model reads under its budget, the whole answer
    small. The figures are printed for the PR notes."""
    async with Client(create_mcp_server(demo_store, toolsets=["inspect"])) as client:
        tools = (await client.list_tools()).tools
    dumped = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    whole = compact({"tools": dumped})
    visible = model_visible(tools)
    print(f"tools/list: {whole:,} chars; name+description+inputSchema: {visible:,} chars")
    assert len(tools) == INSPECT_TOOLS
    assert '"title"' not in json.dumps(dumped)
    assert '{"type":"null"}' not in json.dumps([d["inputSchema"] for d in dumped])
    assert visible <= MODEL_VISIBLE_BUDGET
    assert whole <= 28_000


async def test_every_tool_keeps_to_the_average_model_visible_budget(demo_store: Store) -> None:
    """Tools added by later issues (judgment, proof, trajectories) pay the same per tool."""
    async with Client(create_mcp_server(demo_store)) as client:
        tools = (await client.list_tools()).tools
    assert model_visible(tools) / len(tools) <= MODEL_VISIBLE_BUDGET / INSPECT_TOOLS


async def test_structured_content_equals_the_tools_return_and_text_is_its_compact_json(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        result = await client.call_tool("search_traces", {"project": "demo", "limit": 5})
    expected = search_traces(demo_store, project="demo", limit=5)
    assert not result.is_error
    assert result.structured_content == trimmed(expected)
    assert json.loads(text_of(result)) == trimmed(expected)
    assert json.loads(text_of(result)) == result.structured_content
    assert "\n" not in text_of(result)
    assert len(result.structured_content["traces"]) == 5
    assert result.structured_content["total"] == 90


async def test_list_projects_answers_the_demo_projects_counts(demo_store: Store) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        result = await client.call_tool("list_projects", {})
    assert result.structured_content == trimmed(list_projects(demo_store))
    (demo,) = [p for p in result.structured_content["projects"] if p["project"] == "demo"]
    assert (demo["traces"], demo["spans"], demo["errors"]) == (90, 1064, 22)


async def test_a_tools_error_comes_back_as_is_error_with_its_code(demo_store: Store) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        result = await client.call_tool("search_traces", {"project": "no-such-project"})
    assert result.is_error
    assert result.structured_content is None
    assert text_of(result).startswith(f"[{ErrorCode.UNKNOWN_PROJECT}] No project 'no-such-project'")


async def test_arguments_outside_the_schema_are_refused_with_invalid_argument(
    demo_store: Store,
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        result = await client.call_tool("search_traces", {"limit": 0})
    assert result.is_error
    assert text_of(result).startswith(f"[{ErrorCode.INVALID_ARGUMENT}] ")
    assert "limit" in text_of(result)


async def test_an_unknown_argument_is_refused_not_ignored(demo_store: Store) -> None:
    """A misspelt filter must not silently match everything."""
    async with Client(create_mcp_server(demo_store)) as client:
        result = await client.call_tool("search_traces", {"projetc": "demo"})
    assert result.is_error
    assert text_of(result).startswith(f"[{ErrorCode.INVALID_ARGUMENT}] ")
    assert "'projetc'" in text_of(result)


async def test_an_unexpected_failure_is_reported_without_internals_and_logged(
    demo_store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(store: Store, name: str, arguments: dict[str, Any]) -> BaseModel:
        raise RuntimeError("secret detail /home/someone/db")

    monkeypatch.setattr(registry, "call", broken)
    with caplog.at_level(logging.ERROR, logger="traceproof.server.mcp"):
        async with Client(create_mcp_server(demo_store)) as client:
            result = await client.call_tool("list_projects", {})
    assert result.is_error
    assert text_of(result).startswith(f"[{ErrorCode.INTERNAL_ERROR}] ")
    assert "secret" not in text_of(result)
    assert any("secret detail" in (r.exc_text or "") for r in caplog.records)


async def test_a_server_without_a_store_answers_every_call_with_the_lock_error(
    tmp_path: Any,
) -> None:
    locked = StoreLocked(tmp_path / "x.duckdb", pid=4242, holder="traceproof mcp", url=None)
    async with Client(create_mcp_server(UnavailableBackend(locked))) as client:
        assert len((await client.list_tools()).tools) == len(registry.TOOLS)
        result = await client.call_tool("list_projects", {})
    assert result.is_error
    assert text_of(result) == str(locked)
    assert text_of(result).startswith(f"[{ErrorCode.STORE_LOCKED}] ")


async def test_a_traceproof_error_keeps_its_code_and_message(tmp_path: Any) -> None:
    error = TraceproofError(
        "No trace 'ab12'. Call search_traces to list recent traces.",
        code=ErrorCode.UNKNOWN_TRACE,
    )
    async with Client(create_mcp_server(UnavailableBackend(error))) as client:
        result = await client.call_tool("list_projects", {})
    assert result.is_error
    assert text_of(result) == (
        "[unknown_trace] No trace 'ab12'. Call search_traces to list recent traces."
    )


def test_schema_titles_go_but_a_property_named_title_stays() -> None:
    schema = {
        "title": "Args",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string", "default": "x"},
            "n": {"anyOf": [{"type": "integer", "title": "N"}, {"type": "null"}]},
        },
        "$defs": {"Row": {"title": "Row", "properties": {"a": {"title": "A"}}}},
    }
    assert without_titles(schema) == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "default": "x"},
            "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "$defs": {"Row": {"properties": {"a": {}}}},
    }


async def test_toolsets_choose_the_families_a_host_gets(demo_store: Store) -> None:
    async with Client(create_mcp_server(demo_store, toolsets=["inspect"])) as client:
        inspect_tools = (await client.list_tools()).tools
    async with Client(create_mcp_server(demo_store, toolsets=["proof"])) as client:
        proof_tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("list_projects", {})
    assert result.is_error
    assert {"create_dataset", "add_examples", "list_datasets", "get_dataset"} <= proof_tools
    assert proof_tools == {spec.name for spec in registry.TOOLS if spec.family == "proof"}
    async with Client(create_mcp_server(demo_store, toolsets=["trajectories"])) as client:
        trajectory_tools = [t.name for t in (await client.list_tools()).tools]
    assert trajectory_tools == [
        "get_trajectory",
        "trajectory_stats",
        "diff_trajectories",
        "find_first_wrong_step",
    ]
    assert [t.name for t in inspect_tools] == [
        spec.name for spec in registry.TOOLS if spec.family == "inspect"
    ]
    assert len(inspect_tools) == 11


def test_an_unknown_toolset_is_refused_naming_the_known_ones(demo_store: Store) -> None:
    with pytest.raises(ValueError, match="Known toolsets: inspect, judgment, proof, trajectories"):
        create_mcp_server(demo_store, toolsets=["inspect", "bogus"])


def test_mcp_command_refuses_an_unknown_toolset(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from traceproof.cli import cli

    result = CliRunner().invoke(
        cli, ["mcp", "--db", str(tmp_path / "x.duckdb"), "--toolsets", "inspect,bogus"]
    )
    assert result.exit_code == 2
    assert "Unknown toolset 'bogus'" in result.output
    assert "inspect, judgment, proof, trajectories" in result.output
    assert not (tmp_path / "x.duckdb").exists()
