"""Load and fault benchmark: a large store, every tool over HTTP, idle and under ingest, faults.

1. Builds (or reuses from ``--workdir``) a store of ``--spans`` spans (~3 KB average, a ~200 KB
   LLM span every ``--big-every`` traces) through ``traceproof ingest`` of OTLP protobuf files;
   the data is ``benchmarks/ingest.py``'s generator, amplified by id remapping
   (``benchmarks/loadgen.py``). The cache name holds a hash of N, seed, data shape, version.
2. Runs ``traceproof serve`` (a child process, free loopback port) on a copy of it.
3. Phases (``--phases``, all by default, in this order):
   - ``idle``: every tool's benchmark call through ``POST /api/v1/tools/{name}``, ``--repeat``
     times alone, then by ``--callers`` concurrent callers;
   - ``under-ingest``: the callers loop while ``--senders`` OTLP protobuf senders (keep-alive,
     503/429 resent after Retry-After) ingest at full speed for ``--duration`` s;
   - ``overload``: ``--overload-senders`` senders of ~``--overload-mb`` MB bodies for
     ``--overload-seconds``: 503 with Retry-After expected, RSS bounded, then recovery;
   - ``query-storm``: ``--storm-callers`` heavy queries in a loop during ingest: light calls and
     /healthz still answer, heavy ones answer results, [busy], [store_busy] or [query_timeout],
     never 500;
   - ``kill9-ingest``: SIGKILL the server during ingest, restart it: it opens and answers;
   - ``kill9-import``: SIGKILL ``traceproof ingest`` of an OTLP/JSON lines file mid-import, rerun
     it: exact counts, no duplicates.
4. Checks the store after a clean stop with DuckDB directly: every span answered 200 is stored
   (by the trace ids sent), ``trace_index`` agrees with ``spans`` (no orphans either way, equal
   span counts).

Loopback only; every loop is bounded in count and time. Run from the repository root:

    .venv/bin/python benchmarks/load.py                                  # 2M spans, ~35 min
    .venv/bin/python benchmarks/load.py --spans 100000 --duration 20     # small, ~5 min
    .venv/bin/python benchmarks/load.py --phases idle,under-ingest --env TRACEPROOF_X=Y

Prints a per-tool latency table and a targets table, writes every figure, the machine and the
command line to ``--out`` (default benchmarks/results/load.json). Exit status 1 if a target fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen as lg
from ingest import REPO, _cli, _stop, start_server, to_otlp_json
from loadreport import print_rows, targets, tool_table
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PHASES = ("idle", "under-ingest", "overload", "query-storm", "kill9-ingest", "kill9-import")
MB = 1e6
#: Accepted refusals of a heavy call: the heavy queue is full ([busy]), the writer is busy
#: ([store_busy]) or the deadline passed ([query_timeout]).
BUSY, STORE_BUSY, TIMEOUT = (503, "busy"), (503, "store_busy"), (504, "query_timeout")
REFUSALS = frozenset({BUSY, STORE_BUSY, TIMEOUT})


def tool_calls(meta: dict[str, Any]) -> list[lg.Call]:
    """Every tool's benchmark call (the issue's list), on ids the store is known to hold."""
    p, big_t, big_s = meta["project"], meta["big_trace_id"], meta["big_span_id"]
    err_t, session = meta["error_trace_id"], meta["session_id"]
    C = lg.Call
    return [
        C("list_projects", "list_projects", {}),
        C("search_traces", "search_traces", {"project": p, "limit": 20}),
        C("search_traces regex", "search_traces", {"project": p, "regex": r"escalate \w+ refund"}),
        C("search_traces where", "search_traces",
          {"project": p, "where": "model = 'gpt-4o-mini' and latency_ms > 3500"}),
        C("get_trace_preview", "get_trace_preview", {"trace_id": err_t}),
        C("get_span_data (200 KB span)", "get_span_data", {"span_id": big_s, "trace_id": big_t}),
        C("find_in_trace", "find_in_trace", {"trace_id": big_t, "pattern": r"refund \w+ order"}),
        C("search_spans pattern", "search_spans",
          {"project": p, "pattern": r"escalate \w+ refund"}),
        C("search_spans where", "search_spans",
          {"project": p, "where": "span_kind = 'TOOL' and latency_ms > 850"}),
        C("jq over a filter", "jq",
          {"program": "map(.latency_ms) | add / length", "project": p, "span_kind": "LLM"}),
        C("jq over a trace", "jq",
          {"program": '[.[] | select(.status == "ERROR") | .name]', "trace_id": err_t}),
        C("aggregate p95 by model", "aggregate",
          {"group_by": ["model"], "metrics": ["count", "p95(latency_ms)"]}),
        C("sql", "sql", {"query": "select span_kind, count(*) as n, avg(latency_ms) as ms "
                                  "from spans group by span_kind order by n desc"}),
        C("describe_schema", "describe_schema", {}),
        C("get_session", "get_session", {"session_id": session}),
    ]  # fmt: skip


def heavy_calls(meta: dict[str, Any], regex: bool = True) -> list[lg.Call]:
    """What a careless agent runs: full scans of wide text, an endless jq, a self-join, and
    (with ``regex``) patterns that backtrack exponentially in a backtracking engine."""
    p, big_t, big_s = meta["project"], meta["big_trace_id"], meta["big_span_id"]
    C = lg.Call
    calls = [
        C("heavy sql scan", "sql", {"query": "select max(length(input_value)) as i, "
          "sum(length(attributes)) as a, count(*) as n from spans"}),
        C("heavy sql self-join", "sql", {"query": "select count(*) as n from spans a join spans b "
          "on a.session_id = b.session_id where a.input_value like '%zz%'"}),
        C("heavy jq endless", "jq", {"program": "last(range(1e15))", "span_id": big_s,
                                     "trace_id": big_t}),
        C("heavy jq filter", "jq", {"program": "map(.attributes | tostring | length) | add",
                                    "project": p}),
        C("heavy search_spans regex", "search_spans",
          {"project": p, "pattern": r"error(.|\s)*timeout"}),
        C("heavy find_in_trace regex", "find_in_trace",
          {"trace_id": big_t, "pattern": r"error(.|\s)*timeout"}),
        C("heavy search_traces regex", "search_traces", {"project": p, "regex": r"(a|aa)*b"}),
        C("heavy aggregate by name", "aggregate",
          {"group_by": ["name"], "metrics": ["count", "p95(latency_ms)", "sum(total_tokens)"]}),
    ]  # fmt: skip
    return calls if regex else [c for c in calls if "regex" not in c.label]


def plans(calls: list[lg.Call], callers: int, repeat: int, seed: int) -> list[list[lg.Call]]:
    """Per caller, the calls ``repeat`` times in a seeded shuffled order."""
    out = []
    for i in range(callers):
        plan = calls * repeat
        random.Random(seed * 1000 + i).shuffle(plan)
        out.append(plan)
    return out


class Run:
    """One benchmark run: the server child, the ledger of acknowledged traces, the results."""

    def __init__(self, args: argparse.Namespace, pool: lg.Pool, meta: dict[str, Any]) -> None:
        self.args, self.pool, self.meta = args, pool, meta
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
        self.db = self.dir / "store.duckdb"
        self.ledger, self.res = lg.Ledger(), dict[str, Any]()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port, self.rss, self.logs = 0, None, list[Path]()
        self.sources: dict[str, Any] = {}

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- server ---------------------------------------------------------------------------------

    def start(self, label: str) -> float:
        log_path = self.dir / f"serve-{label}.log"
        self.logs.append(log_path)
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            self.proc, self.port = start_server(self.db, log, timeout=self.args.start_timeout)
        return time.perf_counter() - t0

    def stop(self) -> float:
        t0 = time.perf_counter()
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        return time.perf_counter() - t0

    def source(self, phase: str, requests_per_body: int = 1) -> Any:
        """Bodies of new spans for ``phase`` (each call the next ``requests_per_body`` remapped
        pool requests, concatenated: one protobuf request)."""
        stream = lg.replicas(self.pool, self.args.seed, f"ingest-{phase}")

        def next_body() -> tuple[bytes, list[tuple[str, int]]]:
            parts, traces = [], []
            for _ in range(requests_per_body):
                body, t = next(stream)
                parts.append(body)
                traces += t
            return b"".join(parts), traces

        return next_body

    def senders(
        self, phase: str, n: int, seconds: float, stop: threading.Event, per_body: int = 1,
        resend: bool = True,
    ) -> tuple[threading.Thread, dict[str, Any]]:  # fmt: skip
        holder: dict[str, Any] = {}
        deadline = time.monotonic() + seconds

        def go() -> None:
            source = self.source(phase, per_body)
            holder["stats"] = lg.run_senders(
                self.port,
                source,
                n,
                phase,
                self.ledger,
                stop,
                deadline,
                10**7,
                resend,
                self.args.call_timeout,
            )

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread, holder

    # -- phases ---------------------------------------------------------------------------------

    def idle(self) -> dict[str, Any]:
        a, calls = self.args, tool_calls(self.meta)
        deadline, never = time.monotonic() + a.phase_timeout, threading.Event()
        alone = lg.run_callers(self.port, [[c for c in calls for _ in range(a.repeat)]],
                               deadline, never, a.call_timeout)  # fmt: skip
        self.say(f"idle: {len(alone)} calls alone")
        with lg.RSSSampler(self.proc.pid) as rss:  # type: ignore[union-attr]
            both = lg.run_callers(self.port, plans(calls, a.callers, a.repeat, a.seed),
                                  deadline, never, a.call_timeout)  # fmt: skip
        self.say(f"idle: {len(both)} calls by {a.callers} callers")
        return {"alone": lg.summarize(alone), "concurrent": lg.summarize(both),
                "rss_peak_mb": rss.peak / MB}  # fmt: skip

    def under_ingest(self) -> dict[str, Any]:
        a, stop = self.args, threading.Event()
        with lg.RSSSampler(self.proc.pid) as rss:  # type: ignore[union-attr]
            thread, otlp = self.senders("under-ingest", a.senders, a.duration, stop)
            samples = lg.run_callers(
                self.port,
                plans(tool_calls(self.meta), a.callers, 1, a.seed),
                time.monotonic() + a.duration,
                stop,
                a.call_timeout,
                loop=True,
            )
            stop.set()
            thread.join(timeout=a.call_timeout + 60)
        res = {"queries": lg.summarize(samples), "otlp": otlp["stats"].summary(),
               "rss_peak_mb": rss.peak / MB}  # fmt: skip
        self.say(f"under-ingest: {res['otlp']['spans_per_s']:,.0f} spans/s, {len(samples)} calls")
        return res

    def overload(self) -> dict[str, Any]:
        a, stop = self.args, threading.Event()
        per_body = max(1, round(a.overload_mb * MB / (512 * self.meta["avg_span_bytes"])))
        light = [lg.Call("list_projects", "list_projects", {}), lg.Call("/healthz", "/healthz", {})]
        with lg.RSSSampler(self.proc.pid) as rss:  # type: ignore[union-attr]
            thread, otlp = self.senders("overload", a.overload_senders, a.overload_seconds, stop,
                                        per_body=per_body)  # fmt: skip
            samples = lg.run_callers(self.port, [light], time.monotonic() + a.overload_seconds,
                                     stop, a.call_timeout, loop=True)  # fmt: skip
            stop.set()
            thread.join(timeout=a.call_timeout + 60)
            t0, recovered, deadline = time.monotonic(), None, time.monotonic() + a.recovery_timeout
            probes, recovery = [], self.source("recovery")  # one stream: a new body each probe
            while time.monotonic() < deadline:  # one normal request and one call must succeed
                probe = lg.run_senders(self.port, recovery, 1, "recovery",
                                       self.ledger, threading.Event(), deadline, 1)  # fmt: skip
                call = lg.run_callers(self.port, [light[:1]], deadline, threading.Event(), 30)
                answer = f"{call[0].status} {call[0].code}" if call else None
                probes.append({"at_s": round(time.monotonic() - t0, 2),
                               "otlp_ok": probe.requests_ok, "otlp_retries": dict(probe.retries),
                               "otlp_errors": dict(probe.errors), "call": answer})  # fmt: skip
                if probe.requests_ok == 1 and call and call[0].status == 200:
                    recovered = time.monotonic() - t0
                    break
            peak = rss.peak
            threading.Event().wait(min(a.settle_seconds, max(deadline - time.monotonic(), 0)))
            after = rss.last
        res = {"body_mb": per_body * 512 * self.meta["avg_span_bytes"] / MB,
               "otlp": otlp["stats"].summary(), "light": lg.summarize(samples),
               "recovery_seconds": recovered, "recovery_probes": probes[-20:],
               "rss_peak_mb": peak / MB,
               "rss_after_settle_mb": after / MB}  # fmt: skip
        self.say(f"overload: {res['otlp']['retries']} retries, recovered in {recovered}")
        return res

    def query_storm(self) -> dict[str, Any]:
        a, stop = self.args, threading.Event()
        light = [lg.Call("/healthz", "/healthz", {})]
        light += [
            c for c in tool_calls(self.meta) if c.tool in ("list_projects", "get_trace_preview")
        ]
        deadline = time.monotonic() + a.storm_seconds
        with lg.RSSSampler(self.proc.pid) as rss:  # type: ignore[union-attr]
            thread, otlp = self.senders("query-storm", a.senders, a.storm_seconds, stop)
            holder: dict[str, list[lg.Sample]] = {}

            calls = heavy_calls(self.meta, regex=not a.storm_without_regex)

            def heavy() -> None:
                holder["heavy"] = lg.run_callers(
                    self.port, plans(calls, a.storm_callers, 1, a.seed + 1), deadline, stop,
                    a.call_timeout, loop=True)  # fmt: skip

            heavy_thread = threading.Thread(target=heavy, daemon=True)
            heavy_thread.start()
            light_samples = lg.run_callers(self.port, plans(light, 2, 1, a.seed + 2), deadline,
                                           stop, a.call_timeout, loop=True)  # fmt: skip
            stop.set()
            heavy_thread.join(timeout=a.call_timeout + 60)
            thread.join(timeout=a.call_timeout + 60)
        res = {"otlp": otlp["stats"].summary(), "light": lg.summarize(light_samples),
               "heavy": lg.summarize(holder.get("heavy", []), REFUSALS),
               "rss_peak_mb": rss.peak / MB}  # fmt: skip
        self.say(f"query-storm: {res['otlp']['spans_per_s']:,.0f} spans/s")
        return res

    def kill9_ingest(self) -> dict[str, Any]:
        a, stop = self.args, threading.Event()
        self.start("kill9")
        thread, otlp = self.senders("kill9-ingest", a.senders, a.kill_after + 60, stop,
                                    resend=False)  # fmt: skip
        deadline = time.monotonic() + a.kill_after
        while time.monotonic() < deadline:  # at least a few acknowledged batches before the kill
            threading.Event().wait(0.1)
        acked_before_kill = self.ledger.spans("kill9-ingest")
        lg.kill9(self.proc)  # type: ignore[arg-type]
        self.proc = None
        stop.set()
        thread.join(timeout=200)
        restart = self.start("after-kill9")
        probe = lg.run_callers(self.port, [[tool_calls(self.meta)[0], lg.Call(
            "sql count", "sql", {"query": "select count(*) as n from spans"})]],
            time.monotonic() + 120, threading.Event(), a.call_timeout)  # fmt: skip
        stop_s = self.stop()
        res = {"otlp": otlp["stats"].summary(), "acked_spans_before_kill": acked_before_kill,
               "restart_seconds": restart, "stop_seconds": stop_s,
               "answers_after_restart": [(s.label, s.status, s.code) for s in probe],
               "reopened": bool(probe) and all(s.status == 200 for s in probe)}  # fmt: skip
        self.say(f"kill9-ingest: {acked_before_kill:,} acked spans, restart {restart:.1f} s")
        return res

    def kill9_import(self) -> dict[str, Any]:
        a = self.args
        key = lg.pool_key(a.seed, a.distinct_spans, a.big_every)
        path = a.workdir / f"import-{a.import_spans}-{key}.jsonl"
        spans = self._import_file(path)
        db = self.dir / "import.duckdb"
        cmd = _cli("ingest", str(path), "--db", str(db), "--json")
        with open(self.dir / "import-killed.log", "wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wal = db.with_name(db.name + ".wal")
        size = lambda: sum(p.stat().st_size for p in (db, wal) if p.exists())  # noqa: E731
        threshold, finished = path.stat().st_size * a.import_kill_fraction, False
        while time.monotonic() - t0 < a.import_kill_after and size() < threshold:
            if proc.poll() is not None:
                finished = True
                break
            threading.Event().wait(0.05)
        killed_at = {"seconds": time.monotonic() - t0, "store_mb": size() / MB}
        lg.kill9(proc)
        partial = self._count(db)
        t1 = time.monotonic()
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                             timeout=a.phase_timeout, check=False)  # fmt: skip
        rerun = {"exit": out.returncode, "seconds": time.monotonic() - t1,
                 "stderr": out.stderr[-1500:]}  # fmt: skip
        with contextlib.suppress(ValueError):
            rerun["summary"] = json.loads(out.stdout)
        check = check_store(db, None)
        with contextlib.suppress(duckdb.Error), duckdb.connect(str(db), read_only=True) as con:
            row = con.execute("select count(*) - count(distinct (trace_id, span_id)) from spans")
            check["duplicates"] = (row.fetchone() or (None,))[0]
        res = {"spans_in_file": spans, "file_mb": path.stat().st_size / MB, "killed_at": killed_at,
               "finished_before_kill": finished, "committed_before_rerun": partial,
               "rerun": rerun, "check": check}  # fmt: skip
        self.say(f"kill9-import: killed at {killed_at}, before rerun {partial}")
        return res

    def _import_file(self, path: Path) -> int:
        """The kill9-import file (OTLP/JSON lines of new spans), cached next to the store."""
        count_path = path.with_suffix(".count")
        if path.exists() and count_path.exists():
            return int(count_path.read_text())
        source, spans = lg.replicas(self.pool, self.args.seed, "import"), 0
        with open(path.with_suffix(".tmp"), "w") as f:
            while spans < self.args.import_spans:
                body, traces = next(source)
                f.write(to_otlp_json(ExportTraceServiceRequest.FromString(body)) + "\n")
                spans += sum(n for _, n in traces)
        path.with_suffix(".tmp").rename(path)
        count_path.write_text(str(spans))
        return spans

    def _count(self, db: Path) -> int | str:
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                return int((con.execute("select count(*) from spans").fetchone() or (0,))[0])
        except duckdb.Error as exc:
            return f"could not open: {type(exc).__name__}: {str(exc)[:200]}"


def check_store(db: Path, acked: dict[str, dict[str, int]] | None) -> dict[str, Any]:
    """Read the stopped store with DuckDB: spans, trace_index agreement, acknowledged spans."""
    out: dict[str, Any] = {}
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        return {"opened": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    with con:
        one = lambda sql: (con.execute(sql).fetchone() or (None,))[0]  # noqa: E731
        out["opened"], out["spans"] = True, one("select count(*) from spans")
        out["trace_rows"] = one("select count(*) from trace_index")
        out["spans_without_trace_row"] = one(
            "select count(*) from (select distinct project, trace_id from spans) s anti join "
            "trace_index t on s.project = t.project and s.trace_id = t.trace_id"
        )
        out["trace_rows_without_spans"] = one(
            "select count(*) from trace_index t anti join (select distinct project, trace_id "
            "from spans) s on s.project = t.project and s.trace_id = t.trace_id"
        )
        out["trace_rows_wrong_span_count"] = one(
            "select count(*) from trace_index t join (select project, trace_id, count(*) as n "
            "from spans group by all) s using (project, trace_id) where t.span_count <> s.n"
        )
        out["inconsistencies"] = sum(out[k] for k in ("spans_without_trace_row",
            "trace_rows_without_spans", "trace_rows_wrong_span_count"))  # fmt: skip
        if acked is not None:
            out["lost_by_phase"] = {}
            for phase, traces in acked.items():
                table = pa.table({"trace_id": list(traces), "n": list(traces.values())})
                con.register("acked", table)
                lost = one("select coalesce(sum(a.n - coalesce(s.c, 0)), 0) from acked a left join "
                           "(select trace_id, count(*) as c from spans where trace_id in "
                           "(select trace_id from acked) group by trace_id) s using (trace_id) "
                           "where coalesce(s.c, 0) < a.n")  # fmt: skip
                con.unregister("acked")
                out["lost_by_phase"][phase] = {"acked_spans": sum(traces.values()),
                                               "lost_spans": int(lost)}  # fmt: skip
            out["lost_spans"] = sum(p["lost_spans"] for p in out["lost_by_phase"].values())
    return out


def memory_peaks(path: Path, phases: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Each phase's memlog line at its highest RSS (same-day HH:MM:SS windows)."""
    lines = []
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    out: dict[str, Any] = {}
    for phase, (began, ended) in phases.items():
        inside = [x for x in lines if began <= x.get("t", "") <= ended]
        if inside:
            out[phase] = max(inside, key=lambda x: x.get("rss", 0))
    return out


