"""`traceproof trajectory show|stats`: the trajectory tools for people and scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.trajectory_fixtures import StoredTrajectory, store_trajectory
from traceproof.cli import cli
from traceproof.settings import Settings
from traceproof.storage import Store


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, StoredTrajectory]:
    db = tmp_path / "t.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        return db, store_trajectory(store)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_show_prints_the_steps_and_json_gives_the_tools_answer(
    stored: tuple[Path, StoredTrajectory],
) -> None:
    db, trajectory = stored
    found = run("trajectory", "show", "--session", trajectory.session_id, "--db", db, "--json")
    assert found.exit_code == 0, found.output
    steps = json.loads(found.stdout)["steps"]
    assert [s["span_id"] for s in steps] == trajectory.steps[0] + trajectory.steps[1]
    human = run("trajectory", "show", trajectory.trace_ids[0], "--db", db)
    assert human.exit_code == 0, human.output
    assert "pytest -q tests" in human.stdout and "tests_failed" in human.stdout


def test_stats_prints_the_figures(stored: tuple[Path, StoredTrajectory]) -> None:
    db, trajectory = stored
    found = run("trajectory", "stats", trajectory.trace_ids[0], "--db", db, "--json")
    assert found.exit_code == 0, found.output
    stats = json.loads(found.stdout)
    assert (stats["steps"], stats["recoveries"], stats["errors_without_change"]) == (7, 2, [7])
    assert run("trajectory", "stats", trajectory.trace_ids[0], "--db", db).exit_code == 0


def test_an_unknown_trace_and_a_missing_id_are_refused(
    stored: tuple[Path, StoredTrajectory],
) -> None:
    db, _ = stored
    unknown = run("trajectory", "show", "f" * 32, "--db", db)
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: [unknown_trace] ")
    assert "traceproof traces" in unknown.stderr
    neither = run("trajectory", "stats", "--db", db)
    assert neither.exit_code == 2
    assert "Give a TRACE_ID or --session" in neither.stderr
