"""Live latency: how long after a Claude Code session writes a line its span is queryable.

    .venv/bin/python benchmarks/live_latency.py [--turns 20] [--pace 0.3] [--interval 0.25]

``traceproof serve`` on a fresh store and a free loopback port, and ``traceproof watch`` on a
temporary projects directory (so it imports through the server). A session is then written the
way Claude Code writes it, one line every ``--pace`` seconds, with fresh timestamps (the turn is
in progress): per turn a prompt, then two tool calls (Bash, Read) each answered by its result,
a final answer and ``turn_duration``; the session file grows to ``--turns`` turns behind a
history of ``--history`` closed turns written before the watch starts (so each import reads from
the turn in progress, not the file). After each tool result line the benchmark polls the
server's ``get_span_data`` (the tools' HTTP API, as an agent's MCP call reaches it) for the
tool call's span; after ``turn_duration`` for the turn's root. Latency = from the ``write`` of
the line to the first answer that has the span.

Prints p50/p95/max per kind, writes benchmarks/results/live_latency.json, exits 1 when the p95
of tool spans is over the target (2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServeProcess
from tests.trajectories.claude_files import SESSION, Transcript, text, tool_use
from traceproof.errors import TraceproofError
from traceproof.remote import RemoteStore
from traceproof.trajectories.common import span_id_for, trace_id_for

RESULTS = Path(__file__).resolve().parent / "results" / "live_latency.json"
TARGET_S = 2.0


def turn(t: Transcript, n: int) -> list[tuple[str, tuple[str, str] | None]]:
    """The records of turn ``n`` (appended to ``t``), each with the span it makes queryable
    (``("tool", id)`` on a tool result's line, ``("root", id)`` on ``turn_duration``)."""
    start = len(t.records)
    marks: dict[int, tuple[str, str]] = {}
    prompt = t.prompt(f"u{n}", f"turn {n}: fix the failing test", parent=None if n == 0 else "")
    for k, (tool, arguments) in enumerate(
        [("Bash", {"command": "pytest -q"}), ("Read", {"file_path": f"/src/m{n}.py"})]
    ):
        tool_id = f"toolu_{n}_{k}"
        t.assistant(f"a{n}_{k}", f"msg_{n}_{k}", tool_use(tool_id, tool, arguments))
        t.result(f"r{n}_{k}", tool_id, "1 passed" if k else "ok\n" * 40)
        marks[len(t.records) - 1] = ("tool", span_id_for("claude_code", SESSION, f"tool:{tool_id}"))
    t.assistant(f"a{n}_end", f"msg_{n}_end", text("Fixed."))
    t.system(f"s{n}", "turn_duration", durationMs=5000)
    marks[len(t.records) - 1] = ("root", span_id_for("claude_code", SESSION, f"turn:{prompt}"))
    return [(json.dumps(t.records[i]), marks.get(i)) for i in range(start, len(t.records))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--history", type=int, default=200, help="closed turns written first")
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between lines")
    parser.add_argument("--interval", type=float, default=0.25, help="watch's poll interval")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tp-live-"))
    db = work / "s.duckdb"
    folder = work / "projects" / "-home-USER-projects-shop"
    folder.mkdir(parents=True)
    path = folder / f"{SESSION}.jsonl"
    t = Transcript(start=datetime.now(UTC) - timedelta(seconds=10 * args.history))
    with path.open("w", encoding="utf-8") as f:
        for n in range(args.history):
            f.write("".join(line + "\n" for line, _ in turn(t, n)))
    history_bytes = path.stat().st_size
    server = ServeProcess(db)
    watch = subprocess.Popen(
        [sys.executable, "-m", "traceproof", "watch", str(work / "projects"), "--db", str(db),
         "--json", "--interval", str(args.interval)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    remote = RemoteStore(server.url)
    latencies: dict[str, list[float]] = {"tool": [], "root": []}
    try:
        assert watch.stdout is not None
        json.loads(watch.stdout.readline())  # started
        history_root = span_id_for("claude_code", SESSION, f"turn:u{args.history - 1}")
        _wait(remote, history_root, trace_id_for("claude_code", SESSION, f"u{args.history - 1}"))
        t.start = datetime.now(UTC)
        t.seconds = 0
        for n in range(args.history, args.history + args.turns):
            trace_id = trace_id_for("claude_code", SESSION, f"u{n}")
            for line, mark in turn(t, n):
                with path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")
                written = time.monotonic()
                if mark is not None:
                    kind, span_id = mark
                    latencies[kind].append(_wait(remote, span_id, trace_id) - written)
                time.sleep(max(0.0, args.pace - (time.monotonic() - written)))
    finally:
        watch.terminate()
        watch.wait(timeout=60)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    figures: dict[str, Any] = {
        "turns": args.turns,
        "history_turns": args.history,
        "history_bytes": history_bytes,
        "pace_s": args.pace,
        "watch_interval_s": args.interval,
    }
    print(f"{'span':<6} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for kind, values in latencies.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        row = {
            "n": len(values),
            "p50_s": round(statistics.median(values), 3),
            "p95_s": round(p95, 3),
            "max_s": round(values[-1], 3),
        }
        figures[kind] = row
        print(f"{kind:<6} {row['n']:>4} {row['p50_s']:>7} {row['p95_s']:>7} {row['max_s']:>7}")
    figures |= {
        "target_p95_s": TARGET_S,
        "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}",
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if figures["tool"]["p95_s"] <= TARGET_S else 1)


def _wait(remote: RemoteStore, span_id: str, trace_id: str, timeout: float = 60.0) -> float:
    """Poll the server until it has the span; the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            remote.call_tool("get_span_data", {"span_id": span_id, "trace_id": trace_id})
            return time.monotonic()
        except TraceproofError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


if __name__ == "__main__":
    main()
