"""The command line: stats and ingest, --json, --db, exit codes, and a store held by a server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner, Result

from tests.conftest import ServeProcess
from traceproof.cli import cli

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def span_line(
    trace: int, span: int, *, parent: int | None = None, start_ms: int = 0, error: bool = False
) -> str:
    """One span in the span-JSON-lines shape Phoenix exports, with times in nanoseconds."""
    return json.dumps(
        {
            "name": f"span-{span}",
            "context": {"trace_id": f"{trace:032x}", "span_id": f"{span:016x}"},
            "parent_id": f"{parent:016x}" if parent else None,
            "span_kind": "CHAIN",
            "start_time": BASE_NS + start_ms * 1_000_000,
            "end_time": BASE_NS + (start_ms + 250) * 1_000_000,
            "status_code": "ERROR" if error else "OK",
        }
    )


def otlp_line(service: str, trace: int, span: int, start_ms: int) -> str:
    """One OTLP/JSON request on one line, naming its project by service.name."""
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": f"{trace:032x}",
                                    "spanId": f"{span:016x}",
                                    "name": "billing-run",
                                    "startTimeUnixNano": str(BASE_NS + start_ms * 1_000_000),
                                    "endTimeUnixNano": str(BASE_NS + (start_ms + 5) * 1_000_000),
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    """Two projects: 'default' (2 traces, 5 spans, 2 errors in 1 trace) and 'billing-service'."""
    lines = [
        span_line(1, 1, start_ms=0),
        span_line(1, 2, parent=1, start_ms=10, error=True),
        span_line(1, 3, parent=1, start_ms=20, error=True),
        span_line(2, 4, start_ms=60_000),
        span_line(2, 5, parent=4, start_ms=60_100),
        otlp_line("billing-service", 3, 6, start_ms=1_000),
    ]
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str | Path, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


EXPECTED_STATS = {
    "projects": [
        {
            "project": "billing-service",
            "traces": 1,
            "spans": 1,
            "errors": 0,
            "error_traces": 0,
            "first_span": "2026-01-01T00:00:01Z",
            "last_span": "2026-01-01T00:00:01.005000Z",
        },
        {
            "project": "default",
            "traces": 2,
            "spans": 5,
            "errors": 2,
            "error_traces": 1,
            "first_span": "2026-01-01T00:00:00Z",
            "last_span": "2026-01-01T00:01:00.350000Z",
        },
    ]
}


def empty_store(path: Path) -> Path:
    """A store file holding no spans, as `traceproof serve` leaves it before any arrive."""
    from traceproof.storage import Store

    Store.open(path).close()
    return path


def test_stats_json_on_an_empty_store_lists_no_projects(runner: CliRunner, tmp_path: Path) -> None:
    empty_store(tmp_path / "empty.duckdb")
    result = run(runner, "stats", "--db", tmp_path / "empty.duckdb", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"projects": []}
    human = run(runner, "stats", "--db", tmp_path / "empty.duckdb")
    assert human.exit_code == 0
    assert "The store is empty" in human.stdout


def test_ingest_json_prints_the_summary_and_stats_json_the_totals(
    runner: CliRunner, tmp_path: Path, spans_file: Path
) -> None:
    db = tmp_path / "store.duckdb"
    result = run(runner, "ingest", spans_file, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "files": 1,
        "spans_read": 6,
        "spans_added": 6,
        "duplicates": 0,
        "traces": 3,
        "projects": ["billing-service", "default"],
        "rejected": 0,
        "rejections": [],
    }
    stats = run(runner, "stats", "--db", db, "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout) == EXPECTED_STATS

    again = run(runner, "ingest", spans_file, "--db", db, "--json")
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert (summary["spans_read"], summary["spans_added"], summary["duplicates"]) == (6, 0, 6)


def test_ingest_exits_2_and_lists_rejected_lines(
    runner: CliRunner, tmp_path: Path, spans_file: Path
) -> None:
    bad = tmp_path / "with-a-rather-long-name-so-the-line-is-wider-than-a-terminal" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text(span_line(9, 90) + "\n{oops\n" + span_line(9, 91, parent=90) + "\n")
    db = tmp_path / "store.duckdb"
    result = run(runner, "ingest", spans_file, bad, "--db", db, "--json")
    assert result.exit_code == 2
    summary = json.loads(result.stdout)
    assert (summary["files"], summary["spans_added"], summary["rejected"]) == (2, 8, 1)
    (rejection,) = summary["rejections"]
    assert (rejection["path"], rejection["line"]) == (str(bad), 2)
    assert rejection["reason"].startswith("not valid JSON")

    human = run(runner, "ingest", bad, "--db", db)
    assert human.exit_code == 2
    assert "Imported 0 new spans (2 read, 2 already stored) in 1 traces" in human.stdout
    assert f"{bad}:2: not valid JSON" in human.stdout


def test_ingest_project_option_overrides_the_data(
    runner: CliRunner, tmp_path: Path, spans_file: Path
) -> None:
    db = tmp_path / "store.duckdb"
    result = run(runner, "ingest", spans_file, "--db", db, "--project", "[bold]ops[/bold]")
    assert result.exit_code == 0, result.output
    # The name is printed as it is, not read as markup.
    assert "projects: [bold]ops[/bold]." in result.stdout
    stats = json.loads(run(runner, "stats", "--db", db, "--json").stdout)
    assert [(p["project"], p["spans"]) for p in stats["projects"]] == [("[bold]ops[/bold]", 6)]


def test_db_option_and_environment_choose_the_store(
    runner: CliRunner, tmp_path: Path, spans_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    assert run(runner, "ingest", spans_file, "--db", first).exit_code == 0
    empty_store(second)

    def spans_in(*args: str | Path, env: dict[str, str] | None = None) -> int:
        result = run(runner, "stats", "--json", *args, env=env)
        assert result.exit_code == 0, result.output
        return sum(p["spans"] for p in json.loads(result.stdout)["projects"])

    assert spans_in("--db", first) == 6
    assert spans_in("--db", second) == 0
    assert spans_in(env={"TRACEPROOF_DB": str(first)}) == 6
    assert spans_in("--db", second, env={"TRACEPROOF_DB": str(first)}) == 0  # --db wins
    # Neither: the default store under the current directory.
    assert not (tmp_path / ".traceproof").exists()
    assert run(runner, "ingest", spans_file).exit_code == 0
    assert (tmp_path / ".traceproof" / "traceproof.duckdb").is_file()
    assert spans_in() == 6


def test_stats_table_shows_whole_project_names(
    runner: CliRunner, tmp_path: Path, spans_file: Path
) -> None:
    db = tmp_path / "store.duckdb"
    assert run(runner, "ingest", spans_file, "--db", db).exit_code == 0
    long_name = "customer-support-agent-production-eu-west-" + "shard-0042-" * 4  # 86 characters
    other = tmp_path / "other.jsonl"
    other.write_text(otlp_line(long_name, 7, 70, start_ms=0) + "\n")
    assert run(runner, "ingest", other, "--db", db).exit_code == 0
    result = run(runner, "stats", "--db", db)
    assert result.exit_code == 0, result.output
    cells = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in result.stdout.splitlines()
        if line.startswith("│")
    ]
    assert cells == [
        ["billing-service", "1", "1", "0", "2026-01-01 00:00:01Z", "2026-01-01 00:00:01Z"],
        [long_name, "1", "1", "0", "2026-01-01 00:00:00Z", "2026-01-01 00:00:00Z"],
        ["default", "2", "5", "2", "2026-01-01 00:00:00Z", "2026-01-01 00:01:00Z"],
    ]
    # JSON output is never wrapped to the terminal width, whatever the length of a value.
    stats = json.loads(run(runner, "stats", "--db", db, "--json").stdout)
    assert [p["project"] for p in stats["projects"]] == ["billing-service", long_name, "default"]


HOLD = """
import sys
from traceproof.storage import Store
store = Store.open(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


@pytest.fixture
def held_store(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A store held by a process that is not a traceproof server."""
    db = tmp_path / "held.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "holding\n"
    yield db, proc.pid
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.parametrize("command", ["stats", "ingest"])
def test_a_store_held_by_another_process_is_explained_not_a_duckdb_error(
    runner: CliRunner, held_store: tuple[Path, int], spans_file: Path, command: str
) -> None:
    db, pid = held_store
    args: list[str | Path] = ["stats"] if command == "stats" else ["ingest", spans_file]
    result = run(runner, *args, "--db", db)
    assert result.exit_code == 1
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    assert message.startswith("error: [store_locked] The store ")
    assert f"(process {pid})" in message
    assert "pass --db" in message
    assert "IO Error" not in message and "Conflicting lock" not in message


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(tmp_path / "served.duckdb")
    yield server
    server.stop()


@pytest.mark.slow
def test_ingest_and_stats_go_through_the_server_that_holds_the_store(
    runner: CliRunner, served: ServeProcess, spans_file: Path, tmp_path: Path
) -> None:
    result = run(runner, "ingest", spans_file, "--db", served.db, "--json")
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    assert (summary["spans_read"], summary["spans_added"], summary["traces"]) == (6, 6, 3)

    # The server holds the spans: its own API reports them.
    assert httpx2.get(served.url + "/api/v1/stats").json() == EXPECTED_STATS

    stats = run(runner, "stats", "--db", served.db, "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout) == EXPECTED_STATS
    human = run(runner, "stats", "--db", served.db)
    assert "billing-service" in human.stdout

    again = run(runner, "ingest", spans_file, "--db", served.db, "--json")
    assert json.loads(again.stdout)["spans_added"] == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n" + span_line(8, 80) + "\n")
    rejected = run(runner, "ingest", bad, "--db", served.db, "--json")
    assert rejected.exit_code == 2
    assert json.loads(rejected.stdout)["rejections"][0]["line"] == 1
    assert httpx2.get(served.url + "/api/v1/stats").json()["projects"][1]["traces"] == 3


def test_the_default_store_folder_keeps_itself_out_of_git(
    runner: CliRunner, tmp_path: Path, spans_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    assert run(runner, "ingest", spans_file).exit_code == 0
    assert (project / ".traceproof" / ".gitignore").read_text() == "*\n"
    if shutil.which("git"):  # and git agrees: nothing of the store shows as untracked
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        (project / "app.py").write_text("print('hi')\n")
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=project,
            check=True,
            capture_output=True,
            text=True,
        )
        assert status.stdout.splitlines() == ["?? app.py"]


def test_the_store_never_writes_a_gitignore_it_did_not_create_the_folder_for(
    runner: CliRunner, tmp_path: Path, spans_file: Path
) -> None:
    # A folder of another name: left as it is.
    assert run(runner, "ingest", spans_file, "--db", tmp_path / "data" / "s.duckdb").exit_code == 0
    assert not (tmp_path / "data" / ".gitignore").exists()
    # A .traceproof folder the user made, with their own .gitignore or none: left as it is.
    mine, bare = tmp_path / "mine" / ".traceproof", tmp_path / "bare" / ".traceproof"
    mine.mkdir(parents=True)
    bare.mkdir(parents=True)
    (mine / ".gitignore").write_text("*.wal\n")
    for folder in (mine, bare):
        assert run(runner, "ingest", spans_file, "--db", folder / "t.duckdb").exit_code == 0
    assert (mine / ".gitignore").read_text() == "*.wal\n"
    assert not (bare / ".gitignore").exists()
