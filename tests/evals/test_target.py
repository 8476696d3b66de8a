"""Targets built from span rows as the store returns them (the demo project in a real store)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from traceproof.evals.target import targets_from_rows

REFUND = "f67a73f91da3a124174d72e2bc80841b"


def test_span_targets_see_columns_parsed_attributes_and_their_trace(
    demo_rows: list[dict[str, Any]],
) -> None:
    rows = [r for r in demo_rows if r["trace_id"] == REFUND]
    targets = targets_from_rows(rows, "span", span_ids=["d7347079d53248e0"])
    (tool,) = targets
    assert (tool.kind, tool.id, tool.trace_id, tool.session_id) == (
        "span", "d7347079d53248e0", REFUND, "sess-0001",
    )  # fmt: skip
    assert tool.input == '{"order_id": "NW-231362", "amount": 74.99, "reason": "customer_request"}'
    assert tool.span["attributes"]["tool"]["name"] == "issue_refund"
    assert tool.span["start_time"].endswith("Z") and tool.span["events"] == []
    assert len(tool.trace) == len(rows)
    assert tool.trace[0]["parent_span_id"] is None  # in start order: the root first
    orjson.dumps(tool.wire(["span", "trace"]))  # JSON-ready, as a child process receives it


def test_a_trace_target_is_its_root_with_metadata(demo_rows: list[dict[str, Any]]) -> None:
    traces = {t.id: t for t in targets_from_rows(demo_rows, "trace")}
    assert len(traces) == 90
    refund = traces[REFUND]
    assert refund.span["name"] == "support_agent"
    assert refund.input == (
        "The merino wool sweater from NW-231362 arrived with a cracked housing. What can I do?"
    )
    assert refund.output.startswith("I'm sorry the merino wool sweater arrived damaged.")
    assert refund.metadata == {
        "channel": "web_chat", "app_version": "3.8.2", "turn": 1, "intent": "damaged_item",
    }  # fmt: skip


def test_a_session_target_runs_from_its_first_input_to_its_last_output(
    demo_rows: list[dict[str, Any]],
) -> None:
    sessions = {t.id: t for t in targets_from_rows(demo_rows, "session")}
    assert len(sessions) == 25
    first = sessions["sess-0001"]
    roots = [s for s in first.trace if s["parent_span_id"] is None]
    assert first.input == roots[0]["input_value"]
    assert first.output == roots[-1]["output_value"]
    assert len({s["trace_id"] for s in first.trace}) == len(roots) > 1


def test_expected_values_attach_by_target_id(demo_rows: list[dict[str, Any]]) -> None:
    traces = targets_from_rows(demo_rows, "trace", expected={REFUND: "refund issued"})
    assert [t.expected for t in traces if t.id == REFUND] == ["refund issued"]
    assert sum(t.expected is not None for t in traces) == 1


def test_rows_that_are_not_span_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="not span columns"):
        targets_from_rows([{"span_id": "a", "nope": 1}])
    with pytest.raises(ValueError, match="unknown target kind"):
        targets_from_rows([], "experiment")  # type: ignore[arg-type]
