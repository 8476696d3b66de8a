"""Following coding-agent session directories: each new or grown transcript imported as it
changes (``traceproof watch``).

The directories are polled (``os.scandir`` and ``stat``, every ``interval`` seconds, 0.25 by
default): that works on every file system, network mounts and containers' bind mounts included,
needs no dependency, and finds a change within the interval, well inside the second or two a
live view allows. A file whose (device, inode, size, mtime) changed since the last poll is
imported through :func:`~traceproof.ingest.files.import_files` with the same
:class:`~traceproof.ingest.incremental.Book` as ``traceproof ingest``: read from its resume
point, an unterminated last line left for the next poll. A Claude Code subagent transcript
that changed brings its session's file to the import (the session nests it).

A turn in progress is queryable while it runs: its finished model calls and tool calls are
stored as they come (the trace shows without its root, named by its first span); the root,
with the prompt and the answer, is stored when the turn closes (or its file has been idle for
``TRACEPROOF_TRANSCRIPT_IDLE_SECONDS``; a file held open is read again once that is so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from traceproof.ingest.files import ImportSummary, Sink, import_files, walked
from traceproof.ingest.incremental import Book
from traceproof.settings import Settings
from traceproof.trajectories.actions import ActionRules
from traceproof.trajectories.records import idle_seconds

#: Seconds between polls.
INTERVAL = 0.25
#: An unterminated last line of a file modified this recently is left for the next poll.
SETTLE_SECONDS = 5.0


def default_directories(environ: dict[str, str] | None = None) -> list[Path]:
    """Claude Code's ``projects`` and Codex's ``sessions`` directories that exist
    (``CLAUDE_CONFIG_DIR`` and ``CODEX_HOME`` honoured; else ``~/.claude``, ``~/.codex``)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    claude = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    codex = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex"
    return [d for d in (claude / "projects", codex / "sessions") if d.is_dir()]


@dataclass
class Cycle:
    """One poll's import: which files changed and what their import found."""

    paths: list[Path]
    summary: ImportSummary
    seconds: float


Signature = tuple[int, int, int, int]


class Watcher:
    """Polls ``directories`` (and files named directly) and imports what changed."""

    def __init__(
        self,
        targets: Iterable[Path],
        sink: Sink,
        book: Book,
        *,
        settings: Settings,
        project: str | None = None,
        redact: bool = True,
        rules: ActionRules | None = None,
    ) -> None:
        self.targets = list(targets)
        self.sink = sink
        self.book = book
        self.settings = settings
        self.project = project
        self.redact = redact
        self.rules = rules
        self.seen: dict[Path, Signature] = {}
        #: Files held open by their last import (a turn in progress): looked at again once
        #: idle, even unchanged.
        self.held: set[Path] = set()

    def scan(self) -> Iterator[tuple[Path, Signature]]:
        for target in self.targets:
            if target.is_file():
                signature = _signature(target)
                if signature is not None:
                    yield target, signature
                continue
            yield from _walk(target)

    def changed(self) -> list[Path]:
        """The files to import now: new or changed since the last poll (a subagent's session
        file in its place), and those held open that are idle now."""
        found: dict[Path, None] = {}
        now = time.time()
        present: set[Path] = set()
        for path, signature in self.scan():
            present.add(path)
            previous = self.seen.get(path)
            idle = path in self.held and now - signature[3] / 1e9 > idle_seconds()
            if previous == signature and not idle:
                continue
            self.seen[path] = signature
            session = _session_of(path)
            found[session or path] = None
        for gone in set(self.seen) - present:
            del self.seen[gone]
            self.held.discard(gone)
        return list(found)

    def poll(self) -> Cycle | None:
        """Import what changed since the last poll; None when nothing did."""
        paths = self.changed()
        if not paths:
            return None
        started = time.monotonic()
        summary = import_files(
            paths,
            self.sink,
            settings=self.settings,
            project=self.project,
            redact=self.redact,
            rules=self.rules,
            book=self.book,
        )
        for path in paths:
            state = self.book.states.get(str(path.absolute()))
            if state is not None and state.open:
                self.held.add(path)
            else:
                self.held.discard(path)
            if state is not None and state.size < _size(path):
                # A line still being written was left: look at the file again next poll.
                self.seen.pop(path, None)
        return Cycle(paths, summary, time.monotonic() - started)

    def run(
        self,
        on_cycle: Callable[[Cycle], None],
        stop: Callable[[], bool],
        interval: float = INTERVAL,
    ) -> None:
        """Poll until ``stop()`` says so; each import reported to ``on_cycle``. The import under
        way when ``stop`` turns true is finished first: nothing read is lost."""
        while not stop():
            cycle = self.poll()
            if cycle is not None:
                on_cycle(cycle)
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.05, interval))


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _walk(folder: Path) -> Iterator[tuple[Path, Signature]]:
    """Transcript-like files under ``folder`` (hidden entries skipped), with their signature."""
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                if not entry.is_file() or not walked(entry.name):
                    continue
                stat = entry.stat()
            except OSError:
                continue
            yield Path(entry.path), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _session_of(path: Path) -> Path | None:
    """The Claude Code session file a subagent transcript belongs to, when it is there."""
    folder = path.parent
    if folder.name != "subagents" or not path.name.startswith("agent-"):
        return None
    session = folder.parent.with_name(folder.parent.name + ".jsonl")
    return session if session.is_file() else None
