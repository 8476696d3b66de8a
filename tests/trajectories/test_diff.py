"""diff_trajectories' domain: two hand-built runs aligned on (action, normalised target)."""

from __future__ import annotations

import random

import pytest

from traceproof.trajectories import diff as diff_module
from traceproof.trajectories.analysis import Step
from traceproof.trajectories.diff import Diff, diff, normalise_target


def tool(action: str, target: str, outcome: str = "ok", *, recover: bool = False) -> Step:
    return Step("t", f"s-{action}-{target}", "TOOL", action=action, target=target,
                outcome=outcome, recover=recover)  # fmt: skip


def llm(tokens: int = 100) -> Step:
    return Step("t", "s-llm", "LLM", model="m", prompt_tokens=tokens, completion_tokens=10)


def run(*steps: Step) -> list[Step]:
    return list(steps)


READ = tool("localize", "src/app.py")
EDIT = tool("edit", "src/app.py")
FAIL = tool("verify", "pytest -q", "tests_failed")
PASS = tool("verify", "pytest -q", "tests_passed")
FIX = tool("edit", "src/util.py", recover=True)


def rows(found: Diff) -> list[tuple[str, list[int], list[int]]]:
    return [(b.op, [s.n for s in b.a], [s.n for s in b.b]) for b in found.blocks]


def test_identical_runs_are_one_equal_block() -> None:
    steps = run(llm(), READ, EDIT, llm(), PASS)
    found = diff(steps, list(steps))
    assert (found.same, found.common_prefix, found.parted, found.loops) == (True, 3, None, [])
    assert rows(found) == [("equal", [2, 3, 5], [2, 3, 5])]
    assert found.a == found.b
    assert (found.a.steps, found.a.edits, found.a.verifications, found.a.tokens) == (3, 1, 1, 220)
    assert found.a.last_verify == "tests_passed"


def test_an_extra_fix_loop_in_one_run_is_where_they_part_and_is_named() -> None:
    a = run(READ, EDIT, FAIL, FIX, PASS)
    b = run(READ, EDIT, PASS)
    found = diff(a, b)
    assert not found.same
    assert found.common_prefix == 2
    assert rows(found) == [
        ("equal", [1, 2], [1, 2]),
        ("changed", [3], [3]),  # the same test run: failed in a, passed in b
        ("only_a", [4, 5], []),
    ]
    parted = found.parted
    assert parted is not None
    assert (parted.a[0].n, parted.a[0].step.outcome) == (3, "tests_failed")
    assert (parted.b[0].n, parted.b[0].step.outcome) == (3, "tests_passed")
    assert [(d.kind, d.target, d.a, d.b) for d in found.loops] == [
        ("fix", "pytest -q", (3,), ()),
        ("repeat", "pytest -q", (3, 5), (3,)),  # b ran it once: not a loop, but the count shows
    ]
    assert (found.a.fix_loops, found.b.fix_loops) == (1, 0)
    assert (found.a.errors, found.a.recoveries, found.b.errors) == (1, 1, 0)


def test_runs_that_part_at_step_k_show_what_each_did_there() -> None:
    a = run(READ, EDIT, tool("execute", "make build"), PASS)
    b = run(READ, EDIT, tool("localize", "src/other.py"), tool("edit", "src/other.py"), PASS)
    found = diff(a, b)
    assert found.common_prefix == 2
    assert rows(found) == [
        ("equal", [1, 2], [1, 2]),
        ("changed", [3], [3, 4]),
        ("equal", [4], [5]),
    ]
    parted = found.parted
    assert parted is not None
    assert (parted.a[0].target, parted.b[0].target) == ("make build", "src/other.py")
    assert found.parting() == (parted.a[0], parted.b[0])
    assert found.loops == []  # commands run once, or not at all, are no loop


def test_a_retry_unchanged_is_a_loop_the_other_run_lacks() -> None:
    error = tool("execute", "npm install", "error")
    found = diff(run(error, error, tool("execute", "npm ci")), run(tool("execute", "npm ci")))
    assert [(d.kind, d.target, d.a, d.b) for d in found.loops] == [
        ("retry", "npm install", (1,), ()),
        ("repeat", "npm install", (1, 2), ()),
    ]
    assert rows(found) == [("only_a", [1, 2], []), ("equal", [3], [1])]
    # b has no step in the block where they part: what it did there is its next step.
    did_a, did_b = found.parting()
    assert (did_a and did_a.n, did_b and did_b.n) == (1, 1)


