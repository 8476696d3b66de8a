"""The tools' HTTP API over real HTTP: results, argument validation, error codes and statuses.

The plumbing is checked with small tools registered for the test (they read the real demo store
through the same path as every tool); the registered tools are then called one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx2
import pytest
from pydantic import BaseModel, Field

from tests.conftest import LiveServer
from tests.experiment_helpers import ECHO_TOML, stored_experiment
from tests.proof_fixtures import insert_comparison
from tests.trajectory_fixtures import SESSION, store_trajectory
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.remote import RemoteStore
from traceproof.storage import Busy, QueryTimeout, Store
from traceproof.tools import registry
from traceproof.tools.common import ToolFailure


class Counted(BaseModel):
    table: str = Field(description="Table counted.")
    rows: int = Field(description="Its rows.")
    note: str | None = Field(default=None, description="The note passed in.")


def count_rows(
    store: Store,
    *,
    table: Annotated[Literal["spans", "traces"], Field(description="Table to count.")],
    times: Annotated[int, Field(description="Multiplier.", ge=1, le=3)] = 1,
    note: Annotated[str | None, Field(description="Echoed back.")] = None,
) -> Counted:
    """Count a table's rows (a tool for this test)."""
    with store.reader() as reader:
        rows = reader.scalar(f"SELECT count(*) FROM {table}")
    return Counted(table=table, rows=int(rows) * times, note=note)


def fail_with(store: Store, *, code: Annotated[str, Field(description="Error code.")]) -> Counted:
    """Raise the error a real tool would raise for ``code``."""
    if code == "store_busy":
        raise Busy(2.0)
    if code == "query_timeout":
        raise QueryTimeout("The query ran past 10 s and was stopped. Add a filter or a LIMIT.")
    raise ToolFailure(f"Failed with {code}. Do something else.", code=ErrorCode(code))


def crash(store: Store) -> Counted:
    """Fail the way a bug would."""
    raise RuntimeError("secret internals at /home/someone/store.duckdb")


@pytest.fixture
def test_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    for fn in (count_rows, fail_with, crash):
        monkeypatch.setitem(registry.TOOLS_BY_NAME, fn.__name__, registry.ToolSpec(fn))


@pytest.fixture
def demo_server(demo_store: Store) -> Iterator[LiveServer]:
    with LiveServer(demo_store, demo_store.settings) as server:
        yield server


def post(server: LiveServer, name: str, arguments: Any = None, **kwargs: Any) -> httpx2.Response:
    if "content" not in kwargs:
        kwargs["json"] = {} if arguments is None else arguments
    return httpx2.post(f"{server.url}/api/v1/tools/{name}", timeout=60, **kwargs)


def test_get_tools_lists_every_registered_tool_in_order(demo_server: LiveServer) -> None:
    answer = httpx2.get(demo_server.url + "/api/v1/tools")
    assert answer.status_code == 200
    assert answer.json() == {"tools": [spec.name for spec in registry.TOOLS]}
    assert answer.json()["tools"][:3] == ["list_projects", "search_traces", "get_trace_preview"]


def test_a_tool_runs_on_the_store_and_answers_its_result_as_json(
    demo_server: LiveServer, test_tools: None
) -> None:
    answer = post(demo_server, "count_rows", {"table": "spans", "note": "hi"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"table": "spans", "rows": 1064, "note": "hi"}
    # Arguments are converted as the signature says ("2" is an int); defaults apply.
    assert post(demo_server, "count_rows", {"table": "traces", "times": "2"}).json() == {
        "table": "traces",
        "rows": 180,
        "note": None,
    }


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"table": "spans", "tables": "x"}, ["unknown argument 'tables'"]),
        ({}, ["table is required"]),
        ({"table": "sessions"}, ["table:", "'sessions'"]),
        ({"table": "spans", "times": 9}, ["times: Input should be less than or equal to 3"]),
        ({"table": "spans", "times": "many"}, ["times:", "'many'"]),
        (["spans"], ["must be a JSON object"]),
    ],
)
def test_bad_arguments_are_400_invalid_argument_naming_what_is_wrong(
    demo_server: LiveServer, test_tools: None, arguments: Any, names: list[str]
) -> None:
    answer = post(demo_server, "count_rows", arguments)
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "invalid_argument"
    assert body["error"].startswith("[invalid_argument] ")
    for name in names:
        assert name in body["error"]


def test_a_body_that_is_not_json_is_400_invalid_argument(
    demo_server: LiveServer, test_tools: None
) -> None:
    json_type = {"content-type": "application/json"}
    answer = post(demo_server, "count_rows", content=b"{table: spans", headers=json_type)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_argument"
    # An empty body means no arguments: the tool runs (and here fails as it was written to).
    empty = post(demo_server, "crash", content=b"", headers=json_type)
    assert (empty.status_code, empty.json()["code"]) == (500, "internal_error")


