"""``traceproof experiment run|list|show|compare`` as CI and people use them: the id named as soon
as it exists, what is refused before any run, the report through a server that holds the store,
piped output, a reader that goes away."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.conftest import ServeProcess
from tests.experiment_helpers import ECHO_TOML, PY, add_dataset, qa_examples, write_config
from tests.proof_fixtures import insert_comparison
from traceproof.cli import cli
from traceproof.evals.config import parse_config
from traceproof.experiments import runner
from traceproof.settings import Settings
from traceproof.storage import Store

SLOW_TOML = ECHO_TOML + f'\n[tasks.slow]\ncommand = [{PY}, "-c", "import time; time.sleep(60)"]\n'


def run_cli(
    db: Path, *args: str, config: Path | None = None, columns: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    extra = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "traceproof", "experiment", *args, "--db", str(db), *extra],
        capture_output=True, text=True, check=False, timeout=120, env=env,
    )  # fmt: skip


def project(tmp_path: Path, examples: int = 3) -> tuple[Path, Path, str]:
    """A store with dataset ``qa`` and a finished baseline of ``echo`` scored by ``same``."""
    db = tmp_path / "store.duckdb"
    config = write_config(tmp_path, SLOW_TOML)
    with Store.open(db, Settings(db=db, experiment_span_quiet_seconds=0.05)) as store:
        add_dataset(store, "qa", qa_examples(examples))
        plan = runner.plan_experiment(
            store, parse_config(SLOW_TOML, root=tmp_path), task="echo", dataset="qa",
            evaluators=["same"],
        )  # fmt: skip
        runner.execute(store, plan)
    return db, config, plan.id


def experiment_count(db: Path) -> int:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        return int(reader.scalar("SELECT count(*) FROM experiments"))


def test_the_report_is_made_through_the_server_that_holds_the_store(tmp_path: Path) -> None:
    db, config, base = project(tmp_path)
    page = tmp_path / "out" / "report.html"
    server = ServeProcess(db, None, "--config", str(config))
    try:
        ran = run_cli(
            db, "run", "echo", "--dataset", "qa", "--evaluator", "same", "--baseline", base,
            "--gate", "no_regressions", "--report-html", str(page),
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert f"vs {base}" in ran.stdout and "PASS" in ran.stdout
        started = re.search(r"experiment (exp_\w+) started", ran.stderr)
        assert started is not None, ran.stderr
        assert page.read_text().lower().startswith("<!doctype html>")
        listed = run_cli(db, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        ids = [e["id"] for e in json.loads(listed.stdout)["experiments"]]
        assert ids == [started[1], base]
    finally:
        server.stop()


def test_a_bad_gate_baseline_or_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    db, config, _ = project(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    base = ["run", "echo", "--dataset", "qa", "--db", str(db), "--config", str(config)]
    for extra, words in (
        (["--gate", "bogus"], "[invalid_argument]"),
        (["--baseline", "exp_nope"], "exp_nope"),
        (["--summary-md", str(blocker / "summary.md")], "Cannot write"),
        (["--report-html", str(blocker / "r.html")], "Cannot write"),
        (["--report-html", str(tmp_path)], "is a directory"),
    ):
        refused = CliRunner().invoke(cli, ["experiment", *base, "--port", "0", *extra])
        assert refused.exit_code == 3, (extra, refused.output)
        assert words in refused.output, (extra, refused.output)
        assert experiment_count(db) == 1, extra  # the baseline only
    (tmp_path / "fresh").mkdir()
    db2, config2, _ = project(tmp_path / "fresh")
    with Store.open(db2, Settings(db=db2)) as store:
        store.run_write(lambda c: c.execute("DELETE FROM experiment_baselines"))
    auto = CliRunner().invoke(
        cli, ["experiment", "run", "echo", "--dataset", "qa", "--db", str(db2), "--config",
              str(config2), "--port", "0", "--gate", "no_regressions"],
    )  # fmt: skip
    assert auto.exit_code == 3 and "No baseline is set" in auto.output, auto.output
    assert experiment_count(db2) == 1


def test_ctrl_c_names_the_experiment_to_resume(tmp_path: Path) -> None:
    db, config, _ = project(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceproof", "experiment", "run", "slow", "--dataset", "qa",
         "--db", str(db), "--config", str(config), "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    started = re.search(r"experiment (exp_\w+) started", line)
    assert started is not None, line
    proc.send_signal(signal.SIGINT)
    said = proc.stderr.read()
    assert proc.wait(timeout=60) == 3
    assert f"--resume {started[1]}" in " ".join(said.split()), said


def test_piped_comparison_is_drawn_wide_and_a_closed_pipe_keeps_the_verdict(
    store: Store, tmp_path: Path
) -> None:
    insert_comparison(store)
    db = store.settings.db
    store.close()
    shown = run_cli(db, "compare", "exp_cand", "--gate", "min:quality>=0.6")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) > 80  # not folded to 80 columns
    assert any("95% interval" in line and "p (Holm)" in line for line in lines), shown.stdout
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for args, verdict in ((["--gate", "min:quality>=0.6"], 0), ([], 1), (["--json"], 1)):
        proc = subprocess.Popen(
            [sys.executable, "-m", "traceproof", "experiment", "compare", "exp_cand", *args,
             "--db", str(db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
        said = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == verdict, (args, said)
        assert said == "", said


def test_show_refuses_an_unknown_run_status(store: Store) -> None:
    insert_comparison(store)
    db = store.settings.db
    store.close()
    shown = CliRunner().invoke(
        cli, ["experiment", "show", "exp_cand", "--status", "bogus", "--db", str(db)]
    )
    assert shown.exit_code == 1 and "[invalid_argument]" in shown.output, shown.output
    assert "bad_output" in shown.output
