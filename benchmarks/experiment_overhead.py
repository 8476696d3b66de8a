"""Runner overhead: what an experiment adds per example beyond the task's own time.

    .venv/bin/python benchmarks/experiment_overhead.py [--examples 500] [--concurrency 8]

A dataset of ``--examples`` examples and a no-op command task (``/bin/true``: it reads nothing,
prints nothing, emits no spans) run twice at the same concurrency:

- ``direct``: the same processes started by a thread pool with ``subprocess.run`` (stdin, stdout
  and stderr piped, a new session) — the task's own time;
- ``runner``: ``run_experiment``'s runner end to end (environment, process group, capped reads,
  the wait for spans with the default quiet period, storing each run, an ``exact_match``
  evaluator on every run and its annotation, the summary).

Overhead per example = (runner wall - direct wall) / examples. Memory: the peak RSS of this
process (children excluded) before and after the runner. Prints a table, writes
benchmarks/results/experiment_overhead.json, exits 1 when the overhead is above the target
(20 ms).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.experiment_helpers import add_dataset
from traceproof.evals.config import parse_config
from traceproof.experiments import runner
from traceproof.settings import Settings
from traceproof.storage import Store

RESULTS = Path(__file__).parent / "results" / "experiment_overhead.json"
TARGET_MS = 20.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    true = shutil.which("true") or "/bin/true"
    work = Path(tempfile.mkdtemp(prefix="traceproof-exp-bench-"))
    settings = Settings(db=work / "store.duckdb", port=0)
    toml = (
        f'[tasks.noop]\ncommand = ["{true}"]\n\n'
        '[evaluators.empty]\nevaluator = "exact_match"\nvalue = ""\n'
    )
    config = parse_config(toml, root=work)

    def direct_one(_: int) -> None:
        subprocess.run(
            [true], check=False, input=b"{}", capture_output=True, start_new_session=True
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(direct_one, range(args.examples)))
    direct = time.perf_counter() - started

    with Store.open(settings.db, settings) as store:
        add_dataset(store, "bench", [{"input": {"i": i}, "expected": None}
                                     for i in range(args.examples)])  # fmt: skip
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        plan = runner.plan_experiment(
            store, config, task="noop", dataset="bench", evaluators=["empty"],
            concurrency=args.concurrency,
        )  # fmt: skip
        summary = runner.execute(store, plan)
        wall = time.perf_counter() - started
        rss_after = peak_rss_mb()
    shutil.rmtree(work, ignore_errors=True)
    assert summary["status"] == {"ok": args.examples}, summary
    assert summary["evaluators"]["empty"]["labels"] == {"pass": args.examples}, summary
    overhead_ms = (wall - direct) / args.examples * 1000
    figures = {
        "examples": args.examples,
        "concurrency": args.concurrency,
        "direct_wall_s": round(direct, 3),
        "runner_wall_s": round(wall, 3),
        "direct_ms_per_example": round(direct / args.examples * 1000, 2),
        "runner_ms_per_example": round(wall / args.examples * 1000, 2),
        "overhead_ms_per_example": round(overhead_ms, 2),
        "target_ms": TARGET_MS,
        "peak_rss_mb_before": round(rss_before, 1),
        "peak_rss_mb_after": round(rss_after, 1),
        "span_quiet_seconds": settings.experiment_span_quiet_seconds,
        "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}",
        "command": " ".join(sys.argv),
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if overhead_ms <= TARGET_MS else 1)


if __name__ == "__main__":
    main()
