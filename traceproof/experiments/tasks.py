"""Tasks: what an experiment runs on each example, declared as ``[tasks.NAME]`` in traceproof.toml.

Tasks are never passed as code or argv in a call: an agent changes one by editing the file, which
the user sees in the diff. Three kinds (``kind`` may be left out when ``command``, ``function``
or ``url`` tells)::

    [tasks.answer]
    kind = "command"
    command = ["python", "app.py", "--question", "{input.question}"]  # argv, no shell
    cwd = "."                     # default: the project root
    env = {APP_MODE = "test"}     # added to the environment
    output = "auto"               # "json": stdout must be JSON; "text": kept as text
    timeout = 60                  # seconds per run; default: the experiment's

    [tasks.answer_py]
    function = "app.main:answer"  # called with input / expected / metadata by name
    python = ".venv/bin/python"   # default: the interpreter traceproof runs on

    [tasks.answer_http]
    url = "http://127.0.0.1:8000/answer"  # the input POSTed as JSON
    output_path = "answer.text"   # where the output is in the JSON answer; default: all of it
    allow_remote = false          # true lets the URL leave loopback
    headers = {Authorization = "Bearer test"}

    project = "my-app"            # any kind: the project its spans are stored under

A ``command`` gets the example's input as JSON on stdin (and in ``{input}`` / ``{input.field}``
placeholders of its argv, when it has them); its stdout is the output, parsed as JSON when it is
JSON. A ``python`` task runs :mod:`.taskworker` in a child process, one per run. Both run in a
process group of their own (``start_new_session``): the timeout and a cancel kill the whole group,
grandchildren included, and whatever is left of it when the task exits.

A run's :class:`RunOutcome` says how it went: ``ok``, ``error`` (non-zero exit, with the tail of
stderr; an exception of the function; an HTTP error), ``timeout``, ``crash`` (killed by a signal,
or the worker died without answering) or ``bad_output`` (not JSON when JSON is required, a python
function's value that JSON cannot hold, or more than the setting
``experiment_output_max_bytes``). Failures of the application are data.

Every definition has a ``content_hash`` (its table as sorted JSON without ``description``, plus a
python task's module source when found): the experiment's provenance records it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import orjson

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import CONFIG_FILE, ProjectConfig, TaskConfig

__all__ = [
    "Processes",
    "RunOutcome",
    "Task",
    "new_traceparent",
    "parse_task",
    "run_task",
    "task_of",
]

RunStatus = Literal["ok", "error", "timeout", "crash", "bad_output"]
#: Bytes of stderr kept (its tail) for an error's reason.
STDERR_TAIL = 2000
#: Characters of that tail shown in an error, from a line start: with the error's own words it
#: stays within the runner's ERROR_CHARS, so the end of stderr (where the fatal line is) stays.
STDERR_SHOWN = 1800
#: What stands before a stderr tail that is not all of it.
STDERR_CLIPPED = "[stderr clipped: its last lines]"
_FUNCTION = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_PLACEHOLDER = re.compile(r"\{input((?:\.[\w-]+)*)\}")
_KEYS = {
    "command": {"command", "cwd", "env", "output", "timeout", "project", "description", "kind"},
    "python": {"function", "python", "cwd", "env", "timeout", "project", "description", "kind"},
    "http": {
        "url",
        "output_path",
        "allow_remote",
        "headers",
        "timeout",
        "project",
        "description",
        "kind",
    },
}
_WORKER = (Path(__file__).parent / "taskworker.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Task:
    """A parsed ``[tasks.NAME]`` table (see the module docstring)."""

    name: str
    kind: Literal["command", "python", "http"]
    table: dict[str, Any]
    content_hash: str
    cwd: Path
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    output: Literal["auto", "json", "text"] = "auto"
    function: str | None = None
    python: Path | None = None
    url: str | None = None
    output_path: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    project: str | None = None

    @property
    def version(self) -> str:
        return self.content_hash[:12]


@dataclass
class RunOutcome:
    """How one run went (see the module docstring); ``latency_ms`` is the task's own time."""

    status: RunStatus
    output: Any = None
    error: str | None = None
    latency_ms: float = 0.0


def _invalid(name: str, detail: str) -> TraceproofError:
    return TraceproofError(
        f"{CONFIG_FILE}: tasks.{name}: {detail}. Fix the table and try again.",
        code=ErrorCode.INVALID_CONFIG,
    )


