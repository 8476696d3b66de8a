"""Tool-call evaluators over real demo traces (TOOL spans from the OpenTelemetry SDK, stored in
a real DuckDB file) and over LLM-requested calls."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.evals.conftest import judge
from traceproof.evals.builtin import BUILTINS
from traceproof.evals.target import EvalTarget, targets_from_rows
from traceproof.evals.toolcalls import tool_calls

REFUND = "f67a73f91da3a124174d72e2bc80841b"  # lookup_order, issue_refund(NW-231362, 74.99)
RETRY = "0c4be1ae8404933c68914221dd79d5a4"  # lookup_order, get_shipping_status twice (1st fails)


@pytest.fixture(scope="module")
def by_id(demo_traces: list[EvalTarget]) -> dict[str, EvalTarget]:
    return {t.id: t for t in demo_traces}


def test_tool_calls_come_from_tool_spans_with_their_arguments(
    by_id: dict[str, EvalTarget],
) -> None:
    calls = tool_calls(by_id[REFUND])
    assert [(c.name, c.arguments) for c in calls] == [
        ("lookup_order", {"order_id": "NW-231362"}),
        ("issue_refund", {"order_id": "NW-231362", "amount": 74.99, "reason": "customer_request"}),
    ]
    assert [c.failed for c in tool_calls(by_id[RETRY])] == [False, True, False]


def test_tool_called_with_and_without_arguments(by_id: dict[str, EvalTarget]) -> None:
    trace = by_id[REFUND]
    assert judge("tool_called", trace, name="issue_refund").label == "pass"
    right = judge("tool_called", trace, name="issue_refund", arguments={"amount": 74.99})
    assert right.label == "pass"
    wrong = judge("tool_called", trace, name="issue_refund", arguments={"amount": 80})
    assert wrong.label == "fail"
    assert wrong.explanation == (
        'issue_refund({"amount":80}) called 0× (need 1); calls: lookup_order, issue_refund'
    )
    twice = judge("tool_called", by_id[RETRY], name="get_shipping_status", min_count=2)
    assert twice.label == "pass"


def test_tool_not_called(by_id: dict[str, EvalTarget]) -> None:
    trace = by_id[REFUND]
    assert judge("tool_not_called", trace, name="cancel_order").label == "pass"
    called = judge("tool_not_called", trace, name="issue_refund")
    assert (called.label, called.explanation) == (
        "fail",
        "issue_refund called 1× (first span d7347079d53248e0)",
    )
    other_order = {"order_id": "NW-000000"}
    assert judge("tool_not_called", trace, name="issue_refund", arguments=other_order).score == 1


@pytest.mark.parametrize(
    ("mode", "tools", "label", "score"),
    [
        ("strict", ["lookup_order", "issue_refund"], "pass", 1.0),
        ("strict", ["issue_refund", "lookup_order"], "fail", 0.0),
        ("strict", ["lookup_order"], "fail", 0.0),
        ("unordered", ["issue_refund", "lookup_order"], "pass", 1.0),
        ("unordered", ["issue_refund"], "fail", 0.0),
        ("superset", ["issue_refund"], "pass", 1.0),
        ("superset", ["issue_refund", "cancel_order"], "fail", 0.5),
        ("subset", ["lookup_order", "issue_refund", "cancel_order"], "pass", 1.0),
        ("subset", ["lookup_order"], "fail", 0.5),
    ],
)
def test_tool_sequence_modes(
    by_id: dict[str, EvalTarget], mode: str, tools: list[str], label: str, score: float
) -> None:
    result = judge("tool_sequence", by_id[REFUND], tools=tools, mode=mode)
    assert (result.label, result.score) == (label, score), result.explanation


def test_tool_sequence_matches_arguments_when_given(by_id: dict[str, EvalTarget]) -> None:
    trace = by_id[REFUND]
    steps: list[Any] = ["lookup_order", {"name": "issue_refund", "arguments": {"amount": 74.99}}]
    assert judge("tool_sequence", trace, tools=steps).label == "pass"
    steps[1] = {"name": "issue_refund", "arguments": {"amount": 10}}
    wrong = judge("tool_sequence", trace, tools=steps)
    assert wrong.label == "fail"
    assert wrong.explanation is not None
    assert wrong.explanation.startswith('call 2 is issue_refund({"amount":74.99,')
    assert wrong.explanation.endswith('expected issue_refund({"amount":10})')


def test_unordered_matching_is_a_true_matching_not_greedy() -> None:
    # The first expected step (any lookup) could steal the only call the second step fits.
    spans = [
        _tool("a", "lookup", {"id": 1}),
        _tool("b", "lookup", {"id": 2}),
    ]
    target = EvalTarget(kind="trace", id="t", trace=spans, span=spans[0])
    steps = [{"name": "lookup"}, {"name": "lookup", "arguments": {"id": 1}}]
    assert judge("tool_sequence", target, tools=steps, mode="unordered").label == "pass"


def test_tool_sequence_reads_the_expected_value_when_no_tools_are_given(
    by_id: dict[str, EvalTarget],
) -> None:
    trace = by_id[REFUND]
    with_expected = EvalTarget(
        kind="trace", id=trace.id, span=trace.span, trace=trace.trace,
        expected={"tool_calls": ["lookup_order", "issue_refund"]},
    )  # fmt: skip
    assert judge("tool_sequence", with_expected).label == "pass"
    assert judge("tool_sequence", trace).error is not None


def test_max_tool_calls(by_id: dict[str, EvalTarget]) -> None:
    trace = by_id[RETRY]
    assert judge("max_tool_calls", trace, max=3).label == "pass"
    over = judge("max_tool_calls", trace, max=2)
    assert (over.label, over.explanation) == ("fail", "3 tool calls > 2")
    one = judge("max_tool_calls", trace, max=1, name="get_shipping_status")
    assert one.explanation == "2 'get_shipping_status' calls > 1"


def test_no_repeated_calls_catches_the_same_tool_with_the_same_arguments(
    by_id: dict[str, EvalTarget],
) -> None:
    trace = by_id[RETRY]
    repeated = judge("no_repeated_calls", trace)
    assert repeated.label == "fail"
    assert repeated.explanation == 'repeated: get_shipping_status({"order_id":"NW-254279"}) ×2'
    assert judge("no_repeated_calls", trace, count_failed=False).label == "pass"
    assert judge("no_repeated_calls", trace, max_repeats=2).label == "pass"
    assert judge("no_repeated_calls", by_id[REFUND]).label == "pass"
    assert judge("no_repeated_calls", by_id[REFUND], ignore_arguments=True).label == "pass"


def test_a_span_target_covers_its_descendants_only(demo_rows: list[dict[str, Any]]) -> None:
    rows = [r for r in demo_rows if r["trace_id"] == REFUND]
    spans = {t.span["name"]: t for t in targets_from_rows(rows, "span")}
    root, tool = spans["support_agent"], spans["issue_refund"]
    assert [c.name for c in tool_calls(root)] == ["lookup_order", "issue_refund"]
    assert [c.name for c in tool_calls(tool)] == ["issue_refund"]
    assert [c.name for c in tool_calls(spans["plan"])] == []  # falls back to LLM requests: none


def test_without_tool_spans_the_calls_llm_spans_requested_count() -> None:
    llm = {
        "span_id": "l1",
        "span_kind": "LLM",
        "attributes": {"llm": {"output_messages": [{"message": {"tool_calls": [
            {"tool_call": {"function": {"name": "search", "arguments": '{"q": "refund"}'}}},
            {"tool_call": {"function": {"name": "search", "arguments": '{"q": "refund"}'}}},
        ]}}]}},
    }  # fmt: skip
    target = EvalTarget(kind="trace", id="t", span=llm, trace=[llm])
    assert [(c.name, c.arguments) for c in tool_calls(target)] == [("search", {"q": "refund"})] * 2
    assert judge("no_repeated_calls", target).label == "fail"


def test_tool_parameters_holding_values_are_the_arguments_when_input_is_not_json() -> None:
    span = _tool("a", "lookup", None) | {"attributes": {"tool": {"parameters": {"id": 3}}}}
    target = EvalTarget(kind="trace", id="t", span=span, trace=[span])
    assert tool_calls(target)[0].arguments == {"id": 3}
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}}
    span["attributes"] = {"tool": {"parameters": schema}}
    assert tool_calls(target)[0].arguments is None


def test_tool_step_parameters_are_validated() -> None:
    with pytest.raises(ValidationError):
        BUILTINS["tool_sequence"].params.model_validate({"tools": [{"nme": "x"}]})
    with pytest.raises(ValidationError):
        BUILTINS["tool_sequence"].params.model_validate({"tools": ["x"], "mode": "loose"})
    with pytest.raises(ValidationError):
        BUILTINS["max_tool_calls"].params.model_validate({"max": -1})


def _tool(span_id: str, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    import json

    return {
        "span_id": span_id,
        "span_kind": "TOOL",
        "tool_name": name,
        "status": "OK",
        "input_value": json.dumps(arguments) if arguments is not None else "not json",
        "start_time": f"2026-11-01T09:00:0{span_id == 'b'}Z",
    }
