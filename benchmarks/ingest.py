"""Ingest benchmark: OTLP/HTTP end to end, ``traceproof ingest``, and DuckDB's own ``read_json``.

Every phase uses the same deterministic (seeded) OpenInference agent traces: ~70 spans per trace
(AGENT root, CHAIN, LLM, TOOL, RETRIEVER), ~3 KB per span as protobuf, some ERROR spans with
``exception`` events. Requests hold ~512 spans of whole traces (like the SDK's BatchSpanProcessor)
and are serialized before any clock starts.

1. otlp: ``traceproof serve`` on a free loopback port, fresh DB; ``--senders`` keep-alive threads
   POST to /v1/traces. The clock stops when every request got 200 (= committed); 429/503 are
   resent after Retry-After (capped at 0.5 s). ``traceproof stats --json`` must count every span.
2. import: the same spans as OTLP/JSON lines (one request per line) through ``traceproof ingest``.
3. reference: DuckDB ``read_json`` of that file into one row per span (CREATE TABLE AS).
4. ``--import-gb X``: a ~X GB OTLP/JSON lines file, streamed to disk, through ``traceproof ingest``.
Peak RSS of server/ingest processes (children included) is sampled every 50 ms with psutil.

Run from the repository root (the CLI runs as ``python -m traceproof`` from there):

    .venv/bin/python benchmarks/ingest.py                  # 200k spans, 4 senders, all phases
    .venv/bin/python benchmarks/ingest.py --spans 50000 --big-llm-span
    .venv/bin/python benchmarks/ingest.py --import-gb 1.0 --skip otlp

Prints a table (measure, value, target, ok?) and writes all figures, the machine and the command
line to ``--out`` (default benchmarks/results/ingest.json). Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import random
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import duckdb
import google.protobuf
import psutil
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

REPO = Path(__file__).resolve().parents[1]
HOST, PROJECT, MB = "127.0.0.1", "ingest-bench", 1_000_000
SPANS_PER_REQUEST, RETRY_AFTER_CAP_S, RSS_TARGET_MB, OTLP_TARGET = 512, 0.5, 600, 10_000
T0_NS = 1_750_000_000 * 10**9  # fixed epoch: the data is byte-identical on every run
WORDS = (  # the vocabulary of the generated text
    "the agent user query model tool result document context answer retrieve search function call "
    "token latency error retry cache vector index embedding score source customer order refund "
    "policy account invoice shipping status ticket priority escalate summary plan step thought "
    "action final response json schema table row column filter date amount region warehouse delay"
)
MODELS = ("gpt-4o-2024-08-06", "gpt-4o-mini", "claude-3-5-sonnet-20241022")
TOOLS = ("lookup_order", "search_kb", "run_sql", "http_get", "issue_refund", "send_email")
AttrValue = str | int | float | bool
Row = tuple[str, str, str, bool | None]


def _attrs(attrs: dict[str, AttrValue]) -> list[KeyValue]:
    def value(v: AttrValue) -> AnyValue:
        if isinstance(v, bool):
            return AnyValue(bool_value=v)
        if isinstance(v, int):
            return AnyValue(int_value=v)
        return AnyValue(double_value=v) if isinstance(v, float) else AnyValue(string_value=v)

    return [KeyValue(key=k, value=value(v)) for k, v in attrs.items()]


RESOURCE = Resource(attributes=_attrs({"service.name": "support-agent", "service.version": "1.4"}))
RESOURCE.attributes.extend(_attrs({"openinference.project.name": PROJECT}))
RESOURCE.attributes.extend(_attrs({"telemetry.sdk.language": "python"}))
SCOPE = InstrumentationScope(name="openinference.instrumentation.langchain", version="0.1.29")


class TraceGenerator:
    """Deterministic OpenInference agent traces (~70 spans, ~3 KB/span) as protobuf spans."""

    def __init__(self, seed: int, big_llm_span: bool) -> None:
        self.rng, self.big_llm_span = random.Random(seed), big_llm_span
        self.corpus = " ".join(
            self.rng.choices(WORDS.split(), k=160_000)
        )  # ~1 MB to slice text from
        self.system_prompt = "You are a support agent. " + self.text(400)
        self.traces = self.traces_sent = self.spans_sent = self.errors_sent = self.clock = 0
        self.trace_id, self.session = b"", ""
        self.spans: list[Span] = []

    def text(self, n: int) -> str:
        start = self.rng.randrange(len(self.corpus) - n)
        return self.corpus[start : start + n]

    def _start(self, name: str, kind: str, parent: Span | None, attrs: dict[str, Any]) -> Span:
        self.clock += self.rng.randrange(50_000, 2_000_000)
        span = Span(name=name, kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=self.clock)
        span.trace_id, span.span_id = self.trace_id, self.rng.randbytes(8)
        span.parent_span_id = parent.span_id if parent else b""
        common = {"openinference.span.kind": kind, "session.id": self.session}
        span.attributes.extend(_attrs({**common, **attrs}))
        self.spans.append(span)
        return span

    def _end(self, span: Span, ms: int, attrs: dict[str, Any], error: str = "") -> None:
        self.clock += ms * 1_000_000
        span.end_time_unix_nano = self.clock
        span.attributes.extend(_attrs(attrs))
        span.status.code = Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK
        if error:
            span.status.message = error
            exc = {"exception.type": error.split(":", 1)[0], "exception.message": error}
            exc["exception.stacktrace"] = "Traceback (most recent call last):\n" + self.text(900)
            event = span.events.add(name="exception", time_unix_nano=self.clock)
            event.attributes.extend(_attrs({**exc, "exception.escaped": False}))

    def _llm(self, parent: Span, history: list[tuple[str, str]], out_len: int) -> str:
        msgs = list(history)
        if self.big_llm_span and parent.name == "agent.run":  # one ~200 KB LLM span per trace
            msgs.append(("user", "Attached case file:\n" + self.text(100_000)))
        attrs: dict[str, AttrValue] = {
            "llm.model_name": self.rng.choice(MODELS),
            "llm.provider": "openai",
            "llm.invocation_parameters": '{"temperature": 0.2, "max_tokens": 1024}',
            "input.value": json.dumps({"messages": [{"role": r, "content": c} for r, c in msgs]}),
            "input.mime_type": "application/json",
        }
        for i, (role, content) in enumerate(msgs):
            attrs[f"llm.input_messages.{i}.message.role"] = role
            attrs[f"llm.input_messages.{i}.message.content"] = content
        span, answer = self._start("ChatOpenAI", "LLM", parent, attrs), self.text(out_len)
        if self.rng.random() < 0.01:
            self._end(span, 800, {}, "RateLimitError: 429 Too Many Requests, retry in 2s")
            return answer
        prompt, completion = sum(len(c) for _, c in msgs) // 4, out_len // 4
        out: dict[str, AttrValue] = {
            "output.value": answer,
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": answer,
            "llm.token_count.prompt": prompt,
            "llm.token_count.completion": completion,
            "llm.token_count.total": prompt + completion,
        }
        self._end(span, self.rng.randrange(300, 4000), out)
        return answer

    def _tool(self, parent: Span) -> None:
        name = self.rng.choice(TOOLS)
        params = {"type": "object", "properties": {"query": {"type": "string"}}}
        attrs: dict[str, AttrValue] = {
            "tool.name": name,
            "tool.description": f"{name}: " + self.text(150),
            "tool.parameters": json.dumps({**params, "description": self.text(250)}),
            "input.value": json.dumps({"query": self.text(120), "limit": 10}),
            "input.mime_type": "application/json",
        }
        span = self._start(name, "TOOL", parent, attrs)
        if self.rng.random() < 0.05:
            self._end(span, 120, {}, f"ToolError: {name} failed: " + self.text(80))
        else:
            self._end(span, self.rng.randrange(20, 900), {"output.value": self.text(900)})

    def _retriever(self, parent: Span, query: str) -> str:
        docs: dict[str, AttrValue] = {"input.value": query}
        for i in range(4):
            prefix = f"retrieval.documents.{i}.document."
            docs[prefix + "id"] = f"kb-{self.rng.randrange(100_000):06d}"
            docs[prefix + "content"] = self.text(600)
            docs[prefix + "score"] = round(self.rng.uniform(0.55, 0.95), 4)
            docs[prefix + "metadata"] = json.dumps({"source": "kb", "chunk": i})
        self._end(self._start("vector_store.search", "RETRIEVER", parent, docs), 40, {})
        return str(docs["retrieval.documents.0.document.content"])

    def trace(self) -> list[Span]:
        """One agent run: AGENT root, 9-12 steps of CHAIN/LLM/TOOL/RETRIEVER, a final LLM."""
        self.traces += 1
        self.trace_id, self.spans = self.rng.randbytes(16), []
        self.clock = T0_NS + self.traces * 3_000_000_000
        self.session = f"session-{self.rng.randrange(5_000):05d}"
        question = self.text(300)
        root = self._start("agent.run", "AGENT", None, {"input.value": question, "user.id": "u-17"})
        history = [("system", self.system_prompt), ("user", question)]
        for step in range(self.rng.randint(9, 12)):
            chain = self._start("agent.step", "CHAIN", root, {"input.value": self.text(300)})
            self._llm(chain, history, out_len=300)
            for _ in range(self.rng.choice((1, 1, 2, 2))):
                self._tool(chain)
            rag = self._start("retrieve_context", "CHAIN", chain, {"input.value": self.text(100)})
            self._end(rag, 3, {"output.value": self._retriever(rag, self.text(100))})
            answer = self._llm(chain, history, out_len=450)
            history = [*history[:2], *history[-2:], ("assistant", answer)]
            self._end(chain, 2, {"output.value": json.dumps({"step": step, "answer": answer})})
        self._end(root, 5, {"output.value": self._llm(root, history, out_len=800)})
        return sorted(self.spans, key=lambda s: s.end_time_unix_nano)  # SDK export order


def iter_requests(gen: TraceGenerator) -> Iterator[ExportTraceServiceRequest]:
    """Endless requests of whole traces, each closed before 512 spans; counts what it yields."""
    batch: list[Span] = []
    while True:
        spans = gen.trace()
        if batch and len(batch) + len(spans) > SPANS_PER_REQUEST:
            gen.traces_sent = gen.traces - 1  # the trace just made opens the next request
            gen.spans_sent += len(batch)
            gen.errors_sent += sum(s.status.code == Status.STATUS_CODE_ERROR for s in batch)
            scope_spans = [ScopeSpans(scope=SCOPE, spans=batch)]
            rs = ResourceSpans(resource=RESOURCE, scope_spans=scope_spans)
            yield ExportTraceServiceRequest(resource_spans=[rs])
            batch = []
        batch.extend(spans)


def to_otlp_json(request: ExportTraceServiceRequest) -> str:
    """OTLP/JSON: lowerCamelCase keys, int64 as strings, enums as numbers, ids as lowercase hex."""
    data = MessageToDict(request, use_integers_for_enums=True)  # bytes come out as base64
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for obj in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def write_json_lines(path: Path, requests: Iterable[ExportTraceServiceRequest], gb: float) -> None:
    """Stream requests to ``path`` as OTLP/JSON lines; stop once the file has ``gb`` (if > 0)."""
    with open(path, "wb") as f:
        for request in requests:
            f.write((to_otlp_json(request) + "\n").encode())
            if gb and f.tell() >= gb * 1e9:
                break


class PeakRSS:
    """Samples the RSS of a process plus its children every ``interval`` s; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:  # the process is gone
                return
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "traceproof", *args]


