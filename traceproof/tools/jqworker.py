"""jq programs run in a child process: a time limit that holds, and no access to our secrets.

A jq program is code an agent writes. Run in-process it could loop forever inside C
(``last(range(1e15))``), which no Python timer can interrupt, or read the server's environment
(``env``, ``$ENV``) where tokens and API keys live. So programs run in one long-lived child
processes (``python -I jqworker.py``, empty environment, memory limit), a few at once
(``jq_workers``), one program per child at a time; waiting for a free child counts against the
call's time limit, and when a program overruns it the child is killed (the next call starts a
fresh one). The
child also arms ``SIGALRM`` (default action: terminate) so it cannot outlive a dead parent's
request. ``env``/``$ENV`` are shadowed, and module directives (``import``/``include``, which
read files) cannot be written: the program is wrapped after a prelude, where they do not parse.

This module imports only the standard library at the top: the child runs it as a script.

Frames on the pipes: 4-byte big-endian length, then that many bytes. A request is two frames (a
JSON header, then the input JSON); a reply is one JSON frame.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

_PRELUDE = "def env: {}; {} as $ENV | (\n"
_MODULE_DIRECTIVE = re.compile(r"(?:^|[\s;(|,])(?:import|include)\s*\"")
#: Further results counted (not kept) after the budget is full.
COUNT_AFTER_FULL = 10_000
#: Address space of the child.
MEMORY_LIMIT = 4 * 1024**3
_HEADER = struct.Struct(">I")


class JqError(Exception):
    """The program does not compile, or failed while running: jq's own message."""


class JqTimeout(Exception):
    """The program ran past its time limit; the child was killed."""


class JqCrashed(Exception):
    """The child died while running the program (memory exhausted, most likely); the message
    holds the end of what it wrote to stderr, for the server log."""


# -- the child ----------------------------------------------------------------------------------


def serve() -> None:
    """The child's loop: read a request, run it, answer; exit when the parent closes stdin."""
    import resource
    import signal

    import jq  # type: ignore[import-not-found]

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_blocking(stdin)
        data = _read_blocking(stdin)
        if header is None or data is None:
            return
        request = json.loads(header)
        signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]) + 1.0)
        try:
            reply = _run(jq, request["program"], data, int(request["keep_chars"]))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _write(stdout, json.dumps(reply, ensure_ascii=False).encode())


def _run(jq: Any, program: str, data: bytes, keep_chars: int) -> dict[str, Any]:
    if _MODULE_DIRECTIVE.search(program):
        return {"error": "import and include are not available (modules would read files)."}
    try:
        compiled = jq.compile(_PRELUDE + program + "\n)")
    except ValueError as exc:
        return {"error": _compile_error(jq, program, exc)}
    kept: list[str] = []
    used = 2
    dropped = 0
    clipped: dict[str, Any] | None = None
    try:
        for value in compiled.input_text(data.decode()):
            if dropped or clipped is not None:
                dropped += 1
                if dropped >= COUNT_AFTER_FULL:
                    return _reply(kept, dropped, clipped, more=True)
                continue
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if used + len(text) + 1 <= keep_chars:
                kept.append(text)
                used += len(text) + 1
            elif not kept:
                clipped = _clip(value, text, keep_chars)
            else:
                dropped = 1
    except ValueError as exc:
        return {"error": str(exc), "runtime": True}
    return _reply(kept, dropped, clipped, more=False)


def _compile_error(jq: Any, program: str, exc: ValueError) -> str:
    """jq's message for the program as written (not as wrapped in the prelude)."""
    try:
        jq.compile(program)
    except ValueError as own:
        return str(own)
    return str(exc)


