"""Custom code evaluators: the user's ``module:function``, run in a child process.

User code never runs inside the server. A :class:`CodeEvaluator` owns one child process,
``<python> -c <codeworker source> module:function`` started in the evaluator's ``cwd`` (the
project root by default) with the project's interpreter (``python`` in traceproof.toml, else
the one traceproof runs on), and the server's environment minus ``TRACEPROOF_*`` variables (the
server's token stays in the server). The child loads the function once and then answers a
stream of targets as JSON lines, so 10,000 targets cost one process, not 10,000.

- Arguments are bound by name: the child reports which of ``input``, ``output``, ``expected``,
  ``metadata``, ``span``, ``trace`` the function takes, and only those are sent.
- A batch has a time limit (``timeout``); past it the child (with its process group) is killed,
  every target of the batch still unanswered records a ``timeout`` error, and the next batch
  starts a fresh child.
- A child that dies mid-batch (``os._exit``, a segfault, memory) records a ``crashed`` error for
  the target it was on, with the end of its stderr; the rest of the batch goes to a new child.
- A function that cannot be loaded (import error, not callable, an argument we cannot give)
  raises ``[evaluator_failed]`` for the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import CodeEvaluatorConfig
from traceproof.evals.target import EvalResult, EvalTarget

__all__ = ["CodeEvaluator", "child_environment"]

_WORKER_SOURCE = (Path(__file__).with_name("codeworker.py")).read_text(encoding="utf-8")
#: Bytes of the child's stderr quoted in an error.
STDERR_TAIL = 1500


def child_environment() -> dict[str, str]:
    """The server's environment without traceproof's own variables (its token among them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACEPROOF_")}


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class CodeEvaluator:
    """One child process running one custom evaluator; :meth:`run_batch` is not thread-safe
    (the runner gives each thread its own instance). Use as a context manager, or
    :meth:`close`."""

    def __init__(self, definition: CodeEvaluatorConfig, *, timeout: float) -> None:
        self.definition = definition
        self.timeout = definition.timeout or timeout
        self.about: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._buffer = b""
        self._accepts: list[str] = []

    def __enter__(self) -> CodeEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the child ------------------------------------------------------------------------------

    def _start(self, deadline: float) -> None:
        d = self.definition
        python = str(d.python) if d.python else sys.executable
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _kill)
        self._buffer = b""
        try:
            self._proc = subprocess.Popen(
                [python, "-c", _WORKER_SOURCE, d.function],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                cwd=d.cwd,
                env=child_environment(),
                start_new_session=True,
            )
        except OSError as exc:
            raise self._failed(f"cannot start {python} ({exc})") from None
        try:
            hello = self._read_line(deadline)
        except _Timeout:
            self._kill()
            raise self._failed(f"it did not load within {self.timeout:g} s") from None
        except _Died:
            tail = self._tail()
            self._kill()
            raise self._failed(f"the process exited while loading it{tail}") from None
        if "fatal" in hello:
            self._kill()
            raise self._failed(str(hello["fatal"]))
        self._accepts = list(hello.get("accepts", []))
        self.about = {"file": hello.get("file"), "sha256": hello.get("sha256")}

    def _failed(self, detail: str) -> TraceproofError:
        d = self.definition
        return TraceproofError(
            f"evaluators.{d.name}: cannot run {d.function} in {d.cwd}: {detail}. Fix the "
            "function or its [evaluators] table in traceproof.toml (python, cwd), then run "
            "again.",
            code=ErrorCode.EVALUATOR_FAILED,
        )

    def _read_line(self, deadline: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise _Timeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _Died
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return dict(json.loads(line))

    def _tail(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - STDERR_TAIL))
            text = self._stderr.read().decode(errors="replace").strip()
            code = self._proc.poll() if self._proc else None
            status = f" (exit status {code})" if code is not None else ""
            return f"{status}: {text}" if text else status
        return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """End the child: close its stdin (it exits at end of input), kill it if it lingers."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self._kill()

    # -- batches --------------------------------------------------------------------------------

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        """Every target judged, in order, within one time limit for the whole batch."""
        deadline = time.monotonic() + self.timeout
        results: dict[int, EvalResult] = {}
        pending = list(range(len(targets)))
        while pending:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start(deadline)
            lines = [
                json.dumps({"i": i, "args": self._args(targets[i])}, default=str) + "\n"
                for i in pending
            ]
            writer = threading.Thread(target=self._write, args=(lines,), daemon=True)
            writer.start()
            try:
                while pending:
                    reply = self._read_line(deadline)
                    i = int(reply["i"])
                    results[i] = self._result(targets[i], reply)
                    pending.remove(i)
            except _Timeout:
                self._kill()
                why = f"timeout: the batch ran past {self.timeout:g} s; the evaluator was killed"
                for i in pending:
                    results[i] = self._error(targets[i], why)
                pending = []
            except _Died:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    if self._proc is not None:
                        self._proc.wait(timeout=5)
                tail = self._tail()
                self._kill()
                i = pending.pop(0)
                results[i] = self._error(targets[i], f"crashed: the evaluator process died{tail}")
            writer.join(timeout=5)
        return [results[i] for i in range(len(targets))]

    def _args(self, target: EvalTarget) -> dict[str, Any]:
        return {name: getattr(target, name) for name in self._accepts}

    def _write(self, lines: list[str]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            for line in lines:
                proc.stdin.write(line.encode())
            proc.stdin.flush()

    def _result(self, target: EvalTarget, reply: dict[str, Any]) -> EvalResult:
        result = EvalResult(target_kind=target.kind, target_id=target.id)
        result.duration_ms = float(reply.get("ms") or 0.0)
        if reply.get("error"):
            result.error = str(reply["error"])
            return result
        score = reply.get("score")
        result.label = None if reply.get("label") is None else str(reply["label"])
        result.score = None if score is None else float(score)
        explanation = reply.get("explanation")
        result.explanation = None if explanation is None else str(explanation)
        metadata = reply.get("metadata")
        result.metadata = metadata if isinstance(metadata, dict) else {}
        return result

    @staticmethod
    def _error(target: EvalTarget, message: str) -> EvalResult:
        return EvalResult(target_kind=target.kind, target_id=target.id, error=message)
