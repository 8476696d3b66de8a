"""Claude Code telemetry over ``POST /v1/logs``: events per second, end to end.

Builds deterministic Claude Code sessions as OTLP log records with the OpenTelemetry logs SDK
(per prompt: a ``user_prompt``, then ``--calls`` model calls each followed by a tool result,
the Bash ones with a failing test run now and then), encodes them with the SDK's own encoder in
requests of ``--batch`` records (Claude Code's exporter batches every 5 s), starts
``traceproof serve`` on a free loopback port with a fresh DB and POSTs every request (one
keep-alive sender, each answered 200 only after its spans are committed). Then it counts the
stored spans, which must be one per prompt plus one per mapped event.

    .venv/bin/python benchmarks/telemetry_logs.py
    .venv/bin/python benchmarks/telemetry_logs.py --sessions 50 --prompts 20 --out /tmp/t.json

Prints a table and writes the figures, the machine and the command line to ``--out`` (default
benchmarks/results/telemetry_logs.json). Target: ≥ 1,000 events/s end to end, a thousand live
sessions at once (a Claude Code session sends at most about one event a second while it
works, in batches every 5 s). Exit status 1 when the target or the span count fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx2
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

T0_NS = 1_773_570_600_000_000_000  # 2026-03-15T10:30:00Z
TARGET_EVENTS_PER_S = 1_000


class Session:
    """One session's events, with its clock and sequence numbers."""

    def __init__(self, logger: Any, number: int) -> None:
        self.logger, self.id = logger, f"session-{number}"
        self.at, self.sequence = T0_NS + number * 10**12, 0

    def emit(self, name: str, prompt_id: str, **attributes: Any) -> None:
        self.at += 1_500_000_000
        attributes |= {"event.name": name, "event.sequence": self.sequence,
                       "session.id": self.id, "prompt.id": prompt_id}  # fmt: skip
        self.sequence += 1
        self.logger.emit(
            LogRecord(timestamp=self.at, body=f"claude_code.{name}", attributes=attributes)
        )


def records(sessions: int, prompts: int, calls: int) -> tuple[list[Any], int]:
    """The log records of every session, and how many spans they should make."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "claude-code"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    tools = [("Read", '{"file_path": "src/app.py"}'), ("Edit", '{"file_path": "src/app.py"}'),
             ("Bash", '{"command": "pytest -q"}'), ("Grep", '{"pattern": "TODO"}')]  # fmt: skip
    expected = 0
    for number in range(sessions):
        session = Session(logger, number)
        for p in range(prompts):
            prompt = f"{number:04d}-{p:04d}"
            session.emit("user_prompt", prompt, prompt_length=30, prompt=f"task {prompt}: fix it")
            expected += 1
            for c in range(calls):
                session.emit(
                    "api_request", prompt, model="claude-sonnet-4-6", input_tokens=1200 + c,
                    output_tokens=300, cache_read_tokens=20_000, cache_creation_tokens=500,
                    cost_usd=0.012, duration_ms=2400, request_id=f"req_{prompt}_{c}",
                )  # fmt: skip
                name, arguments = tools[c % len(tools)]
                failed = name == "Bash" and c % 3 == 0
                session.emit(
                    "tool_result", prompt, tool_name=name, success="false" if failed else "true",
                    duration_ms=300, tool_use_id=f"toolu_{prompt}_{c}", tool_input=arguments,
                    error="Exit code 1" if failed else None,
                )  # fmt: skip
                expected += 2
    found = list(memory.get_finished_logs())
    provider.shutdown()
    return found, expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=25)
    parser.add_argument("--calls", type=int, default=10, help="model calls per prompt")
    parser.add_argument("--batch", type=int, default=512, help="log records per request")
    parser.add_argument("--out", default="benchmarks/results/telemetry_logs.json")
    args = parser.parse_args()
    logs, expected = records(args.sessions, args.prompts, args.calls)
    bodies = [
        bytes(encode_logs(logs[i : i + args.batch]).SerializeToString())
        for i in range(0, len(logs), args.batch)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="traceproof-telemetry-"))
    db, port = workdir / "bench.duckdb", free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "traceproof", "serve", "--db", str(db), "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(timeout=60) as client:
            for _ in range(600):
                try:
                    if client.get(url + "/healthz").status_code == 200:
                        break
                except httpx2.HTTPError:
                    time.sleep(0.1)
            began = time.perf_counter()
            for body in bodies:
                headers = {"content-type": "application/x-protobuf"}
                response = client.post(url + "/v1/logs", content=body, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"/v1/logs answered {response.status_code}")
            seconds = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    with duckdb.connect(str(db), read_only=True) as conn:
        row = conn.execute("SELECT count(*) FROM spans").fetchone()
        stored = int(row[0]) if row else 0
    rate = len(logs) / seconds
    result = {
        "events": len(logs),
        "requests": len(bodies),
        "seconds": round(seconds, 3),
        "events_per_s": round(rate),
        "spans_stored": stored,
        "spans_expected": expected,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "ok": stored == expected and rate >= TARGET_EVENTS_PER_S,
    }
    print(f"{'events':>8} {'requests':>8} {'s':>7} {'events/s':>9} {'spans':>8} {'expected':>8}")
    print(f"{len(logs):>8,} {len(bodies):>8} {seconds:>7.2f} {rate:>9,.0f} {stored:>8,} "
          f"{expected:>8,}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "result": result,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "command": " ".join(sys.argv),
    }, indent=2) + "\n")  # fmt: skip
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()
    if not result["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