def log_summary(paths: list[Path]) -> dict[str, int]:
    words = ("Out of Memory", "FATAL", "Traceback", "ERROR", "WARNING", "failed to pin block")
    counts = dict.fromkeys(words, 0)
    for path in paths:
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            for line in f:
                for w in words:
                    counts[w] += w in line
    return counts


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    a = p.add_argument
    a("--spans", type=int, default=2_000_000, help="spans in the store (whole traces)")
    a("--seed", type=int, default=7, help="seed of the generated data and of call orders")
    a("--distinct-spans", type=int, default=50_000, help="generated spans before remapping ids")
    a("--big-every", type=int, default=50, help="a ~200 KB LLM span in every Nth trace (0: none)")
    a(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "traceproof-load",
        help="cache of built stores and import files; runs use a copy in a run-* folder here",
    )
    a("--rebuild", action="store_true", help="build the store even when a cached one exists")
    a("--keep", action="store_true", help="keep the run folder (store copy, server logs)")
    a("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    a("--repeat", type=int, default=3, help="idle: calls of each tool, alone and per caller")
    a("--callers", type=int, default=4, help="concurrent tool callers (idle, under-ingest)")
    a("--senders", type=int, default=8, help="OTLP senders (under-ingest, query-storm, kill9)")
    a("--duration", type=float, default=120, help="under-ingest: seconds of ingest")
    a("--overload-senders", type=int, default=40, help="overload: concurrent senders")
    a("--overload-mb", type=float, default=16, help="overload: MB per request body")
    a("--overload-seconds", type=float, default=30, help="overload: seconds of overload")
    a("--recovery-timeout", type=float, default=60, help="overload: seconds allowed to recover")
    a("--settle-seconds", type=float, default=10, help="overload: RSS measured this long after")
    a("--storm-callers", type=int, default=16, help="query-storm: concurrent heavy callers")
    a(
        "--storm-without-regex",
        action="store_true",
        help="query-storm: no backtracking regexes (tells a GIL freeze from starvation)",
    )
    a("--storm-seconds", type=float, default=60, help="query-storm: seconds")
    a("--kill-after", type=float, default=15, help="kill9-ingest: seconds of ingest before kill")
    a("--import-spans", type=int, default=200_000, help="kill9-import: spans in the file")
    a(
        "--import-kill-fraction",
        type=float,
        default=0.1,
        help="kill9-import: kill once store + WAL bytes reach this fraction of the file's",
    )
    a(
        "--import-kill-after",
        type=float,
        default=60,
        help="kill9-import: kill by then at the latest",
    )
    a("--call-timeout", type=float, default=60, help="socket timeout of a tool call or OTLP POST")
    a("--phase-timeout", type=float, default=1800, help="deadline of idle and of an import")
    a("--start-timeout", type=float, default=600, help="deadline for /healthz after a start")
    a("--build-timeout", type=float, default=3600, help="deadline of one build chunk")
    a("--rss-limit-mb", type=int, default=1500, help="server RSS target (process + children)")
    a(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the server and traceproof ingest (e.g. TRACEPROOF_DUCKDB_THREADS=2)",
    )
    a(
        "--memlog",
        action="store_true",
        help="log the server's memory by part each second (benchmarks/memlog/) to OUT.memlog."
        "jsonl; the JSON gets each phase's breakdown at its RSS peak",
    )
    a("--out", type=Path, default=REPO / "benchmarks" / "results" / "load.json")
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if bad := set(args.phases) - set(PHASES):
        p.error(f"unknown phases: {', '.join(sorted(bad))}")
    for item in args.env:
        if "=" not in item:
            p.error(f"--env wants KEY=VALUE, got {item!r}")
    return args


def machine() -> dict[str, Any]:
    from traceproof import __version__

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    return {"logical_cpus": os.cpu_count(), "physical_cpus": psutil.cpu_count(logical=False),
            "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "load_avg_at_start": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "duckdb": duckdb.__version__,
            "traceproof": __version__, "git_head": head}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for item in args.env:
        key, value = item.split("=", 1)
        os.environ[key] = value  # inherited by every child process we start
    args.workdir.mkdir(parents=True, exist_ok=True)
    memlog = args.out.with_suffix(".memlog.jsonl")
    if args.memlog:
        memlog.parent.mkdir(parents=True, exist_ok=True)
        memlog.unlink(missing_ok=True)
        paths = [str(REPO / "benchmarks" / "memlog"), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        os.environ["TP_MEMLOG"] = str(memlog)
    phase_times: dict[str, tuple[str, str]] = {}
    res: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    res["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    t0 = time.perf_counter()
    pool = lg.cached_pool(args.workdir, args.seed, args.distinct_spans, args.big_every)
    print(f"pool: {pool.spans:,} distinct spans in {time.perf_counter() - t0:.1f} s", flush=True)
    lg.build_store(args.workdir, pool, args, lambda m: print(m, flush=True))
    meta = res["store"] = lg.store_meta(args.workdir, args)
    run = Run(args, pool, meta)
    t1 = time.perf_counter()
    cached = args.workdir / f"store-{args.spans}-{meta['key']}.duckdb"
    for suffix in ("", ".wal"):
        if (part := cached.with_name(cached.name + suffix)).exists():
            shutil.copyfile(part, run.db.with_name(run.db.name + suffix))
    res["store"]["copy_seconds"] = time.perf_counter() - t1
    served = [p for p in ("idle", "under-ingest", "overload", "query-storm") if p in args.phases]
    try:
        if served:
            res["start_seconds"] = run.start("main")
            for phase in served:
                run.say(f"phase {phase}")
                began = time.strftime("%H:%M:%S")
                try:
                    res[phase] = getattr(run, phase.replace("-", "_"))()
                except Exception as exc:  # report it, go on with the next phase
                    res[phase] = {"failed": f"{type(exc).__name__}: {str(exc)[:500]}"}
                phase_times[phase] = (began, time.strftime("%H:%M:%S"))
            res["stop_seconds"] = run.stop()
        if "kill9-ingest" in args.phases:
            run.say("phase kill9-ingest")
            try:
                res["kill9-ingest"] = run.kill9_ingest()
            except Exception as exc:
                res["kill9-ingest"] = {"failed": f"{type(exc).__name__}: {str(exc)[:500]}"}
        if served or "kill9-ingest" in args.phases:
            run.stop()
            run.say("checking the store")
            res["final_check"] = check_store(run.db, run.ledger.acked)
        if "kill9-import" in args.phases:
            run.say("phase kill9-import")
            try:
                res["kill9-import"] = run.kill9_import()
            except Exception as exc:
                res["kill9-import"] = {"failed": f"{type(exc).__name__}: {str(exc)[:500]}"}
        res["server_log"] = log_summary(run.logs)
        if args.memlog:
            res["memory_at_peak"] = memory_peaks(memlog, phase_times)
    finally:
        run.stop()
        res["seconds"] = time.perf_counter() - t0
        labels = [c.label for c in tool_calls(meta)]
        rows = targets(res, args, labels) if "store" in res else []
        res["tools"] = tool_table(res, labels)
        res["targets"] = [dict(zip(("phase", "measure", "value", "target", "ok"), r, strict=True))
                          for r in rows]  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
        if not args.keep:
            shutil.rmtree(run.dir, ignore_errors=True)
    print()
    print_rows(res["tools"])
    print()
    print_rows([("phase", "measure", "value", "target", "ok?"),
                *[(p, m, v, t, "" if ok is None else "yes" if ok else "NO")
                  for p, m, v, t, ok in rows]])  # fmt: skip
    for phase, peak in res.get("memory_at_peak", {}).items():
        parts = ", ".join(f"{k} {v}" for k, v in sorted(peak.get("maps", {}).items()))
        print(f"memory at {phase}'s RSS peak (MB): rss {peak.get('rss')}, DuckDB "
              f"{peak.get('duckdb_total')}, malloc used {peak.get('malloc_used')}, arrow "
              f"{peak.get('arrow')}; mappings: {parts}")  # fmt: skip
    kept = f"; run folder kept: {run.dir}" if args.keep else ""
    print(f"\n{res['seconds']:.0f} s; written to {args.out}{kept}")
    return 0 if all(ok is not False for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