def test_an_unknown_tool_is_404_not_found_listing_the_tools(demo_server: LiveServer) -> None:
    answer = post(demo_server, "get_everything")
    assert answer.status_code == 404
    body = answer.json()
    assert body["code"] == "not_found"
    assert body["error"].startswith("[not_found] No tool 'get_everything'. Use one of: ")
    assert "search_traces" in body["error"]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("unknown_trace", 404),
        ("unknown_span", 404),
        ("unknown_session", 404),
        ("unknown_project", 404),
        ("invalid_regex", 400),
        ("invalid_cursor", 400),
        ("invalid_filter", 400),
        ("invalid_jq", 400),
        ("forbidden_query", 400),
        ("query_timeout", 504),
        ("store_busy", 503),
    ],
)
def test_a_tools_error_keeps_its_code_and_gets_its_status(
    demo_server: LiveServer, test_tools: None, code: str, status: int
) -> None:
    answer = post(demo_server, "fail_with", {"code": code})
    assert answer.status_code == status
    body = answer.json()
    assert body["code"] == code
    assert body["error"].startswith(f"[{code}] ")
    if code == "store_busy":
        assert answer.headers["retry-after"] == "2"


def test_an_unexpected_failure_is_500_with_a_generic_message_and_a_logged_traceback(
    demo_server: LiveServer, test_tools: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="traceproof.server.api"):
        answer = post(demo_server, "crash")
    assert answer.status_code == 500
    body = answer.json()
    assert body["code"] == "internal_error"
    assert "secret" not in body["error"] and "/home" not in body["error"]
    assert "crash" in body["error"]
    (record,) = [r for r in caplog.records if r.name == "traceproof.server.api"]
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])


def test_remote_store_call_tool_returns_the_result_and_raises_the_servers_code(
    demo_server: LiveServer, test_tools: None
) -> None:
    remote = RemoteStore(demo_server.url)
    assert remote.call_tool("count_rows", {"table": "spans"}) == {
        "table": "spans",
        "rows": 1064,
        "note": None,
    }
    with pytest.raises(TraceproofError) as raised:
        remote.call_tool("fail_with", {"code": "unknown_trace"})
    assert raised.value.code == ErrorCode.UNKNOWN_TRACE
    assert raised.value.message == "Failed with unknown_trace. Do something else."
    assert str(raised.value) == "[unknown_trace] Failed with unknown_trace. Do something else."
    with pytest.raises(TraceproofError) as invalid:
        remote.call_tool("count_rows", {"table": "spans", "times": 0})
    assert invalid.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(TraceproofError) as busy:
        remote.call_tool("fail_with", {"code": "store_busy"})
    assert busy.value.code == ErrorCode.STORE_BUSY
    with pytest.raises(TraceproofError) as unknown:
        remote.call_tool("nope", {})
    assert unknown.value.code == ErrorCode.NOT_FOUND


def test_remote_store_call_tool_explains_an_unreachable_server(demo_server: LiveServer) -> None:
    remote = RemoteStore("http://127.0.0.1:9", timeout=5)
    with pytest.raises(TraceproofError) as raised:
        remote.call_tool("list_projects", {})
    assert raised.value.code == ErrorCode.STORE_ERROR
    assert "Could not reach the server at http://127.0.0.1:9" in str(raised.value)


def demo_ids(store: Store) -> dict[str, str]:
    with store.reader() as reader:
        trace, span, session = reader.rows(
            "SELECT trace_id, span_id, session_id FROM spans WHERE status = 'ERROR' "
            "AND span_kind = 'TOOL' ORDER BY start_time DESC LIMIT 1"
        )[0]
    return {"trace": trace, "span": span, "session": session}


