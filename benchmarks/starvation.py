"""Starvation benchmark: OTLP ingest and light tool calls while every heavy slot runs a long query.

Starts the real ASGI app (uvicorn, loopback) on a fresh store holding one small trace, fills the
heavy-query slots with ``sql`` calls that run until their time limit, then times, while they
run: OTLP POSTs (protobuf, 3 spans), ``list_projects``, ``get_trace_preview`` and ``/healthz``,
and one more heavy call (expected: ``[busy]`` at once). Then the same with no heavy load, for
comparison.

Run from the repository root (about ``--limit`` seconds):

    .venv/bin/python benchmarks/starvation.py
    .venv/bin/python benchmarks/starvation.py --heavy 6 --limit 10 --repeat 20

Prints a table (measure, idle median ms, loaded median / max ms) and writes it with the machine and
the command line to ``--out`` (default benchmarks/results/starvation.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import (
    CollectingExporter,
    LiveServer,
    encoded,
    make_agent_trace,
    sdk_provider,
)
from traceproof.ingest.otlp import decode_protobuf
from traceproof.server.pools import pools_for
from traceproof.settings import Settings
from traceproof.storage import Store

ENDLESS_SQL = "select count(*) from range(100000000000000) t(a) where a % 7 = 3"


def _timed(call: Any) -> tuple[float, int]:
    start = time.perf_counter()
    response = call()
    return (time.perf_counter() - start) * 1000, response.status_code


def _measure(server: LiveServer, trace_id: str, body: bytes, repeat: int) -> dict[str, list[float]]:
    url = server.url
    calls = {
        "OTLP POST /v1/traces": lambda: httpx2.post(
            url + "/v1/traces",
            content=body,
            headers={"content-type": "application/x-protobuf"},
            timeout=120,
        ),
        "list_projects": lambda: httpx2.post(url + "/api/v1/tools/list_projects", json={}),
        "get_trace_preview": lambda: httpx2.post(
            url + "/api/v1/tools/get_trace_preview", json={"trace_id": trace_id}, timeout=120
        ),
        "GET /healthz": lambda: httpx2.get(url + "/healthz", timeout=120),
    }
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            ms, status = _timed(call)
            assert status == 200, (name, status)
            out[name].append(ms)
    return out


def main() -> int:
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("traceproof").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", type=int, default=3, help="heavy-query slots (all filled)")
    parser.add_argument("--limit", type=float, default=10.0, help="time limit of a call, s")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per measure")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/starvation.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tp-starve-"))
    settings = Settings(
        db=workdir / "store.duckdb", heavy_queries=args.heavy, sql_timeout_seconds=args.limit
    )
    exporter = CollectingExporter()
    make_agent_trace(sdk_provider(exporter))
    body = encoded(exporter.spans)
    results: dict[str, Any] = {}
    with Store.open(settings.db, settings) as store:
        store.write(decode_protobuf(body, default_project="d").rows.table())
        with store.reader() as reader:
            trace_id = str(reader.scalar("SELECT trace_id FROM spans LIMIT 1"))
        with LiveServer(store, settings) as server:
            idle = _measure(server, trace_id, body, args.repeat)
            callers = ThreadPoolExecutor(args.heavy)
            heavy = [
                callers.submit(
                    httpx2.post,
                    server.url + "/api/v1/tools/sql",
                    json={"query": ENDLESS_SQL},
                    timeout=args.limit * 3,
                )
                for _ in range(args.heavy)
            ]
            deadline = time.monotonic() + 30
            while pools_for(store)._heavy_running < args.heavy and time.monotonic() < deadline:
                threading.Event().wait(0.02)
            busy_ms, busy_status = _timed(
                lambda: httpx2.post(server.url + "/api/v1/tools/sql", json={"query": "select 1"})
            )
            loaded = _measure(server, trace_id, body, args.repeat)
            still_running = sum(not f.done() for f in heavy)
            codes = [f.result().status_code for f in heavy]
            callers.shutdown()
    rows = []
    for name in idle:
        rows.append(
            {
                "measure": name,
                "idle_median_ms": round(statistics.median(idle[name]), 1),
                "loaded_median_ms": round(statistics.median(loaded[name]), 1),
                "loaded_max_ms": round(max(loaded[name]), 1),
            }
        )
    print(f"{'measure':<24} {'idle p50 ms':>12} {'loaded p50 ms':>14} {'loaded max ms':>14}")
    for row in rows:
        print(
            f"{row['measure']:<24} {row['idle_median_ms']:>12} {row['loaded_median_ms']:>14} "
            f"{row['loaded_max_ms']:>14}"
        )
    print(f"heavy call past the limit: HTTP {busy_status} in {busy_ms:.1f} ms")
    print(f"heavy queries still running after the loaded rounds: {still_running}/{args.heavy}")
    print(f"heavy queries answered: {sorted(set(codes))}")
    results = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "heavy_slots": args.heavy,
        "limit_seconds": args.limit,
        "rows": rows,
        "extra_heavy_call": {"status": busy_status, "ms": round(busy_ms, 1)},
        "heavy_still_running_after_rounds": still_running,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if busy_status == 503 and still_running == args.heavy else 1


if __name__ == "__main__":
    raise SystemExit(main())
