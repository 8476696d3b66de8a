"""Where the server's blocking work runs: ingest and queries never share a thread.

Three bounded thread pools per store, sized by settings:

- **ingest** (``ingest_threads``): OTLP decoding (CPU-bound Python). No tool call ever waits
  for it, and it never waits behind a tool call.
- **heavy** (``heavy_queries``): the calls that may scan much of the store or run an agent's
  code, and so may run for their whole time limit: ``sql``, ``jq``, ``aggregate``,
  ``search_spans`` with ``pattern`` or ``where``, ``search_traces`` with ``regex`` or ``where``.
  There are as many threads as slots. With every slot taken a heavy call waits for one, at most
  ``heavy_queue_max`` of them; one more answers ``[busy]`` at once (HTTP 503 with Retry-After),
  and so does a waiting call whose deadline passes before a slot frees, so an agent learns to
  retry instead of waiting out a pile of long queries.
- **light** (``query_threads``): everything else, each bounded by an index lookup or one trace
  (``list_projects``, ``get_trace_preview``, ``get_span_data``, ``find_in_trace``, searches
  without regex or where, ``describe_schema``, ``get_session``). At most ``query_queue_max``
  calls wait for a thread; more answer ``[busy]``.

Every call has one deadline, set when it arrives: ``sql_timeout_seconds`` later. Time spent
waiting for a thread counts against it (a call that waited 4 s of a 10 s limit has 6 s left for
its queries; see :func:`traceproof.storage.reader.call_deadline`), and a call that waits its
whole limit answers ``[busy]`` then, without running.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.reader import call_deadline

T = TypeVar("T")

#: Tools that are heavy whatever their arguments.
HEAVY_TOOLS = frozenset({"sql", "jq", "aggregate", "categorize_errors"})
#: Tools that are heavy when one of these arguments is given (not ``None``, not empty).
HEAVY_WHEN = {"search_spans": ("pattern", "where"), "search_traces": ("regex", "where")}


def check_text(value: Any, where: str = "arguments") -> None:
    """Refuse text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which
    JSON can carry but neither DuckDB nor orjson can), anywhere in a call's arguments."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TraceproofError(
                f"{where} holds text that is not valid Unicode (a lone surrogate such as "
                "\\ud800). Send valid UTF-8 text.",
                code=ErrorCode.INVALID_ARGUMENT,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, f"{key}" if where == "arguments" else f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, where)


def is_heavy(name: str, arguments: Any) -> bool:
    """Whether tool ``name`` called with ``arguments`` runs in a heavy slot."""
    if name in HEAVY_TOOLS:
        return True
    wanted = HEAVY_WHEN.get(name, ())
    return isinstance(arguments, dict) and any(arguments.get(key) for key in wanted)


class ServerBusy(TraceproofError):
    """No slot or thread for a tool call now; retry after ``retry_after`` seconds."""

    code = ErrorCode.BUSY

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Pools:
    """The thread pools and the heavy-query slots of one store's server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ingest = ThreadPoolExecutor(settings.ingest_threads, "traceproof-ingest")
        self.light = ThreadPoolExecutor(settings.query_threads, "traceproof-query")
        self.heavy = ThreadPoolExecutor(settings.heavy_queries, "traceproof-heavy")
        self._lock = threading.Lock()
        self._heavy_running = 0
        self._heavy_waiting = 0
        self._light_waiting = 0

    async def decode(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on an ingest thread."""
        return await asyncio.get_running_loop().run_in_executor(self.ingest, fn, *args)

    async def run_tool(self, name: str, arguments: Any, call: Callable[[], T]) -> T:
        """``call()`` (tool ``name`` with ``arguments``) on the light or heavy pool, under the
        call's deadline. Raises :class:`ServerBusy` when it cannot run now: its queue is full,
        or its deadline passes while it waits for a thread."""
        check_text(arguments)
        limit = self.settings.sql_timeout_seconds
        deadline = time.monotonic() + limit
        heavy = is_heavy(name, arguments)
        self._enter(name, heavy)
        started = threading.Event()

        def work() -> T:
            self._start(heavy)
            started.set()
            if time.monotonic() >= deadline:
                raise self._waited_too_long(name, limit)
            with call_deadline(deadline):
                return call()

        future: Future[T] = (self.heavy if heavy else self.light).submit(work)
        future.add_done_callback(lambda f: self._done(heavy, started.is_set()))
        waiting = asyncio.wrap_future(future)
        try:
            # Wait for a thread no longer than the deadline; once running, the call's queries
            # stop at the same deadline themselves.
            return await asyncio.wait_for(
                asyncio.shield(waiting), timeout=max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            if future.cancel():  # still waiting for a thread: it never runs
                raise self._waited_too_long(name, limit) from None
            return await waiting

    def _waited_too_long(self, name: str, limit: float) -> ServerBusy:
        return ServerBusy(
            f"{name} waited its whole time limit ({limit:g} s) for a worker and did not "
            "run. The server is overloaded; retry shortly.",
            self.settings.retry_after_seconds,
        )

    def _enter(self, name: str, heavy: bool) -> None:
        retry = self.settings.retry_after_seconds
        with self._lock:
            if heavy:
                slots, queue = self.settings.heavy_queries, self.settings.heavy_queue_max
                if self._heavy_running + self._heavy_waiting >= slots + queue:
                    raise ServerBusy(
                        f"{name} is a heavy query; all {slots} heavy query slots are taken "
                        f"and {self._heavy_waiting} heavy calls are waiting. Retry in {retry} "
                        "s, or narrow the call (a trace_id, a project, a time window) so it "
                        "runs as a light one.",
                        retry,
                    )
                self._heavy_waiting += 1
            else:
                if self._light_waiting >= self.settings.query_queue_max:
                    raise ServerBusy(
                        f"Too many tool calls are waiting ({self._light_waiting}). Retry in "
                        f"{retry} s.",
                        retry,
                    )
                self._light_waiting += 1

    def _start(self, heavy: bool) -> None:
        with self._lock:
            if heavy:
                self._heavy_waiting -= 1
                self._heavy_running += 1
            else:
                self._light_waiting -= 1

    def _done(self, heavy: bool, started: bool) -> None:
        with self._lock:
            if started:
                if heavy:
                    self._heavy_running -= 1
            elif heavy:  # cancelled while waiting
                self._heavy_waiting -= 1
            else:
                self._light_waiting -= 1

    def close(self) -> None:
        for pool in (self.ingest, self.light, self.heavy):
            pool.shutdown(wait=False, cancel_futures=True)


_POOLS: weakref.WeakKeyDictionary[Store, Pools] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def pools_for(store: Store) -> Pools:
    """The pools of ``store``'s server (made on first use; shared by OTLP, the API and MCP)."""
    with _POOLS_LOCK:
        found = _POOLS.get(store)
        if found is None:
            found = _POOLS[store] = Pools(store.settings)
        return found