def stats_totals(db: Path) -> dict[str, Any]:
    """Spans and error spans over all projects from ``traceproof stats --json``, and the answer."""
    cmd = _cli("stats", "--db", str(db), "--json")
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"traceproof stats exited {out.returncode}: {out.stderr[-2000:]}")
    stats = json.loads(out.stdout)
    stored = sum(int(p["spans"]) for p in stats["projects"])
    return {"stored": stored, "stored_errors": sum(int(p["errors"]) for p in stats["projects"]),
            "stats": stats}  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process we started (kill after 20 s), then any descendants it left behind."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def start_server(db: Path, log: IO[bytes], timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    cmd = _cli("serve", "--db", str(db), "--host", HOST, "--port", str(port))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        finally:
            conn.close()
        try:  # the poll interval, and it notices a server that died at start-up
            code = proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        tail = Path(log.name).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"traceproof serve exited with {code} before /healthz: {tail}")
    _stop(proc)
    raise TimeoutError(f"traceproof serve: /healthz not 200 within {timeout:.0f} s")


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value else 0.1
    except ValueError:  # an HTTP-date; not worth parsing for a loopback server
        seconds = 0.1
    return min(max(seconds, 0.01), RETRY_AFTER_CAP_S)


def send_all(port: int, payloads: list[bytes], senders: int, timeout: float) -> dict[str, int]:
    """POST every payload until it gets 200, from ``senders`` keep-alive threads, by a deadline."""
    deadline, lock, todo = time.monotonic() + timeout, threading.Lock(), iter(payloads)
    counts, errors = {"retries_429_503": 0, "reconnects": 0}, list[str]()
    headers = {"Content-Type": "application/x-protobuf"}

    def post(conn: http.client.HTTPConnection, body: bytes) -> None:
        broken = 0
        while time.monotonic() < deadline:
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # the next request() reconnects
                broken += 1
                with lock:
                    counts["reconnects"] += 1
                if broken > 3:
                    raise
                continue
            if resp.status == 200:
                return
            if resp.status not in (429, 503):
                raise RuntimeError(f"HTTP {resp.status}: {text[:300]!r}")
            with lock:
                counts["retries_429_503"] += 1
            time.sleep(_retry_after(resp.getheader("Retry-After")))  # as the server asked
        raise TimeoutError(f"not every request got 200 within {timeout:.0f} s")

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            while not errors:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                post(conn, body)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0) + 130)
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"sending failed: {errors[:3] or 'sender threads still running'}")
    return counts


