"""`traceproof ingest` on coding-agent transcripts, as a child process on a real store:
directories, subagents nested, redaction counted (or off), zstd, re-import and growth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.trajectories.claude_files import SESSION, Transcript, basic_session, text, tool_use
from traceproof.settings import Settings
from traceproof.storage import Store

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "claude-code"


def ingest(db: Path, *paths: Path | str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "traceproof", "ingest", "--db", str(db), "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert result.returncode in (0, 2), result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    summary["exit"] = result.returncode
    return summary


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        return list(reader.rows(sql))


def project_dir(root: Path) -> Path:
    """A Claude Code project directory: a session with a subagent, and a second session."""
    folder = root / ".claude" / "projects" / "-home-USER-projects-shop"
    t = Transcript()
    t.prompt("u1", "research hooks; token is ghp_" + "A1b2C3d4" * 5, parent=None)
    t.assistant("a1", "msg_1", tool_use("toolu_t", "Task", {
        "description": "Research", "subagent_type": "general-purpose", "prompt": "Find it",
    }))  # fmt: skip
    t.result("r1", "toolu_t", "Found.", detail={"status": "completed", "agentId": "abc1234"})
    t.assistant("a2", "msg_2", text("Found."))
    t.system("s1", "turn_duration", durationMs=5)
    t.write(folder / f"{SESSION}.jsonl")
    sub = Transcript(agent_id="abc1234", seconds=2)
    sub.prompt("s-u1", "Find it", parent=None)
    sub.assistant("s-a1", "msg_s1", tool_use("toolu_s", "Grep", {"pattern": "hook"}))
    sub.result("s-r1", "toolu_s", "hooks.py")
    sub.assistant("s-a2", "msg_s2", text("Found."))
    sub.write(folder / SESSION / "subagents" / "agent-abc1234.jsonl")
    other = basic_session()
    other.session = "5e55a0b1-0000-4000-8000-000000000002"
    for record in other.records:
        if "sessionId" in record:
            record["sessionId"] = other.session
    other.write(folder / f"{other.session}.jsonl")
    return root / ".claude" / "projects"


def test_a_projects_directory_is_imported_with_subagents_nested_and_secrets_redacted(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.duckdb"
    summary = ingest(db, project_dir(tmp_path))
    assert summary["files"] == 2  # the subagent transcript is read with its session
    assert summary["formats"] == {"claude_code": 2}
    assert summary["traces"] == 3 and summary["projects"] == ["shop"]
    assert summary["spans_added"] == summary["spans_read"] == 8 + 8
    assert summary["redactions"] == 2 and summary["records_skipped"] == 1
    assert summary["skipped_by_kind"] == {"file-history-snapshot": 1}
    got = rows(
        db,
        "SELECT s.name, s.span_kind, p.name FROM spans s LEFT JOIN spans p "
        "ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id "
        f"WHERE s.session_id = '{SESSION}'",
    )
    assert sorted(got) == sorted(
        [
            ("claude-code turn", "AGENT", None),
            ("claude.messages", "LLM", "claude-code turn"),
            ("Task", "TOOL", "claude-code turn"),
            ("subagent:general-purpose", "AGENT", "Task"),
            ("claude.messages", "LLM", "subagent:general-purpose"),
            ("Grep", "TOOL", "subagent:general-purpose"),
            ("claude.messages", "LLM", "subagent:general-purpose"),
            ("claude.messages", "LLM", "claude-code turn"),
        ]
    )
    (prompt,) = rows(db, f"SELECT input_value FROM spans WHERE span_kind = 'AGENT' "
                         f"AND parent_span_id IS NULL AND session_id = '{SESSION}'")  # fmt: skip
    assert prompt[0] == "research hooks; token is [REDACTED:github_token]"
    raw = rows(db, "SELECT attributes->>'$.\"trajectory.raw\"' FROM spans")
    assert not any("ghp_" in (r[0] or "") for r in raw)
    (error,) = rows(db, "SELECT tool_name, status, error_message FROM spans WHERE status='ERROR'")
    assert error == ("Bash", "ERROR", "Error: Exit code 1")
    (resource,) = rows(db, "SELECT DISTINCT resource->>'$.service.name' FROM spans")
    assert resource == ("claude-code",)
    # Re-import adds nothing: unchanged files are skipped; rewritten with the same content
    # (a new mtime), each is read again from its last turn.
    again = ingest(db, project_dir(tmp_path).parent)
    assert (again["unchanged"], again["spans_read"], again["spans_added"]) == (0, 10, 0)
    assert again["incremental"] == 1  # the other session's one turn starts at its first line
    again = ingest(db, project_dir(tmp_path).parent)
    assert (again["unchanged"], again["spans_read"]) == (0, 10)
    same = ingest(db, tmp_path / ".claude")
    assert (same["unchanged"], same["files"], same["spans_read"]) == (2, 0, 0)


def test_no_redact_keeps_the_secrets(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    path = basic_session().write(tmp_path / "s.jsonl")
    result = subprocess.run(
        [sys.executable, "-m", "traceproof", "ingest", "--db", str(db), "--json", "--no-redact",
         str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout)["redactions"] == 0
    (prompt,) = rows(db, "SELECT input_value FROM spans WHERE parent_span_id IS NULL LIMIT 1")
    assert "sk-ant-api03-abcdefghijklmnopqr" in prompt[0]


def test_a_zstd_compressed_transcript_is_read_like_the_plain_one(tmp_path: Path) -> None:
    plain = basic_session().write(tmp_path / "s.jsonl")
    packed = tmp_path / "s.jsonl.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    a = ingest(tmp_path / "a.duckdb", plain)
    b = ingest(tmp_path / "b.duckdb", packed)
    assert a["spans_added"] == b["spans_added"] == 8
    assert b["formats"] == {"claude_code": 1}


def test_a_grown_transcript_adds_only_its_new_spans_and_the_closed_turns_root(
    tmp_path: Path,
) -> None:
    from datetime import UTC, datetime, timedelta

    db = tmp_path / "s.duckdb"
    t = Transcript(start=datetime.now(UTC) - timedelta(seconds=30))
    t.prompt("u1", "run the tests", parent=None)
    t.assistant("a1", "msg_1", tool_use("toolu_1", "Bash", {"command": "pytest"}))
    t.result("r1", "toolu_1", "3 passed")
    t.assistant("a2", "msg_2", text("All pass."))
    path = t.write(tmp_path / "live.jsonl")
    first = ingest(db, path)
    # The turn may go on: its last response is held back, and so is its root.
    assert first["spans_added"] == 2
    assert rows(db, "SELECT count(*) FROM spans WHERE parent_span_id IS NULL") == [(0,)]
    t.prompt("u2", "now lint")
    t.assistant("a3", "msg_3", tool_use("toolu_2", "Bash", {"command": "ruff check"}))
    t.write(path)
    second = ingest(db, path)
    assert (second["spans_read"], second["spans_added"]) == (4, 2)  # the root and msg_2
    roots = rows(db, "SELECT input_value FROM spans WHERE parent_span_id IS NULL")
    assert roots == [("run the tests",)]
    # Idle long enough (here: any age counts as idle), the last turn closes too.
    third = ingest(db, path, env={"TRACEPROOF_TRANSCRIPT_IDLE_SECONDS": "0"})
    assert third["spans_added"] == 3  # its root, its response and its unanswered tool call
    (incomplete,) = rows(db, "SELECT status FROM spans WHERE tool_name = 'Bash' "
                             "AND input_value LIKE '%ruff%'")  # fmt: skip
    assert incomplete == ("UNSET",)


def test_a_truncated_last_line_is_rejected_with_its_number(tmp_path: Path) -> None:
    t = basic_session()
    path = t.write(tmp_path / "s.jsonl", tail='{"parentUuid":"s2","type":"user","mes')
    summary = ingest(tmp_path / "s.duckdb", path)
    assert summary["exit"] == 2 and summary["spans_added"] == 8
    (rejection,) = summary["rejections"]
    assert rejection["line"] == len(t.records) + 1
    assert rejection["reason"].startswith("not valid JSON")


def test_span_json_lines_still_go_to_the_span_importer(tmp_path: Path) -> None:
    line = {
        "name": "x",
        "context": {"trace_id": "ab" * 16, "span_id": "cd" * 8},
        "span_kind": "LLM",
        "start_time": 1_767_225_600_000_000_000,
        "end_time": 1_767_225_601_000_000_000,
    }
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(line) + "\n")
    summary = ingest(tmp_path / "s.duckdb", path)
    assert summary["spans_added"] == 1
    assert "formats" not in summary and "redactions" not in summary  # as before transcripts


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/claude-code is not here")
def test_the_shared_claude_code_data_imports_and_reimports_to_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    summary = ingest(db, SHARED)
    assert summary["formats"] == {"claude_code": summary["files"]}
    assert summary["spans_added"] == summary["spans_read"] > 2000
    assert {r["path"].rsplit("/", 1)[-1] for r in summary["rejections"]} == {"edge_cases.jsonl"}
    assert "spotter" in summary["projects"]
    again = ingest(db, SHARED)
    assert again["spans_added"] == 0 and again["unchanged"] == summary["files"]


def test_steps_are_labelled_with_their_action_and_outcome(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    ingest(db, basic_session().write(tmp_path / "s.jsonl"))
    got = rows(
        db,
        "SELECT tool_name, attributes->>'$.trajectory.step', attributes->>'$.trajectory.action', "
        "attributes->>'$.trajectory.outcome', attributes->>'$.trajectory.recover' "
        "FROM spans WHERE span_kind = 'TOOL' ORDER BY start_time",
    )
    # Steps count LLM calls too: msg_1, pytest, msg_2, the Read after the failure.
    assert got == [
        ("Bash", "2", "verify", "error", None),
        ("Read", "4", "localize", "ok", "true"),
    ]


def test_the_text_summary_names_the_transcripts_skipped_records_and_redactions(
    tmp_path: Path,
) -> None:
    path = basic_session().write(tmp_path / "s.jsonl")

    def ingest() -> list[str]:
        return subprocess.run(
            [sys.executable, "-m", "traceproof", "ingest", "--db", str(tmp_path / "s.duckdb"),
             str(path)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout.splitlines()  # fmt: skip

    assert ingest() == [
        "Imported 8 new spans (8 read, 0 already stored) in 2 traces, projects: shop.",
        "Transcripts: claude_code 1 file(s); 1 records skipped, 1 secrets redacted.",
    ]
    # Nothing read: no project list (it used to say "projects: -").
    assert ingest() == [
        "Imported 0 new spans (0 read, 0 already stored) in 0 traces.",
        "Transcripts read from where the last import stopped: 0; skipped as unchanged: 1.",
    ]
