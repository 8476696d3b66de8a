"""The walkthrough of examples/support_agent/README.md, command by command, through the real CLI
against a real `traceproof serve` child process: the failing traces, their error cluster, the
dataset, the baseline, the fix that passes the gate, and the bad fix that fails it.

Every command run here is also checked to appear in the README, so the two cannot drift apart.
The experiment steps need `traceproof dataset import` and `traceproof experiment run`; until
those commands exist the test skips, naming what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServeProcess
from tests.test_example_app import APP, BAD_FIX_LINE, BUG_LINE, FIX_LINE, app_copy

README = (APP / "README.md").read_text()
EVALUATORS = [
    "--evaluator",
    "correct",
    "--evaluator",
    "no_error",
    "--evaluator",
    "finds_orders",
    "--evaluator",
    "no_repeated_calls",
    "--evaluator",
    "few_tool_calls",
]
GATE = "no_regressions,min:correct>=0.95"
TRACES = ("traces", "--project", "support-agent", "--status", "ERROR")
ERRORS = ("errors", "--project", "support-agent")
IMPORT = ("dataset", "import", "support-questions", "dataset.jsonl")
RUN = ("experiment", "run", "support", "--dataset", "support-questions", *EVALUATORS)
KEEP = ("experiment", "baseline", "support", "--dataset", "support-questions")
GATED = (*RUN, "--baseline", "auto", "--gate", GATE)


def cli(cwd: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "traceproof", *args, "--db", str(db)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def in_readme(*args: str) -> None:
    """The command (as the README writes it, up to line continuations) is in the README."""
    text = " ".join(README.replace("\\\n", " ").split())
    shown = " ".join(a if " " not in a and ">" not in a else f"'{a}'" for a in args)
    assert shown in text, f"README.md does not show: {shown}"


def missing_commands() -> list[str]:
    missing = []
    for command in (["dataset", "import"], ["experiment", "run"], ["experiment", "compare"]):
        found = subprocess.run(
            [sys.executable, "-m", "traceproof", *command, "--help"],
            capture_output=True,
            check=False,
        )
        if found.returncode != 0:
            missing.append("traceproof " + " ".join(command))
    return missing


def change_line(app: Path, old: str, new: str) -> None:
    path = app / "support_agent" / "tools.py"
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    shutil.rmtree(app / "support_agent" / "__pycache__", ignore_errors=True)


def newest_experiment(app: Path, db: Path) -> str:
    done = cli(
        app, db, "sql", "SELECT id FROM experiments ORDER BY created_at DESC LIMIT 1", "--json"
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["rows"][0][0])


def git(app: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=app, check=True, capture_output=True)


def test_the_readme_shows_every_command_and_change_the_walkthrough_test_makes() -> None:
    in_readme("python", "-m", "support_agent", "--file", "dataset.jsonl")
    for command in (TRACES, ERRORS, IMPORT, RUN, (*KEEP, "--set", "BASELINE_ID"), GATED):
        in_readme("traceproof", *command)
    in_readme("traceproof", "experiment", "compare", "CANDIDATE_ID", "--baseline", "BASELINE_ID",
              "--gate", GATE)  # fmt: skip
    for diff_line in ("-" + BUG_LINE, "+" + FIX_LINE, "+" + BAD_FIX_LINE):
        assert diff_line in README


@pytest.mark.slow
def test_the_readme_walkthrough_finds_the_bug_proves_the_fix_and_refuses_the_bad_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = missing_commands()
    if missing:
        pytest.skip(f"not built yet: {', '.join(missing)}")
    app = app_copy(tmp_path)
    git(app, "init", "-q")
    git(app, "add", ".")
    git(app, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "app")
    for key in [k for k in os.environ if k.startswith("OTEL_") or k == "TRACEPARENT"]:
        monkeypatch.delenv(key)
    # the task's `python` is the interpreter on PATH: the virtualenv's, as README says
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    db = tmp_path / "store.duckdb"
    server = ServeProcess(db, None, "--config", str(app / "traceproof.toml"))
    try:
        # 2. the app on the questions, as production traffic
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": server.url}
        done = subprocess.run(
            [sys.executable, "-m", "support_agent", "--file", "dataset.jsonl"],
            cwd=app, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        # 3. the failing traces
        found = cli(app, db, *TRACES, "--json")
        assert found.returncode == 0, found.stderr
        traces: list[dict[str, Any]] = json.loads(found.stdout)["traces"]
        assert len(traces) == 7
        assert all(t["error_count"] == 2 for t in traces)
        assert all("could not find order 0" in (t["output"] or "") for t in traces)

        # 4. one cluster of errors
        grouped = cli(app, db, *ERRORS, "--json")
        assert grouped.returncode == 0, grouped.stderr
        (cluster,) = json.loads(grouped.stdout)["clusters"]
        assert cluster["error_type"] == "support_agent.tools.OrderNotFound"
        assert (cluster["count"], cluster["traces"]) == (14, 7)

        # 5. the dataset
        imported = cli(app, db, *IMPORT)
        assert imported.returncode == 0, imported.stderr

        # 6. the baseline
        baseline_run = cli(app, db, *RUN)
        assert baseline_run.returncode == 0, baseline_run.stderr
        baseline = newest_experiment(app, db)
        assert cli(app, db, *KEEP, "--set", baseline).returncode == 0

        # 7-8. the fix, the candidate, the gate passes
        change_line(app, BUG_LINE, FIX_LINE)
        candidate_run = cli(app, db, *GATED)
        assert candidate_run.returncode == 0, candidate_run.stdout + candidate_run.stderr
        candidate = newest_experiment(app, db)
        compare = ("experiment", "compare")
        compared = cli(app, db, *compare, candidate, "--baseline", baseline, "--gate", GATE)
        assert compared.returncode == 0, compared.stdout + compared.stderr

        # 9. the bad fix improves the leading zeros, breaks the four-digit ids: the gate fails
        change_line(app, FIX_LINE, BAD_FIX_LINE)
        refused = cli(app, db, *GATED)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        bad = newest_experiment(app, db)
        verdict = cli(app, db, *compare, bad, "--baseline", baseline, "--gate", GATE, "--json")
        assert verdict.returncode == 1
        comparison = json.loads(verdict.stdout)
        assert comparison["verdict"]["status"] == "fail"
        regressed = [e for e in comparison["examples"] if e["change"] == "regressed"]
        improved = [e for e in comparison["examples"] if e["change"] == "improved"]
        assert (len(regressed), len(improved)) == (4, 7)
        assert comparison["examples"][: len(regressed)] == regressed  # regressions first
    finally:
        server.stop()
