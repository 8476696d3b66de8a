"""The store: one DuckDB file, one writer thread, read cursors.

Writes go through :meth:`Store.submit`, which queues an Arrow table of spans for the writer
thread and returns a future. The writer groups queued batches into one transaction, inserts the
spans (ignoring ones already stored), merges the per-trace aggregates, commits, and only then
resolves each batch's future. The queue is bounded in batches and bytes: when it is full,
``submit`` raises :class:`Busy` at once instead of buffering without limit.

Reads use :meth:`Store.reader`, a cursor of its own; DuckDB's MVCC means a read sees the last
committed state and is not blocked by ingest.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from traceproof.settings import Settings
from traceproof.storage import owner
from traceproof.storage.columns import SPAN_COLUMNS, SPAN_SCHEMA
from traceproof.storage.exceptions import Busy, StoreClosed, StoreError, StoreLocked
from traceproof.storage.folder import make_store_folder
from traceproof.storage.reader import Reader
from traceproof.storage.schema import MIGRATIONS, PREVIEW_CHARS

log = logging.getLogger(__name__)

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.*?) \(PID (?P<pid>\d+)\)")


@dataclass(frozen=True)
class WriteResult:
    """What one batch did once committed."""

    received: int
    added: int

    @property
    def duplicates(self) -> int:
        return self.received - self.added


@dataclass
class _Pending:
    table: pa.Table
    future: Future[WriteResult] = field(default_factory=Future)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)


_STOP = object()

# Columns the span INSERT returns for the trace-index merge; input/output are clipped for roots.
_RETURNING = f"""
    project, trace_id, span_id, parent_span_id, name, span_kind, status, start_time, end_time,
    session_id, user_id, prompt_tokens, completion_tokens, total_tokens,
    CASE WHEN parent_span_id IS NULL THEN left(input_value, {PREVIEW_CHARS}) END AS input_value,
    CASE WHEN parent_span_id IS NULL THEN left(output_value, {PREVIEW_CHARS}) END AS output_value
"""

_ROOT_FILTER = "FILTER (WHERE parent_span_id IS NULL)"

_TRACE_AGGREGATE = f"""
    SELECT
        project,
        trace_id,
        min(start_time) AS start_time,
        max(end_time) AS end_time,
        count(*) AS span_count,
        count(*) FILTER (WHERE status = 'ERROR') AS error_count,
        count(*) FILTER (WHERE span_kind = 'LLM') AS llm_span_count,
        coalesce(sum(prompt_tokens) FILTER (WHERE span_kind = 'LLM'), 0) AS prompt_tokens,
        coalesce(sum(completion_tokens) FILTER (WHERE span_kind = 'LLM'), 0)
            AS completion_tokens,
        coalesce(sum(total_tokens) FILTER (WHERE span_kind = 'LLM'), 0) AS total_tokens,
        min(session_id) AS session_id,
        min(user_id) AS user_id,
        min(start_time) FILTER (WHERE parent_span_id IS NULL) AS root_start,
        arg_min(span_id, (start_time, span_id)) {_ROOT_FILTER} AS root_span_id,
        arg_min(name, (start_time, span_id)) {_ROOT_FILTER} AS root_name,
        arg_min(span_kind, (start_time, span_id)) {_ROOT_FILTER} AS root_span_kind,
        arg_min(status, (start_time, span_id)) {_ROOT_FILTER} AS root_status,
        arg_min(left(input_value, {PREVIEW_CHARS}), (start_time, span_id)) {_ROOT_FILTER}
            AS root_input,
        arg_min(left(output_value, {PREVIEW_CHARS}), (start_time, span_id)) {_ROOT_FILTER}
            AS root_output,
        min(start_time) AS first_start,
        arg_min(span_id, (start_time, span_id)) AS first_span_id,
        arg_min(name, (start_time, span_id)) AS first_name
    FROM {{source}}
    GROUP BY project, trace_id
"""


def _earlier(prefix: str) -> str:
    """True when the incoming ``prefix`` span sorts before the stored one by (start, span_id)."""
    new, old = f"excluded.{prefix}", f"trace_index.{prefix}"
    return (
        f"{new}_start IS NOT NULL AND ({old}_start IS NULL OR {new}_start < {old}_start"
        f" OR ({new}_start = {old}_start AND {new}_span_id < {old}_span_id))"
    )


def _pick(prefix: str, columns: Sequence[str]) -> str:
    cond = _earlier(prefix)
    return ",\n".join(
        f"{c} = CASE WHEN {cond} THEN excluded.{c} ELSE trace_index.{c} END" for c in columns
    )


_TRACE_MERGE = f"""
    INSERT INTO trace_index {_TRACE_AGGREGATE}
    ON CONFLICT (project, trace_id) DO UPDATE SET
        start_time = least(trace_index.start_time, excluded.start_time),
        end_time = greatest(trace_index.end_time, excluded.end_time),
        span_count = trace_index.span_count + excluded.span_count,
        error_count = trace_index.error_count + excluded.error_count,
        llm_span_count = trace_index.llm_span_count + excluded.llm_span_count,
        prompt_tokens = trace_index.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = trace_index.completion_tokens + excluded.completion_tokens,
        total_tokens = trace_index.total_tokens + excluded.total_tokens,
        session_id = least(trace_index.session_id, excluded.session_id),
        user_id = least(trace_index.user_id, excluded.user_id),
        {
    _pick(
        "root",
        (
            "root_start",
            "root_span_id",
            "root_name",
            "root_span_kind",
            "root_status",
            "root_input",
            "root_output",
        ),
    )
},
        {_pick("first", ("first_start", "first_span_id", "first_name"))}
