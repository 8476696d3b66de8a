"""Load for ``benchmarks/load.py``: span data, the cached store, OTLP senders, tool callers.

Data: ``benchmarks/ingest.py``'s :class:`TraceGenerator` makes a *pool* of distinct requests
(whole traces, ~3 KB per span, one ~200 KB LLM span every ``big_every`` traces). Larger volumes
are *replicas* of the pool: the same bytes with every trace and span id replaced by a keyed hash
(:func:`remap`), so each replica is new spans to the store. Generating 2M spans with the
generator alone would take ~4 minutes of Python on a busy core; remapping takes milliseconds per
request. A replica period of >= 20k spans keeps DuckDB from compressing repeats (a column
segment holds ~100 such values), so the store's size and scans are those of distinct data.

Everything here is bounded: every loop stops at a deadline or a count, every socket has a
timeout, and every process started is stopped by pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import math
import pickle
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import PROJECT, REPO, TraceGenerator, _cli, iter_requests

HOST = "127.0.0.1"
#: Largest Retry-After a sender honours (the server's default is 1 s).
RETRY_AFTER_CAP_S = 5.0
#: Spans per ``traceproof ingest`` run while building (one file holds ~4k spans).
BUILD_CHUNK_SPANS, REQUESTS_PER_FILE = 100_000, 8


# -- data -----------------------------------------------------------------------------------------


class MixedGenerator(TraceGenerator):
    """The ingest benchmark's traces, with the ~200 KB LLM span in every ``big_every``-th trace
    only (the first included), so the average span stays ~3 KB."""

    def __init__(self, seed: int, big_every: int) -> None:
        super().__init__(seed, big_llm_span=False)
        self.big_every = big_every

    def trace(self) -> list[Any]:
        self.big_llm_span = self.big_every > 0 and self.traces % self.big_every == 0
        return super().trace()


@dataclass(frozen=True)
class PoolRequest:
    body: bytes
    traces: tuple[tuple[bytes, int], ...]  # (trace id, spans) in the request
    #: (offset, id) of every trace_id/span_id/parent_span_id value in ``body``; None when the
    #: wire scan could not find them all (then :func:`remap` rewrites through protobuf).
    ids_at: tuple[tuple[int, bytes], ...] | None

    @property
    def spans(self) -> int:
        return sum(n for _, n in self.traces)


@dataclass
class Pool:
    """Distinct generated requests, and the ids the benchmark calls need."""

    requests: list[PoolRequest]
    facts: dict[str, Any]

    @property
    def spans(self) -> int:
        return sum(r.spans for r in self.requests)


def make_pool(seed: int, distinct_spans: int, big_every: int) -> Pool:
    gen, requests = MixedGenerator(seed, big_every), []
    facts: dict[str, Any] = {"project": PROJECT}
    for request in iter_requests(gen):
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        counts = Counter(s.trace_id for s in spans)
        if "big_span_id" not in facts:  # the first trace is a big one: its root's last LLM call
            roots = {s.span_id for s in spans if not s.parent_span_id}
            big = max((s for s in spans if s.parent_span_id in roots), key=lambda s: s.ByteSize())
            facts.update(big_trace_id=big.trace_id.hex(), big_span_id=big.span_id.hex(),
                         big_span_bytes=big.ByteSize())  # fmt: skip
        if "error_trace_id" not in facts:  # a trace with an ERROR span, and its session
            for s in spans:
                if s.status.code == 2 and s.trace_id.hex() != facts["big_trace_id"]:
                    facts["error_trace_id"] = s.trace_id.hex()
                    session = next(a for a in s.attributes if a.key == "session.id")
                    facts["session_id"] = session.value.string_value
                    break
        body = request.SerializeToString()
        ids_at = _find_ids(body, frozenset(counts), frozenset(s.span_id for s in spans))
        fields = 2 * len(spans) + sum(bool(s.parent_span_id) for s in spans)
        requests.append(
            PoolRequest(body, tuple(counts.items()), ids_at if len(ids_at) == fields else None)
        )
        if gen.spans_sent >= distinct_spans:
            break
    pool = Pool(requests, facts)
    facts.update(pool_spans=pool.spans, pool_requests=len(requests), pool_traces=gen.traces_sent,
                 avg_span_bytes=sum(len(r.body) for r in requests) / pool.spans)  # fmt: skip
    return pool


def pool_key(seed: int, distinct_spans: int, big_every: int) -> str:
    """A hash of what the pool (and data derived from it alone) depends on."""
    parts = f"{seed}/{distinct_spans}/{big_every}/{_POOL_FORMAT}".encode()
    return hashlib.sha256(parts).hexdigest()[:12]


def cached_pool(workdir: Path, seed: int, distinct_spans: int, big_every: int) -> Pool:
    """:func:`make_pool`, kept in ``workdir`` as a pickle (our own file) for the next run."""
    path = workdir / f"pool-{pool_key(seed, distinct_spans, big_every)}.pickle"
    if path.exists():
        with open(path, "rb") as f:
            pool: Pool = pickle.load(f)
        return pool
    pool = make_pool(seed, distinct_spans, big_every)
    with open(path.with_suffix(".tmp"), "wb") as f:
        pickle.dump(pool, f, protocol=pickle.HIGHEST_PROTOCOL)
    path.with_suffix(".tmp").rename(path)
    return pool


_POOL_FORMAT = 1  # bump when make_pool's output changes
_ID_FIELDS = re.compile(rb"\n\x10(.{16})|\x12\x08(.{8})|\"\x08(.{8})", re.S)


def _find_ids(body: bytes, trace_ids: frozenset[bytes], span_ids: frozenset[bytes]) -> tuple:
    """Where the ids are in the wire bytes: tag + length + value, where the value is an id of
    the request (a count check against the spans catches a field the scan missed)."""
    found = []
    for m in _ID_FIELDS.finditer(body):
        tid, sid, pid = m.groups()
        if tid is not None and tid in trace_ids:
            found.append((m.start(1), tid))
        elif (value := sid or pid) is not None and value in span_ids:
            found.append((m.start(2) if sid else m.start(3), value))
    return tuple(found)


def salt(seed: int, domain: str, index: int) -> bytes:
    return hashlib.blake2b(f"{seed}/{domain}/{index}".encode(), digest_size=32).digest()


def remap(req: PoolRequest, key: bytes) -> tuple[bytes, list[tuple[str, int]]]:
    """``req``'s body with every trace/span id replaced by blake2b(id, key); its (trace hex, n)."""
    cache: dict[bytes, bytes] = {}

    def new(old: bytes) -> bytes:
        if (value := cache.get(old)) is None:
            value = cache[old] = hashlib.blake2b(old, digest_size=len(old), key=key).digest()
        return value

    if req.ids_at is not None:
        parts, previous = [], 0
        for offset, old in req.ids_at:
            parts += (req.body[previous:offset], new(old))
            previous = offset + len(old)
        parts.append(req.body[previous:])
        body = b"".join(parts)
    else:
        message = ExportTraceServiceRequest.FromString(req.body)
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.trace_id, span.span_id = new(span.trace_id), new(span.span_id)
                    if span.parent_span_id:
                        span.parent_span_id = new(span.parent_span_id)
        body = message.SerializeToString()
    return body, [(new(tid).hex(), n) for tid, n in req.traces]


