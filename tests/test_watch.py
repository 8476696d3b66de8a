"""`traceproof watch` as a child process: a session written line by line (a half-written line
included) is queryable through the running server while its turn is open; new, truncated and
rotated files; SIGTERM stops it with everything read stored."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tests.conftest import ServeProcess, wait_until
from tests.trajectories.claude_files import SESSION, Transcript, basic_session, text, tool_use
from traceproof.ingest.incremental import state_file_for
from traceproof.remote import RemoteStore
from traceproof.settings import Settings
from traceproof.storage import Store


class Watch:
    """``traceproof watch DIR --json`` in a child process; its JSON lines collected."""

    def __init__(self, db: Path, folder: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traceproof", "watch", str(folder), "--db", str(db),
             "--json", "--interval", "0.05"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout: IO[str] = self.proc.stdout
        threading.Thread(target=lambda: [self._lines.put(x) for x in stdout], daemon=True).start()
        self.wait_for(lambda e: e["event"] == "started")

    def collect(self) -> list[dict[str, Any]]:
        while not self._lines.empty():
            self.events.append(json.loads(self._lines.get()))
        return self.events

    def wait_for(self, match: Any, what: str = "a watch event") -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and self._lines.empty():
                raise AssertionError(
                    f"watch exited: {self.proc.stderr and self.proc.stderr.read()}"
                )
            return next((e for e in self.collect() if match(e)), None)

        event: dict[str, Any] = wait_until(found, timeout=60, what=what)
        return event

    def imports(self) -> list[dict[str, Any]]:
        return [e for e in self.collect() if e["event"] == "import"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.collect()
        return code


def append(path: Path, data: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(data)
        f.flush()


def test_a_session_written_line_by_line_is_queryable_while_its_turn_is_open(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.duckdb"
    folder = tmp_path / "projects" / "-home-USER-projects-shop"
    folder.mkdir(parents=True)
    path = folder / f"{SESSION}.jsonl"
    t = Transcript(start=datetime.now(UTC))  # fresh: the turn is in progress
    t.prompt("u0", "hello", parent=None)
    t.assistant("a0", "msg_0", text("Hello."))
    t.system("s0", "turn_duration", durationMs=100)
    t.prompt("u1", "run the tests")
    t.assistant("a1", "msg_1", tool_use("toolu_1", "Bash", {"command": "pytest -q"}))
    t.result("r1", "toolu_1", "Exit code 1\n1 failed", error=True)
    t.assistant("a2", "msg_2", tool_use("toolu_2", "Read", {"file_path": "/src/shop.py"}))
    t.result("r2", "toolu_2", "def total(): ...")
    t.assistant("a3", "msg_3", text("The total is wrong."))
    t.system("s1", "turn_duration", durationMs=900)
    lines = [line + "\n" for line in t.lines()]
    server = ServeProcess(db)
    watch = None
    try:
        watch = Watch(db, tmp_path / "projects")
        remote = RemoteStore(server.url)

        def steps() -> list[dict[str, Any]]:
            found = remote.call_tool("search_traces", {"session_id": SESSION})
            if not found["traces"]:
                return []
            trace_id = found["traces"][0]["trace_id"]
            view = remote.call_tool("get_trajectory", {"trace_id": trace_id})
            return list(view["steps"])

        # A closed turn, the next one begun, and half of its next line (in one write, so every
        # read sees it): the half line is read once complete, never rejected.
        append(path, "".join(lines[:6]) + lines[6][:40])
        wait_until(lambda: len(steps()) >= 2, what="the open turn's first steps")
        assert [(s["action"], s["tool"], s["outcome"]) for s in steps()][:2] == [
            ("llm", "claude-opus-4-6", None),
            ("verify", "Bash", "error"),
        ]
        traces = remote.call_tool("search_traces", {"session_id": SESSION})["traces"]
        assert [t["name"] for t in traces] == ["claude.messages", "claude-code turn"]
        append(path, lines[6][40:])
        append(path, lines[7])
        wait_until(lambda: any(s["tool"] == "Read" for s in steps()), what="the Read step")
        read = next(s for s in steps() if s["tool"] == "Read")
        assert (read["action"], read["recover"]) == ("localize", True)  # labelled in context
        for line in lines[8:]:
            append(path, line)

        def root() -> Any:
            trace = remote.call_tool("search_traces", {"session_id": SESSION})["traces"][0]
            return trace if trace["name"] == "claude-code turn" else None

        closed = wait_until(root, what="the closed turn's root")
        assert "run the tests" in json.dumps(closed)
        assert watch.stop() == 0
        imports = watch.imports()
        assert len(imports) >= 3 and sum(e["rejected"] for e in imports) == 0
        assert sum(e["incremental"] for e in imports) >= 1
        assert watch.events[-1]["event"] == "stopped"
        # Through a server, the resume points are kept next to the store.
        state = json.loads(state_file_for(db).read_text())
        assert [f["path"] for f in state["files"]] == [str(path)]
    finally:
        if watch is not None:
            watch.stop()
        server.stop()
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        counts = reader.rows("SELECT span_kind, count(*) FROM spans GROUP BY ALL ORDER BY ALL")
    assert counts == [("AGENT", 2), ("LLM", 4), ("TOOL", 2)]


def test_new_truncated_and_rotated_files_are_read_from_their_start(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    folder = tmp_path / "projects" / "-home-USER-projects-shop"
    folder.mkdir(parents=True)
    watch = Watch(db, tmp_path / "projects")
    try:
        first = folder / "a.jsonl"
        basic_session().write(first)  # a new file appears
        watch.wait_for(lambda e: e["event"] == "import" and e["spans_added"] == 8, "file a")
        # Rotated: another session's transcript takes the path (a new inode), longer than the
        # old resume point, so reading on from there would miss its first turn.
        other = _other_session("5e55a0b1-0000-4000-8000-00000000000b", turns=3)
        rotated = folder / "a.jsonl.new"
        other.write(rotated)
        os.replace(rotated, first)
        watch.wait_for(lambda e: e["event"] == "import" and e["spans_added"] == 9, "rotation")
        # Truncated in place and rewritten shorter: read again from the start.
        third = _other_session("5e55a0b1-0000-4000-8000-00000000000c", turns=1)
        with first.open("r+", encoding="utf-8") as f:
            f.truncate(0)
            f.write("\n".join(third.lines()) + "\n")
        watch.wait_for(lambda e: e["event"] == "import" and e["spans_added"] == 3, "truncation")
        # A second file appears while the first stays as it is.
        basic_session_b = _other_session("5e55a0b1-0000-4000-8000-00000000000d", turns=1)
        basic_session_b.write(folder / "b.jsonl")
        event = watch.wait_for(
            lambda e: e["event"] == "import" and e["paths"] == [str(folder / "b.jsonl")], "b"
        )
        assert event["spans_added"] == 3
    finally:
        assert watch.stop() == 0
    assert watch.events[-1]["event"] == "stopped"
    assert watch.events[-1]["spans_added"] == 8 + 9 + 3 + 3
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        roots = reader.rows(
            "SELECT session_id, count(*) FROM spans WHERE parent_span_id IS NULL GROUP BY ALL "
            "ORDER BY ALL"
        )
    assert roots == [
        (SESSION, 2),
        ("5e55a0b1-0000-4000-8000-00000000000b", 3),
        ("5e55a0b1-0000-4000-8000-00000000000c", 1),
        ("5e55a0b1-0000-4000-8000-00000000000d", 1),
    ]


def _other_session(session: str, turns: int) -> Transcript:
    """``turns`` closed turns of one model call and one Grep each (3 spans a turn)."""
    t = Transcript(session=session)
    for n in range(turns):
        t.prompt(f"{session}-u{n}", f"question {n}", parent=None if n == 0 else "")
        t.assistant(f"{session}-a{n}", f"{session}-m{n}",
                    tool_use(f"{session}-t{n}", "Grep", {"pattern": "x"}))  # fmt: skip
        t.result(f"{session}-r{n}", f"{session}-t{n}", "found")
        t.system(f"{session}-s{n}", "turn_duration", durationMs=5)
    return t
