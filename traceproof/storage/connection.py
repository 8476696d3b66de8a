"""Opening the store's DuckDB file: configuration, schema, repair, sandbox.

:func:`open_connection` is what :meth:`Store.open` and the writer's reopen after a fatal error
both run: an in-memory DuckDB instance sized for this machine, the store file attached to it,
migrations applied, the trace index checked against the spans (and repaired), and the instance
locked down for untrusted SQL. Configuration that must hold for the process's lifetime (memory,
temp directory and its size) is set at connect time, before ``lock_configuration``.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from traceproof.settings import Settings
from traceproof.storage import owner
from traceproof.storage.exceptions import StoreError, StoreLocked
from traceproof.storage.schema import MIGRATIONS
from traceproof.storage.writes import ADD_PROJECTS, TRACE_AGGREGATE

log = logging.getLogger(__name__)

#: The store file's catalog name (``ATTACH ... AS store``).
CATALOG = "store"

_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<holder>.*?) \(PID (?P<pid>\d+)\)")
_MIB = 1024 * 1024


def open_connection(path: Path, settings: Settings) -> duckdb.DuckDBPyConnection:
    """Connect, attach, migrate, repair and lock down the store at ``path``.

    Raises :class:`StoreLocked` when another process holds the file, :class:`StoreError` when
    the file cannot be opened or prepared.
    """
    try:
        conn = _connect(path, duckdb_config(path, settings), settings.duckdb_row_group_size)
    except duckdb.IOException as exc:
        raise _locked_or_error(path, exc) from None
    except duckdb.Error as exc:
        raise StoreError(
            f"Could not open the store {path}: {exc}. Check that it is a traceproof "
            "DuckDB file, or pass --db to use another store."
        ) from None
    try:
        migrate(conn)
        repair(conn)
        _lock_down(conn)
    except duckdb.Error as exc:
        conn.close()
        raise StoreError(
            f"Could not prepare the schema of {path}: {exc}. The file may belong to "
            "another program; pass --db to use another store."
        ) from None
    return conn


def duckdb_config(
    path: Path, settings: Settings
) -> dict[str, str | bool | int | float | list[str]]:
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": f"{memory_limit_bytes(settings.duckdb_memory_limit, settings) // _MIB}MiB",
        "threads": str(settings.duckdb_threads),
        "checkpoint_threshold": settings.duckdb_checkpoint_threshold,
        "temp_directory": str(temp_directory(path, settings)),
        "max_temp_directory_size": settings.duckdb_max_temp_directory_size,
        "allocator_flush_threshold": settings.duckdb_allocator_flush_threshold,
        "allocator_background_threads": settings.duckdb_allocator_background_threads,
        "max_vacuum_tasks": settings.duckdb_max_vacuum_tasks,
    }
    return config


def temp_directory(path: Path, settings: Settings) -> Path | str:
    """Where DuckDB spills: ``<store file>.tmp/`` beside the store unless set ("" disables)."""
    if settings.duckdb_temp_directory == "auto":
        return path.with_name(path.name + ".tmp")
    return settings.duckdb_temp_directory


def memory_limit_bytes(limit: str, settings: Settings) -> int:
    """``limit`` in bytes: a DuckDB size (``"512MB"``, ``"2GB"``) or ``"auto"``, a fraction of
    this machine's memory (or of the container's limit, when lower) between a floor and a
    ceiling."""
    if limit.strip().lower() != "auto":
        return parse_size(limit)
    share = int(machine_memory_bytes() * settings.duckdb_memory_fraction)
    floor = parse_size(settings.duckdb_memory_min)
    ceiling = parse_size(settings.duckdb_memory_max)
    return max(floor, min(ceiling, share))


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup (v2 or v1) limit of this process when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    ):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def parse_size(text: str) -> int:
    """Bytes of a DuckDB-style size: ``512MB`` (10^6), ``1GiB`` (2^30), ``4096``."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (write e.g. 512MB or 2GB)")
    unit = (match[2] or "").upper()
    binary = "I" in unit
    unit = unit.replace("I", "").replace("B", "") or ""
    factor = (1024 ** "KMGT".index(unit) * 1024 if unit else 1) if binary else _UNITS[unit]
    return int(float(match[1]) * factor)


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
        # DuckDB draws a progress bar on stdout for any query past 2 s, piped or not: it corrupted
        # `ingest --json` on a 4M-span store, and over stdio it would corrupt the JSON-RPC stream.
        # A connection setting (not a global one); cursors inherit it.
        conn.execute("SET enable_progress_bar = false")
        conn.execute(f"ATTACH '{quoted}' AS {CATALOG} (ROW_GROUP_SIZE {row_group_size})")
        conn.execute(f"USE {CATALOG}")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: duckdb.DuckDBPyConnection) -> None:
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


# Traces whose trace_index row disagrees with the spans table: a row without spans, spans
# without a row, or a span count that differs (part of a trace's spans lost or added alone).
# One grouped scan of two key columns and a join with the (small) trace index.
_MISMATCHED_TRACES = """
    CREATE OR REPLACE TEMP TABLE repair_traces AS
    SELECT coalesce(s.project, t.project) AS project, coalesce(s.trace_id, t.trace_id) AS trace_id
    FROM (SELECT project, trace_id, count(*) AS n FROM spans GROUP BY project, trace_id) s
    FULL OUTER JOIN trace_index t ON s.project = t.project AND s.trace_id = t.trace_id
    WHERE s.n IS DISTINCT FROM t.span_count
"""

_REPAIR_SOURCE = (
    "(SELECT spans.* FROM spans SEMI JOIN repair_traces r "
    "ON spans.project = r.project AND spans.trace_id = r.trace_id)"
)


def repair(conn: duckdb.DuckDBPyConnection) -> int:
    """Make ``trace_index`` agree with ``spans``; returns how many traces were fixed.

    Rows of traces whose spans are missing are deleted; rows of traces whose spans are there but
    whose row is missing or counts other spans are rebuilt from the spans with the writer's own
    aggregate. A consistent store costs one grouped scan of ``spans(project, trace_id)``.
    """
    conn.execute(_MISMATCHED_TRACES)
    try:
        (count,) = conn.execute("SELECT count(*) FROM repair_traces").fetchone() or (0,)
        if not count:
            return 0
        conn.execute("BEGIN TRANSACTION")
        try:
            (orphans,) = conn.execute(
                "SELECT count(*) FROM repair_traces r WHERE NOT EXISTS (SELECT 1 FROM spans s "
                "WHERE s.project = r.project AND s.trace_id = r.trace_id)"
            ).fetchone() or (0,)
            conn.execute(
                "DELETE FROM trace_index t USING repair_traces r "
                "WHERE t.project = r.project AND t.trace_id = r.trace_id"
            )
            conn.execute(
                ADD_PROJECTS.format(source=_REPAIR_SOURCE), [datetime.now(UTC).replace(tzinfo=None)]
            )
            conn.execute(f"INSERT INTO trace_index {TRACE_AGGREGATE.format(source=_REPAIR_SOURCE)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.warning(
            "repaired the trace index: %d trace(s) disagreed with their spans "
            "(%d row(s) without spans deleted, %d rebuilt from their spans)",
            count,
            orphans,
            count - orphans,
        )
        return int(count)
    finally:
        conn.execute("DROP TABLE IF EXISTS repair_traces")


def _lock_down(conn: duckdb.DuckDBPyConnection) -> None:
    """From here on no query reaches a file (other than the attached store and DuckDB's own
    temp directory) or the network, loads an extension, or changes a setting: the ``sql``
    tool's sandbox, for every cursor."""
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
