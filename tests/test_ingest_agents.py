"""`traceproof ingest` on Codex, SWE-agent, mini-swe-agent and OpenHands files, as a child
process on a real store: detection, spans stored, errors, redaction, re-import adds nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard

from tests.conftest import SHARED_DATA, needs_shared_data
from tests.test_ingest_transcripts import ingest as ingest_transcripts
from tests.test_ingest_transcripts import rows
from tests.trajectories.reader_helpers import jsonl
from tests.trajectories.test_codex import answer, exec_call, meta, turn
from tests.trajectories.test_openhands import event, tool_call
from tests.trajectories.test_swe_agent import mini, traj


def ingest(db: Path, *paths: Path) -> dict[str, Any]:
    return ingest_transcripts(db, *paths, env={"TRACEPROOF_TRANSCRIPT_IDLE_SECONDS": "300"})


def agent_files(root: Path) -> Path:
    """One file of each format in one folder tree."""
    secret = "sk-ant-api03-" + "Zx9" * 20
    records = [
        meta(),
        *turn("t1", "run the tests", 1),
        *exec_call("c1", f"ANTHROPIC_API_KEY={secret} pytest -q", 2, 1, "1 failed"),
        *answer("one test fails", 3, "t1"),
    ]
    sessions = root / "codex" / "sessions" / "2026" / "01" / "02"
    sessions.mkdir(parents=True)
    packed = zstandard.ZstdCompressor().compress(jsonl(*records))
    (sessions / "rollout-2026-01-02T03-04-00-s-1.jsonl.zst").write_bytes(packed)
    runs = root / "runs"
    runs.mkdir()
    (runs / "django__django-1.traj").write_text(json.dumps(traj()), encoding="utf-8")
    messages = [
        {"role": "user", "content": "Task: rename"},
        {"role": "assistant", "content": "```bash\nls\n```"},
        {"role": "user", "content": "<returncode>2</returncode>\n<output>\nno\n</output>"},
    ]
    (runs / "a__b-2.traj.json").write_text(json.dumps(mini(messages)), encoding="utf-8")
    stream = [
        event(0, 1, "user", action="message", args={"content": "rename it"}),
        event(
            1, 2, action="run", args={"command": "mv a b"}, tool_call_metadata=tool_call("x", "r1")
        ),
        event(2, 3, cause=1, observation="run", content="", extras={"metadata": {"exit_code": 0}}),
    ]
    (runs / "rename.json").write_text(json.dumps(stream), encoding="utf-8")
    return root


def test_a_folder_of_agent_files_is_detected_stored_and_reimported_to_nothing(
    tmp_path: Path,
) -> None:
    folder = agent_files(tmp_path / "agents")
    db = tmp_path / "s.duckdb"
    summary = ingest(db, folder)
    assert summary["exit"] == 0, summary["rejections"]
    assert summary["formats"] == {"codex": 1, "swe_agent": 1, "mini_swe_agent": 1, "openhands": 1}
    assert summary["traces"] == 4
    assert summary["spans_added"] == summary["spans_read"] == 4 + 5 + 3 + 3
    assert summary["redactions"] >= 1
    assert sorted(summary["projects"]) == ["mini-swe-agent", "openhands", "proj", "swe-agent"]
    got = rows(
        db,
        "SELECT resource->>'$.service.name' AS agent, span_kind, count(*), "
        "count(*) FILTER (WHERE status = 'ERROR') FROM spans GROUP BY ALL ORDER BY ALL",
    )
    assert got == [
        ("codex", "AGENT", 1, 0),
        ("codex", "LLM", 2, 0),
        ("codex", "TOOL", 1, 1),
        ("mini-swe-agent", "AGENT", 1, 0),
        ("mini-swe-agent", "LLM", 1, 0),
        ("mini-swe-agent", "TOOL", 1, 1),
        ("openhands", "AGENT", 1, 0),
        ("openhands", "LLM", 1, 0),
        ("openhands", "TOOL", 1, 0),
        ("swe-agent", "AGENT", 1, 1),
        ("swe-agent", "LLM", 2, 0),
        ("swe-agent", "TOOL", 2, 1),
    ]
    stored = rows(db, "SELECT input_value FROM spans WHERE tool_name = 'exec_command'")
    assert "sk-ant-api03-" not in stored[0][0]
    (codex,) = rows(
        db,
        "SELECT session_id, prompt_tokens, attributes->>'$.trajectory.source' FROM spans "
        "WHERE model = 'gpt-5.5' ORDER BY start_time LIMIT 1",
    )
    assert codex == ("s-1", 100, "codex")
    again = ingest(db, folder)
    assert again["spans_added"] == 0 and again["unchanged"] == summary["files"]


@needs_shared_data
def test_the_shared_codex_swe_agent_and_openhands_files_import_and_reimport_to_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.duckdb"
    folders = [SHARED_DATA / name for name in ("codex", "swe-agent", "openhands")]
    summary = ingest(db, *folders)
    assert summary["exit"] == 0, summary["rejections"]
    assert summary["formats"] == {"codex": 1, "swe_agent": 22, "openhands": 5}
    assert summary["traces"] == 2 + 22 + 9
    assert summary["spans_added"] == summary["spans_read"] == 173 + 486 + 246
    assert {"codemie-code", "swe-agent", "openhands"} <= set(summary["projects"])
    got = rows(
        db,
        "SELECT project, span_kind, count(*), count(*) FILTER (WHERE status = 'ERROR') "
        "FROM spans GROUP BY ALL ORDER BY ALL",
    )
    assert got == [
        ("codemie-code", "AGENT", 2, 0),
        ("codemie-code", "LLM", 66, 0),
        ("codemie-code", "TOOL", 105, 4),
        ("openhands", "AGENT", 9, 1),
        ("openhands", "LLM", 119, 0),
        ("openhands", "TOOL", 118, 22),
        ("swe-agent", "AGENT", 22, 0),
        ("swe-agent", "LLM", 232, 0),
        ("swe-agent", "TOOL", 232, 17),
    ]
    again = ingest(db, *folders)
    assert again["spans_added"] == 0 and again["unchanged"] == summary["files"]