def replicas(pool: Pool, seed: int, domain: str, start: int = 0) -> Iterator[tuple[bytes, list]]:
    """Endless requests: the pool remapped under key (domain, start), (domain, start + 1)...;
    ``domain == "build"`` and index 0 is the pool itself (so its ids are the facts' ids)."""
    index = start
    while True:
        key = salt(seed, domain, index)
        for req in pool.requests:
            if domain == "build" and index == 0:
                yield req.body, [(tid.hex(), n) for tid, n in req.traces]
            else:
                yield remap(req, key)
        index += 1


# -- the cached store -----------------------------------------------------------------------------


def store_key(args: Any) -> str:
    """A hash of what the store's content depends on: N, seed, data shape, code version, schema."""
    from traceproof import __version__
    from traceproof.storage.schema import MIGRATIONS

    schema = hashlib.sha256(repr(MIGRATIONS).encode()).hexdigest()
    parts = {"spans": args.spans, "seed": args.seed, "distinct": args.distinct_spans,
             "big_every": args.big_every, "version": __version__, "schema": schema,
             "format": 1}  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def build_store(workdir: Path, pool: Pool, args: Any, log: Callable[[str], None]) -> Path:
    """The cached store of ``args.spans`` spans (built through ``traceproof ingest`` of protobuf
    files when missing; a generator thread writes the next chunk while one imports)."""
    key = store_key(args)
    db, meta_path = workdir / f"store-{args.spans}-{key}.duckdb", workdir / f"store-{key}.json"
    if db.exists() and meta_path.exists() and not args.rebuild:
        log(f"store: reusing {db}")
        return db
    tmp = workdir / f"building-{key}.duckdb"
    # An interrupted build resumes: the chunks are deterministic, so the ones the partial store
    # already holds are generated again but not imported. A store of fewer spans, renamed to
    # ``building-<key>.duckdb``, grows the same way (ingest drops the spans it holds).
    resumed = _stored_spans(tmp) if tmp.exists() and not args.rebuild else 0
    stale = [db, meta_path] if resumed else [tmp, tmp.with_name(tmp.name + ".wal"), db, meta_path]
    for path in stale:
        path.unlink(missing_ok=True)
    if resumed:
        log(f"store: resuming {tmp} at {resumed:,} spans")
    started, chunks = time.perf_counter(), queue.Queue[tuple[Path, int] | None](maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        source, written, k = replicas(pool, args.seed, "build"), 0, 0
        while written < args.spans and not stop.is_set():
            folder, n, files = workdir / f"chunk-{key}-{k}", 0, 0
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            while n < BUILD_CHUNK_SPANS and written + n < args.spans:
                with open(folder / f"{files:05d}.pb", "wb") as f:
                    for _ in range(REQUESTS_PER_FILE):  # concatenated requests = one request
                        body, traces = next(source)
                        f.write(body)
                        n += sum(c for _, c in traces)
                        if n >= BUILD_CHUNK_SPANS or written + n >= args.spans:
                            break
                files += 1
            if written + n <= resumed:  # in the partial store already
                shutil.rmtree(folder, ignore_errors=True)
            else:  # a chunk the partial store holds the start of (a smaller N's last) adds the rest
                chunks.put((folder, written + n - max(written, resumed)))
            written, k = written + n, k + 1
        chunks.put(None)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    total = 0
    try:
        while (item := chunks.get(timeout=args.build_timeout)) is not None:
            folder, n = item
            files = sorted(str(p) for p in folder.iterdir())
            cmd = _cli("ingest", *files, "--db", str(tmp), "--json")
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                 timeout=args.build_timeout, check=False)  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
            if out.returncode != 0:
                raise RuntimeError(
                    f"traceproof ingest exited {out.returncode}: {out.stderr[-2000:]}"
                )
            try:
                added = json.loads(out.stdout)["spans_added"]
            except (ValueError, KeyError) as exc:
                raise RuntimeError(f"build: ingest --json printed {out.stdout[:300]!r}") from exc
            if added != n:
                raise RuntimeError(f"build: chunk of {n} spans added {added} (ids collided?)")
            total += n
            rate = total / (time.perf_counter() - started)
            log(f"store: {resumed + total:,} / {args.spans:,} spans ({rate:,.0f} spans/s)")
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while chunks.get_nowait() is not None:
                pass
        producer.join(timeout=60)
        for folder in workdir.glob(f"chunk-{key}-*"):
            shutil.rmtree(folder, ignore_errors=True)
    for suffix in ("", ".wal"):  # a clean close leaves no WAL; should one be there, keep it
        if (part := tmp.with_name(tmp.name + suffix)).exists():
            part.rename(db.with_name(db.name + suffix))
    seconds = time.perf_counter() - started
    meta = {**pool.facts, "spans": resumed + total, "key": key, "build_seconds": seconds,
            "file_mb": db.stat().st_size / 1e6}  # fmt: skip
    meta_path.write_text(json.dumps(meta, indent=2))
    return db


