"""Judge overhead per judgment beyond the model's own latency, at a given concurrency.

The real anthropic client talks to an httpx2 mock transport that answers every call after a
fixed latency (``--latency-ms``); ``judge`` (threads) and ``ajudge`` (asyncio) run ``--n``
judgments at ``--concurrency`` over targets with a ~70-span trace each, so prompt rendering,
trace context, the SDK, answer parsing and quote checks are all in the path. The mock does as
little as it can (it finds the trace id in the request bytes and returns a body built before
the clock starts), so its own CPU is not counted against the judge.

What is measured, per run:

- overhead per judgment, mean: ``wall / rounds - latency``, where ``rounds = ceil(n /
  concurrency)`` is how many judgments each of the ``concurrency`` slots runs one after the
  other. Each slot's judgments take latency + overhead; the wall time is ``rounds`` of them.
  This is everything a judgment costs beyond the model: the prompt and trace context built
  before the call, the SDK, the checks after it, the hand-offs between threads or tasks and
  waiting for the GIL while the other slots do their own work.
- overhead per judgment, p50: a judgment's slot passes to the next judgment when it ends, so
  the time from one judgment's start to the start of the judgment ``concurrency`` places later
  (starts in order) is one judgment's whole time on its slot; minus the latency, its median.
- call overhead, p50: a judgment's recorded call latency minus the transport's (the client's
  own time inside the call: SDK request building, JSON, response parsing, accounting).
- CPU per judgment: the process's CPU time (every thread, the mock's small part included)
  over n. It does not depend on what else the machine runs, the wall figures do.

Each measurement runs ``--repeat`` times (default 3); the table gives the best and the median.
``--baseline REF`` runs the same measurement against the ``traceproof`` package as it was at the
git revision REF (extracted with ``git archive`` into a temporary directory, in a child process)
so that before and after are measured on the same machine in the same minute.

Target: mean overhead per judgment <= 5 ms at concurrency 8 (judged on the median of the runs).
Prints a table and writes benchmarks/results/judge.json.

    .venv/bin/python benchmarks/judge.py                     # 500 judgments, concurrency 8, 50 ms
    .venv/bin/python benchmarks/judge.py --baseline b84e905  # and the code at b84e905 beside it
    .venv/bin/python benchmarks/judge.py --n 2000 --latency-ms 20 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

from traceproof.evals.judge import (
    TOOL_NAME,
    JudgeDefinition,
    JudgeTarget,
    Judgment,
    ajudge,
    judge,
)
from traceproof.evals.llm import LLMClient
from traceproof.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "judge.json"
TARGET_MS = 5.0


def answer_body(trace: str) -> bytes:
    tool_input = {
        "explanation": "The search result names Canberra; the final answer says Sydney.",
        "evidence": [
            {"quote": "Canberra is the capital city of Australia", "span_id": f"{trace}-s3"},
            {"quote": "this quote appears nowhere", "span_id": None},
        ],
        "label": "fail",
    }
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-5-5",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": tool_input}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 3000, "output_tokens": 120},
        }
    ).encode()


class Spans(list[dict[str, Any]]):
    """A target's spans that note when a judgment first reads them: the judgment's start."""

    starts: list[float]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not getattr(self, "started", False):
            self.started = True
            self.starts.append(time.perf_counter())
        return super().__iter__()


def trace_spans(trace: str, count: int = 70) -> list[dict[str, Any]]:
    start = 1_700_000_000_000_000
    spans: list[dict[str, Any]] = [
        {
            "span_id": f"{trace}-root",
            "name": "agent",
            "span_kind": "AGENT",
            "start_us": start,
            "end_us": start + count * 20_000,
            "input_value": "What is the capital of Australia? " * 5,
            "output_value": "The capital of Australia is Sydney.",
        }
    ]
    for n in range(1, count):
        kind = ("LLM", "TOOL", "RETRIEVER")[n % 3]
        spans.append(
            {
                "span_id": f"{trace}-s{n}",
                "parent_span_id": f"{trace}-root",
                "name": f"{kind.lower()}_{n % 5}",
                "span_kind": kind,
                "status": "OK",
                "start_us": start + n * 20_000,
                "end_us": start + n * 20_000 + 15_000,
                "model": "claude-haiku-4-5" if kind == "LLM" else None,
                "total_tokens": 900 if kind == "LLM" else None,
                "input_value": f"step {n}: " + "context words " * 60,
                "output_value": "Canberra is the capital city of Australia. " * (1 + n % 4),
            }
        )
    return spans


def targets(n: int, starts: list[float]) -> list[JudgeTarget]:
    made = []
    for i in range(n):
        spans = Spans(trace_spans(f"t{i}"))
        spans.starts = starts
        made.append(
            JudgeTarget(
                id=f"t{i}-root",
                input="What is the capital of Australia?",
                output="The capital of Australia is Sydney.",
                expected="Canberra",
                spans=spans,
            )
        )
    return made


DEFINITION = JudgeDefinition(
    name="correctness",
    rubric="Is the answer right?\n<q>{input}</q>\n<a>{output}</a>\n<ref>{expected}</ref>\n{trace}",
    labels=("fail", "pass"),
    scores={"fail": 0.0, "pass": 1.0},
    insufficient_evidence=True,
)


def bodies(n: int) -> dict[bytes, bytes]:
    return {f"t{i}".encode(): answer_body(f"t{i}") for i in range(n)}


def answer(request: httpx2.Request, prepared: dict[bytes, bytes]) -> httpx2.Response:
    """The prepared answer for the trace the prompt is about (``t12`` of the first
    ``t12-root``): two byte searches, so that the mock's CPU stays out of the figures."""
    content = request.content
    at = content.find(b"-root")
    trace = content[content.rfind(b"t", 0, at) : at]
    return httpx2.Response(
        200, content=prepared[trace], headers={"content-type": "application/json"}
    )


