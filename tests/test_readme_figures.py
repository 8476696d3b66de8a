"""README's tools/list figures are the ones benchmarks/tools_list_size.py measures."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_readme_states_the_measured_tools_list_size() -> None:
    spec = importlib.util.spec_from_file_location("tools_list_size", ROOT / "benchmarks" /
                                                  "tools_list_size.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    measured = await benchmark.measure("inspect")
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(
        r"is ([\d,]+) characters for the (\d+) inspection tools, the whole answer ([\d,]+)", readme
    )
    assert stated is not None, "README no longer states the tools/list size"
    figures = [int(stated[i].replace(",", "")) for i in (1, 2, 3)]
    # On a mismatch: run `.venv/bin/python benchmarks/tools_list_size.py --toolsets inspect`
    # and put its figures in README (and the CHANGELOG line that gives them).
    assert figures == [
        measured["model_visible_chars"],
        measured["tools"],
        measured["total_chars"],
    ]


async def test_readme_states_the_measured_size_of_every_tool() -> None:
    spec = importlib.util.spec_from_file_location("tools_list_size", ROOT / "benchmarks" /
                                                  "tools_list_size.py")  # fmt: skip
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    measured = await benchmark.measure(None)
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = re.search(
        r"(\d+) tools cost ([\d,]+) model-visible characters \((\d+) a tool\)", readme
    )
    assert stated is not None, "README no longer states the size of every tool"
    # On a mismatch: run `.venv/bin/python benchmarks/tools_list_size.py` and put its figures in
    # README.
    tools, chars = measured["tools"], measured["model_visible_chars"]
    assert (int(stated[1]), int(stated[2].replace(",", "")), int(stated[3])) == (
        tools,
        chars,
        round(chars / tools),
    )
