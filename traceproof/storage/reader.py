"""Read access to the store: trusted queries built by tools, and untrusted SQL from agents.

Every read runs on a cursor of its own under a time limit (the query is interrupted when it runs
longer). The whole DuckDB instance is locked down once the store is open (no file or network
access, no extension loading, configuration locked; see ``store._lock_down``), so a query can
read the store's tables and nothing else. Untrusted text (the ``sql`` tool, ``where`` filters)
must also parse as exactly one ``SELECT`` statement.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import duckdb

from traceproof.storage.exceptions import (
    ForbiddenQuery,
    InvalidArgument,
    InvalidQuery,
    QueryTimeout,
    StoreError,
)

#: PRAGMA statements reach DuckDB as SELECTs over pragma functions; they are refused by name.
_PRAGMA = re.compile(r"^(?:\s|--[^\n]*\n|/\*.*?\*/)*pragma\b", re.IGNORECASE | re.DOTALL)

#: Table functions that change state although they appear in a SELECT.
_STATEFUL_FUNCTIONS = re.compile(r"\b(force_)?checkpoint\s*\(", re.IGNORECASE)


#: When the tool call running in this context must be done (``time.monotonic()``), if it has a
#: deadline: the time it waited for a worker already counts against its limit.
_DEADLINE: ContextVar[float | None] = ContextVar("traceproof_deadline", default=None)


@contextmanager
def call_deadline(at: float) -> Iterator[None]:
    """Run the block under a deadline: every query (and jq program) in it stops by ``at``."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left(limit: float | None) -> float | None:
    """Seconds a query may still run: ``limit`` (``None``: none), cut by the call's deadline."""
    at = _DEADLINE.get()
    if at is None:
        return limit
    left = max(0.0, at - time.monotonic())
    return left if limit is None else min(limit, left)


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query: ``truncated`` is exact (one row more than ``max_rows`` was fetched)."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def check_select(sql: str) -> None:
    """Raise unless ``sql`` is exactly one read-only SELECT statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InvalidQuery(f"The query does not parse: {_first_line(exc)}. Fix the SQL.") from None
    if len(statements) != 1:
        raise ForbiddenQuery(
            f"Send exactly one statement (got {len(statements)}). Split the work into "
            "separate calls."
        )
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if _PRAGMA.match(sql):
        kind = "PRAGMA"
    if kind != "SELECT":
        raise ForbiddenQuery(
            f"Only read-only SELECT queries are allowed (got {kind}). Writes, ATTACH, COPY, "
            "INSTALL, LOAD, SET and PRAGMA are refused; query the tables with SELECT."
        )
    if _STATEFUL_FUNCTIONS.search(sql):
        raise ForbiddenQuery("checkpoint() is not allowed. Query the tables with SELECT.")


def check_expression(text: str) -> None:
    """Raise unless ``text``, put inside parentheses, stays one expression: its parentheses,
    as DuckDB's own tokenizer sees them (strings and comments skipped), balance and never
    close more than they opened. So a ``where`` filter cannot close the query's parenthesis
    and append ``UNION SELECT …`` or other clauses."""
    depth = 0
    for position, kind in duckdb.tokenize(text):
        if kind != duckdb.token_type.operator:
            continue
        char = text[position]
        depth += (char == "(") - (char == ")")
        if depth < 0:
            break
    if depth != 0:
        raise InvalidQuery(
            "The expression's parentheses do not balance. Write one expression, e.g. "
            "\"status = 'ERROR' and (latency_ms > 1000 or model = 'gpt-4o')\"."
        )


class Reader:
    """Queries on one cursor, each under ``timeout`` seconds (``None``: no limit)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, timeout: float | None) -> None:
        self._cursor = cursor
        self._timeout = timeout

    def rows(
        self, sql: str, params: Sequence[Any] | None = None, *, untrusted: bool = False
    ) -> list[tuple[Any, ...]]:
        """All rows of ``sql``. ``untrusted=True`` when the text holds an agent's expression."""
        if untrusted:
            check_select(sql)
        with self._limited():
            return self._cursor.execute(sql, params).fetchall()

    def dicts(
        self, sql: str, params: Sequence[Any] | None = None, *, untrusted: bool = False
    ) -> list[dict[str, Any]]:
        if untrusted:
            check_select(sql)
        with self._limited():
            cur = self._cursor.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def select(
        self, sql: str, params: Sequence[Any] | None = None, *, max_rows: int
    ) -> QueryResult:
        """Run an agent's SELECT: at most ``max_rows`` rows, ``truncated`` exact."""
        check_select(sql)
        with self._limited():
            cur = self._cursor.execute(sql, params)
            columns = [d[0] for d in cur.description or ()]
            types = [str(d[1]) for d in cur.description or ()]
            rows = cur.fetchmany(max_rows + 1)
        return QueryResult(columns, types, rows[:max_rows], len(rows) > max_rows)

    @contextmanager
    def _limited(self) -> Iterator[None]:
        timer = None
        timeout = time_left(self._timeout)
        if timeout is not None and timeout <= 0:
            raise self._timed_out()
        if timeout is not None:
            timer = threading.Timer(timeout, self._cursor.interrupt)
            timer.daemon = True
            timer.start()
        try:
            yield
        except duckdb.InterruptException:
            raise self._timed_out() from None
        except UnicodeEncodeError:
            raise InvalidArgument(
                "A text argument is not valid Unicode (a lone surrogate such as \\ud800?). "
                "Send valid UTF-8 text."
            ) from None
        except duckdb.PermissionException:
            raise ForbiddenQuery(
                "Queries cannot read files or reach the network. Query the store's tables "
                "(call describe_schema)."
            ) from None
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException) as exc:
            raise InvalidQuery(f"{_first_line(exc)}. Call describe_schema for columns.") from None
        except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
            raise InvalidQuery(f"{_first_line(exc)}. Fix the query's values or casts.") from None
        except duckdb.Error as exc:
            raise StoreError(f"The query failed: {_first_line(exc)}.") from None
        finally:
            if timer is not None:
                timer.cancel()

    def _timed_out(self) -> QueryTimeout:
        limit = f"{self._timeout:g} s" if self._timeout is not None else "its time limit"
        return QueryTimeout(
            f"The query ran longer than {limit} (time spent waiting for a worker counts) and "
            "was stopped. Narrow it with filters (project, time window) or a LIMIT."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".!") if text else type(exc).__name__
