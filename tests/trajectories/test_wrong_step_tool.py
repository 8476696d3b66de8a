"""find_first_wrong_step through the real MCP client: annotations written and read back,
re-runs, the budget, the judge over a mock transport, and the heatmap through aggregate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from tests.evals.anthropic_mock import FakeAnthropic, message
from tests.trajectories.test_tools import text_of
from tests.trajectories.wrong_step_fixtures import edit, pytest_run, read, store_turn
from tests.trajectory_fixtures import PROJECT, StoredTrajectory, store_trajectory
from traceproof.evals.llm import LLMClient
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools import wrong_step as wrong_step_tool
from traceproof.trajectories.wrong_step_judge import TOOL_NAME

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def call(store: Store, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    async with Client(create_mcp_server(store)) as client:
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def annotations(store: Store, name: str) -> list[dict[str, Any]]:
    found = await call(store, "get_annotations", {"name": name, "limit": 100})
    return sorted(found.get("rows", []), key=lambda r: (r["target_id"], r["annotator"]))


async def test_a_session_answers_its_first_wrong_step_and_writes_it_once(store: Store) -> None:
    stored: StoredTrajectory = store_trajectory(store)
    answer = await call(store, "find_first_wrong_step", {"session_id": stored.session_id})
    edit_span = stored.steps[0][9]  # step 10: the Edit of src/util.py, never read
    assert answer["first"] == {
        "step": 10, "turn": 1, "span_id": edit_span, "rule": "unread_edit",
        "reason": "Edit of `src/util.py`, which no earlier step read, searched or wrote",
    }  # fmt: skip
    assert (answer["chosen_by"], answer["by_rule"], answer["steps"]) == (
        "rules", {"unread_edit": 1}, 14,
    )  # fmt: skip
    assert answer["written"] == {"created": 2, "updated": 0, "unchanged": 0}
    (first,) = await annotations(store, "first_wrong_step")
    assert (first["target_kind"], first["target_id"], first["label"], first["score"]) == (
        "session", stored.session_id, "unread_edit", 10.0,
    )  # fmt: skip
    assert (first["annotator_kind"], first["annotator"]) == ("CODE", "traceproof.wrong_step")
    where = {"span_id": edit_span, "trace_id": stored.trace_ids[0]}
    assert first["metadata"] == {"step": 10, "steps": 14, "rule": "unread_edit", **where}
    (candidate,) = await annotations(store, "wrong_step_candidate")
    assert (candidate["target_kind"], candidate["target_id"], candidate["label"]) == (
        "span", edit_span, "unread_edit",
    )  # fmt: skip
    assert candidate["identifier"] == "session"
    # The trace preview shows the mark on the span.
    async with Client(create_mcp_server(store)) as client:
        preview = await client.call_tool("get_trace_preview", {"trace_id": stored.trace_ids[0]})
    assert "wrong_step_candidate=unread_edit" in text_of(preview)
    again = await call(store, "find_first_wrong_step", {"session_id": stored.session_id})
    assert again["written"] == {"created": 0, "updated": 0, "unchanged": 2}
    assert len(await annotations(store, "first_wrong_step")) == 1
    dry = await call(store, "find_first_wrong_step",
                     {"trace_id": stored.trace_ids[1], "write": False})  # fmt: skip
    assert (dry.get("first"), dry.get("written"), dry.get("candidates")) == (None, None, None)
    assert len(await annotations(store, "first_wrong_step")) == 1


async def test_a_failure_fixed_later_withdraws_its_candidate(store: Store) -> None:
    session = "sess-withdraw"
    first = store_turn(store, session, "u1", [read("src/app.py"), edit("src/app.py"),
                                              pytest_run(passed=False)])  # fmt: skip
    answer = await call(store, "find_first_wrong_step", {"session_id": session})
    assert (answer["first"]["step"], answer["first"]["rule"]) == (4, "unfixed_verification")
    assert "(1 failed, 2 passed)" in answer["first"]["reason"]
    store_turn(store, session, "u2", [edit("src/app.py", "b", "c"), pytest_run(passed=True)],
               start_s=100)  # fmt: skip
    fixed = await call(store, "find_first_wrong_step", {"session_id": session})
    assert (fixed.get("first"), fixed.get("candidates"), fixed.get("chosen_by")) == (
        None,
        None,
        None,
    )
    assert fixed["written"] == {"created": 0, "updated": 2, "unchanged": 0}
    (candidate,) = await annotations(store, "wrong_step_candidate")
    assert (candidate["target_id"], candidate["label"]) == (first[3], "withdrawn")
    assert candidate["explanation"].startswith("No longer a candidate (was unfixed_verification")
    (verdict,) = await annotations(store, "first_wrong_step")
    assert (verdict["label"], verdict.get("score"), verdict["version"]) == ("none", None, 2)


async def test_the_answer_keeps_to_max_chars(store: Store) -> None:
    session = "sess-many"
    store_turn(store, session, "u1", [edit(f"src/module_{i:03}/file_{i:03}.py") for i in range(80)])
    whole = await call(store, "find_first_wrong_step", {"session_id": session, "write": False})
    assert (whole["by_rule"], len(whole["candidates"]), whole["truncated"]) == (
        {"unread_edit": 80}, 50, True,
    )  # fmt: skip
    for limit in (1000, 2000, 5000):
        async with Client(create_mcp_server(store)) as client:
            result = await client.call_tool(
                "find_first_wrong_step", {"session_id": session, "max_chars": limit}
            )
        assert not result.is_error and len(text_of(result)) <= limit
        answer = json.loads(text_of(result))
        assert answer["first"]["step"] == 2 and answer["truncated"]
        assert 1 <= len(answer["candidates"]) < 50


def pick(step: int, explanation: str = "The edit broke the total.") -> dict[str, Any]:
    body = message(None)
    body["content"] = [{"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME,
                        "input": {"explanation": explanation, "step": step}}]  # fmt: skip
    body["stop_reason"] = "tool_use"
    return body


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(*replies: Any) -> FakeAnthropic:
        fake = FakeAnthropic(*replies)

        def client(settings: Settings) -> LLMClient:
            return fake.client(settings)[0]

        monkeypatch.setattr(wrong_step_tool, "llm_client", client)
        return fake

    return install


def two_candidates(store: Store) -> str:
    """A session whose edit of an unread file (step 2) precedes a failure never fixed (3)."""
    session = "sess-judge"
    store_turn(store, session, "u1", [edit("src/app.py"), pytest_run(passed=False),
                                      read("src/app.py")])  # fmt: skip
    return session


async def test_the_judge_sees_the_candidates_and_its_choice_is_recorded(
    store: Store, fake_llm: Any
) -> None:
    session = two_candidates(store)
    fake = fake_llm(pick(3, "Editing unread code was harmless; the failing test was ignored."))
    answer = await call(store, "find_first_wrong_step", {"session_id": session, "judge": True})
    (request,) = fake.requests
    assert request["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert request["tools"][0]["input_schema"]["properties"]["step"]["enum"] == [2, 3]
    prompt = request["messages"][0]["content"]
    assert "task of sess-judge" in prompt
    assert "- step 2 [unread_edit]: Edit of `src/app.py`" in prompt
    assert "- step 3 [unfixed_verification]: `pytest -q tests` failed" in prompt
    assert "3. verify Bash | pytest -q tests -> tests_failed (1 failed, 2 passed)" in prompt
    assert (answer["first"]["step"], answer["chosen_by"]) == (3, "judge")
    assert answer["judge"]["explanation"].startswith("Editing unread code was harmless")
    assert answer["judge"]["model"] == "claude-sonnet-5-5" and answer["judge"]["cost_usd"] > 0
    by = {r["annotator_kind"]: r for r in await annotations(store, "first_wrong_step")}
    assert (by["CODE"]["score"], by["LLM"]["score"]) == (2.0, 3.0)
    assert by["LLM"]["annotator"] == "traceproof.wrong_step.judge"
    assert by["LLM"]["metadata"]["model"] == "claude-sonnet-5-5"
    # The judge's verdict, written last, is the one aggregate reads.
    heatmap = await call(store, "aggregate", {
        "over": "traces", "session_id": session, "metrics": ["count"],
        "group_by": ["annotation.first_wrong_step", "annotation.first_wrong_step.score"],
    })  # fmt: skip
    assert heatmap["rows"] == [["unfixed_verification", 3.0, 1]]


async def test_a_malformed_judge_answer_leaves_the_rules_choice(
    store: Store, fake_llm: Any
) -> None:
    session = two_candidates(store)
    fake_llm(pick(7), message(None, text="I think step 2."))
    notes = []
    for _ in range(2):
        answer = await call(store, "find_first_wrong_step", {"session_id": session, "judge": True})
        assert (answer["first"]["step"], answer["chosen_by"]) == (2, "rules")
        assert answer.get("judge") is None
        assert answer["note"].startswith("The judge failed (")
        assert answer["note"].endswith("the first wrong step is the rules' choice.")
        notes.append(answer["note"])
    assert "answered 7 with an explanation, not one of the candidates' steps (2, 3)" in notes[0]
    assert "without calling the tool 'pick_first_wrong_step'" in notes[1]
    kinds = {r["annotator_kind"] for r in await annotations(store, "first_wrong_step")}
    assert kinds == {"CODE"}


async def test_without_a_credential_the_judge_says_it_was_not_used(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    session = two_candidates(store)
    answer = await call(store, "find_first_wrong_step", {"session_id": session, "judge": True})
    assert answer["chosen_by"] == "rules" and answer["first"]["step"] == 2
    assert answer["note"].startswith("The judge was not used (No credential")
    assert "Set ANTHROPIC_API_KEY" in answer["note"]
    assert answer["written"]["created"] == 3  # the rules' answer is still stored


async def test_first_wrong_steps_aggregate_into_a_heatmap(store: Store) -> None:
    sessions = {
        "sess-a": [edit("a.py")],  # unread_edit at step 2
        "sess-b": [edit("b.py")],  # unread_edit at step 2
        "sess-c": [read("c.py"), edit("c.py"), pytest_run(passed=False)],  # unfixed at 4
        "sess-d": [read("d.py"), edit("d.py"), pytest_run(passed=True)],  # none
    }
    for n, (session, calls) in enumerate(sessions.items()):
        store_turn(store, session, "u1", calls, start_s=n * 100)
        await call(store, "find_first_wrong_step", {"session_id": session})
    store_turn(store, "sess-c", "u2", [read("c.py")], start_s=1000)  # a second trace of sess-c
    heatmap = await call(store, "aggregate", {
        "over": "traces", "project": PROJECT,
        "group_by": ["annotation.first_wrong_step", "annotation.first_wrong_step.score"],
        "metrics": ["count_distinct(session_id)"],
        "order_by": "annotation.first_wrong_step.score asc",
    })  # fmt: skip
    assert heatmap["rows"] == [
        ["unread_edit", 2.0, 2],
        ["unfixed_verification", 4.0, 1],
        ["none", None, 1],
    ]


async def test_an_unknown_trace_and_two_ids_are_refused(store: Store) -> None:
    stored = store_trajectory(store)
    async with Client(create_mcp_server(store)) as client:
        unknown = await client.call_tool("find_first_wrong_step", {"trace_id": "f" * 32})
        both = await client.call_tool(
            "find_first_wrong_step",
            {"trace_id": stored.trace_ids[0], "session_id": stored.session_id},
        )
    assert unknown.is_error and "[unknown_trace]" in text_of(unknown)
    assert both.is_error and "Pass exactly one of trace_id and session_id" in text_of(both)
    assert await annotations(store, "first_wrong_step") == []
