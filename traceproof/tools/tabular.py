"""Rows of query results as JSON within a budget: shared by the ``sql`` and ``aggregate`` tools.

DuckDB hands back Python values JSON cannot carry as they are: datetimes, Decimals, UUIDs,
blobs, NaN. Every cell goes through :func:`json_safe` so a row means the same thing in MCP
structured content, over HTTP and in the CLI's ``--json``. :func:`fit_rows` then keeps whole
rows while they fit the response budget, clipping cells too long to be worth their room.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

from traceproof.tools.common import iso_time


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: datetimes ISO 8601, Decimals as numbers, intervals as
    seconds; NaN/infinity, integers past 64 bits, blobs and anything else as text; lists,
    structs and maps converted inside."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def _decimal(value: Decimal) -> Any:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return json_safe(int(value))
    return float(value)


#: A clipped cell keeps at least this many characters, however tight the budget.
MIN_CELL_CHARS = 40


@dataclass(frozen=True)
class FittedRows:
    rows: list[list[Any]]
    dropped: int
    clipped_cells: int


def fit_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    room: int,
    marker: Callable[[str, int, int], str],
    lengths: Sequence[Sequence[int | None]] | None = None,
) -> FittedRows:
    """The leading rows of ``rows`` that fit in ``room`` characters of compact JSON.

    A cell longer than its share of what is left (at most half the room, at least
    :data:`MIN_CELL_CHARS`) is clipped and ends with ``marker(column, kept, total)``. Rows after
    the first that does not fit are dropped (a prefix keeps a continuation simple: OFFSET).
    ``lengths`` gives the full length of values already clipped before they got here."""
    kept: list[list[Any]] = []
    used = 2  # the list's brackets
    clipped = 0
    width = max(1, len(columns))
    for index, row in enumerate(rows):
        cap = max(MIN_CELL_CHARS, min((room - used) // width, room // 2))
        cells = []
        cut = 0
        totals = lengths[index] if lengths is not None else [None] * len(row)
        for column, value, total in zip(columns, row, totals, strict=True):
            cell, was_clipped = _clip_cell(json_safe(value), cap, column, marker, total)
            cut += was_clipped
            cells.append(cell)
        cost = _size(cells) + 1
        if used + cost > room:
            break
        kept.append(cells)
        used += cost
        clipped += cut
    return FittedRows(kept, len(rows) - len(kept), clipped)


def _clip_cell(
    value: Any,
    cap: int,
    column: str,
    marker: Callable[[str, int, int], str],
    total: int | None = None,
) -> tuple[Any, bool]:
    text = value if isinstance(value, str) else None
    if text is None and isinstance(value, list | dict):
        encoded = orjson.dumps(value).decode()
        text = encoded if len(encoded) > cap else None
    if text is None:
        return value, False
    full = max(len(text), total or 0)
    if full <= cap:
        return value, False
    kept = min(cap, len(text))
    return text[:kept] + marker(column, kept, full), True


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def fit_note(note: str | None, room: int) -> str | None:
    """``note`` cut to ``room`` characters of JSON (its quotes included), or ``None``."""
    if note is None or room < 10:
        return None
    return note if len(note) + 2 <= room else note[: room - 3] + "…"
