"""Incremental transcript import: a file read before is skipped when unchanged, and read from its
resume point when it grew.

Per transcript file the import keeps a :class:`~traceproof.storage.transcript_files.
TranscriptFile`: its identity (device, inode), the bytes read, its mtime, a hash of its first
4 KiB, a signature of the files read beside it (Claude Code's ``<session>/subagents/``), and the
resume point its reader gave (:class:`~traceproof.trajectories.common.Resume`: the first line
of the earliest turn that may still grow, with its byte offset, and the lines before it the
reader needs again, such as Codex's ``session_meta``).

A later import of the same path:

- same identity, size, mtime and companions: skipped (``unchanged`` in the summary), unless
  the read held a turn back as in progress and the file has since been idle for
  ``TRACEPROOF_TRANSCRIPT_IDLE_SECONDS`` (its mtime that old): then it is read again, and the
  turn closes;
- same identity and first bytes, not shorter: read from the resume point (``incremental``);
  the reader sees the file with every line before the resume point blank except the kept ones,
  so line numbers and the ids made from them are those of a full read, and each trace that
  continues is read again from its first line (its labels see the whole turn). Spans already
  stored are ignored by the store, so what a turn had is not added twice;
- anything else (rotated, truncated, rewritten, or a reader without a resume point): read from
  the start, as the first time.

Compressed files are read whole (their state still lets an unchanged one be skipped). When
``settle`` is set (``traceproof watch``), an unterminated last line of a file modified in the
last ``settle`` seconds is left for the next read: a line being written is read once complete.

The state lives in the store's ``transcript_files`` table (:class:`StoreBook`), or, when the
import goes through a running server, in a JSON file next to the store (:class:`FileBook`); the
states of an import are saved after all its spans were acknowledged, so an interrupted import
resumes from the previous points (nothing is lost, nothing is added twice).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from traceproof.storage.transcript_files import (
    TranscriptFile,
    load_transcript_files,
    save_transcript_files,
)
from traceproof.trajectories.common import Resume
from traceproof.trajectories.records import idle_seconds

#: Bytes hashed from the start of a file to tell a grown file from a rewritten one.
HEAD_BYTES = 4096
#: Read whole, never from an offset: gzip, zstd, and zip (an Inspect AI .eval log).
_COMPRESSED = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PK\x03\x04")
_CHUNK = 1 << 20


class Backend(Protocol):
    def load(self) -> dict[str, TranscriptFile]: ...

    def save(self, states: list[TranscriptFile]) -> None: ...


class StoreBook:
    """The states in the store's ``transcript_files`` table."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def load(self) -> dict[str, TranscriptFile]:
        return load_transcript_files(self.store)

    def save(self, states: list[TranscriptFile]) -> None:
        save_transcript_files(self.store, states)


