"""Characters an agent pays for a debugging walkthrough of the demo project.

Loads the demo project into a fresh store (through the OTLP ingest path, as ``serve --demo``
does), then makes the best single call for each of a fixed list of debugging questions, in
order, each call using what the earlier ones answered (as an agent would): which projects are
there, which traces failed, what did the first failing trace do, where in it is the error
text, what the span with the 400,000-character input holds, which spans of that trace ran, and
how the LLM calls split by model. Each response is measured as the text an MCP client receives
(``CallToolResult`` text content, the same JSON as the structured content).

Run from the repository root:

    .venv/bin/python benchmarks/walkthrough.py
    .venv/bin/python benchmarks/walkthrough.py --out /tmp/walkthrough.json

Prints a table (question, call, characters) and the total, then what the paging hints cost:
for a call of each paged tool whose answer has a next page (and get_span_data's clipped value),
the characters of the answer and of its hint (``next_cursor`` and ``next_call``, or the clipped
value's ``next_call``). Writes the figures, each call's arguments and the command line to
``--out`` (default benchmarks/results/walkthrough.json).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from traceproof.server.mcp import as_result
from traceproof.server.run import load_demo
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools import registry

REPO = Path(__file__).resolve().parents[1]

#: (question, tool, arguments from what the earlier answers gave)
Step = tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]]]
STEPS: list[Step] = [
    ("which projects hold traces?", "list_projects", lambda seen: {}),
    ("which traces failed?", "search_traces", lambda seen: {"status": "ERROR"}),
    (
        "what did the newest failing trace do?",
        "get_trace_preview",
        lambda seen: {"trace_id": seen["error_trace"]},
    ),
    (
        "where is the error text in it?",
        "find_in_trace",
        lambda seen: {"trace_id": seen["error_trace"], "pattern": "error", "ignore_case": True},
    ),
    (
        "what does the span with the huge input hold?",
        "get_span_data",
        lambda seen: {"span_id": seen["big_span"]},
    ),
    (
        "which spans of the failing trace ran?",
        "search_spans",
        lambda seen: {"trace_id": seen["error_trace"]},
    ),
    (
        "how do LLM calls split by model?",
        "aggregate",
        lambda seen: {
            "group_by": ["model"],
            "metrics": ["count", "avg(latency_ms)", "p95(latency_ms)", "sum(total_tokens)"],
            "span_kind": "LLM",
        },
    ),
]


#: (tool, arguments from what the walkthrough saw): calls whose answer has a next page.
PAGED: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = [
    ("search_traces", lambda seen: {"status": "ERROR", "limit": 5}),
    ("search_spans", lambda seen: {"trace_id": seen["error_trace"], "limit": 5}),
    ("search_spans", lambda seen: {"span_kind": "LLM", "order_by": "latency", "limit": 5}),
    (
        "find_in_trace",
        lambda seen: {
            "trace_id": seen["error_trace"],
            "pattern": "error",
            "ignore_case": True,
            "max_matches": 2,
        },
    ),
    ("get_session", lambda seen: {"session_id": seen["error_session"], "max_chars": 1000}),
    ("get_span_data", lambda seen: {"span_id": seen["big_span"]}),
]


def text_of(result: BaseModel) -> str:
    """What an MCP client receives as the call's text content."""
    content = as_result(result).content[0]
    return str(getattr(content, "text", ""))


def run(store: Store) -> list[dict[str, Any]]:
    with store.reader() as reader:
        big = reader.scalar(
            "SELECT span_id FROM spans ORDER BY length(input_value) DESC NULLS LAST LIMIT 1"
        )
    seen: dict[str, Any] = {"big_span": big}
    rows = []
    for question, tool, arguments in STEPS:
        given = arguments(seen)
        result = registry.call(store, tool, given)
        if tool == "search_traces":
            seen["error_trace"] = result.model_dump()["traces"][0]["trace_id"]
            seen["error_session"] = result.model_dump()["traces"][0]["session_id"]
        rows.append(
            {"question": question, "tool": tool, "arguments": given, "chars": len(text_of(result))}
        )
    return rows, seen


def paging(store: Store, seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Characters of each paged answer and of its paging hint, as a client receives them."""
    rows = []
    for tool, arguments in PAGED:
        given = arguments(seen)
        text = text_of(registry.call(store, tool, given))
        data = json.loads(text)
        if tool == "get_span_data":
            hint = {"next_call": data["clipped"][0]["next_call"]}
        else:
            hint = {k: data[k] for k in ("next_cursor", "next_call") if k in data}
        rows.append(
            {
                "tool": tool,
                "arguments": given,
                "chars": len(text),
                "hint_chars": len(json.dumps(hint, separators=(",", ":"), ensure_ascii=False)),
                "cursor_chars": len(hint.get("next_cursor", "")),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/walkthrough.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(db=Path(workdir) / "demo.duckdb")
        with Store.open(settings.db, settings) as store:
            load_demo(store, settings)
            rows, seen = run(store)
            paged = paging(store, seen)
    total = sum(row["chars"] for row in rows)
    width = max(len(row["question"]) for row in rows)
    print(f"{'question':<{width}}  {'tool':<18} {'chars':>7}")
    for row in rows:
        print(f"{row['question']:<{width}}  {row['tool']:<18} {row['chars']:>7,}")
    print(f"{'total':<{width}}  {'':<18} {total:>7,}")
    print()
    print(f"{'paged call':<{width + 20}} {'chars':>7} {'hint':>5} {'cursor':>6}")
    for row in paged:
        shown = {k: v for k, v in row["arguments"].items() if k not in ("trace_id", "span_id")}
        call = f"{row['tool']} {json.dumps(shown)}"[: width + 20]
        print(
            f"{call:<{width + 20}} {row['chars']:>7,} {row['hint_chars']:>5} "
            f"{row['cursor_chars']:>6}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "calls": rows,
        "total_chars": total,
        "paging": paged,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
