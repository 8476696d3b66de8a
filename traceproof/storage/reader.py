"""Read access to the store: trusted queries built by tools, and untrusted SQL from agents.

Every read runs on a cursor of its own under a time limit (the query is interrupted when it runs
longer). The whole DuckDB instance is locked down once the store is open (no file or network
access, no extension loading, configuration locked; see ``connection._lock_down``), so a query can
read the store's tables and nothing else. Untrusted text (the ``sql`` tool, ``where`` filters)
must also parse as exactly one ``SELECT`` statement.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
    QueryTooLarge,
    StoreError,
)

#: PRAGMA statements reach DuckDB as SELECTs over pragma functions; they are refused by name.
_PRAGMA = re.compile(r"^(?:\s|--[^\n]*\n|/\*.*?\*/)*pragma\b", re.IGNORECASE | re.DOTALL)

#: Table functions a query may call. Every other one is refused by name, wherever it appears
#: (quoted or not, comments between the name and its parenthesis): they read files
#: (``read_blob``, ``read_text``, ``read_csv``, ``read_duckdb``, ``glob``, ``parquet_*`` … —
#: ``enable_external_access=false`` still lets them read the store's own file and WAL), run SQL
#: text unchecked (``query``), or change state (``checkpoint``). Some names are also scalar or
#: aggregate functions (``repeat``, ``range``, ``unnest``, ``histogram``), hence allowed.
_TABLE_FUNCTIONS_ALLOWED = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "json_each",
        "json_tree",
        "histogram",
        "histogram_values",
        "summary",
        "duckdb_columns",
        "duckdb_tables",
        "duckdb_views",
        "duckdb_types",
        "duckdb_functions",
        "duckdb_keywords",
        "duckdb_schemas",
        "pg_timezone_names",
        "icu_calendar_names",
    }
)
_NAME = re.compile(r'"(?:[^"]|"")*"|[^\W\d][\w$]*')
_FILE_LIKE = re.compile(r"[./\\:~]")


@functools.cache
def _forbidden_functions() -> frozenset[str]:
    """DuckDB's table functions less the allowed ones, plus the stateful ones by any name."""
    with duckdb.connect() as conn:
        names = conn.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro')"
        ).fetchall()
    found = {name for (name,) in names} - _TABLE_FUNCTIONS_ALLOWED
    return frozenset(found | {"checkpoint", "force_checkpoint", "query", "read_duckdb"})