def _stored_spans(db: Path) -> int:
    """Spans in a partial store (0 when it cannot be read: the build starts over)."""
    try:
        with duckdb.connect(str(db), read_only=True) as conn:
            row = conn.execute("SELECT count(*) FROM spans").fetchone()
    except duckdb.Error:
        return 0
    return int(row[0]) if row else 0


def store_meta(workdir: Path, args: Any) -> dict[str, Any]:
    return dict(json.loads((workdir / f"store-{store_key(args)}.json").read_text()))


# -- processes ------------------------------------------------------------------------------------


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started, then the children it had (e.g. jq workers), by pid."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


class RSSSampler:
    """RSS of a process plus its children every ``interval`` s: the peak and the last value."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.proc, self.interval, self.peak, self.last = psutil.Process(pid), interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.last, self.peak = total, max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- HTTP -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def http_call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, str | None, bytes]:  # fmt: skip
    """(status, Retry-After, body); 0 and the exception's name when the connection failed."""
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("Retry-After"), data
    except (OSError, http.client.HTTPException) as exc:
        conn.close()  # the next request reconnects
        return 0, None, type(exc).__name__.encode()


def retry_seconds(value: str | None) -> float:
    """The wait a Retry-After asks for (seconds form), at most RETRY_AFTER_CAP_S; 1 s if absent."""
    try:
        seconds = float(value) if value else 1.0
    except ValueError:  # an HTTP-date: not worth parsing for a loopback server
        seconds = 1.0
    return min(max(seconds, 0.05), RETRY_AFTER_CAP_S)