def run_otlp(work: Path, payloads: list[bytes], spans: int, args: Any) -> dict[str, Any]:
    with open(work / "serve.log", "wb") as log:
        proc, port = start_server(work / "otlp.duckdb", log, timeout=120)
        try:
            with PeakRSS(proc.pid) as rss:
                t0 = time.perf_counter()
                counts = send_all(port, payloads, args.senders, args.timeout)
                elapsed = time.perf_counter() - t0
                stored = stats_totals(work / "otlp.duckdb")  # served by the running server
                confirmed = time.perf_counter() - t0
        finally:
            _stop(proc)
    size = sum(map(len, payloads))
    return {"spans": spans, "requests": len(payloads), "mb": size / MB, "seconds": elapsed,
            "spans_per_s": spans / elapsed, "mb_per_s": size / MB / elapsed, **counts,
            "peak_rss_mb": rss.peak / MB, "seconds_until_stats_confirmed": confirmed,
            **stored}  # fmt: skip


def run_import(path: Path, db: Path, spans: int, timeout: float) -> dict[str, Any]:
    cmd = _cli("ingest", str(path), "--db", str(db), "--project", PROJECT)
    with open(db.with_suffix(".log"), "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            with PeakRSS(proc.pid) as rss:
                code = proc.wait(timeout=timeout)
        finally:
            _stop(proc)
        elapsed = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"traceproof ingest exited {code}: {db.with_suffix('.log').read_text()}")
    mb = path.stat().st_size / MB
    return {"spans": spans, "file_mb": mb, "seconds": elapsed, "spans_per_s": spans / elapsed,
            "mb_per_s": mb / elapsed, "peak_rss_mb": rss.peak / MB,
            **stats_totals(db)}  # fmt: skip


