"""The writer's transaction: spans and their trace-index rows, committed together or not at all.

Every statement of one write runs in one DuckDB transaction: the span insert, the projects and
the trace-index merge. If any fails the transaction is rolled back, so no span is stored without
its trace row and no trace row counts spans that are not stored. When DuckDB itself can no
longer continue (a :class:`duckdb.FatalException`, an invalidated database, a rollback that
failed) :class:`FatalState` is raised: the state of the open database is then unknown, and the
store must close and reopen the file before writing again (see ``Store``).

A write is idempotent: spans already stored are skipped and only the new ones are merged into
the trace index, so a batch may be written again after a failure whose outcome is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import duckdb
import pyarrow as pa

from traceproof.storage.columns import SPAN_COLUMNS
from traceproof.storage.schema import PREVIEW_CHARS

T = TypeVar("T")

#: A test's fault-injection hook: called with a point name ("begin", "spans", "commit",
#: "reopen"); it may raise (e.g. a real :class:`duckdb.FatalException`).
FaultHook = Callable[[str], None]


@dataclass(frozen=True)
class WriteResult:
    """What one batch did once committed."""

    received: int
    added: int

    @property
    def duplicates(self) -> int:
        return self.received - self.added


class FatalState(Exception):
    """DuckDB cannot continue on this database; close and reopen it."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(first_line(cause))


_FATAL_TEXT = ("database has been invalidated", "cannot continue operation", "failed to rollback")


def is_fatal(exc: BaseException) -> bool:
    """True for DuckDB errors after which the database instance cannot be trusted."""
    if isinstance(exc, FatalState | duckdb.FatalException):
        return True
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(t in text for t in _FATAL_TEXT)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".!") if text else type(exc).__name__


# Columns the span INSERT returns for the trace-index merge; input/output are clipped for roots.
_RETURNING = f"""
    project, trace_id, span_id, parent_span_id, name, span_kind, status, start_time, end_time,
    session_id, user_id, prompt_tokens, completion_tokens, total_tokens,
    CASE WHEN parent_span_id IS NULL THEN left(input_value, {PREVIEW_CHARS}) END AS input_value,
    CASE WHEN parent_span_id IS NULL THEN left(output_value, {PREVIEW_CHARS}) END AS output_value
"""

_ROOT_FILTER = "FILTER (WHERE parent_span_id IS NULL)"

TRACE_AGGREGATE = f"""
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
    INSERT INTO trace_index {TRACE_AGGREGATE}
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
ADD_PROJECTS = (
    "INSERT INTO projects SELECT DISTINCT project, ? FROM {source} ON CONFLICT DO NOTHING"
)


def write_transaction(
    cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table], fault: FaultHook | None = None
) -> list[WriteResult]:
    """Insert every table's spans and merge the trace index, in one transaction.

    The fast path inserts all tables at once and merges the trace index from them. When a span
    is already stored (a resend) or repeated within the group, the primary key refuses that
    insert; the transaction is rolled back and redone table by table, skipping stored spans.
    Raises :class:`FatalState` when DuckDB cannot continue; any other ``duckdb.Error`` means
    the transaction was rolled back and nothing of it is stored.
    """
    try:
        try:
            return _write_all_new(cursor, tables, fault)
        except duckdb.ConstraintException:
            return _write_skipping_stored(cursor, tables, fault)
    except duckdb.Error as exc:
        if is_fatal(exc):
            raise FatalState(exc) from exc
        raise


def _write_all_new(
    cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table], fault: FaultHook | None
) -> list[WriteResult]:
    batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    statements = (
        "BEGIN TRANSACTION",
        _INSERT_SPANS,
        ADD_PROJECTS.format(source="batch").replace("?", f"TIMESTAMP '{now}'"),
        _TRACE_MERGE.format(source="batch"),
        "COMMIT",
    )
    cursor.register("batch", batch)
    try:
        if fault is None:
            # One call for the whole transaction: the writer takes the GIL back once.
            cursor.execute(";\n".join(statements))
        else:  # the test seam: the same statements one by one, with the hook between them
            fault("begin")
            for statement in statements:
                if statement == "COMMIT":
                    fault("spans")
                cursor.execute(statement)
            fault("commit")
    except BaseException:
        _rollback(cursor)
        raise
    finally:
        cursor.unregister("batch")
    return [WriteResult(received=t.num_rows, added=t.num_rows) for t in tables]


def _write_skipping_stored(
    cursor: duckdb.DuckDBPyConnection, tables: list[pa.Table], fault: FaultHook | None
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
                now = datetime.now(UTC).replace(tzinfo=None)
                cursor.execute(ADD_PROJECTS.format(source="new_spans"), [now])
                cursor.execute(_TRACE_MERGE.format(source="new_spans"))
            finally:
                cursor.unregister("new_spans")
        if fault is not None:
            fault("spans")
    if fault is not None:
        fault("commit")
    return results


def run_in_transaction(
    cursor: duckdb.DuckDBPyConnection, run: Callable[[duckdb.DuckDBPyConnection], T]
) -> T:
    """``run(cursor)`` in one transaction: committed when it returns, rolled back when it
    raises (then re-raised). Raises :class:`FatalState` when DuckDB cannot continue."""
    try:
        with _transaction(cursor):
            return run(cursor)
    except duckdb.Error as exc:
        if is_fatal(exc):
            raise FatalState(exc) from exc
        raise


@contextmanager
def _transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        _rollback(cursor)
        raise
    cursor.execute("COMMIT")


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction. A rollback that fails leaves the database in an unknown
    state: raise :class:`FatalState` (chained to the error that caused the rollback)."""
    try:
        cursor.execute("ROLLBACK")
    except duckdb.TransactionException as exc:
        if "no transaction is active" in str(exc).lower():
            return  # the failed statement was BEGIN itself, or DuckDB already rolled back
        raise FatalState(exc) from exc
    except duckdb.Error as exc:
        raise FatalState(exc) from exc
