"""A large Claude Code transcript keeps its records' data in a spill: the same spans as a read
in memory, in memory that grows with one turn's records, not the file."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.trajectories.claude_files import Transcript, text, tool_use
from traceproof.trajectories import claude_code, claude_records, claude_tree
from traceproof.trajectories.claude_code import ClaudeCodeReader
from traceproof.trajectories.claude_records import Parsed
from traceproof.trajectories.common import Item, StepSpan
from traceproof.trajectories.redact import Redactor

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "claude-code"
#: A read long after the last record: every turn is closed.
LATER = 2e9


def transcripts() -> list[Path]:
    found = sorted((REPO / "examples" / "transcripts").glob("claude-code-*.jsonl"))
    if SHARED.is_dir():
        found += sorted(
            p
            for p in SHARED.rglob("*.jsonl")
            if p.parent.name != "subagents" and p.stat().st_size > 0
        )
    return found


def read(path: Path, spill_bytes: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Item], int]:
    monkeypatch.setattr(claude_records, "SPILL_BYTES", spill_bytes)
    redact = Redactor()
    with path.open("rb") as stream:
        items = list(ClaudeCodeReader(now=LATER).read(path, stream, redact))
    return items, redact.count


@pytest.mark.parametrize("path", transcripts(), ids=lambda p: p.name)
def test_a_spilled_read_equals_a_read_in_memory(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spilled from the first line, from the middle, or not at all: the same items (spans,
    skipped records, resume point) and the same redactions. The subagents' and compaction
    calls' transcripts beside a file are read with the same rule."""
    whole, count = read(path, 1 << 62, monkeypatch)
    assert any(isinstance(item, StepSpan) for item in whole)
    for spill_bytes in (0, path.stat().st_size // 2):
        items, spilled_count = read(path, spill_bytes, monkeypatch)
        assert items == whole, spill_bytes
        assert spilled_count == count


def long_session(turns: int, output_bytes: int) -> Transcript:
    """``turns`` turns, each a Read with a large output and an answer."""
    t = Transcript()
    t.last = None
    for n in range(turns):
        t.prompt(f"u{n}", f"question {n}")
        t.assistant(f"a{n}", f"msg_{n}", tool_use(f"toolu_{n}", "Read", {"file_path": f"/f{n}"}))
        t.result(f"r{n}", f"toolu_{n}", f"{n} " + "x" * output_bytes)
        t.assistant(f"b{n}", f"msg_b{n}", text(f"answer {n}"))
        t.system(f"s{n}", "turn_duration", durationMs=1000)
    return t


class Watched:
    """The reader, with the records it parsed at hand (to count those holding their data)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed: list[Parsed] = []
        real = claude_code.parse

        def parse(*args: Any, **kwargs: Any) -> Parsed:
            found = real(*args, **kwargs)
            self.parsed.append(found)
            return found

        monkeypatch.setattr(claude_code, "parse", parse)

    def holding(self) -> int:
        return sum(rec._data is not None for rec in self.parsed[0].records)

    def read(self, path: Path) -> Iterator[Item]:
        with path.open("rb") as stream:
            yield from ClaudeCodeReader(now=LATER).read(path, stream, Redactor())


def test_a_spilled_read_holds_the_data_of_one_turn_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = long_session(200, 2_000).write(tmp_path / "s.jsonl")
    per_turn = 5
    for spill_bytes, most in ((1 << 62, 200 * per_turn), (0, 2 * per_turn)):
        monkeypatch.setattr(claude_records, "SPILL_BYTES", spill_bytes)
        watched = Watched(monkeypatch)
        peak = spans = 0
        for item in watched.read(path):
            if isinstance(item, StepSpan):
                spans += 1
                peak = max(peak, watched.holding())
        assert spans == 200 * 4  # the root, two responses and the Read
        # In memory, every record keeps its data; spilled, those of the turn being made
        # (and the one before it, still held by the last span yielded).
        assert peak <= most, spill_bytes
        if spill_bytes == 0:
            assert watched.parsed[0].spill is not None
            assert watched.parsed[0].spill._file.closed  # the spill is gone with the read


def test_a_spilled_read_of_a_large_session_allocates_a_fraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's allocations at their peak (tracemalloc: exact, not a clock): a 6 MB session
    read in memory against spilled past 256 KB."""
    path = long_session(300, 20_000).write(tmp_path / "s.jsonl")
    peaks = {}
    for spill_bytes in (1 << 62, 256 * 1024):
        monkeypatch.setattr(claude_records, "SPILL_BYTES", spill_bytes)
        tracemalloc.start()
        try:
            with path.open("rb") as stream:
                for _ in ClaudeCodeReader(now=LATER).read(path, stream, Redactor()):
                    pass
            peaks[spill_bytes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    whole, spilled = peaks[1 << 62], peaks[256 * 1024]
    assert whole > path.stat().st_size  # the parsed records outweigh the file
    assert spilled < whole / 4, (spilled, whole)


def test_a_read_stopped_early_drops_its_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = long_session(20, 100).write(tmp_path / "s.jsonl")
    monkeypatch.setattr(claude_records, "SPILL_BYTES", 0)
    watched = Watched(monkeypatch)
    items = watched.read(path)
    assert isinstance(next(item for item in items if isinstance(item, StepSpan)), StepSpan)
    items.close()  # as the importer does on an error (generator closed)
    spill = watched.parsed[0].spill
    assert spill is not None and spill._file.closed


def test_records_share_the_strings_they_repeat(tmp_path: Path) -> None:
    """A record keeps no copy of a string another record holds: its type is one of three,
    its parent is the parent record's uuid, and the ids the tree is cut with share theirs (a
    response's lines, their message id; a tool result, its call's id)."""
    t = Transcript()
    t.prompt("u1", "question")
    t.assistant("a1", "msg_1", text("reading"))
    t.assistant("a2", "msg_1", tool_use("toolu_1", "Read", {"file_path": "/f"}))
    t.result("r1", "toolu_1", "contents")
    path = t.write(tmp_path / "s.jsonl")
    with path.open("rb") as stream:
        parsed = claude_records.read_records(stream, Redactor(), [])
    u1, a1, a2, r1 = parsed.records
    assert a1.type is a2.type and u1.type is r1.type
    assert a1.parent is u1.uuid and a2.parent is a1.uuid and r1.parent is a2.uuid
    i_u1, i_a1, i_a2, i_r1 = parsed.ids
    assert i_u1 is claude_records.NO_IDS
    assert i_a1.message == "msg_1" and i_a2.message is i_a1.message
    assert i_r1.tool_results == ("toolu_1",) and i_r1.tool_results[0] is i_a2.tool_uses[0]


def test_the_records_ids_are_let_go_once_the_dead_ends_are_marked(tmp_path: Path) -> None:
    """Only the tree needs a record's message and tool ids (the data keeps them)."""
    path = long_session(3, 10).write(tmp_path / "s.jsonl")
    with path.open("rb") as stream:
        parsed = claude_tree.parse(stream, Redactor(), [])
    assert len(parsed.records) == 15 and parsed.ids == []


def busy_session(turns: int) -> Transcript:
    """A session as a long one is written: 36-character uuids, responses of two lines sharing
    a message id, a tool call and its result, and three ``progress`` records a turn."""
    t = Transcript()
    t.last = None
    for n in range(turns):
        uid = [f"{n:08x}-{k:04x}-4000-8000-{n * 8 + k:012x}" for k in range(5)]
        tool = f"toolu_01{n:022d}"
        message = f"msg_01{n:022d}"
        t.prompt(uid[0], f"question {n}")
        t.assistant(uid[1], message, text("Let me look."))
        t.assistant(uid[2], message, tool_use(tool, "Read", {"file_path": f"/f{n}"}))
        for k in range(3):
            t.add({"type": "progress", "data": {"type": "hook_progress"}, "uuid": f"p{n}-{k}"})
        t.last = uid[2]
        t.result(uid[3], tool, f"contents {n}")
        t.system(uid[4], "turn_duration", durationMs=1000)
    return t


def test_a_parsed_large_session_holds_little_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a spilled session's parse keeps (tracemalloc: exact, not a clock) per conversation
    record, its skipped records included: 709 B before the skipped records were kept as a line
    each and the records shared their strings and let their ids go, 398 B since (Python 3.11;
    one string copied again per record, ~60-85 B, fails this)."""
    turns = 2_000
    path = busy_session(turns).write(tmp_path / "s.jsonl")
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            items: list[Item] = []
            parsed = claude_tree.parse(stream, Redactor(), items, spill_bytes=0)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    try:
        assert len(parsed.records) == 5 * turns and len(parsed.skipped) == 3 * turns
        per_record = held / len(parsed.records)
        assert per_record < 430, per_record
    finally:
        parsed.close()
