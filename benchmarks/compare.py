"""compare_experiments benchmark: how long a comparison takes as the dataset grows.

Two experiments of ``--examples`` examples x ``--repetitions`` repetitions, scored by a
pass/fail and a numeric evaluator (annotations through the real annotation writer, as
tests/proof_fixtures.py writes them), then ``comparison_for`` (every example) and the tool
``compare_experiments`` (a budgeted page) are timed ``--repeat`` times, directly (no transport).

    .venv/bin/python benchmarks/compare.py                    # 1,000 examples x 3
    .venv/bin/python benchmarks/compare.py --examples 5000 --repetitions 1

Prints a table and writes benchmarks/results/compare.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.proof_fixtures import (  # noqa: E402
    insert_dataset,
    insert_experiment,
    set_stored_baseline,
)
from traceproof.settings import Settings  # noqa: E402
from traceproof.storage import Store  # noqa: E402
from traceproof.tools.compare import compare_experiments, comparison_for  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "compare.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    path = Path(tempfile.mkdtemp()) / "compare.duckdb"
    with Store.open(path, Settings(db=path)) as store:
        started = time.perf_counter()
        ids = insert_dataset(store, [{"q": i} for i in range(args.examples)])
        for exp, p in (("exp_base", 0.7), ("exp_cand", 0.75)):
            scores = {
                "correct": {
                    e: [float(rng.random() < p) for _ in range(args.repetitions)] for e in ids
                },
                "quality": {e: [rng.random() for _ in range(args.repetitions)] for e in ids},
            }
            insert_experiment(store, exp, scores, minutes=0 if exp == "exp_base" else 5)
        set_stored_baseline(store, "qa", "ds_000000000001", "exp_base")
        setup = time.perf_counter() - started
        rows = []
        for name, run in (
            ("comparison_for (every example)", lambda: comparison_for(store, "exp_cand")),
            (
                "compare_experiments (one page)",
                lambda: compare_experiments(store, candidate="exp_cand"),
            ),
        ):
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            rows.append({"measure": name, "median_s": round(statistics.median(times), 3)})
    print(f"{args.examples} examples x {args.repetitions} repetitions (setup {setup:.1f} s)")
    print(f"{'measure':34} {'median s':>9}")
    for row in rows:
        print(f"{row['measure']:34} {row['median_s']:9.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
