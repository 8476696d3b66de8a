"""Which store a command reads: read commands never create one, and say where they looked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from traceproof.cli import cli

READ_COMMANDS = [
    ["traces"],
    ["trace", "f" * 32],
    ["span", "0" * 16],
    ["find", "f" * 32, "error"],
    ["spans"],
    ["jq", "."],
    ["agg"],
    ["sql", "select 1"],
    ["schema"],
    ["session", "sess-0001"],
    ["projects"],
    ["stats"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda args: args[0])
def test_a_read_command_in_a_directory_without_a_store_says_where_it_looked_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout == ""
    said = " ".join(result.stderr.split())
    assert said.startswith("error: [not_found] ")
    assert str(tmp_path / ".traceproof" / "traceproof.duckdb") in said  # the absolute path
    assert "traceproof serve --demo" in said and "--db" in said and "TRACEPROOF_DB" in said
    assert list(tmp_path.iterdir()) == []  # no .traceproof folder, no empty store


def test_a_missing_store_named_by_db_or_the_environment_is_named_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    by_option = runner.invoke(cli, ["traces", "--db", "sub/none.duckdb"])
    assert by_option.exit_code == 1
    assert str(tmp_path / "sub" / "none.duckdb") in " ".join(by_option.stderr.split())
    by_env = runner.invoke(cli, ["stats", "--json"], env={"TRACEPROOF_DB": "other.duckdb"})
    assert by_env.exit_code == 1
    assert str(tmp_path / "other.duckdb") in " ".join(by_env.stderr.split())
    assert list(tmp_path.iterdir()) == []


def test_ingest_still_creates_the_store_it_imports_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACEPROOF_DB", raising=False)
    lines = tmp_path / "spans.jsonl"
    span = {
        "name": "root",
        "context": {"trace_id": "1" * 32, "span_id": "2" * 16},
        "span_kind": "CHAIN",
        "start_time": 1_767_225_600_000_000_000,
        "end_time": 1_767_225_600_250_000_000,
    }
    lines.write_text(json.dumps(span) + "\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["ingest", str(lines)], catch_exceptions=False).exit_code == 0
    assert (tmp_path / ".traceproof" / "traceproof.duckdb").is_file()
    traces = runner.invoke(cli, ["traces", "--json"], catch_exceptions=False)
    assert traces.exit_code == 0, traces.output
    assert [t["trace_id"] for t in json.loads(traces.stdout)["traces"]] == ["1" * 32]