def run_read_json(path: Path, db: Path, spans: int) -> dict[str, Any]:
    """Reference: DuckDB alone turns the same file into one row per span (connect to close)."""
    src = str(path).replace("'", "''")
    sql = f"""CREATE TABLE spans AS
        WITH r AS (SELECT unnest(resourceSpans) AS rs FROM read_json('{src}',
                   format = 'newline_delimited', maximum_object_size = 1073741824)),
             s AS (SELECT rs.resource AS resource, unnest(rs.scopeSpans) AS ss FROM r),
             p AS (SELECT resource, ss.scope AS scope, unnest(ss.spans) AS span FROM s)
        SELECT resource.attributes AS resource_attributes, scope.name AS scope_name, unnest(span)
        FROM p"""
    t0 = time.perf_counter()
    with duckdb.connect(str(db)) as con:
        con.execute(sql)
    elapsed = time.perf_counter() - t0
    with duckdb.connect(str(db), read_only=True) as con:
        rows = (con.execute("SELECT count(*) FROM spans").fetchone() or (0,))[0]
    return {"spans": spans, "rows": rows, "seconds": elapsed, "spans_per_s": spans / elapsed}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="traceproof ingest benchmark (see module docstring)")
    p.add_argument("--spans", type=int, default=200_000, help="spans to generate (whole traces)")
    p.add_argument("--senders", type=int, default=4, help="concurrent OTLP sender threads")
    p.add_argument("--big-llm-span", action="store_true", help="add one 200 KB LLM span per trace")
    p.add_argument("--import-gb", type=float, default=0.0, help="also import a ~X GB JSONL file")
    p.add_argument("--skip", action="append", default=[], choices=["otlp", "import", "reference"])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=1800, help="deadline per phase, seconds")
    p.add_argument("--workdir", type=Path, help="parent of the temp dir for DBs, files, logs")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    return p.parse_args(argv)


