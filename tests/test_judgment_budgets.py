"""The budget contract of the judgment tools over the real MCP client on the demo: an answer
never exceeds its ``max_chars``, counted as the compact JSON the server sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.test_mcp import compact
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store

pytestmark = pytest.mark.anyio

BUDGETS = [1000, 1200, 1500, 2000, 5000]

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("categorize_errors", {"save": True, "confirm": True}),  # error_category to read
    ("get_annotations", {}),
    ("get_annotations", {"name": "error_category"}),
    ("get_annotations", {"name": "resolved", "history": True}),
    ("calibrate_judge", {"judge": "resolved", "human": "resolved"}),
    ("evaluate", {"evaluator": "no_err", "target": "span"}),
    ("evaluate", {"evaluator": "no_err", "target": "trace"}),
    ("categorize_errors", {}),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "traceproof.toml").write_text('[evaluators.no_err]\nevaluator = "no_error"\n')
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("max_chars", BUDGETS)
async def test_every_judgment_answer_keeps_to_its_max_chars(
    demo_store: Store, in_project: None, max_chars: int
) -> None:
    async with Client(create_mcp_server(demo_store)) as client:
        for tool, arguments in CALLS:
            result = await client.call_tool(tool, arguments | {"max_chars": max_chars})
            assert not result.is_error, (tool, arguments, result.content)
            sent = compact(result.structured_content)
            assert sent <= max_chars, (tool, arguments, sent)
