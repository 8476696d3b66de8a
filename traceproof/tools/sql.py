"""The ``sql`` and ``describe_schema`` tools: read-only SQL over the store, for a model.

The sandbox is the store's: every query is checked to be exactly one SELECT over the store's
tables and runs on a DuckDB instance that cannot touch files or the network, under a time limit
(:meth:`Reader.select`). The query is wrapped so that long values are clipped inside DuckDB and
the rows fetched into Python stop at a character budget (``sql_max_fetch_chars``): a query of
huge values costs the server a bounded amount of memory, and the result says what was cut.
This module adds the row limit, JSON-safe values and the response budget;
``describe_schema``'s text lives in :mod:`traceproof.tools.schema_doc`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.tools.common import JsonValue, MaxChars, ToolFailure, budget, size
from traceproof.tools.schema_doc import SchemaDescription, describe
from traceproof.tools.tabular import fit_note, fit_rows

#: Room kept for the ``note`` when the rows are fitted into the budget.
_NOTE_ROOM = 400


class SqlResult(BaseModel):
    columns: list[str] = Field(description="Column names, in order.")
    types: list[str] = Field(description="DuckDB type of each column.")
    rows: list[list[JsonValue]] = Field(
        description="Rows as lists of JSON values (timestamps ISO 8601, UTC)."
    )
    row_count: int = Field(description="Rows returned here.")
    truncated: bool = Field(
        description="True when the query has more rows than returned (row limit or budget)."
    )
    clipped_cells: int = Field(description="Cells cut short to fit the budget (marked '…[').")
    note: str | None = Field(default=None, description="What was left out and how to get it.")


def sql(
    store: Store,
    *,
    query: Annotated[
        str,
        Field(
            description="One read-only SELECT (tables: describe_schema).",
            min_length=1,
        ),
    ],
    limit: Annotated[
        int | None, Field(description="Rows (default 200, at most 5000).", ge=1)
    ] = None,
    max_chars: MaxChars = None,
) -> SqlResult:
    """One read-only DuckDB SELECT. Read describe_schema first; prefer aggregate or the search
    tools when they fit."""
    settings = store.settings
    wanted = settings.sql_row_limit if limit is None else limit
    rows_limit = min(wanted, settings.sql_max_rows)
    chars = budget(max_chars, settings)
    with store.reader() as reader:
        found = reader.select(
            query,
            max_rows=rows_limit,
            room_chars=chars,
            max_fetch_chars=settings.sql_max_fetch_chars,
        )
    result = SqlResult(
        columns=found.columns,
        types=found.types,
        rows=[],
        row_count=0,
        truncated=found.truncated,
        clipped_cells=0,
    )
    room = chars - size(result) - _NOTE_ROOM
    fitted = fit_rows(found.columns, found.rows, room, _cell_marker, found.lengths)
    result.rows = fitted.rows
    result.row_count = len(fitted.rows)
    result.clipped_cells = fitted.clipped_cells
    result.truncated = found.truncated or fitted.dropped > 0
    note = _note(
        shown=len(fitted.rows),
        dropped=fitted.dropped,
        limit_hit=found.truncated,
        limit=rows_limit,
        capped=wanted > rows_limit,
        clipped=fitted.clipped_cells,
        fetch_capped=found.fetch_capped,
    )
    result.note = fit_note(note, chars - size(result))
    return result


def _cell_marker(column: str, kept: int, total: int) -> str:
    return (
        f"…[clipped: {total - kept:,} of {total:,} chars. Read on with "
        f"substr({column}, {kept + 1}, 10000), or get_span_data for span fields]"
    )


def _note(
    *,
    shown: int,
    dropped: int,
    limit_hit: bool,
    limit: int,
    capped: bool,
    clipped: int,
    fetch_capped: bool = False,
) -> str | None:
    parts: list[str] = []
    if fetch_capped:
        parts.append(
            f"Rows stopped after {shown + dropped} of the query's rows: their values were too "
            f"long to read more at once. Select fewer or shorter columns (left(col, 200)), or "
            f"page with OFFSET {shown}."
        )
        limit_hit = False
    if capped:
        parts.append(f"limit lowered to the maximum, {limit} rows.")
    if dropped:
        parts.append(
            f"{dropped} more fetched rows did not fit the response budget: add "
            f"OFFSET {shown}, select fewer or shorter columns (left(col, 200)), or raise max_chars."
        )
    if limit_hit:
        parts.append(
            f"The query has more than {limit} rows: aggregate in SQL, add filters, or page "
            f"with LIMIT/OFFSET."
        )
    if clipped:
        parts.append(f"{clipped} long cells were clipped (marked '…[clipped').")
    return " ".join(parts) or None


def describe_schema(
    store: Store,
    *,
    table: Annotated[
        str | None,
        Field(description="spans, traces, sessions or projects."),
    ] = None,
    max_chars: MaxChars = None,
) -> SchemaDescription:
    """The SQL tables: columns, how to query attributes, example queries. Read it before sql."""
    try:
        return describe(store, table=table, max_chars=budget(max_chars, store.settings))
    except KeyError as exc:
        raise ToolFailure(
            f"No table {table!r}. Use one of: {exc.args[0]}, or omit table.",
            code=ErrorCode.INVALID_ARGUMENT,
        ) from None