def task_of(config: ProjectConfig, name: str) -> Task:
    """The task ``name`` of the project's config, or ``[invalid_config]`` listing those declared."""
    found = config.tasks.get(name)
    if found is None:
        known = ", ".join(config.tasks) or "none"
        raise TraceproofError(
            f"No task {name!r} in {CONFIG_FILE} (in {config.root}); declared: {known}. Add a "
            f"[tasks.{name}] table (kind command, python or http) to {CONFIG_FILE}.",
            code=ErrorCode.INVALID_CONFIG,
        )
    return parse_task(found, config.root)


def _strings(name: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid(name, f'{key} must be a table of strings ({key} = {{NAME = "value"}})')
    return {str(k): v for k, v in value.items()}


def parse_task(config: TaskConfig, root: Path) -> Task:
    """A ``[tasks.NAME]`` table as a :class:`Task`; ``[invalid_config]`` naming the key."""
    name, table = config.name, config.table
    kind = table.get("kind")
    if kind is None:
        kind = next((k for k, key in _KIND_KEYS if key in table), None)
    if kind not in _KEYS:
        raise _invalid(
            name, f"kind {kind!r} is not a kind; known: command, python, http"
            if kind is not None else "set command = [...], function = \"module:fn\" or url"
        )  # fmt: skip
    unknown = sorted(set(table) - _KEYS[kind])
    if unknown:
        raise _invalid(name, f"unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS[kind]))}")
    timeout = table.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):  # fmt: skip
        raise _invalid(name, "timeout must be a positive number of seconds")
    project = table.get("project")
    if project is not None and (not isinstance(project, str) or not project):
        raise _invalid(name, "project must be a non-empty string")
    cwd_text = table.get("cwd", ".")
    if not isinstance(cwd_text, str):
        raise _invalid(name, "cwd must be a string")
    cwd = (root / cwd_text).resolve()
    if kind != "http" and not cwd.is_dir():
        raise _invalid(name, f"cwd {cwd} is not a directory")
    env = _strings(name, "env", table.get("env", {}))
    hashed = {k: v for k, v in table.items() if k != "description"}
    common: dict[str, Any] = {
        "name": name,
        "table": table,
        "cwd": cwd,
        "env": env,
        "timeout": None if timeout is None else float(timeout),
        "project": project,
    }
    if kind == "command":
        argv = table.get("command")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise _invalid(name, "command must be a non-empty list of strings (argv, no shell)")
        output = table.get("output", "auto")
        if output not in ("auto", "json", "text"):
            raise _invalid(name, f"output {output!r} is not one of auto, json, text")
        return Task(
            kind="command", argv=tuple(argv), output=output, content_hash=_digest(hashed), **common
        )
    if kind == "python":
        function = table.get("function")
        if not isinstance(function, str) or not _FUNCTION.match(function):
            raise _invalid(name, "function must be module:function, e.g. app.main:answer")
        python = None
        if "python" in table:
            text = table["python"]
            if not isinstance(text, str) or not text:
                raise _invalid(name, "python must be the path of an interpreter")
            found = shutil.which(text) if os.sep not in text else None
            python = Path(found or text).expanduser()
            python = python if python.is_absolute() else root / python
            if not python.exists():
                raise _invalid(name, f"python {python} does not exist")
        source = _module_source(function.split(":")[0], cwd)
        return Task(
            kind="python",
            function=function,
            python=python,
            content_hash=_digest({"table": hashed, "source": source}),
            **common,
        )
    url = table.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise _invalid(name, "url must be an http:// or https:// URL")
    allow_remote = table.get("allow_remote", False)
    if not isinstance(allow_remote, bool):
        raise _invalid(name, "allow_remote must be true or false")
    if not allow_remote and not _loopback(urlsplit(url).hostname or ""):
        raise _invalid(
            name, f"url {url!r} is not on loopback; set allow_remote = true to let runs leave "
            "this machine"
        )  # fmt: skip
    output_path = table.get("output_path")
    if output_path is not None and not isinstance(output_path, str):
        raise _invalid(name, "output_path must be a dotted path, e.g. answer.text")
    return Task(
        kind="http",
        url=url,
        output_path=output_path,
        output="json",
        headers=_strings(name, "headers", table.get("headers", {})),
        content_hash=_digest(hashed),
        **common,
    )


_KIND_KEYS = (("command", "command"), ("python", "function"), ("http", "url"))