def test_a_failed_step_tried_again_after_a_change_is_a_recover_loop() -> None:
    install = tool("execute", "npm install", "error")
    a = run(install, tool("edit", "package.json"), tool("execute", "npm install"))
    found = diff(a, run(tool("execute", "npm install")))
    assert [(d.kind, d.target, d.a, d.b) for d in found.loops] == [
        ("recover", "npm install", (1,), ()),
        ("repeat", "npm install", (1, 3), (1,)),
    ]


def test_different_working_directories_still_align() -> None:
    a = run(tool("localize", "/home/ann/shop/src/app.py"),
            tool("verify", "cd /home/ann/shop && pytest -q   tests 2>&1 | tail -20"))  # fmt: skip
    b = run(tool("localize", "/tmp/wt2/shop/src/app.py"), tool("verify", "pytest -q tests"))
    found = diff(a, b, ["/home/ann/shop"], ["/tmp/wt2/shop/"])
    assert found.same
    assert [s.target for s in found.blocks[0].a] == ["src/app.py", "pytest -q tests"]
    unaligned = diff(a, b)
    assert not unaligned.same and unaligned.common_prefix == 0


@pytest.mark.parametrize(
    ("target", "roots", "expected"),
    [
        ("/w/shop/src/a.py", ["/w/shop"], "src/a.py"),
        ("/w/shop", ["/w/shop"], "."),
        ("cd /w/shop/ && pytest", ["/w/shop"], "pytest"),
        ("ls /w/shop/", ["/w/shop/"], "ls ."),
        ("/w/shopping/a.py", ["/w/shop"], "/w/shopping/a.py"),  # a prefix of a word is not a root
        ("./src/a.py", [], "src/a.py"),
        ("cat ./a.py  |  head -5", [], "cat a.py"),
        ("pytest\n  -x", [], "pytest -x"),
        ("grep -rn 'a|b' src | sort", [], "grep -rn 'a|b' src | sort"),
        ("/w/shop/sub/x", ["/w/shop", "/w/shop/sub"], "x"),  # the longest root first
        (None, ["/w"], ""),
    ],
)
def test_targets_are_normalised(target: str | None, roots: list[str], expected: str) -> None:
    assert normalise_target(target, roots) == expected


def test_an_empty_run_is_all_one_side() -> None:
    b = run(llm(), READ, EDIT, PASS)
    found = diff([], b)
    assert rows(found) == [("only_b", [], [2, 3, 4])]
    assert (found.common_prefix, found.a.steps, found.b.steps) == (0, 0, 3)
    assert found.a.last_verify is None
    parted = found.parted
    assert parted is not None and parted.a == () and parted.b[0].n == 2
    ended, first = found.parting()
    assert ended is None and first is not None and first.n == 2
    nothing = diff([], [])
    assert (nothing.blocks, nothing.same, nothing.parted) == ([], True, None)


def generated(seed: int, count: int) -> list[Step]:
    rng = random.Random(seed)
    steps = []
    for _ in range(count):
        x = rng.random()
        if x < 0.4:
            steps.append(FAIL if rng.random() < 0.5 else PASS)
        else:
            steps.append(tool("edit" if x < 0.7 else "localize", f"src/m{rng.randrange(40)}.py"))
    return steps


@pytest.mark.parametrize("exact_max", [2000, 5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_step_is_in_one_block_in_order_on_long_runs_too(
    monkeypatch: pytest.MonkeyPatch, exact_max: int, seed: int
) -> None:
    """Past EXACT_MAX differing steps frequent steps only extend matches: the diff still
    partitions both runs, and its equal blocks are equal."""
    monkeypatch.setattr(diff_module, "EXACT_MAX", exact_max)
    a = generated(seed, 600)
    b = generated(seed, 150) + generated(seed + 10, 450)  # difflib's autojunk needs 200 and up
    found = diff(a, b)
    assert [s.n for block in found.blocks for s in block.a] == list(range(1, 601))
    assert [s.n for block in found.blocks for s in block.b] == list(range(1, 601))
    for block in found.blocks:
        if block.op == "equal":
            assert [(s.key, s.failed) for s in block.a] == [(s.key, s.failed) for s in block.b]
    assert found.common_prefix >= 150
    assert 3 < len(found.blocks) < 600  # aligned past the common head, not one block a step