Run = tuple[float, float, list[float], list[Judgment]]


def run_threads(n: int, concurrency: int, latency: float) -> Run:
    prepared = bodies(n)

    def handler(request: httpx2.Request) -> httpx2.Response:
        time.sleep(latency)
        return answer(request, prepared)

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = LLMClient(
        Settings(llm_concurrency=concurrency),
        api_key="sk-bench",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler), limits=limits),
    )
    starts: list[float] = []
    work = targets(n, starts)
    cpu, started = time.process_time(), time.perf_counter()
    judgments = judge(DEFINITION, work, client, concurrency=concurrency)
    return time.perf_counter() - started, time.process_time() - cpu, starts, judgments


def run_async(n: int, concurrency: int, latency: float) -> Run:
    prepared = bodies(n)

    async def handler(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(latency)
        return answer(request, prepared)

    async def main() -> Run:
        client = LLMClient(
            Settings(llm_concurrency=concurrency),
            api_key="sk-bench",
            async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        )
        starts: list[float] = []
        work = targets(n, starts)
        cpu, started = time.process_time(), time.perf_counter()
        judgments = await ajudge(DEFINITION, work, client, concurrency=concurrency)
        return time.perf_counter() - started, time.process_time() - cpu, starts, judgments

    return asyncio.run(main())


def measure(path: str, run: Run, n: int, concurrency: int, latency_ms: float) -> dict[str, float]:
    wall, cpu, starts, judgments = run
    errors = [j for j in judgments if j.error]
    if errors:
        raise SystemExit(f"{path}: {len(errors)} judgments failed: {errors[0].error}")
    if any(j.flags != ["unsupported_quotes"] for j in judgments):
        raise SystemExit(f"{path}: quotes were not checked as expected")
    if len(starts) != n:
        raise SystemExit(f"{path}: {len(starts)} judgment starts seen, not {n}")
    starts.sort()
    cycles = [b - a for a, b in zip(starts, starts[concurrency:], strict=False)]
    rounds = -(-n // concurrency)
    return {
        "wall_s": wall,
        "overhead_ms_mean": wall * 1000 / rounds - latency_ms,
        "overhead_ms_p50": statistics.median(cycles) * 1000 - latency_ms,
        "call_overhead_ms_p50": statistics.median(j.latency_ms - latency_ms for j in judgments),
        "cpu_ms_per_judgment": cpu * 1000 / n,
    }


METRICS = (
    "wall_s",
    "overhead_ms_mean",
    "overhead_ms_p50",
    "call_overhead_ms_p50",
    "cpu_ms_per_judgment",
)


def measure_all(args: argparse.Namespace, repeat: int) -> list[dict[str, Any]]:
    """One row per path with ``repeat`` runs of every metric (after a warm-up run)."""
    latency = args.latency_ms / 1000
    runs = {"threads": run_threads, "async": run_async}
    rows = []
    for path, run in runs.items():
        if args.path not in (path, "both"):
            continue
        run(min(args.n, 16), args.concurrency, latency)  # warm-up: imports, pools
        samples = [
            measure(
                path,
                run(args.n, args.concurrency, latency),
                args.n,
                args.concurrency,
                args.latency_ms,
            )
            for _ in range(repeat)
        ]
        rows.append({"path": path, **{key: [s[key] for s in samples] for key in METRICS}})
    return rows


def summarise(version: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    """Rows of one version (runs of the same path merged): best, median and every run."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = merged.setdefault(row["path"], {})
        for key in METRICS:
            into.setdefault(key, []).extend(row[key])
    out = []
    for path, runs in merged.items():
        summary: dict[str, Any] = {
            "version": version,
            "path": path,
            "n": args.n,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "runs": len(runs["wall_s"]),
        }
        for key in METRICS:
            values = runs[key]
            summary[key] = {
                "best": round(min(values), 3),
                "median": round(statistics.median(values), 3),
                "runs": [round(v, 3) for v in values],
            }
        summary["target_ms"] = TARGET_MS
        summary["ok"] = summary["overhead_ms_mean"]["median"] <= TARGET_MS
        out.append(summary)
    return out


def child(args: argparse.Namespace, pythonpath: str | None) -> list[dict[str, Any]]:
    """One run of every path in a fresh process, importing traceproof from ``pythonpath``
    (None: this checkout)."""
    with tempfile.TemporaryDirectory(prefix="judge-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, __file__, "--rows-out", str(out), "--repeat", "1"]
        command += ["--n", str(args.n), "--concurrency", str(args.concurrency)]
        command += ["--latency-ms", str(args.latency_ms), "--path", args.path]
        env = dict(os.environ)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        subprocess.run(command, check=True, env=env)
        result: dict[str, Any] = json.loads(out.read_text())
    if pythonpath is not None and not result["package"].startswith(pythonpath):
        raise SystemExit(f"the baseline imported traceproof from {result['package']}")
    rows: list[dict[str, Any]] = result["rows"]
    return rows


def compare(ref: str, args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """Before (traceproof at ``ref``) and after (this checkout), each run in a child process,
    alternating, so that a change in the machine's load falls on both alike."""
    with tempfile.TemporaryDirectory(prefix="judge-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "traceproof"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        before: list[dict[str, Any]] = []
        after: list[dict[str, Any]] = []
        for _ in range(args.repeat):
            before += child(args, tmp)
            after += child(args, None)
    return summarise(f"before {ref}", before, args), summarise("after", after, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--path", choices=["threads", "async", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", metavar="REF", help="also measure traceproof at REF")
    parser.add_argument("--rows-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import traceproof

    package = str(Path(traceproof.__file__).parent)
    if args.rows_out:  # a child of --baseline: its rows only
        rows = measure_all(args, args.repeat)
        args.rows_out.write_text(json.dumps({"package": package, "rows": rows}))
        return 0
    load_before = os.getloadavg()
    if args.baseline:
        before, after = compare(args.baseline, args)
    else:
        before, after = [], summarise("current", measure_all(args, args.repeat), args)
    load_after = os.getloadavg()
    print_table([*before, *after])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "judge overhead per judgment beyond the model's latency",
                "command": "python benchmarks/judge.py " + " ".join(sys.argv[1:]),
                "python": platform.python_version(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "machine_note": "shared with other jobs while measured: the wall figures "
                "include their load; CPU per judgment depends on it much less",
                "load_average_1m": [round(load_before[0], 2), round(load_after[0], 2)],
                "baseline": args.baseline,
                "rows": [*before, *after],
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"best / median of {args.repeat} runs each; load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f} on {os.cpu_count()} cores shared with other jobs\nwrote {RESULTS}"
    )
    return 0 if all(r["ok"] for r in after) else 1


def print_table(rows: list[dict[str, Any]]) -> None:
    def pair(row: dict[str, Any], key: str) -> str:
        return f"{row[key]['best']:.2f} / {row[key]['median']:.2f}"

    columns = [
        ("version", 17),
        ("path", 8),
        ("n", 5),
        ("conc", 4),
        ("latency", 8),
        ("overhead mean", 14),
        ("overhead p50", 14),
        ("call p50", 14),
        ("CPU/judgment", 14),
        ("", 6),
    ]
    header = " ".join(f"{name:>{width}}" for name, width in columns)
    print("overhead per judgment beyond the model's latency, ms: best / median")
    print(header)
    print("-" * len(header))
    for r in rows:
        cells = [
            r["version"],
            r["path"],
            str(r["n"]),
            str(r["concurrency"]),
            f"{r['latency_ms']:.0f}ms",
            pair(r, "overhead_ms_mean"),
            pair(r, "overhead_ms_p50"),
            pair(r, "call_overhead_ms_p50"),
            pair(r, "cpu_ms_per_judgment"),
            "ok" if r["ok"] else "over",
        ]
        print(" ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
