"""`traceproof trajectory first-wrong-step`, and the rules over imported transcripts: one the
test writes as Claude Code does, and the real ones of ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.trajectories.claude_files import SESSION, Transcript, tool_use
from tests.trajectory_fixtures import StoredTrajectory, store_trajectory
from traceproof.cli import cli
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.trajectories import get_trajectory
from traceproof.tools.wrong_step import find_first_wrong_step

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, StoredTrajectory]:
    db = tmp_path / "t.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        return db, store_trajectory(store)


def test_the_command_prints_the_first_wrong_step_and_json_gives_the_tools_answer(
    stored: tuple[Path, StoredTrajectory],
) -> None:
    db, trajectory = stored
    dry = run("trajectory", "first-wrong-step", "--session", trajectory.session_id, "--db", db,
              "--no-write", "--json")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    answer = json.loads(dry.stdout)
    assert (answer["first"]["step"], answer["first"]["rule"], answer["written"]) == (
        10, "unread_edit", None,
    )  # fmt: skip
    human = run("trajectory", "first-wrong-step", "--session", trajectory.session_id, "--db", db)
    assert human.exit_code == 0, human.output
    assert "unread_edit" in human.stdout and "src/util.py" in human.stdout
    assert "created" in human.stdout
    judged = run("trajectory", "first-wrong-step", trajectory.trace_ids[0], "--db", db, "--judge",
                 "--json")  # fmt: skip
    assert judged.exit_code == 0, judged.output
    assert "The judge was not used (No credential" in json.loads(judged.stdout)["note"]
    neither = run("trajectory", "first-wrong-step", "--db", db)
    assert neither.exit_code == 2 and "Give a TRACE_ID or --session" in neither.stderr


def claude_session(folder: Path) -> Path:
    """Read, edit, a failing test run, the edit undone, an edit of a file never read."""
    t = Transcript()
    t.prompt("u1", "make the total include tax")
    calls: list[tuple[str, dict[str, Any], str, bool]] = [
        ("Read", {"file_path": "/repo/src/cart.py"}, "1\tdef total(items): ...", False),
        ("Edit", {"file_path": "/repo/src/cart.py", "old_string": "return s",
                  "new_string": "return s * 1.2"}, "The file has been updated.", False),
        ("Bash", {"command": "pytest -q tests/test_cart.py"},
         "Exit code 1\n==== 2 failed, 5 passed in 0.3s ====", True),
        ("Edit", {"file_path": "/repo/src/cart.py", "old_string": "return s * 1.2",
                  "new_string": "return s"}, "The file has been updated.", False),
        ("Edit", {"file_path": "/repo/src/tax.py", "old_string": "RATE = 0",
                  "new_string": "RATE = 0.2"}, "The file has been updated.", False),
    ]  # fmt: skip
    for i, (name, args, output, error) in enumerate(calls, 1):
        t.assistant(f"a{i}", f"msg_{i}", tool_use(f"toolu_{i}", name, args))
        t.result(f"r{i}", f"toolu_{i}", output, error=error)
    return t.write(folder / "-repo" / f"{SESSION}.jsonl")


def test_an_imported_claude_code_session_gets_its_candidates(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    imported = run("ingest", claude_session(tmp_path / "projects"), "--db", db)
    assert imported.exit_code == 0, imported.output
    with Store.open(db, Settings(db=db)) as store:
        answer = find_first_wrong_step(store, session_id=SESSION)
        numbered = {s.span_id: s.n for s in get_trajectory(store, session_id=SESSION).steps}
    found = [(c.rule, c.reason) for c in answer.candidates]
    assert found == [
        ("reverted_edit", "Edit of `/repo/src/cart.py` was undone at step 8 by Edit putting its "
                          "old text back"),
        ("unfixed_verification", "`pytest -q tests/test_cart.py` failed (2 failed, 5 passed) and "
                                 "no later run covering it passed (2 edits after it)"),
        ("unread_edit", "Edit of `/repo/src/tax.py`, which no earlier step read, searched or "
                        "wrote"),
    ]  # fmt: skip
    # Step numbers are get_trajectory's.
    assert [c.step for c in answer.candidates] == [numbered[c.span_id] for c in answer.candidates]
    assert [c.step for c in answer.candidates] == [4, 6, 10]
    assert answer.first is not None and answer.first.rule == "reverted_edit"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (a fresh clone)")
def test_the_shared_transcripts_give_sane_answers(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    folders = [SHARED / name for name in ("claude-code", "codex", "swe-agent", "openhands")]
    imported = run("ingest", *folders, "--db", db)
    assert imported.exit_code == 2, imported.output  # edge_cases.jsonl's malformed lines
    assert "Rejected 4" in imported.output
    with Store.open(db, Settings(db=db)) as store:
        with store.reader() as reader:
            sessions = reader.rows(
                "SELECT DISTINCT project, session_id FROM trace_index "
                "WHERE session_id IS NOT NULL ORDER BY 1, 2"
            )
            spans = {(p, s) for p, s in reader.rows("SELECT project, span_id FROM spans")}
        rules: dict[str, int] = {}
        firsts: dict[str, tuple[int, str]] = {}
        for project, session in sessions:
            answer = find_first_wrong_step(store, session_id=session, project=project,
                                           max_chars=4000)  # fmt: skip
            assert len(answer.model_dump_json()) <= 4000
            for c in answer.candidates:
                assert (project, c.span_id) in spans and 1 <= c.step <= answer.steps
                assert c.reason and len(c.reason) < 400
                rules[c.rule] = rules.get(c.rule, 0) + 1
            if answer.first is not None:
                firsts[session] = (answer.first.step, answer.first.rule)
            again = find_first_wrong_step(store, session_id=session, project=project)
            assert again.written is not None and again.written["created"] == 0
    assert len(sessions) > 30
    assert set(rules) >= {"reverted_edit", "ignored_error", "unread_edit"}
    # spotter-dov undoes its edit of session_live.ex six steps later.
    assert firsts["4d5611e5-241a-462a-8d15-5122611a9569"] == (75, "reverted_edit")
    # Most sessions show no wrong step by these rules: they are not noise generators.
    assert len(firsts) < len(sessions) / 2