class FileBook:
    """The states in a JSON file (used when a server holds the store: its API has no route for
    them yet). Written whole, atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, TranscriptFile]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        files = data.get("files") if isinstance(data, dict) else None
        found: dict[str, TranscriptFile] = {}
        for entry in files if isinstance(files, list) else []:
            try:
                state = TranscriptFile.from_dict(entry)
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: that file is read from the start
            found[state.path] = state
        return found

    def save(self, states: list[TranscriptFile]) -> None:
        found = self.load()
        found.update({s.path: s for s in states})
        body = {"version": 1, "files": [s.as_dict() for s in found.values()]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(body), encoding="utf-8")
        os.replace(temporary, self.path)


def state_file_for(db: Path) -> Path:
    """The JSON state file kept next to the store ``db`` (for imports through its server)."""
    return db.with_name(db.name + ".transcripts.json")


@dataclass
class Plan:
    """How one file is read this time."""

    path: Path
    stat: os.stat_result
    start_offset: int = 0
    start_line: int = 1
    keep: list[tuple[int, int, int]] = field(default_factory=list)
    compressed: bool = False
    #: Bytes of the file the read may go up to (None: to the end).
    limit: int | None = None
    #: Bytes of the file delivered to the reader (``start_offset`` + what was read).
    read_to: int = 0

    @property
    def resumed(self) -> bool:
        return self.start_offset > 0


class Book:
    """The import states of transcript files, loaded once, saved by :meth:`commit`."""

    def __init__(self, backend: Backend, *, settle: float | None = None) -> None:
        self.backend = backend
        self.settle = settle
        self.states = backend.load()
        self.pending: dict[str, TranscriptFile] = {}

    def unchanged(self, path: Path) -> bool:
        """Whether ``path`` is as it was when its state was saved."""
        state = self.states.get(_key(path))
        if state is None:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        if state.open and time.time() - stat.st_mtime_ns / 1e9 > idle_seconds():
            return False  # the turn held back as in progress is idle now: read it again
        return (
            (stat.st_dev, stat.st_ino) == (state.device, state.inode)
            and stat.st_size == state.size
            and stat.st_mtime_ns == state.mtime_ns
            and companions_of(path) == state.companions
        )

    def plan(self, path: Path) -> Plan:
        """Where the read of ``path`` starts (and ends), from its saved state."""
        stat = path.stat()
        with path.open("rb") as probe:
            magic = probe.read(4)
        plan = Plan(path, stat, compressed=magic[:2] in _COMPRESSED or magic in _COMPRESSED)
        if plan.compressed:
            return plan
        plan.limit = self._limit(path, stat)
        state = self.states.get(_key(path))
        if state is None or state.resume_offset <= 0:
            return plan
        end = stat.st_size if plan.limit is None else plan.limit
        if (
            (stat.st_dev, stat.st_ino) != (state.device, state.inode)
            or stat.st_size < state.size
            or end < state.resume_offset
            or _head_hash(path, state.head_bytes) != state.head_hash
        ):
            return plan  # rotated, truncated or rewritten: from the start
        plan.start_offset, plan.start_line, plan.keep = (
            state.resume_offset,
            state.resume_line,
            list(state.keep),
        )
        return plan

    def _limit(self, path: Path, stat: os.stat_result) -> int | None:
        """The end of the last complete line, when an unterminated last line is being written."""
        if self.settle is None or stat.st_size == 0:
            return None
        if time.time() - stat.st_mtime_ns / 1e9 > self.settle:
            return None
        with path.open("rb") as f:
            position = stat.st_size
            while position > 0:
                step = min(_CHUNK, position)
                f.seek(position - step)
                block = f.read(step)
                found = block.rfind(b"\n")
                if found >= 0:
                    end = position - step + found + 1
                    return None if end == stat.st_size else end
                position -= step
        return 0

    def open(self, plan: Plan) -> IO[bytes]:
        """The stream a reader reads for ``plan`` (not for compressed files)."""
        return io.BufferedReader(_Resumed(plan), _CHUNK)

    def done(self, plan: Plan, reader: str, resume: Resume | None) -> None:
        """Note what the read of ``plan`` found; saved by :meth:`commit`."""
        path, stat = plan.path, plan.stat
        head_bytes = min(HEAD_BYTES, stat.st_size)
        state = TranscriptFile(
            path=_key(path),
            device=stat.st_dev,
            inode=stat.st_ino,
            size=plan.read_to if not plan.compressed else stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            head_bytes=head_bytes,
            head_hash=_head_hash(path, head_bytes),
            companions=companions_of(path),
            resume_offset=0,
            resume_line=1,
            reader=reader,
        )
        state.open = resume is not None and resume.open
        if resume is not None and not plan.compressed:
            point = _resume_point(plan, resume)
            if point is not None:
                state.resume_offset, state.resume_line, state.keep = point
        self.pending[state.path] = state

    def commit(self) -> None:
        """Save the states noted since the last commit (after their spans were stored)."""
        if not self.pending:
            return
        states = list(self.pending.values())
        self.backend.save(states)
        self.states.update(self.pending)
        self.pending = {}


def _key(path: Path) -> str:
    return str(path.absolute())


def companions_of(path: Path) -> str | None:
    """A signature of the Claude Code subagent transcripts beside ``path``, else None."""
    folder = path.parent / path.name.split(".")[0] / "subagents"
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    digest = hashlib.sha256()
    for entry in entries:
        try:
            stat = entry.stat()
        except OSError:
            continue
        digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _head_hash(path: Path, length: int) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()


class _Resumed(io.RawIOBase):
    """The file as a resumed read sees it: lines before ``start_line`` blank except the kept
    ones, then the file from ``start_offset`` (up to ``limit``)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.file = plan.path.open("rb")
        parts: list[bytes] = []
        line = 1
        for number, offset, length in sorted(plan.keep):
            if number < line or number >= plan.start_line:
                continue
            self.file.seek(offset)
            parts.append(b"\n" * (number - line) + self.file.read(length) + b"\n")
            line = number + 1
        parts.append(b"\n" * (plan.start_line - line))
        self.prefix = memoryview(b"".join(parts))
        self.file.seek(plan.start_offset)
        plan.read_to = plan.start_offset

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        want = len(buffer)
        if self.plan.limit is not None:
            want = min(want, self.plan.limit - self.plan.read_to)
        if want <= 0:
            return 0
        data = self.file.read(want)
        buffer[: len(data)] = data
        self.plan.read_to += len(data)
        return len(data)

    def close(self) -> None:
        self.file.close()
        super().close()


def _resume_point(plan: Plan, resume: Resume) -> tuple[int, int, list[tuple[int, int, int]]] | None:
    """``(offset, line, keep)`` for a reader's resume point after ``plan``'s read; None when it
    cannot be honoured (then the next read starts from the start). The read never resumes past
    a line it has not seen end: a resume point past the last complete line becomes the start of
    the line after it."""
    kept_before = {k[0]: k for k in plan.keep if k[0] < plan.start_line}
    wanted = sorted({k for k in resume.keep if k < resume.line})
    if resume.line < plan.start_line or any(
        k < plan.start_line and k not in kept_before for k in wanted
    ):
        return None
    targets = sorted({resume.line, *(k for k in wanted if k >= plan.start_line)})
    found, open_line, open_start = _line_spans(plan, targets)
    if resume.line >= open_line:
        offset, line = open_start, open_line
    else:
        offset, line = found[resume.line][0], resume.line
    keep: list[tuple[int, int, int]] = []
    for number in wanted:
        if number in kept_before:
            keep.append(kept_before[number])
        elif number in found and number < line:
            keep.append((number, *found[number]))
        else:
            return None
    return offset, line, keep


def _line_spans(plan: Plan, targets: list[int]) -> tuple[dict[int, tuple[int, int]], int, int]:
    """``line: (offset, length)`` of the target lines (at or after ``plan.start_line``) that
    end within what was read, and the number and offset of the first line not seen to end."""
    found: dict[int, tuple[int, int]] = {}
    position, line = plan.start_offset, plan.start_line
    line_start = position
    wanted = set(targets)
    last = max(targets)
    with plan.path.open("rb") as f:
        f.seek(position)
        while position < plan.read_to and line <= last:
            block = f.read(min(_CHUNK, plan.read_to - position))
            if not block:
                break
            cursor = 0
            while line <= last:
                newline = block.find(b"\n", cursor)
                if newline < 0:
                    break
                end = position + newline
                if line in wanted:
                    found[line] = (line_start, end - line_start)
                line += 1
                line_start = end + 1
                cursor = newline + 1
            position += len(block)
    return found, line, line_start
