"""Store memory benchmark: do writes not yet checkpointed starve heavy queries of memory?

A scaled-down reproduction of issue 8's out-of-memory probe (1.1 GB store, 512 MB memory limit,
256 MB checkpoint threshold). It writes ``--spans`` generated spans (~``--span-kb`` KB of text
each, one LLM span in 50 of ``--big-kb`` KB) straight through ``Store.write`` as Arrow batches,
with a small ``--memory-limit`` and a proportional ``--checkpoint-threshold``, then runs heavy
read queries (regex over span text, a JSON filter over attributes, wide-text sort) one at a time
on the store as it is (the write-ahead log not yet checkpointed), then again after a CHECKPOINT.
For each phase it prints the WAL size, DuckDB's own memory use and how many queries failed with
out-of-memory. ``--store-defaults`` keeps traceproof's own checkpoint policy and temp directory
(what the server does); without it the store is opened as before the fix (no temp directory,
the given threshold, no checkpoint from the writer).

    .venv/bin/python benchmarks/store_memory.py                     # the old policy
    .venv/bin/python benchmarks/store_memory.py --store-defaults    # traceproof's policy

Writes all figures to ``--out`` (default benchmarks/results/store_memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Store, StoreError

_VOCABULARY = (
    "the agent user query model tool result document context answer retrieve search function "
    "call token latency error retry cache vector index embedding score source customer order "
    "refund policy account invoice shipping status ticket priority escalate summary plan step"
)
WORDS = _VOCABULARY.split()
QUERIES = {
    "regex_input": "SELECT count(*) FROM spans WHERE regexp_matches(input_value, 'refund.*tick')",
    "json_where": "SELECT count(*) FROM spans WHERE json_extract_string(attributes, '$.k3') "
    "LIKE '%escalate%'",
    "sort_wide": "SELECT span_id, input_value, output_value FROM spans "
    "ORDER BY output_value DESC LIMIT 5",
    "group_text": "SELECT output_value, count(*) FROM spans GROUP BY output_value "
    "ORDER BY 2 DESC LIMIT 3",
    **{
        f"distinct_{n}": f"SELECT count(DISTINCT left(input_value, {n}) || span_id) FROM spans"
        for n in (300, 600, 900)
    },
}


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def batch(rng: random.Random, start: int, count: int, span_kb: float, big_kb: int) -> pa.Table:
    t0 = datetime(2026, 1, 1)
    cols: dict[str, list[Any]] = {name: [] for name in SPAN_SCHEMA.names}
    for i in range(start, start + count):
        trace = i // 20
        is_root = i % 20 == 0
        big = i % 50 == 7
        chars = big_kb * 1000 if big else int(span_kb * 1000 / 3)
        start_time = t0 + timedelta(milliseconds=i)
        row = {
            "project": "mem",
            "trace_id": f"{trace:032x}",
            "span_id": f"{i:016x}",
            "parent_span_id": None if is_root else f"{trace * 20:016x}",
            "name": "llm" if big else "step",
            "span_kind": "LLM" if big else "CHAIN",
            "otel_kind": "INTERNAL",
            "status": "ERROR" if i % 97 == 0 else "OK",
            "status_message": None,
            "start_time": start_time,
            "end_time": start_time + timedelta(milliseconds=5),
            "latency_ms": 5.0,
            "session_id": f"s{trace % 100}",
            "user_id": None,
            "model": "gpt-4o" if big else None,
            "tool_name": None,
            "prompt_tokens": 10 if big else None,
            "completion_tokens": 5 if big else None,
            "total_tokens": 15 if big else None,
            "input_value": text(rng, chars),
            "input_mime_type": "text/plain",
            "output_value": text(rng, chars // 2 if big else chars),
            "output_mime_type": "text/plain",
            "error_type": None,
            "error_message": None,
            "attributes": json.dumps({f"k{k}": text(rng, chars // 8) for k in range(4)}),
            "events": "[]",
            "links": "[]",
            "resource": '{"service.name": "mem"}',
            "scope_name": "bench",
        }
        for name, value in row.items():
            cols[name].append(value)
    return pa.table(cols, schema=SPAN_SCHEMA)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wal_mb(db: Path) -> float:
    wal = db.with_name(db.name + ".wal")
    return wal.stat().st_size / 1e6 if wal.exists() else 0.0


def run_queries(store: Store, db: Path, label: str) -> dict[str, Any]:
    failures: dict[str, str] = {}
    with store.reader(timeout=120) as reader:
        memory_before = reader.scalar("SELECT sum(memory_usage_bytes) / 1e6 FROM duckdb_memory()")
        tags = reader.rows(
            "SELECT tag, round(memory_usage_bytes / 1e6, 1) FROM duckdb_memory() "
            "WHERE memory_usage_bytes > 0 ORDER BY 2 DESC"
        )
    for name, sql in QUERIES.items():
        try:
            with store.reader(timeout=120) as reader:
                reader.rows(sql)
        except StoreError as exc:
            failures[name] = str(exc)[:160]
    phase = {
        "phase": label,
        "wal_mb": round(wal_mb(db), 1),
        "duckdb_memory_mb": round(float(memory_before or 0), 1),
        "duckdb_memory_tags": dict(tags),
        "queries": len(QUERIES),
        "out_of_memory": sum(
            "Out of Memory" in f or "memory" in f.lower() for f in failures.values()
        ),
        "failed": failures,
        "rss_mb": round(rss_mb(), 1),
    }
    print(
        f"{label:<28} wal {phase['wal_mb']:>7.1f} MB  duckdb memory "
        f"{phase['duckdb_memory_mb']:>7.1f} MB  failed {len(failures)}/{len(QUERIES)}  "
        f"rss {phase['rss_mb']:.0f} MB",
        flush=True,
    )
    print(f"    memory by tag: {dict(tags)}")
    for name, error in failures.items():
        print(f"    {name}: {error}")
    return phase


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=60_000)
    parser.add_argument("--span-kb", type=float, default=3.0)
    parser.add_argument("--big-kb", type=int, default=60)
    parser.add_argument("--memory-limit", default="64MB")
    parser.add_argument("--checkpoint-threshold", default="32MB")
    parser.add_argument("--store-defaults", action="store_true")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "store_memory.json"
    )
    args = parser.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="traceproof-mem-"))
    db = workdir / "mem.duckdb"
    for leftover in workdir.glob("mem.duckdb*"):
        if leftover.is_file():
            leftover.unlink()
    update: dict[str, Any] = {"duckdb_memory_limit": args.memory_limit}
    if not args.store_defaults:
        update |= {
            "duckdb_checkpoint_threshold": args.checkpoint_threshold,
            "duckdb_idle_checkpoint_bytes": 0,
            "duckdb_temp_directory": "",
        }
    settings = Settings(db=db).model_copy(update=update)
    rng = random.Random(8)
    started = time.monotonic()
    phases = []
    with Store.open(db, settings) as store:
        for start in range(0, args.spans, 2_000):
            store.write(
                batch(rng, start, min(2_000, args.spans - start), args.span_kb, args.big_kb)
            )
        build_s = time.monotonic() - started
        print(
            f"built {args.spans:,} spans in {build_s:.1f} s; file {db.stat().st_size / 1e6:.0f} MB"
        )
        if args.store_defaults:
            # What the server does: the writer checkpoints once ingest goes idle.
            from tests.conftest import wait_until

            wait_until(lambda: wal_mb(db) < 1, timeout=120, what="the idle checkpoint")
        phases.append(run_queries(store, db, "as written"))
        with store.reader(timeout=300) as reader:
            reader.rows("CHECKPOINT")
        phases.append(run_queries(store, db, "after CHECKPOINT"))
    result = {
        "command": " ".join(sys.argv),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "spans": args.spans,
        "file_mb": round(db.stat().st_size / 1e6, 1),
        "memory_limit": args.memory_limit,
        "checkpoint_threshold": args.checkpoint_threshold,
        "store_defaults": args.store_defaults,
        "build_seconds": round(build_s, 1),
        "phases": phases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
