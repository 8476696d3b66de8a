"""The HTML report at size: render time and file size in Python, then load, filter and
waterfall times in Debian's headless Chromium (through Playwright).

    .venv/bin/python benchmarks/report_html.py [--examples 100,1000,5000] [--spans 25]

Each example has a baseline and a candidate trace of ``--spans`` spans; traces are embedded
until the report's span budget (``MAX_REPORT_SPANS``), as ``write_report`` does. Prints a table
and writes benchmarks/results/report_html.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from traceproof.experiments.report import MAX_REPORT_SPANS, render_html

RESULTS = Path(__file__).parent / "results" / "report_html.json"
CHROMIUM = os.environ.get("TRACEPROOF_CHROMIUM", "/usr/bin/chromium")
CHANGES = ["regressed"] * 1 + ["improved"] * 2 + ["flaky"] + ["unchanged"] * 6


def comparison(n: int) -> dict[str, Any]:
    examples = []
    for i in range(n):
        change = CHANGES[i % len(CHANGES)]
        examples.append(
            {
                "example_id": f"{i:016x}",
                "change": change,
                "evaluators": {"correct": {"baseline": 1.0, "candidate": 0.0, "change": change}},
                "input_preview": f'{{"question": "order {i} status?"}}' + " padding" * 20,
                "baseline_output": f"answer {i} " * 30,
                "candidate_output": f"answer {i} " * 30,
                "baseline_trace_id": f"b{i:031x}",
                "candidate_trace_id": f"c{i:031x}",
                "baseline_run_id": f"exp_b:{i:016x}:0",
                "candidate_run_id": f"exp_c:{i:016x}:0",
            }
        )
    examples.sort(key=lambda e: e["change"] != "regressed")
    return {
        "baseline": {"id": "exp_b", "name": "baseline"},
        "candidate": {"id": "exp_c", "name": "candidate"},
        "examples_compared": n,
        "evaluators": [
            {
                "name": "correct",
                "kind": "binary",
                "baseline_mean": 0.7,
                "candidate_mean": 0.75,
                "delta": 0.05,
                "ci_low": -0.01,
                "ci_high": 0.11,
                "test": "mcnemar_exact",
                "p_value": 0.1,
                "p_adjusted": 0.1,
                "mde": 0.08,
                "improved": 2,
                "regressed": 1,
                "unchanged": 6,
                "flaky": 1,
            }
        ],
        "operational": [],
        "examples": examples,
        "verdict": {"status": "inconclusive", "gate": "no_regressions", "reasons": ["..."]},
    }


def traces(comp: dict[str, Any], spans: int) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    kept = 0
    for ex in comp["examples"]:
        for key in ("baseline_trace_id", "candidate_trace_id"):
            if kept + spans > MAX_REPORT_SPANS:
                return found
            found[ex[key]] = [
                {
                    "span_id": f"{ex[key]}-{j}",
                    "parent_span_id": None if j == 0 else f"{ex[key]}-{(j - 1) // 3}",
                    "name": f"step {j}",
                    "span_kind": "TOOL" if j % 3 else "LLM",
                    "status": "ERROR" if j == spans - 1 else "OK",
                    "start_ms": float(j * 10),
                    "duration_ms": float(100 + j),
                }
                for j in range(spans)
            ]
            kept += spans
    return found


def in_browser(path: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(path.as_uri(), wait_until="load")
        load_ms = (time.perf_counter() - start) * 1000
        filter_ms = page.evaluate(
            """() => { const t = performance.now();
                const s = document.getElementById('filter-text');
                s.value = 'order 7'; s.dispatchEvent(new Event('input'));
                return performance.now() - t; }"""
        )
        click_ms = page.evaluate(
            """() => { const t = performance.now();
                document.querySelector('#examples tr.example').click();
                return performance.now() - t; }"""
        )
        bars = page.locator("#detail .wf-bar").count()
        browser.close()
    return {"load_ms": load_ms, "filter_ms": filter_ms, "waterfall_ms": click_ms, "bars": bars}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", default="100,1000,5000")
    parser.add_argument("--spans", type=int, default=25)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.examples.split(",")):
            comp = comparison(n)
            found = traces(comp, args.spans)
            start = time.perf_counter()
            page = render_html(comp, found)
            render_ms = (time.perf_counter() - start) * 1000
            path = Path(tmp) / f"report-{n}.html"
            path.write_text(page, encoding="utf-8")
            row: dict[str, Any] = {
                "examples": n,
                "traces": len(found),
                "spans": sum(len(s) for s in found.values()),
                "bytes": path.stat().st_size,
                "render_ms": render_ms,
            }
            if not args.no_browser:
                row |= in_browser(path)
            rows.append(row)
    print(
        f"{'examples':>8} {'traces':>7} {'spans':>7} {'MB':>6} {'render ms':>9} "
        f"{'load ms':>8} {'filter ms':>9} {'waterfall ms':>12}"
    )
    for r in rows:
        print(
            f"{r['examples']:8} {r['traces']:7} {r['spans']:7} {r['bytes'] / 1e6:6.2f} "
            f"{r['render_ms']:9.0f} {r.get('load_ms', 0):8.0f} {r.get('filter_ms', 0):9.1f} "
            f"{r.get('waterfall_ms', 0):12.1f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": " ".join([sys.executable, *sys.argv]),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