def test_every_registered_tool_answers_through_the_api(
    demo_store: Store, demo_server: LiveServer, tmp_path: Path
) -> None:
    ids = demo_ids(demo_store)
    insert_comparison(demo_store, dataset_name="compared")  # what compare_experiments compares
    config = tmp_path / "traceproof.toml"  # the evaluator that evaluate names
    config.write_text('[evaluators.no_errors]\nevaluator = "no_error"\n' + ECHO_TOML)
    demo_store.settings.config = config
    experiment = stored_experiment(demo_store, tmp_path)
    calls: dict[str, dict[str, Any]] = {
        "list_projects": {},
        "search_traces": {"status": "ERROR", "limit": 100},
        "get_trace_preview": {"trace_id": ids["trace"]},
        "get_span_data": {"span_id": ids["span"], "paths": ["status", "tool_name"]},
        "find_in_trace": {"trace_id": ids["trace"], "pattern": ids["span"]},
        "search_spans": {"span_kind": "TOOL", "status": "ERROR", "limit": 100},
        "jq": {"program": ".status", "span_id": ids["span"]},
        "aggregate": {"group_by": ["status"], "metrics": ["count"]},
        "sql": {"query": "SELECT count(*) AS n FROM spans"},
        "describe_schema": {"table": "spans"},
        "get_session": {"session_id": ids["session"]},
        "annotate": {"name": "correctness", "label": "fail", "ids": [ids["span"]]},
        "get_annotations": {"name": "correctness"},
        "categorize_errors": {"project": "demo"},
        "evaluate": {"evaluator": "no_errors", "target": "trace"},
        "calibrate_judge": {"judge": "resolved", "human": "resolved"},
        "create_dataset": {"name": "errors", "where": "status = 'ERROR'"},
        "add_examples": {"dataset": "errors", "examples": [{"input": "hi"}]},
        "list_datasets": {},
        "get_dataset": {"dataset": "errors"},
        "run_experiment": {"task": "echo", "dataset": "qa", "evaluators": ["same"], "wait": 60},
        "get_experiment": {"id": experiment},
        "cancel_experiment": {"id": experiment},
        "compare_experiments": {"candidate": "exp_cand"},
        "get_trajectory": {"session_id": SESSION},
        "trajectory_stats": {"session_id": SESSION},
        "diff_trajectories": {"a": SESSION, "b": SESSION},
        "find_first_wrong_step": {"session_id": SESSION},
    }
    assert set(calls) == {spec.name for spec in registry.TOOLS}
    answers = {}
    for name, arguments in calls.items():
        if name == "get_trajectory":  # stored last: the counts above are the demo's own
            store_trajectory(demo_store)
        answer = post(demo_server, name, arguments)
        assert answer.status_code == 200, (name, answer.text)
        answers[name] = answer.json()
    assert answers["list_projects"]["projects"][0]["spans"] == 1064
    assert answers["search_traces"]["total"] == 20
    assert ids["span"] in "\n".join(answers["get_trace_preview"]["tree"])
    assert "ERROR" in str(answers["get_span_data"])
    assert ids["span"] in {m["span_id"] for m in answers["find_in_trace"]["matches"]}
    assert ids["span"] in {row["span_id"] for row in answers["search_spans"]["spans"]}
    assert answers["jq"]["results"] == ["ERROR"]
    assert dict(map(tuple, answers["aggregate"]["rows"]))["ERROR"] == 22
    assert answers["sql"]["rows"] == [[1064]]
    assert "latency_ms" in str(answers["describe_schema"])
    assert answers["get_session"]["session_id"] == ids["session"]
    assert answers["annotate"]["created"] == 1
    assert answers["get_annotations"]["rows"][0]["target_id"] == ids["span"]
    assert answers["categorize_errors"]["errors"] == 22
    assert answers["evaluate"]["labels"] == {"pass": 70, "fail": 20}
    assert (answers["calibrate_judge"]["n"], answers["calibrate_judge"]["reused"]) == (30, 30)
    assert (answers["create_dataset"]["version"], answers["create_dataset"]["examples"]) == (1, 22)
    assert (answers["add_examples"]["version"], answers["add_examples"]["added"]) == (2, 1)
    assert answers["list_datasets"]["datasets"][0]["examples"] == 23
    assert answers["get_dataset"]["examples"] == 23
    assert answers["run_experiment"]["summary"]["evaluators"]["same"]["labels"] == {"pass": 2}
    assert [r["scores"] for r in answers["get_experiment"]["runs"]] == [{"same": "pass"}] * 2
    assert answers["cancel_experiment"]["status"] == "done"
    assert answers["compare_experiments"]["verdict"]["status"] == "fail"
    assert len(answers["get_trajectory"]["steps"]) == 14
    assert answers["trajectory_stats"]["by_action"]["verify"] == 3
    assert (answers["diff_trajectories"]["same"], answers["diff_trajectories"]["a"]["steps"]) == (
        True,
        9,
    )
    assert answers["find_first_wrong_step"]["first"]["rule"] == "unread_edit"


@pytest.mark.parametrize(
    ("name", "arguments", "code", "status"),
    [
        ("get_trace_preview", {"trace_id": "f" * 32}, "unknown_trace", 404),
        ("get_span_data", {"span_id": "0" * 16}, "unknown_span", 404),
        ("get_session", {"session_id": "nobody"}, "unknown_session", 404),
        ("search_traces", {"project": "nowhere"}, "unknown_project", 404),
        ("find_in_trace", {"trace_id": "f" * 32, "pattern": "("}, "invalid_regex", 400),
        ("search_traces", {"cursor": "not-a-cursor"}, "invalid_cursor", 400),
        ("search_traces", {"where": "latency_ms >"}, "invalid_filter", 400),
        ("jq", {"program": ".[", "status": "ERROR"}, "invalid_jq", 400),
        ("sql", {"query": "SELECT nope FROM spans"}, "invalid_query", 400),
        ("sql", {"query": "DELETE FROM spans"}, "forbidden_query", 400),
        ("sql", {"query": "SELECT * FROM read_csv('/etc/passwd')"}, "forbidden_query", 400),
        ("sql", {"query": "SELECT 1", "max_chars": 10}, "invalid_argument", 400),
    ],
)
def test_the_registered_tools_errors_reach_the_caller_with_their_codes(
    demo_server: LiveServer, name: str, arguments: dict[str, Any], code: str, status: int
) -> None:
    answer = post(demo_server, name, arguments)
    assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert answer.json()["error"].startswith(f"[{code}] ")
