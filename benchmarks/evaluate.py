"""The ``evaluate`` tool end to end: choose, load, run and write, over a real store.

    .venv/bin/python benchmarks/evaluate.py [--spans 10000] [--custom]

The store holds the demo project copied with fresh ids until it has ``--spans`` spans (written
through the store's writer, as ingest does). Each of five built-in evaluators runs through the
``evaluate`` tool on every span (``limit`` = the span count): the targets chosen by a filter,
their traces read, the evaluator run, one annotation written per span. Then the same call again,
which skips every target (nothing written). With ``--custom``, a custom code evaluator (child
processes) too.

Prints a table and writes benchmarks/results/evaluate.json.
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

import pyarrow as pa

from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Store
from traceproof.tools.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from evaluators import CONFIG, CUSTOM_MODULE, copies, demo_rows

RESULTS = Path(__file__).parent / "results" / "evaluate.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--custom", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    project = Path(tempfile.mkdtemp())
    (project / "traceproof.toml").write_text(CONFIG)
    (project / "bench_evals.py").write_text(CUSTOM_MODULE)
    rows = copies(demo_rows(), args.spans)
    db = project / "bench.duckdb"
    settings = Settings(
        db=db,
        config=project / "traceproof.toml",
        eval_max_targets=max(args.spans, 1),
        eval_wait_max_seconds=600,
    )
    names = ["mentions_order", "tracking_number", "json_output", "no_error", "refund_flow"]
    if args.custom:
        names.append("custom_length")
    table: list[dict[str, Any]] = []
    with Store.open(db, settings) as store:
        table_rows = pa.Table.from_pylist(rows, SPAN_SCHEMA)
        store.submit(table_rows, wait=None).result()
        for name in names:
            t0 = time.perf_counter()
            first = evaluate(store, evaluator=name, limit=args.spans, wait=600)
            run_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            again = evaluate(store, evaluator=name, limit=args.spans, wait=600)
            rerun_s = time.perf_counter() - t1
            table.append(
                {
                    "evaluator": name,
                    "targets": first.targets,
                    "written": first.written,
                    "errors": first.errors,
                    "seconds": round(run_s, 3),
                    "targets_per_s": round(first.targets / run_s) if run_s else None,
                    "rerun_seconds": round(rerun_s, 3),
                    "rerun_written": again.written,
                    "rerun_skipped": again.skipped,
                }
            )
    print(f"{len(rows):,} spans in the store")
    print(f"{'evaluator':<16}{'targets':>9}{'written':>9}{'errors':>8}{'seconds':>9}"
          f"{'per s':>9}{'re-run s':>10}{'re-run written':>16}")  # fmt: skip
    for r in table:
        print(f"{r['evaluator']:<16}{r['targets']:>9,}{r['written']:>9,}{r['errors']:>8,}"
              f"{r['seconds']:>9.3f}{r['targets_per_s'] or 0:>9,}{r['rerun_seconds']:>10.3f}"
              f"{r['rerun_written']:>16,}")  # fmt: skip
    total = sum(r["seconds"] for r in table[:5])
    print(f"5 built-ins through evaluate (with writes) over {len(rows):,} spans: {total:.3f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "machine": {"python": platform.python_version(), "platform": platform.platform()},
                "spans": len(rows),
                "builtin_seconds": round(total, 3),
                "evaluators": table,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