def _clip(value: Any, text: str, keep_chars: int) -> dict[str, Any]:
    """The start of one result too big for the budget, as a string whose JSON fits."""
    whole = value if isinstance(value, str) else text
    cut = keep_chars
    while cut > 0 and len(json.dumps(whole[:cut], ensure_ascii=False)) > keep_chars:
        cut = max(0, cut - max(16, cut // 8))
    return {"text": whole[:cut], "total": len(whole), "is_string": isinstance(value, str)}


def _reply(
    kept: list[str], dropped: int, clipped: dict[str, Any] | None, *, more: bool
) -> dict[str, Any]:
    return {
        "results": "[" + ",".join(kept) + "]",
        "dropped": dropped,
        "more": more,
        "clipped": clipped,
    }


def _read_blocking(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(head)
    body = stream.read(length)
    return body if len(body) == length else None


def _write(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


# -- the parent ---------------------------------------------------------------------------------


class JqRunner:
    """The parent's handle on its children: up to ``workers`` programs at once (one per child),
    each under a time limit that also bounds the wait for a free child."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[subprocess.Popen[bytes]] = []
        self._busy: set[subprocess.Popen[bytes]] = set()

    def run(self, program: str, data: bytes, *, keep_chars: int, timeout: float) -> dict[str, Any]:
        """Run ``program`` over the JSON ``data``; the child's reply (``results``: JSON text of
        the kept results, ``dropped``, ``more``, ``clipped``). ``timeout`` covers the wait for a
        free child and the run; the child is killed at the deadline. Raises :class:`JqError`,
        :class:`JqTimeout` or :class:`JqCrashed`."""
        deadline = time.monotonic() + timeout
        if not self._slots.acquire(timeout=max(0.0, timeout)):
            raise JqTimeout()
        try:
            header = json.dumps(
                {"program": program, "keep_chars": keep_chars, "timeout": timeout}
            ).encode()
            proc = self._take()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                _write(proc.stdin, header)
                _write(proc.stdin, data)
                payload = _read_until(proc.stdout, deadline)
            except TimeoutError:
                self._stop(proc)
                raise JqTimeout() from None
            except (OSError, EOFError):
                raise JqCrashed(self._stop(proc)) from None
            self._give_back(proc)
        finally:
            self._slots.release()
        reply: dict[str, Any] = json.loads(payload)
        if "error" in reply:
            raise JqError(reply["error"])
        return reply

    def _take(self) -> subprocess.Popen[bytes]:
        """An idle live child, or a new one."""
        with self._lock:
            while self._idle:
                proc = self._idle.pop()
                if proc.poll() is None:
                    self._busy.add(proc)
                    return proc
                self._reap(proc)
            proc = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                close_fds=True,
            )
            self._busy.add(proc)
            return proc

    def _give_back(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._busy.discard(proc)
            self._idle.append(proc)

    def _stop(self, proc: subprocess.Popen[bytes]) -> str:
        """Kill a child; the end of its stderr (it writes there only when it fails)."""
        with self._lock:
            self._busy.discard(proc)
        proc.kill()
        proc.wait()
        return self._reap(proc)

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> str:
        stderr = proc.stderr.read()[-2000:].decode(errors="replace") if proc.stderr else ""
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return f"exit status {proc.returncode}: {stderr.strip()}"

    def children(self) -> int:
        """Child processes alive now (idle or running a program)."""
        with self._lock:
            return sum(p.poll() is None for p in (*self._idle, *self._busy))

    def close(self) -> None:
        with self._lock:
            procs, self._idle, self._busy = [*self._idle, *self._busy], [], set()
        for proc in procs:
            proc.kill()
            proc.wait()
            self._reap(proc)


def _read_until(stream: IO[bytes], deadline: float) -> bytes:
    fd = stream.fileno()
    head = _read_exact(fd, _HEADER.size, deadline)
    (length,) = _HEADER.unpack(head)
    return _read_exact(fd, length, deadline)


def _read_exact(fd: int, count: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    missing = count
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


_RUNNERS: dict[int, JqRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def runner(workers: int = 1) -> JqRunner:
    """The process's jq runner of ``workers`` children (they start on first use, stop at
    exit)."""
    with _RUNNERS_LOCK:
        found = _RUNNERS.get(workers)
        if found is None:
            found = _RUNNERS[workers] = JqRunner(workers)
        return found


@atexit.register
def _close_all() -> None:
    for each in list(_RUNNERS.values()):
        each.close()


if __name__ == "__main__":
    serve()
