"""How long diff_trajectories' alignment takes (traceproof/trajectories/diff.py), on two
generated runs of N tool steps each (and as many model calls): ``similar`` (the second run is
the first with one step in ten changed) and ``unrelated`` (two runs drawn apart: the matcher's
worst case, a third of both runs the same test command).

    .venv/bin/python benchmarks/trajectory_diff.py [--steps 1000 2000 10000] [--repeat 3]

Prints a table and writes benchmarks/results/trajectory_diff.json. Target: ≤ 1 s at 10,000 tool
steps (the most the tool reads of a run: DIFF_MAX_STEPS rows, model calls included) for both.
Exit status 1 when it is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

from traceproof.tools.trajectory_diff import DIFF_MAX_STEPS
from traceproof.trajectories.analysis import Step
from traceproof.trajectories.diff import diff

RESULTS = Path(__file__).parent / "results" / "trajectory_diff.json"
TARGET_S = 1.0


def _tool(rng: random.Random, i: int) -> Step:
    x = rng.random()
    if x < 0.33:
        outcome = rng.choice(["tests_failed", "tests_passed"])
        return Step("t", f"s{i}", "TOOL", action="verify", target="pytest -q", outcome=outcome)
    if x < 0.6:
        return Step("t", f"s{i}", "TOOL", action="edit", target=f"src/m{rng.randrange(30)}.py")
    return Step("t", f"s{i}", "TOOL", action="localize", target=f"src/m{rng.randrange(60)}.py")


def run(seed: int, steps: int) -> list[Step]:
    rng = random.Random(seed)
    out: list[Step] = []
    for i in range(steps):
        out += [Step("t", f"l{i}", "LLM", model="m", prompt_tokens=100), _tool(rng, i)]
    return out


def similar(base: list[Step], seed: int) -> list[Step]:
    rng = random.Random(seed)
    return [_tool(rng, i) if s.is_tool and rng.random() < 0.1 else s for i, s in enumerate(base)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, DIFF_MAX_STEPS // 2])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for steps in args.steps:
        a = run(1, steps)
        for case, b in (("similar", similar(a, 2)), ("unrelated", run(2, steps))):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                found = diff(a, b)
                times.append(time.perf_counter() - start)
            rows.append({"steps": steps, "case": case, "blocks": len(found.blocks),
                         "median_s": round(statistics.median(times), 3)})  # fmt: skip
    print(f"{'tool steps':>10} {'case':10} {'blocks':>7} {'median s':>9}")
    for row in rows:
        print(f"{row['steps']:>10} {row['case']:10} {row['blocks']:>7} {row['median_s']:>9}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "machine": platform.platform(),
                                   "rows": rows}, indent=2))  # fmt: skip
    at_cap = [r for r in rows if r["steps"] >= DIFF_MAX_STEPS // 2]
    if any(r["median_s"] > TARGET_S for r in at_cap):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
