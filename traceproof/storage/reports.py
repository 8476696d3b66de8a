"""What the HTML report reads from the store: the spans of traces as latency waterfalls.

- :func:`trace_waterfalls`: per trace id, its spans as ``{span_id, parent_span_id, name,
  span_kind, status, start_ms, duration_ms}`` (``start_ms`` from the trace's first span), at
  most ``max_spans`` per trace (the earliest by start time).
- :func:`read_waterfalls`: the same, with each trace's full span count (to say when a
  waterfall was cut).
- :func:`run_trace_ids`: the trace ids experiment runs recorded, for runs whose comparison
  entry names no trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from traceproof.storage.reader import Reader

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_WATERFALL_SPANS",
    "read_waterfalls",
    "run_trace_ids",
    "trace_waterfalls",
]

#: A waterfall holds at most this many spans of one trace (the earliest by start time).
MAX_WATERFALL_SPANS = 500
#: A span's name is kept up to this many characters.
MAX_NAME_CHARS = 200
#: Trace ids asked for in one query.
_CHUNK = 500

_SQL = """
WITH s AS (
    SELECT trace_id, span_id, parent_span_id, left(name, ?) AS name, span_kind, status,
           start_time, latency_ms,
           min(start_time) OVER (PARTITION BY trace_id) AS t0,
           count(*) OVER (PARTITION BY trace_id) AS total,
           row_number() OVER (PARTITION BY trace_id ORDER BY start_time, span_id) AS n
    FROM spans
    WHERE trace_id IN (SELECT unnest(?::VARCHAR[]))
)
SELECT trace_id, span_id, parent_span_id, name, span_kind, status,
       (epoch_us(start_time) - epoch_us(t0)) / 1000.0 AS start_ms,
       latency_ms AS duration_ms, total
FROM s
WHERE n <= ?
ORDER BY trace_id, n
"""


def read_waterfalls(
    reader: Reader, trace_ids: Iterable[str], *, max_spans: int = MAX_WATERFALL_SPANS
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Waterfalls of the traces found (a trace with no stored span is left out) and each
    one's full span count."""
    wanted = list(dict.fromkeys(t for t in trace_ids if t))
    spans: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, int] = {}
    for at in range(0, len(wanted), _CHUNK):
        chunk = wanted[at : at + _CHUNK]
        for row in reader.dicts(_SQL, [MAX_NAME_CHARS, chunk, max(0, max_spans)]):
            trace_id = row.pop("trace_id")
            totals[trace_id] = int(row.pop("total"))
            row["start_ms"] = float(row["start_ms"])
            row["duration_ms"] = float(row["duration_ms"])
            spans.setdefault(trace_id, []).append(row)
    return spans, totals


def trace_waterfalls(
    reader: Reader, trace_ids: Iterable[str], *, max_spans: int = MAX_WATERFALL_SPANS
) -> dict[str, list[dict[str, Any]]]:
    """Per trace id found, at most ``max_spans`` spans in start order, times in milliseconds
    from the trace's first span."""
    return read_waterfalls(reader, trace_ids, max_spans=max_spans)[0]


def run_trace_ids(reader: Reader, run_ids: Iterable[str]) -> dict[str, list[str]]:
    """The trace ids each experiment run recorded (runs not found are left out)."""
    wanted = list(dict.fromkeys(r for r in run_ids if r))
    found: dict[str, list[str]] = {}
    for at in range(0, len(wanted), _CHUNK):
        rows = reader.rows(
            "SELECT id, trace_ids FROM experiment_runs "
            "WHERE id IN (SELECT unnest(?::VARCHAR[])) AND len(trace_ids) > 0",
            [wanted[at : at + _CHUNK]],
        )
        found.update({run_id: list(ids) for run_id, ids in rows})
    return found