"""

_INSERT_SPANS = (
    f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) SELECT {', '.join(SPAN_COLUMNS)} FROM batch"
)
# The slow path, when some span is already stored: skip those and return the ones added.
_INSERT_NEW_SPANS = f"{_INSERT_SPANS} ON CONFLICT DO NOTHING RETURNING {_RETURNING}"
_ADD_PROJECTS = (
    "INSERT INTO projects SELECT DISTINCT project, ? FROM {source} ON CONFLICT DO NOTHING"
)


class Store:
    """A traceproof store: one DuckDB file owned by this process.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager), which drains the
    write queue first.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path, settings: Settings) -> None:
        self._conn = conn
        self.path = path
        self.settings = settings
        self._cond = threading.Condition()
        self._queue: deque[_Pending | object] = deque()
        self._pending_bytes = 0
        self._closed = False
        self._writer = threading.Thread(target=self._run_writer, name="traceproof-writer")
        self._writer.daemon = True
        self._writer.start()

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str | None = None, settings: Settings | None = None) -> Store:
        """Open (creating if needed) the store at ``path`` and bring its schema up to date.

        Raises :class:`StoreLocked` when another process holds the file.
        """
        settings = settings or Settings()
        db_path = Path(path if path is not None else settings.db)
        make_store_folder(db_path)  # with .traceproof/.gitignore in the default layout
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": settings.duckdb_memory_limit,
            "threads": str(settings.duckdb_threads),
            "checkpoint_threshold": settings.duckdb_checkpoint_threshold,
        }
        try:
            conn = _connect(db_path, config, settings.duckdb_row_group_size)
        except duckdb.IOException as exc:
            raise _locked_or_error(db_path, exc) from None
        except duckdb.Error as exc:
            raise StoreError(
                f"Could not open the store {db_path}: {exc}. Check that it is a traceproof "
                "DuckDB file, or pass --db to use another store."
            ) from None
        try:
            _migrate(conn)
            _lock_down(conn)
        except duckdb.Error as exc:
            conn.close()
            raise StoreError(
                f"Could not prepare the schema of {db_path}: {exc}. The file may belong to "
                "another program; pass --db to use another store."
            ) from None
        return cls(conn, db_path, settings)

    def close(self) -> None:
        """Write everything already queued, stop the writer and close the file."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._queue.append(_STOP)
            self._cond.notify_all()
        self._writer.join()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------------------------

    def submit(self, table: pa.Table, *, wait: float | None = 0.0) -> Future[WriteResult]:
        """Queue spans for the writer; the future resolves once they are committed.

        ``table`` must have :data:`SPAN_SCHEMA`. With ``wait=0`` (the default) a full queue
        raises :class:`Busy` at once; otherwise waits up to ``wait`` seconds (``None``: forever)
        for room. A batch larger than the byte budget is accepted when the queue is empty, so
        no single batch is refused forever.
        """
        if table.schema != SPAN_SCHEMA:
            table = table.select(list(SPAN_COLUMNS)).cast(SPAN_SCHEMA)
        item = _Pending(table)
        deadline = None if wait is None else time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise StoreClosed()
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

    def _has_room(self, nbytes: int) -> bool:
        if not self._queue:
            return True
        return (
            len(self._queue) < self.settings.queue_max_batches
            and self._pending_bytes + nbytes <= self.settings.queue_max_bytes
        )

    def _take_group(self) -> tuple[list[_Pending], bool]:
        """Block for the next batch, then take whatever else is queued up to the commit size."""
        with self._cond:
            while not self._queue:
                self._cond.wait()
            group: list[_Pending] = []
            spans = 0
            stop = False
            while self._queue and spans < self.settings.commit_max_spans:
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
        cursor = self._conn.cursor()
        cursor.execute(f"USE {_CATALOG}")
        return cursor

    def _run_writer(self) -> None:
        cursor = self._cursor()
        try:
            while True:
                group, stop = self._take_group()
                if group:
                    self._commit_group(cursor, group)
                    self._release(group)
                if stop:
                    return
        finally:
            cursor.close()

    def _commit_group(self, cursor: duckdb.DuckDBPyConnection, group: list[_Pending]) -> None:
        try:
            results = _write_transaction(cursor, [item.table for item in group])
        except duckdb.Error as exc:
            if len(group) > 1:
                # One bad batch must not sink the others queued with it: retry one by one.
                for item in group:
                    self._commit_group(cursor, [item])
                return
            log.exception("write failed")
            group[0].future.set_exception(
                StoreError(f"The store could not write this batch: {exc}. Nothing was stored.")
            )
            return
        for item, result in zip(group, results, strict=True):
            item.future.set_result(result)

    # -- reads ----------------------------------------------------------------------------------

    @contextmanager
    def reader(self, timeout: float | None = None) -> Iterator[Reader]:
        """A read cursor of its own, seeing the last committed state. Each query is
        interrupted after ``timeout`` seconds (default: the ``sql_timeout_seconds`` setting)."""
        if self._closed:
            raise StoreClosed()
        cursor = self._cursor()
        try:
            yield Reader(cursor, self.settings.sql_timeout_seconds if timeout is None else timeout)
        finally:
            cursor.close()


def _write_transaction(
    cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table]
) -> list[WriteResult]:
    """Insert every table's spans and merge the trace index, in one transaction.

    The fast path inserts all tables at once and merges the trace index from them. When a span
    is already stored (a resend) or repeated within the group, the primary key refuses that
    insert; the transaction is rolled back and redone table by table, skipping stored spans.
    """
    try:
        return _write_all_new(cursor, tables)
    except duckdb.ConstraintException:
        return _write_skipping_stored(cursor, tables)


def _write_all_new(cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table]) -> list[WriteResult]:
    batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    # One call for the whole transaction: the writer takes the GIL back once, not per statement.
    script = ";\n".join(
        (
            "BEGIN TRANSACTION",
            _INSERT_SPANS,
            _ADD_PROJECTS.format(source="batch").replace("?", f"TIMESTAMP '{now}'"),
            _TRACE_MERGE.format(source="batch"),
            "COMMIT",
        )
    )
    cursor.register("batch", batch)
    try:
        cursor.execute(script)
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.unregister("batch")
    return [WriteResult(received=t.num_rows, added=t.num_rows) for t in tables]


def _write_skipping_stored(
    cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table]
) -> list[WriteResult]:
    results: list[WriteResult] = []
    inserted: list[pa.Table] = []
    with _transaction(cursor):
        for table in tables:
            # A batch may repeat a span; keep its first copy, like a later resend would.
            cursor.register("batch", table)
            try:
                new = cursor.execute(_INSERT_NEW_SPANS).to_arrow_table()
            finally:
                cursor.unregister("batch")
            inserted.append(new)
            results.append(WriteResult(received=table.num_rows, added=new.num_rows))
        new_spans = pa.concat_tables(inserted)
        if new_spans.num_rows:
            cursor.register("new_spans", new_spans)
            try:
                _merge_traces(cursor, "new_spans")
            finally:
                cursor.unregister("new_spans")
    return results


def _merge_traces(cursor: duckdb.DuckDBPyConnection, source: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    cursor.execute(_ADD_PROJECTS.format(source=source), [now])
    cursor.execute(_TRACE_MERGE.format(source=source))


@contextmanager
def _transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


#: The store file's catalog name (``ATTACH ... AS store``).
_CATALOG = "store"


def _connect(
    path: Path, config: dict[str, str | bool | int | float | list[str]], row_group_size: int
) -> duckdb.DuckDBPyConnection:
    """Attach the store file with its row group size (a per-attach option, not a setting).

    Smaller row groups than DuckDB's 122,880 rows bound what a checkpoint holds in memory while
    it compresses a column of multi-kilobyte span attributes.
    """
    conn = duckdb.connect(":memory:", config=config)
    quoted = str(path).replace("'", "''")
    try:
        conn.execute(f"ATTACH '{quoted}' AS {_CATALOG} (ROW_GROUP_SIZE {row_group_size})")
        conn.execute(f"USE {_CATALOG}")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None)],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("applied migration %d: %s", migration.version, migration.name)


def _lock_down(conn: duckdb.DuckDBPyConnection) -> None:
    """From here on no query reaches a file (other than the attached store) or the network,
    loads an extension, or changes a setting: the ``sql`` tool's sandbox, for every cursor."""
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")


def _locked_or_error(path: Path, exc: duckdb.Error) -> StoreError:
    text = str(exc)
    match = _LOCK_RE.search(text)
    if not match and "lock" not in text.lower():
        return StoreError(f"Could not open the store {path}: {text}")
    pid = int(match["pid"]) if match else None
    holder = owner.read(path)
    if holder is not None and (pid is None or holder.pid == pid):
        return StoreLocked(path, pid=holder.pid, holder=holder.command, url=holder.url)
    return StoreLocked(path, pid=pid, holder=match["holder"] if match else None, url=None)
