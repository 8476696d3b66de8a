"""Every tool's answer, on real data, against the output schema it declares in ``tools/list``,
with format checking on (``date-time`` really checked), through the real in-memory MCP client.

The calls come from :func:`calls_for`, which must name every registered tool: a new tool that
has no example call here fails the test instead of escaping it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from mcp import Client
from mcp_types import CallToolResult, TextContent

from tests.experiment_helpers import ECHO_TOML, stored_experiment
from tests.proof_fixtures import insert_comparison
from tests.trajectory_fixtures import store_trajectory
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store
from traceproof.tools import registry

pytestmark = pytest.mark.anyio

FORMATS = Draft202012Validator.FORMAT_CHECKER


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_format_checker_really_checks_date_time() -> None:
    """Without rfc3339-validator installed jsonschema accepts any string as a date-time."""
    assert FORMATS.conforms("2026-11-01T09:08:00Z", "date-time")
    assert FORMATS.conforms("2026-11-01T09:08:00.123456+00:00", "date-time")
    assert not FORMATS.conforms("2026-11-01T09:08:00", "date-time")


def demo_ids(store: Store) -> dict[str, str]:
    """Ids of the demo project to call the tools with: a trace with a session and an error, a
    span of it, and the span with the 400,000-character input."""
    with store.reader() as reader:
        ((trace_id, session_id),) = reader.rows(
            "SELECT trace_id, session_id FROM traces WHERE session_id IS NOT NULL "
            "AND error_count > 0 ORDER BY trace_id LIMIT 1"
        )
        ((span_id,),) = reader.rows(
            "SELECT span_id FROM spans WHERE trace_id = ? ORDER BY start_time LIMIT 1",
            [trace_id],
        )
        ((big_span,),) = reader.rows(
            "SELECT span_id FROM spans ORDER BY length(input_value) DESC NULLS LAST LIMIT 1"
        )
    return {"trace": trace_id, "session": session_id, "span": span_id, "big_span": big_span}


def trajectory_ids(store: Store) -> dict[str, str]:
    """Store a coding-agent session (the demo has none) for the trajectory tools to read:
    call after :func:`demo_ids`, whose picks it would otherwise change."""
    stored = store_trajectory(store)
    return {"trajectory_session": stored.session_id, "trajectory_trace": stored.trace_ids[0]}


def calls_for(ids: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Valid calls of every tool on the demo store, the common case and the edge cases that
    fill the optional parts of the answer (clipping, paging, empty results)."""
    return {
        "list_projects": [{}],
        "search_traces": [
            {"project": "demo", "limit": 5},
            {"project": "demo", "status": "ERROR", "limit": 2, "order_by": "latency"},
            {"project": "demo", "since": "2000-01-01T00:00:00Z", "regex": "no-such-text-zz"},
        ],
        "get_trace_preview": [
            {"trace_id": ids["trace"]},
            {"trace_id": ids["trace"], "max_depth": 1},
        ],
        "get_span_data": [
            {"span_id": ids["span"]},
            {"span_id": ids["big_span"], "max_chars": 2000},
        ],
        "find_in_trace": [
            {"trace_id": ids["trace"], "pattern": "e", "max_matches": 3},
            {"trace_id": ids["trace"], "pattern": "no-such-text-zz"},
        ],
        "search_spans": [
            {"project": "demo", "span_kind": "LLM", "limit": 3},
            {"trace_id": ids["trace"], "status": "ERROR"},
        ],
        "jq": [
            {"program": ".name", "span_id": ids["span"]},
            {"program": "[.[] | {name, status}]", "trace_id": ids["trace"]},
            {"program": ".[].start_time", "project": "demo", "status": "ERROR", "max_spans": 5},
        ],
        "aggregate": [
            {"group_by": ["span_kind"], "metrics": ["count", "p95(latency_ms)"]},
            {"group_by": ["session_id"], "over": "traces", "limit": 3},
        ],
        "sql": [
            {"query": "select trace_id, start_time, latency_ms from traces limit 3"},
            {"query": "select 1 as one where false"},
        ],
        "describe_schema": [{}, {"table": "spans"}],
        "get_session": [{"session_id": ids["session"]}],
        "annotate": [
            {"name": "correctness", "label": "fail", "ids": [ids["span"]]},
            {"name": "tone", "score": 0.5, "where": "span_kind = 'LLM'"},
        ],
        "get_annotations": [{"name": "correctness"}, {"history": True, "limit": 2}],
        "categorize_errors": [{}, {"project": "demo", "limit": 2, "max_chars": 1000}],
        "evaluate": [
            {"evaluator": "no_errors", "target": "trace", "limit": 5},
            {"evaluator": "no_errors", "ids": [ids["span"]], "max_chars": 1000},
        ],
        "calibrate_judge": [
            {"judge": "resolved", "human": "resolved"},
            {"judge": "resolved", "human": "resolved", "target": "trace", "max_chars": 1000},
        ],
        "create_dataset": [
            {"name": "llm", "where": "span_kind = 'LLM'", "sources": {"expected": "output.value"}},
            {"name": "literal", "examples": [{"input": "hi", "split": "test"}]},
        ],
        "add_examples": [
            {"dataset": "literal", "examples": [{"input": "hi"}, {"input": "ho"}]},
            {"dataset": "literal", "examples": [{"input": "ho"}]},
        ],
        "list_datasets": [{}, {"max_chars": 1000}],
        "get_dataset": [
            {"dataset": "literal", "version": 1, "split": "test"},
            {"dataset": "llm", "max_chars": 2000},
        ],
        "run_experiment": [
            {"task": "echo", "dataset": "qa", "evaluators": ["same"], "wait": 60},
            {"task": "echo", "dataset": "qa", "dry_run": True, "wait": 60},
        ],
        "get_experiment": [
            {"id": ids["experiment"]},
            {"id": ids["experiment"], "limit": 1, "max_chars": 1000},
        ],
        "cancel_experiment": [{"id": ids["experiment"]}],
        "compare_experiments": [
            {"candidate": "exp_cand"},
            {"candidate": "exp_cand", "baseline": "exp_base", "gate": "significant:correct"},
            {"candidate": "exp_cand", "max_chars": 1000},
        ],
        "get_trajectory": [
            {"session_id": ids["trajectory_session"]},
            {"trace_id": ids["trajectory_trace"], "max_chars": 1000},
        ],
        "trajectory_stats": [
            {"session_id": ids["trajectory_session"]},
            {"trace_id": ids["trajectory_trace"], "max_chars": 1000},
        ],
        "diff_trajectories": [
            {"a": ids["trajectory_trace"], "b": ids["trajectory_session"]},
            {"a": ids["trajectory_session"], "b": ids["trajectory_trace"], "max_chars": 1000},
        ],
        "find_first_wrong_step": [
            {"session_id": ids["trajectory_session"]},
            {"trace_id": ids["trajectory_trace"], "write": False, "max_chars": 1000},
            {"session_id": ids["trajectory_session"], "judge": True},
        ],
    }