class Ledger:
    """Traces whose request was answered 200, by phase: every one must be in the store, whole."""

    def __init__(self) -> None:
        self.lock, self.acked = threading.Lock(), dict[str, dict[str, int]]()

    def add(self, phase: str, traces: list[tuple[str, int]]) -> None:
        with self.lock:
            self.acked.setdefault(phase, {}).update(traces)

    def spans(self, phase: str) -> int:
        with self.lock:
            return sum(self.acked.get(phase, {}).values())


@dataclass
class OtlpStats:
    requests_ok: int = 0
    spans_ok: int = 0
    retries: Counter[int] = field(default_factory=Counter)  # 429/503 answers, resent
    retry_after_missing: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # anything else, by status or failure
    latencies_ms: list[float] = field(default_factory=list)  # of 200 answers
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"requests_ok": self.requests_ok, "spans_ok": self.spans_ok,
                "spans_per_s": self.spans_ok / self.seconds if self.seconds else 0.0,
                "retries": {str(k): v for k, v in self.retries.items()},
                "retry_after_missing": self.retry_after_missing, "errors": dict(self.errors),
                "error_count": sum(self.errors.values()), "seconds": self.seconds,
                "p50_ms": percentile(self.latencies_ms, 50),
                "p95_ms": percentile(self.latencies_ms, 95),
                "max_ms": max(self.latencies_ms, default=None)}  # fmt: skip