def _digest(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def _module_source(module: str, cwd: Path) -> str:
    rel = Path(*module.split("."))
    for base in (cwd, cwd / "src"):
        for candidate in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
            if candidate.is_file():
                return hashlib.sha256(candidate.read_bytes()).hexdigest()
    return "unresolved"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_traceparent() -> tuple[str, str]:
    """A fresh W3C ``traceparent`` (sampled) and its trace id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id


# -- running ----------------------------------------------------------------------------------


class Processes:
    """The process groups of an experiment's running tasks, so a cancel can kill them all (and
    so does the exit of this process: task groups are sessions of their own, which nothing
    else would end)."""

    def __init__(self) -> None:
        self._live: set[int] = set()
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        _ALL.add(self)

    def add(self, pid: int) -> None:
        with self._lock:
            self._live.add(pid)
        if self.cancelled.is_set():
            _killpg(pid)

    def discard(self, pid: int) -> None:
        with self._lock:
            self._live.discard(pid)

    def kill_all(self) -> None:
        """Kill every running task's process group (and any started from now on)."""
        self.cancelled.set()
        with self._lock:
            live = list(self._live)
        for pid in live:
            _killpg(pid)


_ALL: weakref.WeakSet[Processes] = weakref.WeakSet()


@atexit.register
def _kill_left_over() -> None:
    for processes in list(_ALL):
        processes.kill_all()


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Capped:
    """Reads a stream to its end in a thread, keeping at most ``limit`` bytes (the head, or
    with ``tail`` the last ones) and counting the rest: a huge output never fills memory."""

    def __init__(self, stream: IO[bytes], limit: int, *, tail: bool = False) -> None:
        self.stream, self.limit, self.tail = stream, limit, tail
        self.data = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.stream.read1(1 << 16):  # type: ignore[attr-defined]
                self.total += len(chunk)
                if self.tail:
                    self.data += chunk
                    del self.data[: max(0, len(self.data) - self.limit)]
                elif len(self.data) < self.limit:
                    self.data += chunk[: self.limit - len(self.data)]

    def result(self) -> bytes:
        self.thread.join(timeout=5)
        return bytes(self.data)

    @property
    def clipped(self) -> bool:
        return self.total > len(self.data)


def _substitute(argv: tuple[str, ...], value: Any) -> list[str]:
    def one(match: re.Match[str]) -> str:
        found: Any = value
        for part in match.group(1).split(".")[1:]:
            if not isinstance(found, dict) or part not in found:
                raise KeyError(f"input{match.group(1)}")
            found = found[part]
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return [_PLACEHOLDER.sub(one, arg) for arg in argv]


def _stderr_tail(data: bytes, clipped: bool) -> str:
    """The end of stderr: at most :data:`STDERR_SHOWN` characters, from a line start when a
    line ends in them, marked when lines before were cut."""
    text = data.decode(errors="replace").strip()
    if not clipped and len(text) <= STDERR_SHOWN:
        return text
    text = text[-STDERR_SHOWN:]
    newline = text.find("\n")
    if 0 <= newline < len(text) - 1:
        text = text[newline + 1 :]
    return f"{STDERR_CLIPPED}\n{text}"


def run_task(
    task: Task,
    example: Mapping[str, Any],
    env: Mapping[str, str],
    timeout: float,
    *,
    max_output_bytes: int = 1 << 20,
    processes: Processes | None = None,
) -> RunOutcome:
    """Run ``task`` on one example (``input``, ``expected``, ``metadata``) with ``env`` added to
    its environment (the tracing variables); never raises for what the application does."""
    if task.kind == "http":
        return _run_http(task, example, env, timeout, max_output_bytes)
    if task.kind == "command":
        try:
            argv = _substitute(task.argv, example.get("input"))
        except KeyError as exc:
            return RunOutcome("error", error=f"the example has no {exc.args[0]} for the command")
        payload = json.dumps(example.get("input"), ensure_ascii=False, default=str)
    else:
        python = str(task.python or sys.executable)
        argv = [python, "-c", _WORKER, str(task.function)]
        wanted = {k: example.get(k) for k in ("input", "expected", "metadata")}
        payload = json.dumps(wanted, ensure_ascii=False, default=str)
    full_env = {**os.environ, **task.env, **env}
    if "OTEL_SERVICE_NAME" not in full_env and "service.name" not in full_env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        full_env["OTEL_SERVICE_NAME"] = task.name
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=task.cwd,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return RunOutcome("error", error=f"cannot start {argv[0]}: {exc}")
    if processes is not None:
        processes.add(proc.pid)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = _Capped(proc.stdout, max_output_bytes)
    err = _Capped(proc.stderr, STDERR_TAIL, tail=True)

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(payload.encode())
            proc.stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _killpg(proc.pid)  # the timeout's kill, and what the task left running
        proc.wait()
        if processes is not None:
            processes.discard(proc.pid)
    latency = (time.perf_counter() - started) * 1000
    stdout = out.result()
    stderr = _stderr_tail(err.result(), err.clipped)
    writer.join(timeout=1)
    code = proc.returncode
    if timed_out:
        return RunOutcome(
            "timeout", error=f"timed out after {timeout:g} s; killed", latency_ms=latency
        )
    if processes is not None and processes.cancelled.is_set() and code == -signal.SIGKILL:
        return RunOutcome(
            "crash", error="cancelled: the experiment was stopped", latency_ms=latency
        )
    if code < 0:
        try:
            why = signal.Signals(-code).name
        except ValueError:
            why = f"signal {-code}"
        tail = f": {stderr}" if stderr else ""
        return RunOutcome("crash", error=f"killed by {why}{tail}", latency_ms=latency)
    if code > 0 and task.kind == "python":  # the worker answers, exit 0, whatever fn does
        return RunOutcome(
            "crash",
            error=f"the worker died (exit status {code}) without answering: "
            f"{stderr or '(no stderr)'}",
            latency_ms=latency,
        )
    if code > 0:
        return RunOutcome(
            "error", error=f"exit status {code}: {stderr or '(no stderr)'}", latency_ms=latency
        )
    if out.clipped:
        return RunOutcome(
            "bad_output",
            output=stdout.decode(errors="replace"),
            error=f"output clipped: {out.total} bytes, more than the {max_output_bytes} kept "
            "(setting experiment_output_max_bytes)",
            latency_ms=latency,
        )
    if task.kind == "python":
        return _worker_answer(stdout, stderr, latency)
    return _parsed(task.output, stdout, latency)


