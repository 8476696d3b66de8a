"""The LLM judge through the real anthropic client over an httpx2 mock transport."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx2
import pytest

from tests.evals.anthropic_mock import FakeAnthropic, Status, message
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.context import CHARS_PER_TOKEN, Sources, trace_context
from traceproof.evals.judge import (
    INSUFFICIENT_EVIDENCE,
    FewShot,
    JudgeDefinition,
    JudgeTarget,
    ajudge,
    judge,
    render_prompt,
)
from traceproof.evals.llm import LLMClient
from traceproof.settings import Settings

RUBRIC = (
    "Is the answer correct for the question?\n<question>{input}</question>\n"
    "<answer>{output}</answer>\n<reference>{expected}</reference>\n<trace>{trace}</trace>\n"
    'Answer format example: {"ok": true}'
)


def definition(**changes: Any) -> JudgeDefinition:
    fields: dict[str, Any] = {
        "name": "correctness",
        "rubric": RUBRIC,
        "labels": ("fail", "pass"),
        "scores": {"fail": 0.0, "pass": 1.0},
        "insufficient_evidence": True,
    }
    return JudgeDefinition(**{**fields, **changes})


def spans(trace: str = "t1") -> list[dict[str, Any]]:
    start = 1_700_000_000_000_000
    return [
        {
            "span_id": f"{trace}-root",
            "parent_span_id": None,
            "name": "agent",
            "span_kind": "AGENT",
            "status": "OK",
            "start_us": start,
            "end_us": start + 2_000_000,
            "input_value": "What is the capital of Australia?",
            "output_value": "The capital of Australia is Sydney.",
        },
        {
            "span_id": f"{trace}-search",
            "parent_span_id": f"{trace}-root",
            "name": "web_search",
            "span_kind": "TOOL",
            "tool_name": "web_search",
            "status": "OK",
            "start_us": start + 100_000,
            "end_us": start + 900_000,
            "input_value": '{"query": "capital of Australia"}',
            "output_value": "Canberra is the capital city of Australia.",
        },
        {
            "span_id": f"{trace}-llm",
            "parent_span_id": f"{trace}-root",
            "name": "ChatAnthropic",
            "span_kind": "LLM",
            "model": "claude-haiku-4-5",
            "total_tokens": 812,
            "status": "OK",
            "start_us": start + 1_000_000,
            "end_us": start + 1_900_000,
            "input_value": "Answer from the search results.",
            "output_value": "The capital of Australia is Sydney.",
        },
    ]


def target(number: int = 1) -> JudgeTarget:
    trace = f"t{number}"
    return JudgeTarget(
        id=f"{trace}-root",
        input="What is the capital of Australia?",
        output="The capital of Australia is Sydney.",
        expected="Canberra",
        spans=spans(trace),
    )


def verdict(label: str, **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "explanation": "The search found Canberra; the answer says Sydney.",
        "evidence": [
            {"quote": "Canberra is the capital city of Australia.", "span_id": "t1-search"},
            {"quote": "capital of Australia is Sydney", "span_id": None},
        ],
        "label": label,
    }
    return {**answer, **extra}


def test_the_tool_asks_for_explanation_and_evidence_before_the_label_on_the_wire() -> None:
    fake = FakeAnthropic(verdict("fail"))
    client, _ = fake.client()
    judge(definition(), [target()], client)
    [tool] = fake.requests[0]["tools"]
    schema = tool["input_schema"]
    assert list(schema["properties"]) == ["explanation", "evidence", "label"]
    assert schema["properties"]["label"]["enum"] == ["fail", "pass", INSUFFICIENT_EVIDENCE]
    assert list(schema["properties"]["evidence"]["items"]["properties"]) == ["quote", "span_id"]
    assert fake.requests[0]["tool_choice"] == {"type": "tool", "name": tool["name"]}


def test_a_judgment_has_label_score_evidence_tokens_cost_and_the_definition_hash() -> None:
    fake = FakeAnthropic(message(verdict("fail"), input_tokens=2000, output_tokens=100))
    client, _ = fake.client()
    judge_def = definition()
    [judgment] = judge(judge_def, [target()], client)
    assert judgment.error is None
    assert (judgment.label, judgment.score) == ("fail", 0.0)
    assert judgment.explanation == "The search found Canberra; the answer says Sydney."
    assert [e.supported for e in judgment.evidence] == [True, True]
    assert judgment.evidence[0].span_id == "t1-search"
    assert judgment.flags == [] and judgment.unsupported_quotes == []
    assert (judgment.input_tokens, judgment.output_tokens) == (2000, 100)
    assert judgment.cost_usd == pytest.approx(2000 * 3 / 1e6 + 100 * 15 / 1e6)
    assert judgment.latency_ms > 0 and judgment.attempts == 1
    assert judgment.definition_hash == judge_def.definition_hash
    assert judgment.judge == "correctness" and judgment.target_id == "t1-root"


def test_the_prompt_fills_the_slots_with_the_target_and_its_trace() -> None:
    fake = FakeAnthropic(verdict("fail"))
    client, _ = fake.client()
    judge(definition(), [target()], client)
    prompt = fake.requests[0]["messages"][0]["content"]
    assert "<question>What is the capital of Australia?</question>" in prompt
    assert "<reference>Canberra</reference>" in prompt
    assert "t1-search" in prompt and "Canberra is the capital city of Australia." in prompt
    assert '{"ok": true}' in prompt  # braces that are not slots are left alone
    assert "{trace}" not in prompt


def test_quotes_not_in_the_trace_are_flagged_and_misattributed_ones_too() -> None:
    answer = verdict(
        "fail",
        evidence=[
            {"quote": "The population of Sydney is 5 million.", "span_id": "t1-search"},
            {"quote": "Canberra is the capital city", "span_id": "t1-llm"},
            {"quote": "capital of … Sydney", "span_id": "t1-llm"},
        ],
    )
    client, _ = FakeAnthropic(answer).client()
    [judgment] = judge(definition(), [target()], client)
    assert judgment.label == "fail"
    assert [e.supported for e in judgment.evidence] == [False, False, True]
    assert judgment.unsupported_quotes == ["The population of Sydney is 5 million."]
    assert judgment.flags == ["unsupported_quotes", "wrong_span_quotes"]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (message(None, text="It fails."), "no tool call"),
        (verdict("wrong"), "label not in the enum"),
        ({"label": "pass"}, "explanation and evidence missing"),
        (verdict("pass", evidence="see above"), "evidence not a list"),
        (verdict("pass", evidence=[{"span_id": "t1-llm"}]), "evidence without a quote"),
    ],
)
def test_a_malformed_answer_is_an_error_for_that_target_only(reply: Any, why: str) -> None:
    fake = FakeAnthropic(
        default=lambda body: reply if "t2-root" in json.dumps(body) else verdict("fail")
    )
    client, _ = fake.client()
    judgments = judge(definition(), [target(1), target(2), target(3)], client, concurrency=1)
    assert [j.target_id for j in judgments] == ["t1-root", "t2-root", "t3-root"]
    bad = judgments[1]
    assert bad.label is None and bad.score is None, why
    assert bad.error_code == ErrorCode.LLM_MALFORMED
    assert bad.error is not None and bad.error.startswith("[llm_malformed]")
    assert bad.output_tokens > 0  # the call still cost something
    assert [j.label for j in (judgments[0], judgments[2])] == ["fail", "fail"]


def test_429_then_success_gives_a_judgment_after_the_wait() -> None:
    fake = FakeAnthropic(Status(429, {"retry-after": "2"}), verdict("pass"))
    client, waits = fake.client()
    [judgment] = judge(definition(), [target()], client)
    assert judgment.label == "pass" and judgment.attempts == 2
    assert waits == [2.0]


def test_a_call_that_keeps_failing_is_an_error_with_its_code() -> None:
    fake = FakeAnthropic(default=Status(529))
    client, _ = fake.client(Settings(llm_max_retries=1))
    [judgment] = judge(definition(), [target()], client)
    assert judgment.label is None and judgment.error_code == ErrorCode.LLM_FAILED


def test_insufficient_evidence_is_a_label_with_its_flag_and_no_score() -> None:
    client, _ = FakeAnthropic(verdict(INSUFFICIENT_EVIDENCE, evidence=[])).client()
    [judgment] = judge(definition(), [target()], client)
    assert judgment.label == INSUFFICIENT_EVIDENCE and judgment.score is None
    assert judgment.flags == [INSUFFICIENT_EVIDENCE]


def test_many_targets_at_once_come_back_in_order() -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][0]["content"]
        return verdict("pass" if "t7-root" in prompt or "t3-root" in prompt else "fail")

    client, _ = FakeAnthropic(default=answer).client()
    targets = [target(n) for n in range(1, 21)]
    judgments = judge(definition(), targets, client, concurrency=8)
    assert [j.target_id for j in judgments] == [t.id for t in targets]
    assert [j.target_id for j in judgments if j.label == "pass"] == ["t3-root", "t7-root"]


def test_the_async_judge_gives_the_same_judgments() -> None:
    fake = FakeAnthropic(default=verdict("fail"))
    client = LLMClient(
        api_key="k", async_http_client=httpx2.AsyncClient(transport=fake.transport())
    )
    judgments = asyncio.run(ajudge(definition(), [target(1), target(2)], client, concurrency=2))
    assert [j.label for j in judgments] == ["fail", "fail"]
    assert all(j.error is None for j in judgments)


def test_the_hash_is_of_the_content_and_a_new_version_has_a_new_one() -> None:
    first, again = definition(), definition()
    assert first.definition_hash == again.definition_hash
    assert first.definition_hash.startswith("sha256:")
    changed = [
        definition(rubric=RUBRIC + " Be strict."),
        definition(labels=("pass", "fail")),
        definition(scores={"fail": 0.0, "pass": 0.5}),
        definition(model="claude-opus-5-5"),
        first.with_examples([FewShot(input="q", output="a", label="pass")]),
    ]
    hashes = {d.definition_hash for d in changed}
    assert len(hashes) == len(changed) and first.definition_hash not in hashes


def test_a_config_table_makes_a_definition_with_scores_from_a_label_table() -> None:
    table = {
        "kind": "judge",
        "rubric": "Is {output} polite?",
        "labels": {"rude": 0, "neutral": 0.5, "polite": 1},
        "ordinal": True,
        "model": "claude-haiku-5-5",
        "max_tokens": 512,
        "examples": [{"output": "Thanks!", "label": "polite", "explanation": "thanks"}],
    }
    made = JudgeDefinition.from_config("politeness", table)
    assert made.labels == ("rude", "neutral", "polite")
    assert made.scores == {"rude": 0, "neutral": 0.5, "polite": 1}
    assert made.ordinal and made.model == "claude-haiku-5-5"
    assert made.examples[0].label == "polite"


@pytest.mark.parametrize(
    "table",
    [
        {"rubric": "x {output}", "labels": ["a", "b"], "temprature": 0},
        {"rubric": "x {outptu}", "labels": ["a", "b"]},
        {"rubric": "x", "labels": ["a", "a"]},
        {"rubric": "x", "labels": ["a", INSUFFICIENT_EVIDENCE]},
        {"rubric": "x", "labels": ["a", "b"], "scores": {"c": 1}},
        {"rubric": "x", "labels": []},
        {"labels": ["a", "b"]},
    ],
)
def test_a_bad_config_table_is_refused_with_invalid_argument(table: dict[str, Any]) -> None:
    with pytest.raises(TraceproofError) as raised:
        JudgeDefinition.from_config("bad", {"kind": "judge", **table})
    assert raised.value.code == ErrorCode.INVALID_ARGUMENT


def test_a_rubric_without_slots_is_followed_by_the_material() -> None:
    prompt = render_prompt(
        definition(rubric="Judge whether the answer is right."),
        target(),
        context_tokens=1000,
        text_chars=1000,
    )
    assert prompt.startswith("Judge whether the answer is right.")
    assert "<output>\nThe capital of Australia is Sydney.\n</output>" in prompt
    assert "<trace>\n" in prompt


def test_few_shot_examples_come_before_the_rubric() -> None:
    with_example = definition().with_examples(
        [FewShot(input="2+2?", output="5", label="fail", explanation="arithmetic")]
    )
    prompt = render_prompt(with_example, target(), context_tokens=1000, text_chars=1000)
    assert prompt.index("<example 1>") < prompt.index("Is the answer correct")
    assert "why: arithmetic" in prompt


def test_trace_context_stays_within_its_budget_on_a_big_trace() -> None:
    start = 1_700_000_000_000_000
    big = [
        {
            "span_id": "root",
            "name": "agent",
            "span_kind": "AGENT",
            "start_us": start,
            "end_us": start + 10_000_000,
            "input_value": "task " * 2000,
        }
    ]
    for n in range(600):
        big.append(
            {
                "span_id": f"s{n:04d}",
                "parent_span_id": "root",
                "name": f"tool_{n % 7}",
                "span_kind": "TOOL",
                "status": "ERROR" if n == 311 else "OK",
                "error_message": "boom: upstream 502" if n == 311 else None,
                "start_us": start + n * 10_000,
                "end_us": start + n * 10_000 + 5_000,
                "input_value": f"argument {n} " * 50,
                "output_value": f"result {n} " * 200,
            }
        )
    for budget in (500, 2000, 8000):
        text = trace_context(big, budget)
        assert len(text) <= budget * CHARS_PER_TOKEN
        assert "root" in text
        assert "[s0311] err: boom: upstream 502" in text  # errors are shown first
    assert trace_context(big, 2000) == trace_context(list(big), 2000)
    assert trace_context([], 2000) == ""


def test_no_more_judgments_than_the_concurrency_are_in_flight_threads_and_async() -> None:
    lock = threading.Lock()
    full = threading.Event()
    state = {"now": 0, "most": 0}

    def enter() -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            if state["now"] == 3:
                full.set()

    def leave() -> None:
        with lock:
            state["now"] -= 1

    def handler(request: httpx2.Request) -> httpx2.Response:
        enter()
        full.wait(10)
        leave()
        return httpx2.Response(200, json=message(verdict("fail")))

    async def ahandler(request: httpx2.Request) -> httpx2.Response:
        enter()
        for _ in range(1000):  # until three are in flight (a deadline, not a sleep to wait out)
            if full.is_set():
                break
            await asyncio.sleep(0.01)
        leave()
        return httpx2.Response(200, json=message(verdict("fail")))

    many = [target(n) for n in range(1, 13)]
    client = LLMClient(
        Settings(llm_concurrency=8),
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    judgments = judge(definition(), many, client, concurrency=3)
    assert [j.target_id for j in judgments] == [t.id for t in many]
    assert all(j.label == "fail" for j in judgments) and state["most"] == 3

    full.clear()
    state["most"] = 0
    aclient = LLMClient(
        Settings(llm_concurrency=8),
        api_key="k",
        async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ahandler)),
    )
    judgments = asyncio.run(ajudge(definition(), many, aclient, concurrency=3))
    assert [j.target_id for j in judgments] == [t.id for t in many]
    assert all(j.label == "fail" for j in judgments) and state["most"] == 3


@pytest.mark.parametrize(
    ("text", "quote", "expected"),
    [
        ('He said \\"Canberra\\"\\nis the CAPITAL', "he said Canberra is the capital", None),
        ('glued "quo"ted word', "glued quoted word", None),
        ("back\\slash and tab\\there", "backslash and tab here", None),
        ("line one\\nline two", "onenline", "unsupported"),  # the escape is a space
        ("Straße in BERLIN", "strasse in berlin", None),  # casefolded
        ("first part, then much later the second part", "first part … second part", None),
        ("nothing like it", "an invented quote", "unsupported"),
    ],
)
def test_a_quote_is_found_as_previews_clean_text_and_only_then(
    text: str, quote: str, expected: str | None
) -> None:
    spans = [{"span_id": "a", "name": "x", "output_value": "other words"}]
    spans.append({"span_id": "b", "name": "y", "output_value": text})
    sources = Sources(spans)
    assert sources.check(quote, None) == expected
    assert sources.check(quote, "b") == expected
    if expected is None:
        assert sources.check(quote, "a") == "wrong_span"


def test_every_target_s_prompt_carries_the_definition_s_examples() -> None:
    fake = FakeAnthropic(default=verdict("fail"))
    client, _ = fake.client()
    with_example = definition().with_examples(
        [FewShot(input="2+2?", output="5", label="fail", explanation="arithmetic")]
    )
    judge(with_example, [target(1), target(2)], client, concurrency=1)
    prompts = [body["messages"][0]["content"] for body in fake.requests]
    assert len(prompts) == 2
    for number, prompt in enumerate(prompts, 1):
        assert prompt.index("<example 1>") < prompt.index("Is the answer correct")
        assert "<output>5</output>" in prompt and f"t{number}-root" in prompt
