"""find_first_wrong_step benchmark: one long coding session, target ≤ 2 s per call.

Stores one session of ``--steps`` steps (one trace; an LLM call before every fourth tool call)
through ``Store.write`` of ``SpanRows`` after ``label_trace``, as an import stores a
transcript. The tool calls cycle over 300 files: reads, edits (every seventh fails), test runs
over 50 test files (two thirds fail), shell commands (every eleventh fails) and, now and then,
an edit undone (its old text put back) and an edit of a file never read, so every rule has
work. Then ``find_first_wrong_step`` is called directly (no transport): ``--repeat`` times
with ``write=false`` after one warm-up call, then twice with ``write=true`` (the second finds
every annotation unchanged).

Run from the repository root:

    .venv/bin/python benchmarks/wrong_step.py                  # 20,000 steps
    .venv/bin/python benchmarks/wrong_step.py --steps 100000 --repeat 1

Prints a table (measure, median, target, ok?) and writes the figures, the machine and the
command line to ``--out`` (default benchmarks/results/wrong_step.json). Exit status 1 if the
target is missed or an answer exceeds its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from traceproof.ingest.normalize import SpanRows
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.common import size
from traceproof.tools.wrong_step import find_first_wrong_step
from traceproof.trajectories.actions import label_trace
from traceproof.trajectories.common import StepSpan, span_id_for, trace_id_for
from traceproof.trajectories.emit import add_steps

RESULTS = Path(__file__).parent / "results" / "wrong_step.json"
TARGET_S = 2.0
SESSION = "bench-wrong-step"
T0 = 1_767_225_600_000_000_000


def tool_call(i: int) -> tuple[str, dict[str, Any], str, bool]:
    path = f"src/pkg_{i % 300:03}/module.py"
    kind = i % 4
    if i % 997 == 0:
        return ("Edit", {"file_path": f"src/unread_{i}.py", "old_string": "a", "new_string": "b"},
                "ok", False)  # fmt: skip
    if i % 1009 == 1:
        return ("Edit", {"file_path": path, "old_string": "b", "new_string": "a"}, "ok", False)
    if kind == 0:
        return ("Read", {"file_path": path}, "1\tx = 1", False)
    if kind == 1:
        failed = i % 7 == 0
        output = "old_string not found" if failed else "ok"
        return ("Edit", {"file_path": path, "old_string": "a", "new_string": "b"}, output, failed)
    if kind == 2:
        command = f"pytest -q tests/test_{i % 50}.py"
        if i % 3:
            return ("Bash", {"command": command}, "Exit code 1\n=== 1 failed, 4 passed ===", True)
        return ("Bash", {"command": command}, "=== 5 passed ===", False)
    failed = i % 11 == 0
    return ("Bash", {"command": f"make step{i % 40}"}, "Exit code 2" if failed else "", failed)


def store_session(store: Store, steps: int) -> None:
    trace = trace_id_for("claude_code", SESSION, "u1")
    root = span_id_for("claude_code", SESSION, "u1")
    spans: list[StepSpan] = []
    clock = T0
    i = 0
    while len(spans) < steps:
        clock += 1_000_000
        span_id = span_id_for("claude_code", SESSION, str(len(spans)))
        attributes: dict[str, Any] = {"session.id": SESSION}
        if len(spans) % 5 == 0:
            attributes |= {"llm.model_name": "claude-sonnet-4-5", "llm.token_count.prompt": 100}
            spans.append(StepSpan(trace, span_id, root, "claude.messages", "LLM", clock,
                                  clock + 500_000, attributes=attributes))  # fmt: skip
            continue
        name, args, output, failed = tool_call(i)
        i += 1
        attributes |= {"tool.name": name, "input.value": orjson.dumps(args).decode(),
                       "output.value": output}  # fmt: skip
        spans.append(StepSpan(trace, span_id, root, name, "TOOL", clock, clock + 500_000,
                              "ERROR" if failed else "OK", attributes=attributes))  # fmt: skip
    label_trace(spans)
    top = StepSpan(trace, root, None, "claude-code turn", "AGENT", T0, clock + 1_000_000,
                   attributes={"session.id": SESSION, "input.value": "the task"})  # fmt: skip
    rows = SpanRows()
    add_steps(rows, [top, *spans], project="bench", source="claude_code")
    store.write(rows.table())


def timed(store: Store, **arguments: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    answer = find_first_wrong_step(store, session_id=SESSION, **arguments)
    return time.perf_counter() - wall, time.process_time() - cpu, answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.duckdb"
        settings = Settings(db=db)
        with Store.open(db, settings) as store:
            started = time.perf_counter()
            store_session(store, options.steps)
            stored_s = time.perf_counter() - started
            timed(store, write=False)  # warm-up
            runs = [timed(store, write=False) for _ in range(options.repeat)]
            first_write = timed(store, write=True)
            second_write = timed(store, write=True)
    answer = runs[-1][2]
    within = all(size(r[2]) <= 20_000 for r in [*runs, first_write, second_write])
    median = statistics.median(r[0] for r in runs)
    rows = [
        ("store the session (s)", stored_s, None),
        ("find_first_wrong_step, write=false (s, median)", median, TARGET_S),
        ("  its CPU time (s, median)", statistics.median(r[1] for r in runs), None),
        ("write=true, first call (s)", first_write[0], TARGET_S),
        ("write=true, unchanged (s)", second_write[0], TARGET_S),
    ]
    print(f"{options.steps:,} steps: {answer.by_rule} candidates; first: "
          f"{answer.first.rule if answer.first else None} at step "
          f"{answer.first.step if answer.first else None}")  # fmt: skip
    print(f"{'measure':<50} {'value':>8} {'target':>8}  ok")
    ok = within
    for name, value, target in rows:
        good = target is None or value <= target
        ok = ok and good
        shown = "" if target is None else f"{target:.1f}"
        print(f"{name:<50} {value:8.3f} {shown:>8}  {'yes' if good else 'NO'}")
    print(f"every answer within its budget: {'yes' if within else 'NO'}")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps({
        "steps": options.steps, "candidates": answer.by_rule,
        "written": [first_write[2].written, second_write[2].written],
        "figures": {name: round(value, 4) for name, value, _ in rows},
        "target_s": TARGET_S, "ok": ok,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "command": shlex.join([sys.executable, *sys.argv]),
    }, indent=2) + "\n")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