def _parsed(mode: str, data: bytes, latency: float) -> RunOutcome:
    text = data.decode(errors="replace")
    if mode == "text":
        return RunOutcome("ok", output=text, latency_ms=latency)
    try:
        return RunOutcome("ok", output=orjson.loads(data), latency_ms=latency)
    except orjson.JSONDecodeError:
        if mode == "json":
            shown = text[:200] + ("…" if len(text) > 200 else "")
            return RunOutcome(
                "bad_output", output=text, error=f"not JSON: {shown!r}", latency_ms=latency
            )
        return RunOutcome("ok", output=text.rstrip("\n"), latency_ms=latency)


def _worker_answer(data: bytes, stderr: str, latency: float) -> RunOutcome:
    try:
        answer = orjson.loads(data.splitlines()[-1]) if data.strip() else None
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        tail = f": {stderr}" if stderr else ""
        return RunOutcome(
            "crash", error=f"the worker died without answering{tail}", latency_ms=latency
        )
    if "error" in answer:
        return RunOutcome("error", error=str(answer["error"]), latency_ms=latency)
    if "bad_output" in answer:
        return RunOutcome("bad_output", error=str(answer["bad_output"]), latency_ms=latency)
    return RunOutcome("ok", output=answer.get("output"), latency_ms=latency)


def _run_http(
    task: Task, example: Mapping[str, Any], env: Mapping[str, str], timeout: float, cap: int
) -> RunOutcome:
    import httpx2

    headers = dict(task.headers)
    if "TRACEPARENT" in env:
        headers["traceparent"] = env["TRACEPARENT"]
    resource = env.get("OTEL_RESOURCE_ATTRIBUTES")
    if resource:
        headers["baggage"] = resource
    started = time.perf_counter()
    body = bytearray()
    try:
        with (
            httpx2.Client(timeout=timeout, trust_env=False) as client,
            client.stream("POST", str(task.url), json=example.get("input"), headers=headers) as r,
        ):
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > cap:
                    break
            status = r.status_code
    except httpx2.TimeoutException:
        latency = (time.perf_counter() - started) * 1000
        return RunOutcome("timeout", error=f"timed out after {timeout:g} s", latency_ms=latency)
    except httpx2.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        return RunOutcome("error", error=f"POST {task.url} failed: {exc}", latency_ms=latency)
    latency = (time.perf_counter() - started) * 1000
    if len(body) > cap:
        return RunOutcome(
            "bad_output", error=f"answer larger than the {cap} bytes kept", latency_ms=latency
        )
    if status >= 400:
        text = bytes(body).decode(errors="replace")[-STDERR_TAIL:]
        return RunOutcome("error", error=f"HTTP {status}: {text}", latency_ms=latency)
    parsed = _parsed("json", bytes(body), latency)
    if parsed.status != "ok" or not task.output_path:
        return parsed
    found: Any = parsed.output
    for part in task.output_path.split("."):
        if isinstance(found, dict) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            return RunOutcome(
                "bad_output",
                output=parsed.output,
                error=f"the answer has no {task.output_path!r} (output_path)",
                latency_ms=latency,
            )
    return RunOutcome("ok", output=found, latency_ms=latency)