_SERIALIZER = threading.local()


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
    """Rows of a query: ``truncated`` is exact (one row more than ``max_rows`` was fetched).
    ``lengths`` gives, per row and column, the full length of a value clipped inside DuckDB
    (``None`` for values given whole); ``fetch_capped`` says the rows stopped at the character
    budget of one fetch, before the row limit."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    lengths: list[list[int | None]] | None = None
    fetch_capped: bool = False


#: A clipped value keeps at least this many characters (as the response fitting does).
MIN_CELL_CHARS = 40
#: Rows fetched from DuckDB at a time.
_FETCH_ROWS = 64
#: Types whose values are small whatever the query: returned as they are.
_SMALL_TYPES = re.compile(
    r"^(BOOLEAN|U?(TINY|SMALL|HUGE|BIG)?INT(EGER)?|UHUGEINT|FLOAT|REAL|DOUBLE|DECIMAL\(.*\)|"
    r"DATE|TIME|TIMESTAMP(_S|_MS|_NS)?|INTERVAL|UUID)$"
)
_TEXT_TYPES = ("VARCHAR", "JSON", "BLOB", "BIT")
_NESTED = re.compile(r"\[\d*\]$|^(STRUCT|MAP|UNION)\(")


def clipped_select(text: str, types: list[str], cap: int) -> tuple[str, list[str]]:
    """The agent's statement ``text`` wrapped so no value longer than ``cap`` characters leaves
    DuckDB, and no value needs pytz: per column, its shape in the wrapped row.

    - ``whole``: small scalars, as they are;
    - ``text``: strings, JSON, blobs and every other type as text, ``left(…, cap)`` plus its
      full length;
    - ``nested``: lists, structs and maps, whole while their text fits ``cap``, else their text
      clipped (two columns), plus the length;
    - time zones: ``TIMESTAMP WITH TIME ZONE`` as UTC without a zone (Python's DuckDB client
      needs pytz for zoned values); anything holding a zoned value inside, as text.
    """
    names = [f"c{i}" for i in range(len(types))]
    parts: list[str] = []
    shapes: list[str] = []
    for name, kind in zip(names, types, strict=True):
        if kind == "TIMESTAMP WITH TIME ZONE":
            parts.append(f"timezone('UTC', {name})")
            shapes.append("whole")
        elif _SMALL_TYPES.match(kind):
            parts.append(name)
            shapes.append("whole")
        elif _NESTED.search(kind) and "TIME ZONE" not in kind:
            as_text = f"CAST({name} AS VARCHAR)"
            parts.append(f"CASE WHEN length({as_text}) <= {cap} THEN {name} END")
            parts.append(f"CASE WHEN length({as_text}) > {cap} THEN left({as_text}, {cap}) END")
            parts.append(f"length({as_text})")
            shapes.append("nested")
        else:
            as_text = name if kind == "VARCHAR" else f"CAST({name} AS VARCHAR)"
            parts.append(f"left({as_text}, {cap})")
            parts.append(f"length({as_text})")
            shapes.append("text")
    aliases = ", ".join(names) or "c0"
    select = ", ".join(parts) or "*"
    return f"SELECT {select} FROM ({text}\n) AS q({aliases})", shapes


def _unwrap(
    raw: tuple[Any, ...], shapes: list[str]
) -> tuple[tuple[Any, ...], list[int | None], int]:
    """A wrapped row back to the agent's columns; the full lengths of clipped values; and the
    characters it holds (what the fetch budget counts)."""
    values: list[Any] = []
    lengths: list[int | None] = []
    chars = 0
    i = 0
    for shape in shapes:
        if shape == "whole":
            values.append(raw[i])
            lengths.append(None)
            chars += 16
            i += 1
            continue
        if shape == "nested":
            whole, clipped, length = raw[i], raw[i + 1], raw[i + 2]
            value = whole if clipped is None else clipped
            i += 3
        else:
            value, length = raw[i], raw[i + 1]
            i += 2
        shown = len(value) if isinstance(value, str) else (length or 0)
        values.append(value)
        lengths.append(length if isinstance(value, str) and length and length > shown else None)
        chars += 16 + min(shown, length or 0)
    return tuple(values), lengths, chars


def check_select(sql: str) -> str:
    """Raise unless ``sql`` is exactly one read-only SELECT statement over the store's tables;
    the statement's text (without a trailing ``;``)."""
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
    _check_functions(sql)
    _check_tables(sql)
    text = str(statements[0].query).rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _check_functions(sql: str) -> None:
    """Refuse a call of a forbidden table function, found by DuckDB's own tokenizer (so
    quotes, case and comments do not hide it; string literals are not names)."""
    tokens = duckdb.tokenize(sql)
    names = (duckdb.token_type.identifier, duckdb.token_type.keyword)
    forbidden = _forbidden_functions()
    for (position, kind), (following, next_kind) in itertools.pairwise(tokens):
        if kind not in names or next_kind != duckdb.token_type.operator:
            continue
        if sql[following] != "(":
            continue
        match = _NAME.match(sql, position)
        if match is None:
            continue
        name = match.group()
        if name.startswith('"'):
            name = name[1:-1].replace('""', '"')
        if name.lower() in forbidden:
            raise ForbiddenQuery(
                f"{name}() is not allowed: queries read the store's tables only (no files, no "
                "checkpoints, no SQL in strings). Query spans, traces, sessions or projects "
                "(call describe_schema)."
            )