def evaluators_config(folder: Path) -> Path:
    """A traceproof.toml declaring the evaluator that evaluate's example calls name, and the
    task and evaluator of the experiment calls."""
    config = folder / "traceproof.toml"
    config.write_text('[evaluators.no_errors]\nevaluator = "no_error"\n' + ECHO_TOML)
    return config


@pytest.fixture
def calls(demo_store: Store, tmp_path: Path) -> Iterator[dict[str, list[dict[str, Any]]]]:
    demo_store.settings.config = evaluators_config(tmp_path)
    ids = demo_ids(demo_store) | {"experiment": stored_experiment(demo_store, tmp_path)}
    ids |= trajectory_ids(demo_store)
    insert_comparison(demo_store, dataset_name="compared")  # what compare_experiments compares
    found = calls_for(ids)
    assert set(found) == {spec.name for spec in registry.TOOLS}, (
        "give every registered tool an example call in calls_for"
    )
    yield found


def only_text(result: CallToolResult) -> str:
    (block,) = result.content
    assert isinstance(block, TextContent)
    return block.text


async def test_every_tools_answer_validates_against_its_output_schema_with_formats(
    demo_store: Store, calls: dict[str, list[dict[str, Any]]]
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        for name, examples in calls.items():
            schema = tools[name].output_schema
            assert schema is not None, name
            Draft202012Validator.check_schema(schema)
            validator = Draft202012Validator(schema, format_checker=FORMATS)
            for arguments in examples:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, (name, arguments, result.content)
                content = result.structured_content
                errors = [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(content)
                ]
                assert not errors, (name, arguments, errors[:5])
                assert json.loads(only_text(result)) == content
                assert not list(empty_fields(content, schema, schema)), (name, arguments)


def empty_fields(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Iterator[str]:
    """Fields of result models (objects whose schema lists properties) sent as null or empty;
    data inside them (jq outputs, SQL cells, span attributes) is not looked at."""
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            yield from empty_fields(item, node["items"], root)
    if not (isinstance(value, dict) and "properties" in node):
        return
    for key, item in value.items():
        if item is None or item in ([], {}):
            yield key
        elif key in node["properties"]:
            yield from empty_fields(item, node["properties"][key], root)


def schema_nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema that describes a value (properties, items, $defs, anyOf branches)."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in ("properties", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            yield from schema_nodes(sub, f"{path}/{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from schema_nodes(schema[key], f"{path}/{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for index, sub in enumerate(schema.get(key) or []):
            yield from schema_nodes(sub, f"{path}/{key}{index}")


async def test_every_output_schema_item_has_a_type(demo_store: Store) -> None:
    """The Inspector warns about a schema without a type (``{}``, pydantic's ``Any``)."""
    async with Client(create_mcp_server(demo_store)) as client:
        tools = (await client.list_tools()).tools
    untyped = [
        f"{tool.name}{path}"
        for tool in tools
        for path, node in schema_nodes(tool.output_schema)
        if not ({"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"} & set(node))
    ]
    assert not untyped


def test_times_leave_as_rfc3339_utc_with_z_in_every_json_answer(demo_store: Store) -> None:
    """What the HTTP API and the CLI's --json send (model_dump_json), and SQL/jq values."""
    from traceproof.tools.jqtool import jq
    from traceproof.tools.sql import sql
    from traceproof.tools.traces import search_traces

    row = json.loads(search_traces(demo_store, project="demo", limit=1).model_dump_json())
    assert row["traces"][0]["start_time"].endswith("Z")
    assert FORMATS.conforms(row["traces"][0]["start_time"], "date-time")
    cell = sql(demo_store, query="select min(start_time) from spans").rows[0][0]
    assert isinstance(cell, str) and cell.endswith("Z") and FORMATS.conforms(cell, "date-time")
    (value,) = jq(demo_store, program=".[0].start_time", project="demo", max_spans=1).results
    assert isinstance(value, str) and value.endswith("Z")


async def test_max_chars_has_one_ceiling_in_the_schema_the_setting_and_behaviour(
    demo_store: Store,
) -> None:
    from pydantic import ValidationError

    from traceproof.errors import ErrorCode
    from traceproof.settings import Settings
    from traceproof.tools.traces import search_traces

    ceiling = Settings().response_chars_max
    async with Client(create_mcp_server(demo_store)) as client:
        tools = (await client.list_tools()).tools
        maxima = {
            tool.name: tool.input_schema["properties"]["max_chars"]["maximum"]
            for tool in tools
            if "max_chars" in tool.input_schema.get("properties", {})
        }
        assert len(maxima) == len(tools)
        assert set(maxima.values()) == {ceiling}
        over = await client.call_tool("list_projects", {"max_chars": ceiling + 1})
        assert over.is_error and only_text(over).startswith(f"[{ErrorCode.INVALID_ARGUMENT}]")
    with pytest.raises(ValidationError):
        Settings(response_chars_max=ceiling + 1)
    # A server set lower says so, rather than cutting the answer silently.
    demo_store.settings.response_chars_max = 5_000
    with pytest.raises(Exception) as refused:
        search_traces(demo_store, project="demo", max_chars=10_000)
    assert getattr(refused.value, "code", None) == ErrorCode.INVALID_ARGUMENT
    assert "5000" in str(refused.value)


def test_trimming_leaves_out_null_and_empty_fields_but_never_touches_data() -> None:
    from traceproof.server.schemas import trimmed
    from traceproof.tools.jqtool import JqResult

    result = JqResult(
        input="span x",
        spans_read=1,
        spans_capped=False,
        results=[None, {}, [], {"a": None}],
        dropped=0,
        dropped_more=False,
        clipped=False,
        truncated=False,
        note=None,
    )
    assert trimmed(result) == {
        "input": "span x",
        "spans_read": 1,
        "spans_capped": False,
        "results": [None, {}, [], {"a": None}],
        "dropped": 0,
        "dropped_more": False,
        "clipped": False,
        "truncated": False,
    }
    assert "results" not in trimmed(result.model_copy(update={"results": []}))
