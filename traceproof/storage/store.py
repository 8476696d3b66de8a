"""The store: one DuckDB file, one writer thread, read cursors.

Writes go through :meth:`Store.submit`, which queues an Arrow table of spans for the writer
thread and returns a future. The writer groups queued batches into one transaction, inserts the
spans (ignoring ones already stored), merges the per-trace aggregates, commits, and only then
resolves each batch's future: a batch is acknowledged once its commit is in the write-ahead log
on disk. The queue is bounded in batches and bytes: when it is full, ``submit`` raises
:class:`Busy` at once instead of buffering without limit.

Reads use :meth:`Store.reader`, a cursor of its own; DuckDB's MVCC means a read sees the last
committed state and is not blocked by ingest.

Memory: writes not yet checkpointed stay in DuckDB's buffer pool (and cannot be evicted), so the
writer checkpoints when the write-ahead log reaches ``duckdb_checkpoint_threshold`` (DuckDB
does that at commit) and also as soon as ingest has been idle for
``duckdb_idle_checkpoint_seconds``; queries then get the pool, and spill to the store's private
temp directory beyond it. After each checkpoint (and every ``malloc_trim_bytes`` of committed
spans) the writer returns the C heap's free pages to the system (:mod:`traceproof.memory`).

Failures: when DuckDB reports that it cannot continue (a fatal error, an invalidated database,
a failed rollback), :meth:`health` turns unhealthy, reads and new writes get
:class:`StoreUnavailable` (retryable), and the writer closes the file, opens it again (which
also repairs the trace index) and writes the batches that were not acknowledged. Writing again
is safe because a write skips spans already stored. If reopening fails
``store_reopen_attempts`` times the store stays ``failed``; :meth:`wait_failed` lets the server
exit for a supervisor to restart it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from traceproof.memory import Trimmer
from traceproof.settings import Settings
from traceproof.storage.columns import SPAN_COLUMNS, SPAN_SCHEMA
from traceproof.storage.connection import CATALOG, open_connection
from traceproof.storage.exceptions import Busy, StoreClosed, StoreError, StoreUnavailable
from traceproof.storage.folder import make_store_folder
from traceproof.storage.reader import Reader
from traceproof.storage.writes import (
    FatalState,
    FaultHook,
    WriteResult,
    first_line,
    is_fatal,
    run_in_transaction,
    write_transaction,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StoreHealth:
    """Whether the store works now. ``state``: ``ok``; ``reopening`` after a fatal DuckDB error
    (reads and writes answer :class:`StoreUnavailable` meanwhile); ``failed`` when reopening
    gave up (restart the process); ``closed``. ``detail`` says what happened (no paths)."""

    ok: bool
    state: str
    detail: str


@dataclass
class _Pending:
    table: pa.Table
    future: Future[WriteResult] = field(default_factory=Future)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)


@dataclass
class _Job:
    """A write other than spans (annotations, configs, definitions): ``run`` executes it on the
    writer's cursor inside one transaction; the future gets its return value after COMMIT."""

    run: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any] = field(default_factory=Future)
    nbytes: int = 0


_STOP = object()


