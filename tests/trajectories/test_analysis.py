"""Trajectory analysis over labelled steps: the figures trajectory_stats reports."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from traceproof.trajectories.analysis import (
    Repeat,
    Step,
    by_action,
    edits_before_first_verify,
    errors_without_change,
    files_read_and_edited,
    recoveries,
    repeated_commands,
    tokens,
    verifies_after_last_edit,
)

_ids = itertools.count(1)


def step(action: str | None, target: str | None = None, **kw: Any) -> Step:
    kind = kw.pop("kind", "TOOL")
    return Step("t", f"s{next(_ids)}", kind, action, kw.pop("tool", "Bash"), target, **kw)


def run() -> list[Step]:
    return [
        step(None, kind="LLM", model="claude-sonnet-4-5", prompt_tokens=1000,
             completion_tokens=100, cache_read_tokens=800, cache_write_tokens=100),
        step("localize", "a.py", tool="Read", files=("a.py",), outcome="ok"),
        step("edit", "a.py", tool="Edit", files=("a.py",), outcome="ok"),
        step("edit", "b.py", tool="Edit", files=("b.py",), outcome="ok"),
        step("verify", "pytest", outcome="tests_failed", tests_failed=1, tests_passed=3),
        step("verify", "pytest", outcome="tests_failed", recover=True),
        step(None, kind="LLM", model="gpt-5", prompt_tokens=50, completion_tokens=5),
        step("edit", "a.py", tool="Edit", files=("a.py",), outcome="ok", recover=True),
        step("verify", "pytest", outcome="tests_passed"),
        step("vcs", "git status", tool="Bash", outcome="ok"),
    ]  # fmt: skip


def test_steps_are_counted_by_action_most_frequent_first() -> None:
    assert by_action(run()) == {"verify": 3, "edit": 3, "localize": 1, "vcs": 1}
    assert by_action([step(None)]) == {"other": 1}


def test_edits_before_the_first_verification_and_verifications_after_the_last_edit() -> None:
    steps = run()
    assert edits_before_first_verify(steps) == 2
    assert verifies_after_last_edit(steps) == 1
    assert verifies_after_last_edit([step("verify"), step("localize")]) is None
    assert verifies_after_last_edit([step("verify"), step("edit")]) == 0
    assert edits_before_first_verify([step("edit"), step("edit")]) == 2


def test_identical_commands_repeated_and_errors_without_a_change_of_approach() -> None:
    steps = run()
    assert repeated_commands(steps) == [Repeat("Bash", "pytest", 3, (5, 6, 9))]
    assert errors_without_change(steps) == [5]
    changed = [step("execute", "make", outcome="error"), step("execute", "make -k")]
    assert errors_without_change(changed) == []


def test_recoveries_and_files_read_versus_edited() -> None:
    steps = run()
    assert recoveries(steps) == 2
    assert files_read_and_edited(steps) == (["a.py"], ["a.py", "b.py"])


def test_tokens_and_cost_price_cache_apart_and_name_unpriced_models() -> None:
    got = tokens(run())
    assert (got.llm_calls, got.prompt, got.completion, got.cache_read, got.cache_write) == (
        2, 1050, 105, 800, 100,
    )  # fmt: skip
    # sonnet: 100 uncached input at $3/M, 100 output at $15/M, cache writes 1.25x, reads 0.1x
    expected = (100 * 3 + 100 * 15 + 100 * 3 * 1.25 + 800 * 3 * 0.1) / 1e6
    assert got.cost_usd == pytest.approx(expected)
    assert got.unpriced == ("gpt-5",)
    priced = tokens(run(), {"gpt-5": (1.0, 10.0)})
    assert priced.unpriced == ()
    assert priced.cost_usd == pytest.approx(expected + (50 * 1 + 5 * 10) / 1e6)
    assert tokens([step("edit")]).cost_usd is None
