"""Incremental import: a transcript imported as it grows (a line at a time, or cut anywhere,
mid-line included) ends with exactly the rows of one import of the whole file; unchanged files
are skipped; rotated, truncated and rewritten files are read from their start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, needs_shared_data
from tests.trajectories.claude_files import SESSION, Transcript, basic_session, text, tool_use
from traceproof.ingest.files import ImportSummary, import_files
from traceproof.ingest.incremental import Book, StoreBook
from traceproof.settings import Settings
from traceproof.storage import Store

ROWS = (
    "SELECT trace_id, span_id, parent_span_id, name, span_kind, status, status_message, "
    "start_time, end_time, input_value, output_value, attributes::VARCHAR, resource::VARCHAR, "
    "project FROM spans ORDER BY trace_id, span_id"
)


@pytest.fixture(autouse=True)
def never_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test data are old: without this every open turn would count as finished.
    monkeypatch.setenv("TRACEPROOF_TRANSCRIPT_IDLE_SECONDS", str(10**12))


def ingest(db: Path, *paths: Path) -> ImportSummary:
    with Store.open(db, Settings(db=db)) as store:
        return import_files(
            list(paths), lambda t: store.submit(t, wait=None), book=Book(StoreBook(store))
        )


def rows(db: Path) -> list[tuple[Any, ...]]:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        return list(reader.rows(ROWS))


def grow(source: Path, target: Path, cuts: list[int], db: Path) -> list[ImportSummary]:
    """Import ``target`` holding the first ``cut`` bytes of ``source``, for each cut, then all."""
    data = source.read_bytes()
    found = []
    for cut in [*cuts, len(data)]:
        with target.open("ab") as f:  # appended to, as an agent does: the same file
            f.write(data[target.stat().st_size if target.exists() else 0 : cut])
        found.append(ingest(db, target))
    return found


def session_with_subagent() -> Transcript:
    t = Transcript()
    t.prompt("u0", "hello", parent=None)
    t.assistant("a0", "msg_0", text("Hello."))
    t.system("s0", "turn_duration", durationMs=5)
    t.prompt("u1", "research hooks")
    t.assistant("a1", "msg_1", tool_use("toolu_t", "Task", {
        "description": "Research", "subagent_type": "general-purpose", "prompt": "Find it",
    }))  # fmt: skip
    t.result("r1", "toolu_t", "Found.", detail={"status": "completed", "agentId": "abc1234"})
    t.assistant("a2", "msg_2", tool_use("toolu_b", "Bash", {"command": "pytest -q"}))
    t.result("r2", "toolu_b", "1 failed", error=True)
    t.assistant("a3", "msg_3", tool_use("toolu_e", "Edit", {"file_path": "/src/a.py"}))
    t.result("r3", "toolu_e", "ok")
    t.assistant("a4", "msg_4", text("Fixed."))
    t.system("s1", "turn_duration", durationMs=5)
    t.prompt("u2", "thanks")
    t.assistant("a5", "msg_5", text("You are welcome."))
    t.system("s2", "stop_hook_summary", hookCount=0)
    return t


def test_a_session_grown_a_line_at_a_time_ends_as_one_import_of_it(tmp_path: Path) -> None:
    folder = tmp_path / "full"
    source = session_with_subagent().write(folder / f"{SESSION}.jsonl")
    sub = Transcript(agent_id="abc1234", seconds=3)
    sub.prompt("s-u1", "Find it", parent=None)
    sub.assistant("s-a1", "msg_s1", tool_use("toolu_s", "Grep", {"pattern": "hook"}))
    sub.result("s-r1", "toolu_s", "hooks.py")
    sub.assistant("s-a2", "msg_s2", text("Found."))
    sub.write(folder / SESSION / "subagents" / "agent-abc1234.jsonl")
    ingest(tmp_path / "full.duckdb", source)
    live = tmp_path / "live"
    shutil.copytree(folder / SESSION, live / SESSION)
    data = source.read_bytes()
    ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    summaries = grow(source, live / source.name, ends[:-1], tmp_path / "live.duckdb")
    assert rows(tmp_path / "live.duckdb") == rows(tmp_path / "full.duckdb")
    # Read from the turn in progress on, not from the start: less read as the file grows.
    assert sum(s.incremental for s in summaries) >= len(ends) - 4
    assert all(s.rejected == 0 for s in summaries)
    # The steps of the turn read over many imports are labelled as in one read of the turn.
    labels = [
        r[3]
        for r in rows(tmp_path / "live.duckdb")
        if json.loads(r[11])["trajectory"].get("recover")
    ]
    assert labels == ["Edit"]
    again = ingest(tmp_path / "live.duckdb", live / source.name)
    assert (again.unchanged, again.files, again.spans_read) == (1, 0, 0)


@needs_shared_data
@pytest.mark.parametrize(
    "relative",
    [
        # 4d5611e5… has subagents and a compaction beside it. (Not 258c7280…: a prompt there
        # becomes a dead end when a later retry forks the chain, which reopens the turn before
        # it after its root was stored; README says so.)
        "claude-code/spotter/fa812bfe-b295-4cca-9c2f-fdf01028cb46.jsonl",
        "claude-code/spotter/4d5611e5-241a-462a-8d15-5122611a9569.jsonl",
        "codex/rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-3724b5ddb799.jsonl",
    ],
)
def test_shared_transcripts_cut_anywhere_and_grown_end_as_one_import(
    tmp_path: Path, relative: str
) -> None:
    source = SHARED_DATA / relative
    ingest(tmp_path / "full.duckdb", source)
    live = tmp_path / "live"
    live.mkdir()
    beside = source.with_suffix("")
    if beside.is_dir():  # the session's subagents
        shutil.copytree(beside, live / beside.name)
    size = source.stat().st_size
    # Cuts anywhere: mid-line ones are rejected as truncated then, and read once complete.
    cuts = [size * k // 7 + 13 * k for k in range(1, 7)]
    summaries = grow(source, live / source.name, cuts, tmp_path / "live.duckdb")
    assert rows(tmp_path / "live.duckdb") == rows(tmp_path / "full.duckdb")
    assert sum(s.incremental for s in summaries) >= 5
    assert summaries[-1].rejected == 0


def test_rewritten_truncated_and_replaced_files_are_read_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPROOF_TRANSCRIPT_IDLE_SECONDS", "0")  # every turn is finished
    db = tmp_path / "s.duckdb"
    path = basic_session().write(tmp_path / "s.jsonl")
    assert ingest(db, path).spans_added == 8
    # Rewritten in place with the same size: another session, same length of text.
    other = basic_session()
    other.session = SESSION.replace("0001", "0002")
    for record in other.records:
        if "sessionId" in record:
            record["sessionId"] = other.session
    other.write(path)
    assert path.stat().st_size == len("\n".join(basic_session().lines())) + 1
    rewritten = ingest(db, path)
    assert (rewritten.incremental, rewritten.spans_added) == (0, 8)
    # Truncated: two short turns; then grown by a third: read from the second on.
    short = Transcript(session=SESSION.replace("0001", "0003"))
    for n in range(3):
        short.prompt(f"u{n}", f"question {n}", parent=None if n == 0 else "")
        short.assistant(f"a{n}", f"msg_{n}", text(f"answer {n}"))
        short.system(f"s{n}", "turn_duration", durationMs=1)
    lines = short.lines()
    path.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    truncated = ingest(db, path)
    assert (truncated.incremental, truncated.spans_added) == (0, 4)
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines[6:]) + "\n")
    grown = ingest(db, path)
    assert (grown.incremental, grown.spans_read, grown.spans_added) == (1, 4, 2)
    # Replaced by a new file (a new inode) holding the same bytes: read whole, adds nothing.
    copy = tmp_path / "copy.jsonl"
    shutil.copy(path, copy)
    copy.replace(path)
    replaced = ingest(db, path)
    assert (replaced.incremental, replaced.spans_read, replaced.spans_added) == (0, 6, 0)


def test_file_states_are_saved_in_one_statement_last_state_of_a_path_winning(
    tmp_path: Path,
) -> None:
    """Thousands of states (a history's files) are written as one Arrow table, replacing
    those stored; a path given twice keeps its last state; every column reads back."""
    from traceproof.storage.transcript_files import (
        TranscriptFile,
        load_transcript_files,
        save_transcript_files,
    )

    def state(n: int, line: int) -> TranscriptFile:
        return TranscriptFile(
            f"/h/{n}.jsonl", 2049, 10**12 + n, 4096 + n, 1_700_000_000_000_000_000 + n, 4096,
            f"hash{n}", None if n % 2 else f"/h/{n}", 123 * n, line, [(1, 0, 80 + n)],
            n % 3 == 0, "claude_code" if n % 5 else None,
        )  # fmt: skip

    db = tmp_path / "s.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        save_transcript_files(store, [state(n, 1) for n in range(3000)])
        save_transcript_files(store, [state(7, 2), state(8, 2), state(7, 3)])
        found = load_transcript_files(store)
    assert len(found) == 3000
    assert found["/h/7.jsonl"] == state(7, 3)
    assert found["/h/8.jsonl"] == state(8, 2)
    assert found["/h/2999.jsonl"] == state(2999, 1)