class Store:
    """A traceproof store: one DuckDB file owned by this process.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager), which drains the
    write queue first.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self._conn: duckdb.DuckDBPyConnection | None = conn
        self._conn_lock = threading.Lock()  # guards _conn, _readers and _health
        self._readers: set[duckdb.DuckDBPyConnection] = set()
        self._health = StoreHealth(True, "ok", "")
        self._failed = threading.Event()
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._queue: deque[_Pending | _Job | object] = deque()
        self._pending_bytes = 0
        self._closed = False
        self._reopen_cause: BaseException | None = None  # a reader saw a fatal error
        self._dirty = False  # committed since the last checkpoint
        self._wcursor: duckdb.DuckDBPyConnection | None = None
        #: Returns freed heap pages to the system (writer thread only; see traceproof.memory).
        self._trimmer = Trimmer(settings.malloc_trim_bytes)
        #: Test seam: see :data:`traceproof.storage.writes.FaultHook`.
        self._fault: FaultHook | None = None
        self._writer = threading.Thread(target=self._run_writer, name="traceproof-writer")
        self._writer.daemon = True
        self._writer.start()

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str | None = None, settings: Settings | None = None) -> Store:
        """Open (creating if needed) the store at ``path``, bring its schema up to date and
        repair a trace index that disagrees with the spans.

        Raises :class:`StoreLocked` when another process holds the file.
        """
        settings = settings or Settings()
        db_path = Path(path if path is not None else settings.db)
        make_store_folder(db_path)  # with .traceproof/.gitignore in the default layout
        return cls(open_connection(db_path, settings), db_path, settings)

    def close(self) -> None:
        """Write everything already queued, stop the writer and close the file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.append(_STOP)
            self._cond.notify_all()
        self._closing.set()
        self._writer.join()
        with self._conn_lock:
            conn, self._conn = self._conn, None
            if self._health.state != "failed":
                self._health = StoreHealth(False, "closed", "The store is closed.")
        if conn is not None:
            with contextlib.suppress(duckdb.Error):
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> StoreHealth:
        """Whether the store can read and write now (``state``: ok, reopening, failed, closed)."""
        return self._health

    def wait_failed(self, timeout: float | None = None) -> bool:
        """Block until the store has failed for good (reopening gave up); False on timeout."""
        return self._failed.wait(timeout)

    # -- writes ---------------------------------------------------------------------------------

    def submit(self, table: pa.Table, *, wait: float | None = 0.0) -> Future[WriteResult]:
        """Queue spans for the writer; the future resolves once they are committed.

        ``table`` must have :data:`SPAN_SCHEMA`. With ``wait=0`` (the default) a full queue
        raises :class:`Busy` at once; otherwise waits up to ``wait`` seconds (``None``: forever)
        for room. A batch larger than the byte budget is accepted when the queue is empty, so
        no single batch is refused forever. While the store is unhealthy it raises
        :class:`StoreUnavailable` (a :class:`Busy`) at once.
        """
        if table.schema != SPAN_SCHEMA:
            table = table.select(list(SPAN_COLUMNS)).cast(SPAN_SCHEMA)
        item = _Pending(table)
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise StoreClosed()
                self._raise_if_unhealthy()
                if self._has_room(item.nbytes):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Busy(self.settings.retry_after_seconds)
                self._cond.wait(remaining)
            self._queue.append(item)
            self._pending_bytes += item.nbytes
            self._cond.notify_all()
        return item.future

    def write(self, table: pa.Table, *, wait: float | None = None) -> WriteResult:
        """Queue spans and block until they are committed."""
        return self.submit(table, wait=wait).result()

    def run_write(
        self, run: Callable[[duckdb.DuckDBPyConnection], T], *, wait: float | None = None
    ) -> T:
        """Run ``run(cursor)`` on the writer thread in one transaction, after the writes queued
        before it, and return its result once committed. What it raises rolls the transaction
        back (nothing of it is stored) and is raised here; a ``duckdb.Error`` becomes a
        :class:`StoreError`. For the writes of :mod:`traceproof.storage.annotations`: a second
        item type on the same queue, never a second connection."""
        job = _Job(run)
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise StoreClosed()
                self._raise_if_unhealthy()
                if self._has_room(0):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Busy(self.settings.retry_after_seconds)
                self._cond.wait(remaining)
            self._queue.append(job)
            self._cond.notify_all()
        result: T = job.future.result()
        return result

    def _has_room(self, nbytes: int) -> bool:
        if not self._queue:
            return True
        return (
            len(self._queue) < self.settings.queue_max_batches
            and self._pending_bytes + nbytes <= self.settings.queue_max_bytes
        )

    def _raise_if_unhealthy(self) -> None:
        health = self._health
        if not health.ok and health.state != "closed":
            raise StoreUnavailable(health.detail, self.settings.retry_after_seconds)

    def _take_group(self) -> tuple[list[_Pending] | _Job, bool]:
        """Block for the next batch, then take whatever else is queued up to the commit size.

        Returns an empty group without waiting for a batch when a reopen was requested, or
        when ingest has been idle for ``duckdb_idle_checkpoint_seconds`` since a commit.
        """
        idle = self.settings.duckdb_idle_checkpoint_seconds
        with self._cond:
            while not self._queue and self._reopen_cause is None:
                if not self._dirty:
                    self._cond.wait()
                elif not self._cond.wait(idle) and not self._queue:
                    return [], False
            if self._queue and isinstance(self._queue[0], _Job):
                job = self._queue.popleft()
                assert isinstance(job, _Job)
                return job, False
            group: list[_Pending] = []
            spans = 0
            stop = False
            while self._queue and spans < self.settings.commit_max_spans:
                if self._queue and isinstance(self._queue[0], _Job):
                    break  # spans queued before it commit first; the job goes next
                item = self._queue.popleft()
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, _Pending)
                group.append(item)
                spans += item.table.num_rows
            return group, stop

    def _release(self, group: list[_Pending]) -> None:
        with self._cond:
            self._pending_bytes -= sum(item.nbytes for item in group)
            self._cond.notify_all()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own on the store (cursors start in the in-memory catalog)."""
        with self._conn_lock:
            if self._conn is None or not self._health.ok:
                raise StoreUnavailable(self._health.detail, self.settings.retry_after_seconds)
            cursor = self._conn.cursor()
        try:
            cursor.execute(f"USE {CATALOG}")
        except BaseException:
            cursor.close()
            raise
        return cursor

    def _run_writer(self) -> None:
        try:
            self._wcursor = self._cursor()
            while True:
                group, stop = self._take_group()
                cause = self._reopen_cause
                if cause is not None and self._health.state != "failed":
                    self._recover(cause)
                if isinstance(group, _Job):
                    self._run_job(group)
                    self._release([])
                elif group:
                    self._commit_group(group)
                    self._release(group)
                elif self._dirty and not stop:
                    self._idle_checkpoint()
                if stop:
                    return
        finally:
            self._close_writer_cursor()

    def _close_writer_cursor(self) -> None:
        cursor, self._wcursor = self._wcursor, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):
                cursor.close()

    def _commit_group(self, group: list[_Pending], attempt: int = 0) -> None:
        if self._wcursor is None:  # the store failed and could not be reopened
            for item in group:
                item.future.set_exception(StoreUnavailable(self._health.detail, 0))
            return
        try:
            results = write_transaction(self._wcursor, [item.table for item in group], self._fault)
        except FatalState as exc:
            log.error("write failed with a fatal DuckDB error: %s", exc)
            if attempt < self.settings.store_write_retries and self._recover(exc.cause):
                # The batches were not acknowledged: write them again. Spans that did reach
                # the file are skipped, so nothing is stored twice.
                self._commit_group(group, attempt + 1)
                return
            for item in group:
                item.future.set_exception(
                    StoreUnavailable(
                        f"The store failed while writing this batch ({exc}); it was not "
                        "acknowledged and may not be stored.",
                        self.settings.retry_after_seconds,
                    )
                )
            return
        except duckdb.OutOfMemoryException as exc:
            if attempt == 0:
                # Free what pending writes hold in memory, then try once more.
                log.warning("write ran out of memory; checkpointing and retrying: %s", exc)
                self._checkpoint()
                self._commit_group(group, attempt + 1)
                return
            self._fail_group(group, exc)
            return
        except duckdb.Error as exc:
            self._fail_group(group, exc)
            return
        self._dirty = True
        for item, result in zip(group, results, strict=True):
            item.future.set_result(result)
        self._trimmer.add(sum(item.nbytes for item in group))

    def _run_job(self, job: _Job) -> None:
        if self._wcursor is None:
            job.future.set_exception(StoreUnavailable(self._health.detail, 0))
            return
        try:
            result = run_in_transaction(self._wcursor, job.run)
        except FatalState as exc:
            log.error("a write failed with a fatal DuckDB error: %s", exc)
            self._recover(exc.cause)
            job.future.set_exception(
                StoreUnavailable(
                    f"The store failed while writing ({exc}); nothing of this write was stored.",
                    self.settings.retry_after_seconds,
                )
            )
            return
        except duckdb.Error as exc:
            log.error("write failed: %s", exc)
            job.future.set_exception(
                StoreError(
                    f"The store could not write this: {first_line(exc)}. Nothing was stored."
                )
            )
            return
        except BaseException as exc:  # the job's own refusal (an InvalidAnnotation, NotFound…)
            job.future.set_exception(exc)
            return
        self._dirty = True
        job.future.set_result(result)

    def _fail_group(self, group: list[_Pending], exc: duckdb.Error) -> None:
        if len(group) > 1:
            # One bad batch must not sink the others queued with it: retry one by one.
            for item in group:
                self._commit_group([item])
            return
        log.error("write failed: %s", exc)
        group[0].future.set_exception(
            StoreError(f"The store could not write this batch: {exc}. Nothing was stored.")
        )

    def _checkpoint(self) -> None:
        self._dirty = False
        if self._wcursor is None:
            return
        try:
            self._wcursor.execute("CHECKPOINT")
        except duckdb.Error as exc:
            if is_fatal(exc):
                self._recover(exc)
            else:
                log.info("checkpoint skipped: %s", first_line(exc))
        # A checkpoint frees what recent writes held (and the idle one ends a burst of ingest):
        # give the heap's free pages back too.
        self._trimmer.now()

    def _idle_checkpoint(self) -> None:
        """Ingest went idle: checkpoint once the write-ahead log holds enough to matter, so
        recent writes stop holding DuckDB memory that queries need."""
        threshold = self.settings.duckdb_idle_checkpoint_bytes
        wal = self.path.with_name(self.path.name + ".wal")
        try:
            size = wal.stat().st_size
        except OSError:
            size = 0
        if threshold and size >= threshold:
            self._checkpoint()
        else:
            self._dirty = False
            self._trimmer.now()

    # -- failure and recovery -------------------------------------------------------------------

    def _report_fatal(self, exc: BaseException) -> None:
        """A reader saw DuckDB fail for good: mark the store unhealthy, wake the writer."""
        with self._conn_lock:
            if self._health.ok:
                self._health = StoreHealth(False, "reopening", _reopening(exc))
        with self._cond:
            if self._reopen_cause is None:
                self._reopen_cause = exc
            self._cond.notify_all()

    def _reader_error(self, exc: BaseException) -> StoreError | None:
        """What a read's DuckDB error means for the store (None: an ordinary query error)."""
        if is_fatal(exc):
            log.error("a read hit a fatal DuckDB error: %s", first_line(exc))
            self._report_fatal(exc)
        elif self._health.ok and not isinstance(exc, duckdb.ConnectionException):
            return None
        if self._closed:
            return StoreClosed()
        return StoreUnavailable(
            self._health.detail or "The store is reopening.", self.settings.retry_after_seconds
        )

    def _recover(self, cause: BaseException) -> bool:
        """Close the database and open it again (migrate, repair, lock down); True on success.

        Runs in the writer thread. Readers in flight are interrupted; new reads and writes get
        :class:`StoreUnavailable` until the store is open again.
        """
        with self._conn_lock:
            self._health = StoreHealth(False, "reopening", _reopening(cause))
            conn, self._conn = self._conn, None
            readers = list(self._readers)
        for cursor in readers:
            with contextlib.suppress(Exception):
                cursor.interrupt()
        self._close_writer_cursor()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        attempts = self.settings.store_reopen_attempts
        error: BaseException = cause
        for attempt in range(1, attempts + 1):
            try:
                if self._fault is not None:
                    self._fault("reopen")
                conn = open_connection(self.path, self.settings)
            except Exception as exc:  # a StoreError, or what DuckDB or the fault hook raised
                error = exc
                log.error(
                    "reopening the store failed (attempt %d of %d): %s", attempt, attempts, exc
                )
                if attempt < attempts:
                    self._closing.wait(self.settings.store_reopen_backoff_seconds * attempt)
                continue
            with self._conn_lock:
                self._conn = conn
                self._health = StoreHealth(True, "ok", "")
            with self._cond:
                self._reopen_cause = None
            self._wcursor = self._cursor()
            log.warning("the store was reopened after a fatal error (attempt %d)", attempt)
            return True
        detail = (
            f"The store failed ({first_line(cause)}) and could not be reopened after "
            f"{attempts} attempts ({first_line(error)}). Restart traceproof."
        )
        log.critical(detail)
        with self._conn_lock:
            self._health = StoreHealth(False, "failed", detail)
        with self._cond:
            self._reopen_cause = None
            self._cond.notify_all()
        self._failed.set()
        return False

    # -- reads ----------------------------------------------------------------------------------

    @contextmanager
    def reader(self, timeout: float | None = None) -> Iterator[Reader]:
        """A read cursor of its own, seeing the last committed state. Each query is
        interrupted after ``timeout`` seconds (default: the ``sql_timeout_seconds`` setting).

        Raises :class:`StoreUnavailable` (retryable) while the store reopens after a failure.
        """
        if self._closed:
            raise StoreClosed()
        try:
            cursor = self._cursor()
        except duckdb.Error as exc:
            raise self._reader_error(exc) or StoreError(
                f"Could not read the store: {first_line(exc)}."
            ) from None
        with self._conn_lock:
            self._readers.add(cursor)
        try:
            yield Reader(
                cursor,
                self.settings.sql_timeout_seconds if timeout is None else timeout,
                on_error=self._reader_error,
            )
        finally:
            with self._conn_lock:
                self._readers.discard(cursor)
            with contextlib.suppress(duckdb.Error):
                cursor.close()


def _reopening(cause: BaseException) -> str:
    return (
        f"The store hit a fatal DuckDB error ({first_line(cause)}) and is reopening its file; "
        "retry shortly."
    )
