"""The import process's fixed cost: what ``traceproof ingest`` loads that it never uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trajectories.claude_files import basic_session


def test_ingest_does_not_import_pandas_although_it_is_installed(tmp_path: Path) -> None:
    # DuckDB imports pandas before it binds a parameter (duckdb PR #18658), pyarrow when it
    # builds an array: ~45 MB of RSS for the import.
    pytest.importorskip("pandas")
    transcript = basic_session().write(tmp_path / "session.jsonl")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "traceproof", "ingest", str(transcript),
         "--db", str(tmp_path / "s.duckdb"), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"spans_added": 0' not in result.stdout  # spans were built and written
    # -X importtime logs every module loaded: pandas would load dozens of its own.
    loaded = [line for line in result.stderr.splitlines() if re.search(r"\| +pandas\.", line)]
    assert not loaded, loaded[:5]
