"""Cost of Arrow span streams made of many record batches (``POST /api/v1/spans``).

A probe sent bodies of 10,000 to 30,000 empty record batches: 4.3 s, 27 s, then over 30 s, with
RSS growing to 860 MB. The checker now skips empty batches after reading their message and
refuses a body past ``max_spans_request_batches`` (1024 by default). This measures, in process,
:func:`traceproof.ingest.arrowcheck.read_span_stream` on ``N`` empty batches plus one span:
with the cap raised to let them through (the cost per batch should stay flat: linear), and at
the default cap (refused after 1,025 messages). ``max RSS`` is the process's peak so far (it
includes building the bodies).

    .venv/bin/python benchmarks/span_stream_batches.py
    .venv/bin/python benchmarks/span_stream_batches.py --counts 1000 10000 --out /tmp/b.json

Prints a table and writes the figures, the machine and the command line to ``--out`` (default
benchmarks/results/span_stream_batches.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from traceproof.ingest.arrowcheck import MAX_BATCHES, InvalidSpanStream, read_span_stream
from traceproof.storage.columns import SPAN_SCHEMA


def body(empty: int) -> bytes:
    start = datetime(2026, 12, 1, 12)
    row: dict[str, object] = {f.name: None for f in SPAN_SCHEMA}
    row.update(
        project="p", trace_id="ab" * 16, span_id="cd" * 8, name="x", span_kind="TOOL",
        status="OK", start_time=start, end_time=start + timedelta(seconds=1), latency_ms=1000.0,
        attributes="{}", events="[]", links="[]", resource="{}",
    )  # fmt: skip
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SPAN_SCHEMA) as writer:
        nothing = pa.RecordBatch.from_pylist([], schema=SPAN_SCHEMA)
        for _ in range(empty):
            writer.write_batch(nothing)
        writer.write_table(pa.Table.from_pylist([row], SPAN_SCHEMA))
    return sink.getvalue().to_pybytes()


def measure(data: bytes, max_batches: int) -> dict[str, object]:
    began = time.perf_counter()
    try:
        rows: int | str = read_span_stream(data, max_bytes=10**9, max_batches=max_batches).num_rows
    except InvalidSpanStream as exc:
        rows = f"refused: {exc}"[:60]
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": round(seconds, 3), "max_rss_mb": round(peak, 1), "result": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 20000, 30000])
    parser.add_argument("--out", default="benchmarks/results/span_stream_batches.json")
    args = parser.parse_args()
    results = []
    print(f"{'empty batches':>14} {'body MB':>8} {'cap':>6} {'s':>7} {'us/batch':>9} "
          f"{'max RSS MB':>10}  result")  # fmt: skip
    for count in args.counts:
        data = body(count)
        for cap in (count + 1, MAX_BATCHES):
            found = measure(data, cap)
            per = float(str(found["seconds"])) / count * 1e6
            results.append({"empty_batches": count, "body_bytes": len(data), "cap": cap,
                            "us_per_batch": round(per, 1), **found})  # fmt: skip
            print(f"{count:>14,} {len(data) / 1e6:>8.1f} {cap:>6} {found['seconds']:>7} "
                  f"{per:>9.1f} {found['max_rss_mb']:>10}  {found['result']}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(sys.argv), "machine": platform.platform(),
        "python": platform.python_version(), "pyarrow": pa.__version__, "results": results,
    }, indent=2))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
