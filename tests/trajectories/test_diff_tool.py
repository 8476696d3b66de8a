"""diff_trajectories over the real MCP client on imported Claude Code transcripts, and its CLI
mirror ``traceproof trajectory diff``."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from tests.trajectories.diff_runs import (
    PASSED,
    ROOT_A,
    ROOT_B,
    SESSION_A,
    SESSION_B,
    Call,
    Runs,
    import_runs,
    transcript,
)
from tests.trajectories.test_tools import call, text_of
from traceproof.cli import cli
from traceproof.cli_trajectory_diff import draw_diff
from traceproof.errors import ErrorCode
from traceproof.ingest.files import import_files
from traceproof.settings import Settings
from traceproof.storage import Store

pytestmark = pytest.mark.anyio

SWE_AGENT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "swe-agent"
#: Two SWE-agent replays of one task (marshmallow-1867): one installs from source first.
REPLAYS = "trajectories__demonstrations__replay__marshmallow-code__marshmallow-1867__"
FROM_SOURCE = (
    REPLAYS
    + "default__t-0.20__p-0.95__c-2.00__install-1___install_from_source__"
    + ("marshmallow-code__marshmallow-1867.traj")
)
DEFAULT = (
    REPLAYS
    + "default_sys-env_window100__t-0.20__p-0.95__c-2.00__install-1__"
    + ("marshmallow-code__marshmallow-1867.traj")
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runs(store: Store, tmp_path: Path) -> Runs:
    return import_runs(store, tmp_path)


async def diff(store: Store, **arguments: Any) -> dict[str, Any]:
    result = await call(store, "diff_trajectories", arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


def ops(blocks: list[dict[str, Any]]) -> list[tuple[str, list[int], list[int]]]:
    return [(b["op"], b["a_range"], b["b_range"]) for b in blocks]


async def test_two_runs_in_different_directories_part_at_the_test_run(
    store: Store, runs: Runs
) -> None:
    found = await diff(store, a=runs.a, b=runs.b)
    a, b = found["a"], found["b"]
    assert (a["scope"], a["project"], a["roots"], b["roots"]) == ("session", "shop", [ROOT_A],
                                                                 [ROOT_B])  # fmt: skip
    figures = ("steps", "edits", "verifications", "errors", "fix_loops")
    assert [a[k] for k in figures] == [8, 2, 3, 2, 1]
    assert [b[k] for k in figures] == [5, 1, 1, 0, 0]
    assert a["last_verify"] == b["last_verify"] == "tests_passed"
    assert a["tokens"] > b["tokens"] > 0
    # Read, Grep and Edit in /home/ann/work/shop and in /tmp/agent-wt-2/shop are the same steps.
    assert (found["same"], found["common_prefix"]) == (False, 3)
    parted_a, parted_b = found["parted_a"], found["parted_b"]
    assert (parted_a["n"], parted_a["target"], parted_a["outcome"]) == (8, "pytest -q tests",
                                                                        "tests_failed")  # fmt: skip
    assert (parted_b["n"], parted_b["target"], parted_b["outcome"]) == (8, "pytest -q tests",
                                                                        "tests_passed")  # fmt: skip
    assert ops(found["blocks"]) == [
        ("equal", [2, 6], [2, 6]),
        ("changed", [8, 8], [8, 8]),
        ("changed", [10, 16], [10, 10]),
    ]
    last = found["blocks"][2]
    assert [(s["action"], s.get("target")) for s in last["a"]] == [
        ("verify", "pytest -q tests"),
        ("localize", "src/util.py"),
        ("edit", "src/util.py"),
        ("verify", "pytest -q tests"),
    ]
    assert [(s["action"], s.get("target")) for s in last["b"]] == [("vcs", "git diff --stat")]
    assert "a" not in found["blocks"][0]  # an equal stretch is counted, not listed
    loops = [(x["kind"], x["target"], x["a"], x.get("b", 0)) for x in found["loops"]]
    assert loops == [
        ("fix", "pytest -q tests", 1, 0),
        ("retry", "pytest -q tests", 1, 0),
        ("repeat", "pytest -q tests", 3, 1),
    ]
    assert found["loops"][2]["a_steps"] == [8, 10, 16]
    span = await call(store, "get_span_data", {"span_id": parted_a["span_id"]})
    assert not span.is_error and "1 failed, 2 passed" in text_of(span)


async def test_a_trace_and_a_session_diff_alike(store: Store, runs: Runs) -> None:
    with store.reader() as reader:
        trace = reader.scalar("SELECT trace_id FROM trace_index WHERE session_id = ?", [runs.a])
    by_trace = await diff(store, a=trace, b=runs.b, project="shop")
    by_session = await diff(store, a=runs.a, b=runs.b)
    assert by_trace["a"]["scope"] == "trace" and by_trace["a"]["id"] == trace
    assert by_trace["blocks"] == by_session["blocks"]
    same = await diff(store, a=runs.b, b=runs.b)
    assert (same["same"], same["common_prefix"], same.get("loops", [])) == (True, 5, [])
    assert "parted_a" not in same and "parted_b" not in same


@pytest.mark.skipif(not SWE_AGENT.is_dir(), reason="../shared/data/swe-agent is not here")
async def test_two_real_swe_agent_runs_of_one_task(store: Store) -> None:
    summary = import_files([SWE_AGENT / FROM_SOURCE, SWE_AGENT / DEFAULT], store.submit,
                           settings=store.settings)  # fmt: skip
    assert not summary.rejected
    with store.reader() as reader:
        ids = [row[0] for row in reader.rows("SELECT trace_id FROM trace_index ORDER BY trace_id")]
    assert len(ids) == 2
    first, second = await diff(store, a=ids[0], b=ids[1]), await diff(store, a=ids[1], b=ids[0])
    # Whichever way round, the run that installs from source has three steps first.
    found = first if first["blocks"][0]["op"] == "only_a" else second
    assert [(b["op"], b["count_a"], b["count_b"]) for b in found["blocks"]] == [
        ("only_a", 3, 0),
        ("equal", 11, 11),
    ]
    mirror = second if found is first else first
    assert [(b["op"], b["count_a"], b["count_b"]) for b in mirror["blocks"]] == [
        ("only_b", 0, 3),
        ("equal", 11, 11),
    ]
    assert [s["target"] for s in found["blocks"][0]["a"]] == [
        "ls -F",
        "open setup.py",
        "pip install -e .[dev]",
    ]
    assert (found["a"]["roots"], found["b"]["roots"]) == (["/marshmallow-code__marshmallow"],) * 2
    assert [(x["kind"], x["target"], x["a"], x["b"]) for x in found["loops"]] == [
        ("repeat", "ls -F", 2, 1)
    ]


@pytest.mark.parametrize("max_chars", [1000, 1200, 2000])
async def test_a_tight_budget_cuts_loops_and_pages_blocks_but_loses_no_block(
    store: Store, runs: Runs, max_chars: int
) -> None:
    whole = await diff(store, a=runs.a, b=runs.b)
    arguments: dict[str, Any] = {"a": runs.a, "b": runs.b, "max_chars": max_chars}
    pages = []
    while True:
        result = await call(store, "diff_trajectories", arguments)
        assert not result.is_error and len(text_of(result)) <= max_chars
        assert result.structured_content is not None
        pages.append(result.structured_content)
        if not pages[-1].get("next_cursor"):
            break
        arguments["cursor"] = pages[-1]["next_cursor"]
    first = pages[0]
    assert first["truncated"] and first["a"]["steps"] == 8
    if max_chars < 2000:  # the loops are cut to fit (truncated says so) before a block is
        assert len(first.get("loops", [])) < len(whole["loops"])
    else:
        assert first["loops"] == whole["loops"]
    assert ops([b for page in pages for b in page["blocks"]]) == ops(whole["blocks"])


def long_runs(store: Store, folder: Path) -> Runs:
    """Run A reads a file after each of its 40 test runs; run B only runs the tests."""
    test: Call = ("Bash", {"command": "pytest -q tests"}, PASSED, False)
    a: list[Call] = []
    for i in range(40):
        a += [test, ("Read", {"file_path": "{root}/src/" + f"f{i:02}_" + "x" * 150 + ".py"},
                     "1\tpass", False)]  # fmt: skip
    paths = [
        transcript(SESSION_A, ROOT_A, a).write(folder / "a.jsonl"),
        transcript(SESSION_B, ROOT_B, [test] * 40).write(folder / "b.jsonl"),
    ]
    assert not import_files(paths, store.submit, settings=store.settings).rejected
    return Runs("shop", SESSION_A, SESSION_B)


@pytest.mark.parametrize("max_chars", [1000, 1500, 4000, 20000])
async def test_a_long_diff_pages_within_every_budget(
    store: Store, tmp_path: Path, max_chars: int
) -> None:
    runs = long_runs(store, tmp_path)
    arguments: dict[str, Any] = {"a": runs.a, "b": runs.b, "max_chars": max_chars}
    blocks: list[dict[str, Any]] = []
    pages = 0
    while True:
        result = await call(store, "diff_trajectories", arguments)
        assert not result.is_error, text_of(result)
        assert len(text_of(result)) <= max_chars
        page = result.structured_content
        assert page is not None
        assert page["common_prefix"] == 1
        if pages == 0:
            assert (page["a"]["steps"], page["b"]["steps"]) == (80, 40)
        else:  # the figures are the first page's
            assert "a" not in page and "b" not in page and "loops" not in page
        blocks += page["blocks"]
        pages += 1
        if not page.get("next_cursor"):
            break
        assert page["truncated"] and page["next_call"].startswith("diff_trajectories(")
        arguments["cursor"] = page["next_cursor"]
    assert pages > 1 if max_chars < 20000 else pages == 1
    # Every step of both runs is in exactly one block, in order.
    assert sum(b["count_a"] for b in blocks) == 80 and sum(b["count_b"] for b in blocks) == 40
    assert [b["op"] for b in blocks] == ["equal", "only_a"] * 40
    assert all(len(s["target"]) <= 120 for b in blocks for s in b.get("a", []))
    starts = [b["a_range"][0] for b in blocks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


@pytest.mark.parametrize(
    ("arguments", "code", "says"),
    [
        ({"a": "no-such-session", "b": SESSION_B}, ErrorCode.UNKNOWN_SESSION, "(a)"),
        ({"a": SESSION_A, "b": "f" * 32}, ErrorCode.UNKNOWN_TRACE, "(b)"),
        ({"a": SESSION_A, "b": SESSION_B, "project": "other"}, ErrorCode.UNKNOWN_SESSION, "(a)"),
        ({"a": SESSION_A, "b": SESSION_B, "cursor": "not-a-cursor"}, ErrorCode.INVALID_CURSOR, ""),
    ],
)
async def test_unknown_runs_and_bad_cursors_are_errors_the_model_can_act_on(
    store: Store, runs: Runs, arguments: dict[str, Any], code: str, says: str
) -> None:
    result = await call(store, "diff_trajectories", arguments)
    assert result.is_error
    assert text_of(result).startswith(f"[{code}] ")
    assert says in text_of(result)
    if code != ErrorCode.INVALID_CURSOR:
        assert "search_traces" in text_of(result)


async def test_a_cursor_of_another_pair_is_refused(store: Store, tmp_path: Path) -> None:
    runs = long_runs(store, tmp_path)
    first = await diff(store, a=runs.a, b=runs.b, max_chars=1000)
    swapped = await call(
        store, "diff_trajectories", {"a": runs.b, "b": runs.a, "cursor": first["next_cursor"]}
    )
    assert swapped.is_error
    assert text_of(swapped).startswith(f"[{ErrorCode.INVALID_CURSOR}] ")


def test_the_cli_draws_the_runs_side_by_side_and_json_is_the_tools_answer(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        runs = import_runs(store, tmp_path)
    runner = CliRunner()
    found = runner.invoke(cli, ["trajectory", "diff", runs.a, runs.b, "--db", str(db), "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["common_prefix"] == 3
    human = runner.invoke(cli, ["trajectory", "diff", runs.a, runs.b, "--db", str(db)])
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    # The step where they part: a's failed test run beside b's passing one, on one line.
    row = next(line for line in lines if "tests_failed" in line)
    assert "tests_passed" in row and row.count("pytest -q tests") == 2
    assert any("3 steps alike" in line for line in lines)
    assert any("fix" in line and "pytest -q tests" in line for line in lines)
    # Each run's figures, counted in words: "1 edit", "2 edits", never "1 edits".
    answer = json.loads(found.stdout)
    for side in ("a", "b"):
        run = answer[side]
        line = next(line for line in lines if line.startswith(f"{side}: "))
        edits = run["edits"]
        assert f" {edits} edit{'' if edits == 1 else 's'}," in line, line
        assert not re.search(r"\b1 (edits|errors|steps|verifications|fix loops)\b", line), line
    unknown = runner.invoke(cli, ["trajectory", "diff", "nope", runs.b, "--db", str(db)])
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: [unknown_session] ")


def test_on_a_terminal_the_sides_are_a_table_and_hidden_steps_are_counted() -> None:
    step = {"n": 4, "action": "edit", "target": "src/a.py", "outcome": "ok"}
    block = {"op": "only_a", "count_a": 5, "count_b": 0, "a_range": [4, 12], "b_range": [],
             "a": [step]}  # fmt: skip
    result = {"same": False, "common_prefix": 0, "blocks": [block], "truncated": True}
    out = io.StringIO()
    draw_diff(result, Console(file=out, force_terminal=True, width=100, color_system=None))
    drawn = out.getvalue()
    assert "│ 4 edit src/a.py ok" in drawn and "│ … 4 more" in drawn
    assert "truncated: lists were cut" in drawn
