"""Query benchmark: the agents' tools on a store of 100,000 spans plus a trace holding a 1 MB span.

Builds (or reuses, with ``--workdir``) a store of deterministic OpenInference agent traces made by
``benchmarks/ingest.py``'s generator (~70 spans per trace, ~3 KB per span), written through the
OTLP protobuf decoder and the store's writer, plus one 70-span trace whose root LLM span holds a
1 MB input. Then calls the tool functions directly (no transport), each ``--repeat`` times after
one warm-up call, and reports the median and the characters each response returns (compact JSON,
the unit of the response budget).

Run from the repository root:

    .venv/bin/python benchmarks/queries.py                 # 100k spans, 9 calls each
    .venv/bin/python benchmarks/queries.py --spans 20000 --repeat 5
    .venv/bin/python benchmarks/queries.py --workdir /tmp/tpq --keep   # reuse the store next time

Prints a table (measure, median ms, chars, target, ok?) and writes every figure, the machine and
the command line to ``--out`` (default benchmarks/results/queries.json). Exit status 1 if a target
is missed or a response exceeds its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import psutil
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import RESOURCE, SCOPE, TraceGenerator, iter_requests

from traceproof.ingest.otlp import decode_protobuf
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.aggregate import aggregate
from traceproof.tools.common import budget, size
from traceproof.tools.find import find_in_trace
from traceproof.tools.preview import get_trace_preview
from traceproof.tools.spans import get_span_data, search_spans

REPO = Path(__file__).resolve().parents[1]
PROJECT = "ingest-bench"
BIG_VALUE_CHARS = 1_000_000
#: (tool measure, target median ms)
TARGETS_MS = {
    "find_in_trace (1 MB trace)": 50.0,
    "get_trace_preview (1 MB trace)": 50.0,
    "get_span_data (1 MB span)": 20.0,
    "aggregate p95 latency by model": 300.0,
    "search_spans regex, all spans": 1000.0,
}


def build_store(db: Path, spans: int, settings: Settings) -> dict[str, Any]:
    """Write ~``spans`` generated spans and the big trace; returns what the calls need."""
    gen = TraceGenerator(seed=7, big_llm_span=False)
    started = time.perf_counter()
    with Store.open(db, settings) as store:
        for request in iter_requests(gen):
            decoded = decode_protobuf(request.SerializeToString(), default_project="default")
            store.write(decoded.rows.table())
            if gen.spans_sent >= spans:
                break
        big = gen.trace()
        root = next(s for s in big if not s.parent_span_id)
        llm = next(s for s in big if s.parent_span_id == root.span_id and s.name == "ChatOpenAI")
        text = gen.text(BIG_VALUE_CHARS // 2)
        needle = "the customer asked for a refund of order 4471-B twice"
        value = (text + " " + needle + " " + text)[:BIG_VALUE_CHARS]
        for kv in llm.attributes:
            if kv.key == "input.value":
                kv.value.string_value = value
        request_big = _request(big)
        decoded = decode_protobuf(request_big, default_project="default")
        store.write(decoded.rows.table())
    return {
        "spans_written": gen.spans_sent + len(big),
        "big_trace_id": big[0].trace_id.hex(),
        "big_span_id": llm.span_id.hex(),
        "build_seconds": round(time.perf_counter() - started, 1),
    }


def _request(spans: list[Any]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    rs = ResourceSpans(resource=RESOURCE, scope_spans=[ScopeSpans(scope=SCOPE, spans=spans)])
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def measure(call: Callable[[], Any], repeat: int) -> tuple[float, float, int]:
    """(median ms, first-call ms, characters of the response)."""
    started = time.perf_counter()
    result = call()
    first = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), first, size(result)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tp-queries-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"queries-{args.spans}.duckdb"
    meta_path = db.with_suffix(".json")
    settings = Settings(db=db)
    if not (db.exists() and meta_path.exists()):
        db.unlink(missing_ok=True)
        meta = build_store(db, args.spans, settings)
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    file_mb = db.stat().st_size / 1e6
    with duckdb.connect(str(db), read_only=True) as conn:
        stored = conn.execute("SELECT count(*) FROM spans").fetchone()
    trace_id, span_id = meta["big_trace_id"], meta["big_span_id"]
    limit = budget(None, settings)
    calls: dict[str, Callable[[], Any]] = {}
    results: dict[str, Any] = {"spans_stored": stored[0] if stored else 0, "file_mb": file_mb}
    with Store.open(db, settings) as store:
        calls = {
            "find_in_trace (1 MB trace)": lambda: find_in_trace(
                store, trace_id=trace_id, pattern=r"refund of order \d+"
            ),
            "get_trace_preview (1 MB trace)": lambda: get_trace_preview(store, trace_id=trace_id),
            "get_span_data (1 MB span)": lambda: get_span_data(store, span_id=span_id),
            "aggregate p95 latency by model": lambda: aggregate(
                store, group_by=["model"], metrics=["count", "p95(latency_ms)"]
            ),
            "search_spans regex, all spans": lambda: search_spans(
                store, pattern=r"escalate \w+ refund"
            ),
        }
        rows = []
        for name, call in calls.items():
            median, first, chars = measure(call, args.repeat)
            rows.append(
                {
                    "measure": name,
                    "median_ms": round(median, 2),
                    "first_ms": round(first, 2),
                    "chars": chars,
                    "budget": limit,
                    "target_ms": TARGETS_MS[name],
                    "ok": median <= TARGETS_MS[name] and chars <= limit,
                }
            )
        results["peak_rss_mb"] = psutil.Process().memory_info().rss / 1e6
    results["rows"] = rows
    results["meta"] = meta
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"store: {results['spans_stored']:,} spans, {results['file_mb']:.0f} MB "
        f"(built in {results['meta']['build_seconds']} s)"
    )
    header = ("measure", "median ms", "first ms", "chars", "target ms", "ok?")
    lines = [
        (
            r["measure"],
            f"{r['median_ms']:.1f}",
            f"{r['first_ms']:.1f}",
            f"{r['chars']:,} / {r['budget']:,}",
            f"<= {r['target_ms']:g}",
            "yes" if r["ok"] else "NO",
        )
        for r in results["rows"]
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    for line in [header, tuple("-" * w for w in widths), *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=100_000, help="generated spans (~3 KB each)")
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per tool")
    parser.add_argument("--workdir", help="keep and reuse the store here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "queries.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print_table(results)
    results["command"] = shlex.join([sys.executable, *sys.argv])
    results["machine"] = {
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten to {out}")
    return 0 if all(r["ok"] for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