def table(res: dict[str, Any]) -> list[Row]:
    """Rows of (measure, value, target, ok?); ok is None where there is no target."""
    rows: list[Row] = []

    def add(measure: str, v: float, target: str = "", ok: bool | None = None) -> None:
        text = f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
        rows.append((measure, f"{v:,}" if isinstance(v, int) else text, target, ok))

    d, o, ref = res["data"], res.get("otlp"), res.get("read_json", {}).get("spans_per_s")
    add("spans sent / written", d["spans"])
    add("spans per trace", d["spans_per_trace"], "~70")
    add("avg span bytes (protobuf)", d["avg_span_bytes"], "~3,000")
    if o:
        add("OTLP e2e spans/s", o["spans_per_s"], ">= 10,000", o["spans_per_s"] >= OTLP_TARGET)
        add("OTLP e2e MB/s", o["mb_per_s"])
        add("OTLP 429/503 retries", o["retries_429_503"])
        add("OTLP server peak RSS MB", o["peak_rss_mb"])
        add("OTLP spans in stats", o["stored"], "== sent", o["stored"] == o["spans"])
        ok = o["stored_errors"] == d["error_spans"]
        add("OTLP error spans in stats", o["stored_errors"], f"== {d['error_spans']:,}", ok)
    for key, label in (("import", "import"), ("import_big", "import --import-gb")):
        if i := res.get(key):
            add(f"{label} spans/s ({i['file_mb']:,.0f} MB)", i["spans_per_s"])
            add(f"{label} peak RSS MB", i["peak_rss_mb"], "< 600", i["peak_rss_mb"] < RSS_TARGET_MB)
            add(f"{label} spans in stats", i["stored"], "== written", i["stored"] == i["spans"])
    if r := res.get("read_json"):
        add("read_json spans/s", r["spans_per_s"])
        add("read_json rows", r["rows"], "== written", r["rows"] == r["spans"])
    if o and ref:
        add("OTLP / read_json", o["spans_per_s"] / ref, ">= 1.00", o["spans_per_s"] >= ref)
    if (i := res.get("import")) and ref:
        add("import / read_json", i["spans_per_s"] / ref)
    return rows


def print_table(rows: list[Row]) -> None:
    cells = [("measure", "value", "target", "ok?")]
    cells += [(m, v, t, "" if ok is None else ("yes" if ok else "NO")) for m, v, t, ok in rows]
    widths = [max(len(row[c]) for row in cells) for c in range(4)]
    for k, row in enumerate(cells):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="traceproof-bench-", dir=args.workdir))
    res: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv])}
    res["machine"] = {
        "logical_cpus": os.cpu_count(), "physical_cpus": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1), "platform": platform.platform(),
        "python": platform.python_version(), "duckdb": duckdb.__version__,
        "protobuf": google.protobuf.__version__,
    }  # fmt: skip
    rows: list[Row] = []
    try:
        gen, t0, payloads = TraceGenerator(args.seed, args.big_llm_span), time.perf_counter(), []
        for request in iter_requests(gen):
            payloads.append(request.SerializeToString())
            if gen.spans_sent >= args.spans:
                break
        spans, size = gen.spans_sent, sum(map(len, payloads))
        res["data"] = {"spans": spans, "traces": gen.traces_sent, "requests": len(payloads),
                       "spans_per_trace": spans / gen.traces_sent, "avg_span_bytes": size / spans,
                       "error_spans": gen.errors_sent, "big_llm_span": args.big_llm_span,
                       "generate_seconds": time.perf_counter() - t0}  # fmt: skip
        print(f"generated {spans:,} spans in {len(payloads)} requests", flush=True)
        if "otlp" not in args.skip:
            res["otlp"] = run_otlp(work, payloads, spans, args)
            print(f"otlp: {res['otlp']['spans_per_s']:,.0f} spans/s", flush=True)
        jsonl = work / "spans.jsonl"
        if {"import", "reference"} - set(args.skip):
            write_json_lines(jsonl, map(ExportTraceServiceRequest.FromString, payloads), 0)
            res["data"]["jsonl_mb"] = jsonl.stat().st_size / MB
        del payloads
        if "import" not in args.skip:
            res["import"] = run_import(jsonl, work / "import.duckdb", spans, args.timeout)
            print(f"import: {res['import']['spans_per_s']:,.0f} spans/s", flush=True)
        if "reference" not in args.skip:
            res["read_json"] = run_read_json(jsonl, work / "read_json.duckdb", spans)
            print(f"read_json: {res['read_json']['spans_per_s']:,.0f} spans/s", flush=True)
        if not args.keep:
            jsonl.unlink(missing_ok=True)
        if args.import_gb > 0:
            big_gen, big = TraceGenerator(args.seed + 1, args.big_llm_span), work / "big.jsonl"
            write_json_lines(big, iter_requests(big_gen), args.import_gb)
            db = work / "import_big.duckdb"
            res["import_big"] = run_import(big, db, big_gen.spans_sent, args.timeout)
        rows = table(res)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        res["table"] = [{"measure": m, "value": v, "target": t, "ok": k} for m, v, t, k in rows]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(rows)
    print(f"\nwritten to {args.out}" + (f"; temp files kept in {work}" if args.keep else ""))
    return 0 if all(ok is not False for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
