"""Built-in code evaluators over many spans: 5 evaluators over 10,000 spans (target ≤ 5 s).

    .venv/bin/python benchmarks/evaluators.py [--spans 10000] [--custom]

The spans are the demo project's (the real OpenTelemetry SDK, stored in a real DuckDB file, read
back with ``SELECT *``), copied with fresh ids until there are ``--spans`` of them, so every
span target carries its whole trace (for the tool-call evaluator). Timed: building the targets
from the rows, then each evaluator over every span target through ``run_evaluator``. With
``--custom``, a custom code evaluator (a child process, JSON lines) over the same targets too.

Prints a table and writes benchmarks/results/evaluators.json. Exits 1 when the five built-ins
together take longer than the target.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from traceproof.demo import REFERENCE_NOW
from traceproof.evals.config import parse_config
from traceproof.evals.runner import run_evaluator, summarize
from traceproof.evals.target import targets_from_rows
from traceproof.server.run import load_demo
from traceproof.settings import Settings
from traceproof.storage import Store

RESULTS = Path(__file__).parent / "results" / "evaluators.json"
TARGET_SECONDS = 5.0

CONFIG = """
[evaluators.mentions_order]
evaluator = "contains"
value = ["order", "refund"]
match = "any"

[evaluators.tracking_number]
evaluator = "regex"
pattern = "1Z[0-9A-F]{15}"

[evaluators.json_output]
evaluator = "json_schema"
field = "output"
schema = { type = "object", required = ["order_id"] }

[evaluators.no_error]
evaluator = "no_error"

[evaluators.refund_flow]
evaluator = "tool_sequence"
tools = ["lookup_order", "issue_refund"]
mode = "superset"

[evaluators.custom_length]
function = "bench_evals:length"
"""

CUSTOM_MODULE = """
def length(output):
    return (min(1.0, len(output or "") / 200), "length of the output")
"""


def demo_rows() -> list[dict[str, Any]]:
    path = Path(tempfile.mkdtemp()) / "demo.duckdb"
    settings = Settings(db=path)
    with Store.open(path, settings) as store:
        load_demo(store, settings, now=REFERENCE_NOW)
        with store.reader() as reader:
            return reader.dicts("SELECT * FROM spans ORDER BY start_time, span_id")


def copies(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` span rows: the demo's, then copies with suffixed ids (whole traces at a time)."""
    out: list[dict[str, Any]] = []
    copy = 0
    while len(out) < n:
        for original in rows:
            row = dict(original)
            if copy:
                for key in ("trace_id", "span_id", "parent_span_id"):
                    if row[key]:
                        row[key] = f"{row[key]}-{copy}"
            out.append(row)
        copy += 1
    return out[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--custom", action="store_true", help="also time a custom evaluator")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rows = copies(demo_rows(), args.spans)
    started = time.perf_counter()
    targets = targets_from_rows(rows, "span")
    build_s = time.perf_counter() - started

    project = Path(tempfile.mkdtemp())
    (project / "bench_evals.py").write_text(CUSTOM_MODULE)
    config = parse_config(CONFIG, root=project)
    names = ["mentions_order", "tracking_number", "json_output", "no_error", "refund_flow"]
    if args.custom:
        names.append("custom_length")
    table = []
    for name in names:
        definition = config.evaluator(name)
        t0 = time.perf_counter()
        results = run_evaluator(definition, targets, settings=Settings())
        seconds = time.perf_counter() - t0
        summary = summarize(results)
        table.append(
            {
                "evaluator": name,
                "kind": definition.kind,
                "targets": len(results),
                "seconds": round(seconds, 3),
                "targets_per_s": round(len(results) / seconds),
                "labels": summary.labels,
                "errors": summary.errors,
            }
        )
    builtin_s = sum(r["seconds"] for r in table if r["kind"] == "builtin")
    ok = builtin_s <= TARGET_SECONDS

    print(f"{len(targets):,} span targets built from rows in {build_s:.3f} s")
    print(f"{'evaluator':<18}{'kind':<9}{'targets':>9}{'seconds':>9}{'per s':>10}  labels")
    for r in table:
        print(f"{r['evaluator']:<18}{r['kind']:<9}{r['targets']:>9,}{r['seconds']:>9.3f}"
              f"{r['targets_per_s']:>10,}  {r['labels']} errors={r['errors']}")  # fmt: skip
    verdict = "ok" if ok else "OVER"
    print(f"5 built-ins over {len(targets):,} spans: {builtin_s:.3f} s "
          f"(target ≤ {TARGET_SECONDS:g} s): {verdict}")  # fmt: skip

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "spans": len(targets),
                "build_targets_seconds": round(build_s, 3),
                "builtin_seconds": round(builtin_s, 3),
                "target_seconds": TARGET_SECONDS,
                "ok": ok,
                "evaluators": table,
            },
            indent=2,
        )
        + "\n"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
