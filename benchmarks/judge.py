"""Judge overhead per judgment beyond the model's own latency.

The real anthropic client talks to an httpx2 mock transport that answers every call after a
fixed latency (``--latency-ms``); ``judge`` (threads) and ``ajudge`` (asyncio) run ``--n``
judgments at ``--concurrency`` over targets with a ~70-span trace each, so prompt rendering,
trace context, the SDK, answer parsing and quote checks are all in the path.

Two figures per path:
- per call: a judgment's recorded latency minus the transport's latency (the client's own time
  inside the call: SDK request building, JSON, response parsing, accounting);
- per judgment: wall time x concurrency / n minus the latency (everything, including the prompt
  and trace context built before the call and the checks after it).

Target: per judgment <= 5 ms. Prints a table and writes benchmarks/results/judge.json.

    .venv/bin/python benchmarks/judge.py            # 500 judgments, concurrency 8, 50 ms
    .venv/bin/python benchmarks/judge.py --n 2000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
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


def targets(n: int) -> list[JudgeTarget]:
    return [
        JudgeTarget(
            id=f"t{i}-root",
            input="What is the capital of Australia?",
            output="The capital of Australia is Sydney.",
            expected="Canberra",
            spans=trace_spans(f"t{i}"),
        )
        for i in range(n)
    ]


DEFINITION = JudgeDefinition(
    name="correctness",
    rubric="Is the answer right?\n<q>{input}</q>\n<a>{output}</a>\n<ref>{expected}</ref>\n{trace}",
    labels=("fail", "pass"),
    scores={"fail": 0.0, "pass": 1.0},
    insufficient_evidence=True,
)


def trace_of(request: httpx2.Request) -> str:
    body = json.loads(request.content)
    prompt = body["messages"][0]["content"]
    at = prompt.index("-root")
    return prompt[prompt.rindex("t", 0, at) : at]


def run_threads(n: int, concurrency: int, latency: float) -> tuple[float, list[Judgment]]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        time.sleep(latency)
        return httpx2.Response(200, content=answer_body(trace_of(request)))

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = LLMClient(
        Settings(llm_concurrency=concurrency),
        api_key="sk-bench",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler), limits=limits),
    )
    work = targets(n)
    started = time.perf_counter()
    judgments = judge(DEFINITION, work, client, concurrency=concurrency)
    return time.perf_counter() - started, judgments


def run_async(n: int, concurrency: int, latency: float) -> tuple[float, list[Judgment]]:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(latency)
        return httpx2.Response(200, content=answer_body(trace_of(request)))

    async def main() -> tuple[float, list[Judgment]]:
        client = LLMClient(
            Settings(llm_concurrency=concurrency),
            api_key="sk-bench",
            async_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        )
        work = targets(n)
        started = time.perf_counter()
        judgments = await ajudge(DEFINITION, work, client, concurrency=concurrency)
        return time.perf_counter() - started, judgments

    return asyncio.run(main())


def summarise(
    path: str, wall: float, judgments: list[Judgment], n: int, concurrency: int, latency_ms: float
) -> dict[str, Any]:
    errors = [j for j in judgments if j.error]
    if errors:
        raise SystemExit(f"{path}: {len(errors)} judgments failed: {errors[0].error}")
    if any(j.flags != ["unsupported_quotes"] for j in judgments):
        raise SystemExit(f"{path}: quotes were not checked as expected")
    inside = sorted(j.latency_ms - latency_ms for j in judgments)
    per_judgment = wall * 1000 * concurrency / n - latency_ms
    return {
        "path": path,
        "n": n,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "wall_s": round(wall, 3),
        "ideal_wall_s": round(-(-n // concurrency) * latency_ms / 1000, 3),
        "judgments_per_s": round(n / wall, 1),
        "call_overhead_ms_p50": round(statistics.median(inside), 3),
        "call_overhead_ms_p95": round(inside[int(0.95 * (len(inside) - 1))], 3),
        "overhead_ms_per_judgment": round(per_judgment, 3),
        "target_ms": TARGET_MS,
        "ok": per_judgment <= TARGET_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--path", choices=["threads", "async", "both"], default="both")
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    rows = []
    runs = {"threads": run_threads, "async": run_async}
    for path, run in runs.items():
        if args.path not in (path, "both"):
            continue
        run(min(args.n, 16), args.concurrency, latency)  # warm-up: imports, pools
        wall, judgments = run(args.n, args.concurrency, latency)
        rows.append(summarise(path, wall, judgments, args.n, args.concurrency, args.latency_ms))
    header = (
        f"{'path':8} {'n':>5} {'conc':>4} {'latency':>8} {'wall s':>7} {'ideal s':>7} "
        f"{'judg/s':>7} {'call p50':>8} {'call p95':>8} {'overhead/judgment':>18}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        verdict = "ok" if r["ok"] else f"over {TARGET_MS} ms"
        print(
            f"{r['path']:8} {r['n']:>5} {r['concurrency']:>4} {r['latency_ms']:>6.0f}ms "
            f"{r['wall_s']:>7.3f} {r['ideal_wall_s']:>7.3f} {r['judgments_per_s']:>7.1f} "
            f"{r['call_overhead_ms_p50']:>6.2f}ms {r['call_overhead_ms_p95']:>6.2f}ms "
            f"{r['overhead_ms_per_judgment']:>9.2f} ms ({verdict})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "judge overhead per judgment",
                "command": "python benchmarks/judge.py " + " ".join(sys.argv[1:]),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