def _check_tables(sql: str) -> None:
    """Refuse a table named by a string or path (``FROM 'file.csv'``, ``FROM "x/y.duckdb"``):
    DuckDB reads such a name as a file (a replacement scan), the store's own file included.
    The names come from DuckDB's parse tree; a statement it cannot serialise (PIVOT) is checked
    on its tokens instead: no string right after FROM or JOIN."""
    conn = getattr(_SERIALIZER, "conn", None)
    if conn is None:
        conn = _SERIALIZER.conn = duckdb.connect()
    (text,) = conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchone() or ("{}",)
    tree = json.loads(text)
    if tree.get("error"):
        tokens = duckdb.tokenize(sql)
        for (position, kind), (_, next_kind) in itertools.pairwise(tokens):
            word = sql[position : position + 4].lower()
            is_from = kind == duckdb.token_type.keyword and word in ("from", "join")
            if is_from and next_kind == duckdb.token_type.string_const:
                raise _file_table()
        return
    for node in _nodes(tree):
        if node.get("type") == "BASE_TABLE" and _FILE_LIKE.search(str(node.get("table_name"))):
            raise _file_table()


def _file_table() -> ForbiddenQuery:
    return ForbiddenQuery(
        "Tables named by a file path or string are not allowed: queries read the store's "
        "tables only. Query spans, traces, sessions or projects (call describe_schema)."
    )


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        timeout: float | None,
        *,
        on_error: Callable[[BaseException], StoreError | None] | None = None,
    ) -> None:
        self._cursor = cursor
        self._timeout = timeout
        # The store's say on an error first: a fatal DuckDB state or a reopen in progress is a
        # retryable StoreUnavailable, not the query's fault.
        self._on_error = on_error

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
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        max_rows: int,
        room_chars: int = 1_000_000,
        max_fetch_chars: int = 4_000_000,
    ) -> QueryResult:
        """Run an agent's SELECT: at most ``max_rows`` rows, ``truncated`` exact, and a bounded
        number of characters in Python whatever the values (see :func:`clipped_select`)."""
        text = check_select(sql)
        with self._limited():
            probe = self._cursor.sql(text, params=params)  # bound, not run: names and types
            columns = list(probe.columns)
            types = [str(t) for t in probe.types]
            cap = max(MIN_CELL_CHARS, min(room_chars // max(1, len(columns)), room_chars // 2))
            wrapped, shapes = clipped_select(text, types, cap + 1)
            cur = self._cursor.execute(wrapped, params)
            rows: list[tuple[Any, ...]] = []
            lengths: list[list[int | None]] = []
            fetched = 0
            capped = False
            while len(rows) <= max_rows:
                if fetched > max_fetch_chars:
                    capped = True
                    break
                chunk = cur.fetchmany(min(_FETCH_ROWS, max_rows + 1 - len(rows)))
                if not chunk:
                    break
                for raw in chunk:
                    row, row_lengths, chars = _unwrap(raw, shapes)
                    rows.append(row)
                    lengths.append(row_lengths)
                    fetched += chars
            more = len(rows) > max_rows or (capped and cur.fetchmany(1) != [])
        rows, lengths = rows[:max_rows], lengths[:max_rows]
        return QueryResult(columns, types, rows, more, lengths, capped and more)

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
            try:
                yield
            except duckdb.Error as exc:
                mapped = self._on_error(exc) if self._on_error is not None else None
                if mapped is not None:
                    raise mapped from None
                raise
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
        except duckdb.OutOfMemoryException as exc:
            raise QueryTooLarge(
                f"The query needs more memory than the store may use ({_first_line(exc)}). "
                "Aggregate in SQL (count, sum, GROUP BY) rather than building huge values, add a "
                "LIMIT, or clip long text (left(column, 200))."
            ) from None
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
