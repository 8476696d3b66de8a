"""Time windows for searches that read every span's text but want only the first page.

A regex over a span's text costs the same for every span, so a newest-first (or oldest-first)
search that scans the whole store to return 20 rows does almost all its work for nothing. Such
a search reads the store in disjoint ``start_time`` ranges instead, in the order of its sort
key, and stops once a page is full: the first range holds about ``search_window_spans`` spans
of the scope, each next one as many as all before it (so the ranges double, and a pattern that
matches rarely still reads each span once, as a full scan would). The ranges are cut at
approximate quantiles of ``start_time`` (one cheap pass over a narrow column); being
approximate only makes a range larger or smaller, never leaves a gap: together they cover
every instant, so the rows found are exactly those a full scan would sort first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from traceproof.storage import Reader

#: (lo, hi): ``lo <= start_time < hi``; ``None`` leaves that side open.
Window = tuple[datetime | None, datetime | None]

#: One window over everything.
WHOLE: list[Window] = [(None, None)]

_EPOCH = datetime(1970, 1, 1)
#: Fractions of the scope, from the newest (or oldest) end: 2^-1 ... 2^-30.
_FRACTIONS = [2.0**-k for k in range(1, 31)]


def time_windows(
    reader: Reader, scope: str, params: list[Any], *, descending: bool, first_spans: int
) -> list[Window]:
    """Disjoint start_time windows covering every instant, in scan order (newest first when
    ``descending``), sized by the spans of ``scope`` (a condition over ``spans``): the first
    holds about ``first_spans``, each next one about as many as all before it. One window over
    everything when the scope holds fewer than twice ``first_spans``."""
    quantiles = [1.0 - f for f in _FRACTIONS] if descending else _FRACTIONS
    listed = ", ".join(f"{q:.15f}" for q in quantiles)
    count, edges = reader.rows(
        f"SELECT count(*), approx_quantile(epoch_us(start_time), [{listed}]) FROM spans "
        f"WHERE {scope}",
        params,
    )[0]
    if count < 2 * first_spans or not edges:
        return WHOLE
    # Edge k leaves the newest (oldest) count * 2^-k spans on its side; keep the edges from the
    # one nearest first_spans on, every range then about doubles the spans read so far.
    chosen = [
        int(edge)
        for fraction, edge in zip(_FRACTIONS, edges, strict=True)
        if edge is not None and count * fraction >= first_spans
    ]
    cuts = sorted(set(chosen), reverse=descending)
    if not cuts:
        return WHOLE
    times = [_EPOCH + timedelta(microseconds=cut) for cut in cuts]
    if descending:  # [t1, ∞), [t2, t1), …, (-∞, tn)
        his: list[datetime | None] = [None, *times]
        los: list[datetime | None] = [*times, None]
        return list(zip(los, his, strict=True))
    los = [None, *times]  # (-∞, t1), [t1, t2), …, [tn, ∞)
    his = [*times, None]
    return list(zip(los, his, strict=True))


def window_sql(window: Window, column: str = "start_time") -> tuple[str, list[Any]]:
    """The condition of ``window`` over ``column``, and its parameters."""
    lo, hi = window
    conditions: list[str] = []
    params: list[Any] = []
    if lo is not None:
        conditions.append(f"{column} >= ?")
        params.append(lo)
    if hi is not None:
        conditions.append(f"{column} < ?")
        params.append(hi)
    return " AND ".join(conditions) or "TRUE", params
