"""Characters of ``tools/list`` (compact JSON), as an agent pays for it on every turn: the
whole answer, and the part a model reads (names, descriptions, input schemas), per tool.

    .venv/bin/python benchmarks/tools_list_size.py [--toolsets inspect]

Prints a table and writes benchmarks/results/tools_list_size.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from traceproof.server.mcp import create_mcp_server, toolset_names
from traceproof.settings import Settings
from traceproof.storage import Store

RESULTS = Path(__file__).parent / "results" / "tools_list_size.json"


def chars(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


async def measure(toolsets: str | None) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp()) / "size.duckdb"
    with Store.open(path, Settings(db=path)) as store:
        async with Client(create_mcp_server(store, toolset_names(toolsets))) as client:
            tools = (await client.list_tools()).tools
    dumped = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    visible = [{k: d[k] for k in ("name", "description", "inputSchema")} for d in dumped]
    return {
        "tools": len(tools),
        "total_chars": chars({"tools": dumped}),
        "model_visible_chars": chars(visible),
        "per_tool": {
            d["name"]: {
                "description": len(d["description"]),
                "input_schema": chars(d["inputSchema"]),
                "output_schema": chars(d.get("outputSchema")),
            }
            for d in dumped
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toolsets", default=None)
    found = anyio.run(measure, parser.parse_args().toolsets)
    print(f"{'tool':20} {'description':>11} {'input':>7} {'output':>7}")
    for name, row in found["per_tool"].items():
        print(f"{name:20} {row['description']:11} {row['input_schema']:7} {row['output_schema']:7}")
    print(
        f"{found['tools']} tools: model-visible {found['model_visible_chars']:,} chars, "
        f"whole tools/list {found['total_chars']:,} chars"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