def run_senders(port: int, source: Callable[[], tuple[bytes, list[tuple[str, int]]]], senders: int,
                phase: str, ledger: Ledger, stop: threading.Event, deadline: float,
                max_requests: int, resend_on_failure: bool = True,
                timeout: float = 120) -> OtlpStats:  # fmt: skip
    """``senders`` keep-alive threads POST protobuf bodies from ``source`` until ``stop``, the
    deadline or ``max_requests``; 429/503 are resent after Retry-After; 200 goes in the ledger.
    Connection failures are errors; with ``resend_on_failure`` the body is sent again (3 tries).
    """
    stats, lock, started = OtlpStats(), threading.Lock(), time.monotonic()
    issued = [0]
    headers = {"Content-Type": "application/x-protobuf"}

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if issued[0] >= max_requests:
                        return
                    issued[0] += 1
                    body, traces = source()
                failures = 0
                while not stop.is_set() and time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    status, retry_after, data = http_call(conn, "POST", "/v1/traces", body, headers)
                    ms = (time.perf_counter() - t0) * 1000
                    with stats.lock:
                        if status == 200:
                            stats.requests_ok += 1
                            stats.spans_ok += sum(n for _, n in traces)
                            stats.latencies_ms.append(ms)
                        elif status in (429, 503):
                            stats.retries[status] += 1
                            stats.retry_after_missing += retry_after is None
                        else:
                            stats.errors[str(status or data.decode())] += 1
                    if status == 200:
                        ledger.add(phase, traces)
                        break
                    if status in (429, 503):
                        wait = min(retry_seconds(retry_after), max(deadline - time.monotonic(), 0))
                        stop.wait(wait)
                        continue
                    failures += 1
                    if status != 0 or not resend_on_failure or failures >= 3:
                        break
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0) + timeout + 30)
    stats.seconds = time.monotonic() - started
    return stats


@dataclass(frozen=True)
class Call:
    label: str
    tool: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Sample:
    label: str
    status: int  # 0: the connection failed
    code: str  # the error code of a non-200 answer ("" for 200)
    ms: float


def call_tool(conn: http.client.HTTPConnection, call: Call) -> Sample:
    """One tool call over ``POST /api/v1/tools/{name}`` (``tool="/healthz"``: GET /healthz)."""
    body = json.dumps(call.args).encode()
    headers = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    if call.tool.startswith("/"):
        status, _, data = http_call(conn, "GET", call.tool, None, {})
    else:
        status, _, data = http_call(conn, "POST", f"/api/v1/tools/{call.tool}", body, headers)
    ms = (time.perf_counter() - t0) * 1000
    code = ""
    if status == 0:
        code = f"connection:{data.decode()}"
    elif status != 200:
        try:
            code = str(json.loads(data).get("code", ""))
        except ValueError:
            code = "not_json"
    return Sample(call.label, status, code, ms)


def run_callers(port: int, plans: list[list[Call]], deadline: float, stop: threading.Event,
                timeout: float, loop: bool = False) -> list[Sample]:  # fmt: skip
    """One thread per plan calls its tools in order (again and again with ``loop``) until the
    plan ends, ``stop`` or the deadline."""
    samples: list[Sample] = []
    lock = threading.Lock()

    def worker(plan: list[Call]) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while True:
                for call in plan:
                    if stop.is_set() or time.monotonic() >= deadline:
                        return
                    sample = call_tool(conn, call)
                    with lock:
                        samples.append(sample)
                if not loop:
                    return
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(p,), daemon=True) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0) + timeout + 30)
    return samples


def summarize(samples: list[Sample], ok_codes: frozenset[tuple[int, str]] = frozenset()) -> dict:
    """Per label: calls, errors by "status code", p50/p95/max ms of 200 answers. Answers in
    ``ok_codes`` (e.g. 503 store_busy for a heavy query) are counted apart, not as errors."""
    out: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(s.label for s in samples):
        mine = [s for s in samples if s.label == label]
        ok_ms = [s.ms for s in mine if s.status == 200]
        refused = Counter(f"{s.status} {s.code}" for s in mine if (s.status, s.code) in ok_codes)
        errors = Counter(f"{s.status} {s.code}" for s in mine
                         if s.status != 200 and (s.status, s.code) not in ok_codes)  # fmt: skip
        out[label] = {"calls": len(mine), "ok": len(ok_ms), "errors": dict(errors),
                      "error_count": sum(errors.values()), "accepted_refusals": dict(refused),
                      "p50_ms": percentile(ok_ms, 50), "p95_ms": percentile(ok_ms, 95),
                      "max_ms": max(ok_ms, default=None)}  # fmt: skip
    return out
