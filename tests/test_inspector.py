"""The official MCP Inspector CLI, a strict client nobody here wrote, over stdio and streamable
HTTP: ``tools/list --strict`` reports no portability problem, and a call of every tool on the
demo store is accepted (the Inspector validates structured content against the output schema,
formats included).

The pinned Inspector is installed once into a cache directory (``TRACEPROOF_INSPECTOR_DIR``,
default ``~/.cache/traceproof/inspector-<version>``) with npm; without ``npm``/``node``, or
when the registry cannot be reached, the tests skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServeProcess
from tests.experiment_helpers import stored_experiment
from tests.proof_fixtures import insert_comparison
from tests.test_schemas import calls_for, demo_ids, evaluators_config, trajectory_ids
from tests.trajectory_fixtures import store_trajectory, trajectory_spans
from traceproof.experiments.datasets import Example
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.datasets import create_dataset
from traceproof.tools import registry

pytestmark = pytest.mark.slow

INSPECTOR = "@modelcontextprotocol/inspector"
VERSION = "2.12.0"
#: Bound on one Inspector run (a node start, a server start for stdio, one call).
RUN_TIMEOUT = 120
CONNECT_TIMEOUT_MS = 90_000


@pytest.fixture(scope="session")
def inspector() -> Path:
    """The Inspector's executable, installed into the cache on first use."""
    if not (shutil.which("npm") and shutil.which("node")):
        pytest.skip("npm/node not on PATH: the MCP Inspector CLI cannot run")
    default = Path.home() / ".cache" / "traceproof" / f"inspector-{VERSION}"
    prefix = Path(os.environ.get("TRACEPROOF_INSPECTOR_DIR", default))
    executable = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if not executable.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        try:
            installed = subprocess.run(
                [
                    *("npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund"),
                    *("--loglevel=error", f"{INSPECTOR}@{VERSION}"),
                ],
                check=False,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {INSPECTOR}@{VERSION} took over 600 s")
        if installed.returncode != 0 or not executable.exists():
            pytest.skip(f"npm install {INSPECTOR}@{VERSION} failed: {installed.stderr[-500:]}")
    return executable


@pytest.fixture
def demo_copy(demo_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, path)
    with Store.open(path, Settings(db=path)) as store:
        insert_comparison(store, dataset_name="compared")  # what compare_experiments compares
    return path


def example_calls(db: Path) -> dict[str, dict[str, Any]]:
    """One valid call of every registered tool on the demo store."""
    with Store.open(db, Settings(db=db)) as store:
        ids = demo_ids(store) | {"experiment": stored_experiment(store, db.parent)}
        ids |= trajectory_ids(store)
        calls = calls_for(ids)
        # The dataset add_examples and get_dataset name (calls run alone, or four at a time).
        create_dataset(store, "literal", [Example(input="hi", split="test")])
    assert set(calls) == {spec.name for spec in registry.TOOLS}
    return {name: examples[0] for name, examples in calls.items()}


def run(inspector: Path, target: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # The Inspector's 15 s connect limit is short for a server starting on 2 busy cores.
        [str(inspector), "--cli", "--connect-timeout", str(CONNECT_TIMEOUT_MS), *target, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )


def check_transport(
    inspector: Path, target: list[str], calls: dict[str, dict[str, Any]], parallel: int = 1
) -> None:
    """``tools/list --strict`` clean, then every call accepted (``parallel`` at a time: a
    stdio server owns the store alone, so stdio runs one by one)."""
    listed = run(inspector, target, "--method", "tools/list", "--strict")
    assert listed.returncode == 0, listed.stderr
    assert "Warning" not in listed.stderr and "Error" not in listed.stderr, listed.stderr
    names = [tool["name"] for tool in json.loads(listed.stdout)["tools"]]
    assert names == [spec.name for spec in registry.TOOLS]

    def call(item: tuple[str, dict[str, Any]]) -> str | None:
        name, arguments = item
        called = run(
            inspector,
            target,
            *("--method", "tools/call", "--tool-name", name),
            *("--tool-args-json", json.dumps(arguments), "--format", "json"),
        )
        if called.returncode != 0:
            return f"{name}: {called.stderr[-600:]}"
        answer = json.loads(called.stdout).get("result", {})
        if answer.get("isError") or "structuredContent" not in answer:
            return f"{name}: {called.stdout[:600]}"
        return None

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        failures = [failure for failure in pool.map(call, calls.items()) if failure]
    assert not failures, "\n".join(failures)


#: Over stdio every Inspector call starts node and a server (~8 s each on 2 busy cores), so the
#: suite calls these: the transport's cases (the biggest answer, MCP progress notifications, child
#: processes of a stdio server, an error-free preview). Over HTTP, below, every tool is called, and
#: the schemas are the same objects whatever the transport. ``TRACEPROOF_INSPECTOR_ALL=1`` calls
#: every tool over stdio too.
STDIO_CALLS = ("list_projects", "get_trace_preview", "get_span_data", "evaluate", "run_experiment")


def test_the_inspector_accepts_the_tools_over_stdio(inspector: Path, demo_copy: Path) -> None:
    calls = example_calls(demo_copy)
    if os.environ.get("TRACEPROOF_INSPECTOR_ALL") != "1":
        calls = {name: calls[name] for name in STDIO_CALLS}
    config = evaluators_config(demo_copy.parent)
    # The inspector reads --config itself: the project config goes in the server's env.
    server = ["-e", f"TRACEPROOF_CONFIG={config}"]
    server += [sys.executable, "-m", "traceproof", "mcp", "--db", str(demo_copy), "--no-otlp"]
    check_transport(inspector, server, calls)


@pytest.fixture
def served(demo_copy: Path) -> Iterator[ServeProcess]:
    with Store.open(demo_copy, Settings(db=demo_copy)) as store:  # what the calls read
        stored_experiment(store, demo_copy.parent)
        store_trajectory(store)
    server = ServeProcess(demo_copy, None, "--config", str(evaluators_config(demo_copy.parent)))
    try:
        yield server
    finally:
        server.stop()


def test_the_inspector_accepts_every_tool_over_streamable_http(
    inspector: Path, served: ServeProcess
) -> None:
    import httpx2

    calls = example_calls_remote(served.url, httpx2)
    check_transport(inspector, [f"{served.url}/mcp", "--transport", "http"], calls, parallel=4)


def example_calls_remote(url: str, httpx2: Any) -> dict[str, dict[str, Any]]:
    """The example calls, with ids read through the server's API (it holds the store)."""

    def sql(query: str) -> list[list[Any]]:
        answer = httpx2.post(f"{url}/api/v1/tools/sql", json={"query": query}, timeout=30)
        answer.raise_for_status()
        rows: list[list[Any]] = answer.json()["rows"]
        return rows

    ((trace, session),) = sql(
        "SELECT trace_id, session_id FROM traces WHERE session_id IS NOT NULL "
        "AND error_count > 0 AND project = 'demo' ORDER BY trace_id LIMIT 1"
    )
    ((span,),) = sql(
        f"SELECT span_id FROM spans WHERE trace_id = '{trace}' ORDER BY start_time LIMIT 1"
    )
    ((big,),) = sql(
        "SELECT span_id FROM spans ORDER BY length(input_value) DESC NULLS LAST LIMIT 1"
    )
    ((experiment,),) = sql("SELECT id FROM experiments LIMIT 1")
    ids = {"trace": trace, "session": session, "span": span, "big_span": big,
           "experiment": experiment}  # fmt: skip
    trajectory = trajectory_spans()[1]  # stored by the served fixture; its ids are fixed
    ids |= {"trajectory_session": trajectory.session_id,
            "trajectory_trace": trajectory.trace_ids[0]}  # fmt: skip
    calls = calls_for(ids)
    # The dataset add_examples and get_dataset name (the calls run four at a time).
    literal = {"name": "literal", "examples": [{"input": "hi", "split": "test"}]}
    httpx2.post(f"{url}/api/v1/tools/create_dataset", json=literal, timeout=30).raise_for_status()
    return {name: examples[0] for name, examples in calls.items()}
