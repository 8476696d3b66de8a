"""Experiments with real child processes: tasks, process groups, spans after exit, cancel and
resume, dry runs, provenance, the tools over MCP."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.conftest import LiveServer, wait_until
from tests.experiment_helpers import ECHO_TOML, PY, add_dataset, qa_examples, write_config
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import parse_config
from traceproof.experiments import runner
from traceproof.experiments.datasets import Example
from traceproof.experiments.provenance import git_state
from traceproof.experiments.tasks import run_task, task_of
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.datasets import add_examples, create_dataset
from traceproof.tools.experiments import cancel_experiment, get_experiment, run_experiment


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Store]:
    """A store whose runs do not linger waiting for spans that never come."""
    settings = Settings(db=tmp_path / "store.duckdb", experiment_span_quiet_seconds=0.05)
    with Store.open(settings.db, settings) as opened:
        yield opened


def experiment(store: Store, toml: str, root: Path, **options: Any) -> tuple[str, dict[str, Any]]:
    config = parse_config(toml, root=root)
    plan = runner.plan_experiment(store, config, **options)
    return plan.id, runner.execute(store, plan)


def runs_of(store: Store, experiment_id: str) -> list[dict[str, Any]]:
    with store.reader() as reader:
        return reader.dicts(
            "SELECT * FROM experiment_runs WHERE experiment_id = ? ORDER BY example_id",
            [experiment_id],
        )


def command_task(code: str, *args: str, extra: str = "") -> str:
    """A ``[tasks.t]`` running ``python -c code args...``."""
    argv = ", ".join(json.dumps(a) for a in (sys.executable, "-c", code, *args))
    return f"[tasks.t]\ncommand = [{argv}]\n{extra}"


def one_run(task_toml: str, root: Path, example: dict[str, Any], **kw: Any) -> Any:
    task = task_of(parse_config(task_toml, root=root), "t")
    return run_task(task, example, {}, kw.pop("timeout", 30), **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


# -- tasks ------------------------------------------------------------------------------------


def test_a_command_task_runs_every_example_and_each_run_is_scored(
    fast: Store, tmp_path: Path
) -> None:
    add_dataset(fast, "qa", qa_examples(4))
    exp_id, summary = experiment(
        fast, ECHO_TOML, tmp_path, task="echo", dataset="qa", evaluators=["same"], repetitions=2
    )
    runs = runs_of(fast, exp_id)
    assert len(runs) == 8 and {r["status"] for r in runs} == {"ok"}
    assert sorted(json.loads(r["output"]) for r in runs)[:2] == ["question 0", "question 0"]
    assert summary["runs"] == 8 and summary["status"] == {"ok": 8}
    assert summary["evaluators"]["same"] == {"count": 8, "mean": 1.0, "labels": {"pass": 8},
                                             "errors": 0}  # fmt: skip
    with fast.reader() as reader:
        row = reader.dicts("SELECT * FROM experiments WHERE id = ?", [exp_id])[0]
        notes = reader.rows(
            "SELECT count(*) FROM annotations "
            "WHERE target_kind = 'experiment_run' AND label = 'pass'"
        )
    assert row["status"] == "done" and row["finished_at"] is not None
    assert json.loads(row["evaluators"])[0]["name"] == "same"
    assert notes == [(8,)]


def test_input_fields_fill_the_argv_placeholders_and_text_output_stays_text(
    tmp_path: Path,
) -> None:
    code = "import sys; print('got', sys.argv[1], sys.argv[2])"
    toml = command_task(code, "{input.a.b}", "{input}", extra='output = "text"\n')
    outcome = one_run(toml, tmp_path, {"input": {"a": {"b": "deep"}}})
    assert outcome.status == "ok"
    assert outcome.output == 'got deep {"a": {"b": "deep"}}\n'
    missing = one_run(toml, tmp_path, {"input": {"a": {}}})
    assert missing.status == "error" and "input.a.b" in (missing.error or "")


def test_a_python_task_gets_its_arguments_by_name_and_its_exceptions_are_errors(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(
        "def answer(input, expected, metadata):\n"
        "    print('noise on stdout')\n"
        "    if input.get('boom'):\n"
        "        raise ValueError('no answer for ' + input['q'])\n"
        "    return {'q': input['q'], 'expected': expected, 'meta': metadata}\n"
    )
    toml = '[tasks.t]\nfunction = "app:answer"\n'
    ok = one_run(toml, tmp_path, {"input": {"q": "x"}, "expected": "y", "metadata": {"k": 1}})
    assert ok.status == "ok"
    assert ok.output == {"q": "x", "expected": "y", "meta": {"k": 1}}
    failed = one_run(toml, tmp_path, {"input": {"q": "x", "boom": True}})
    assert failed.status == "error" and failed.error == "ValueError: no answer for x"


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"answer": {"text": body["q"].upper()},
                            "traceparent": self.headers.get("traceparent")}).encode()  # fmt: skip
        self.send_response(500 if body.get("fail") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_http_task_posts_the_input_on_loopback_and_takes_the_output_by_path(
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/answer"
        toml = f'[tasks.t]\nurl = "{url}"\noutput_path = "answer.text"\n'
        task = task_of(parse_config(toml, root=tmp_path), "t")
        traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        outcome = run_task(task, {"input": {"q": "hi"}}, {"TRACEPARENT": traceparent}, 10)
        assert (outcome.status, outcome.output) == ("ok", "HI")
        whole = task_of(parse_config(f'[tasks.t]\nurl = "{url}"\n', root=tmp_path), "t")
        answer = run_task(whole, {"input": {"q": "hi"}}, {"TRACEPARENT": traceparent}, 10)
        assert answer.output["traceparent"] == traceparent
        failed = run_task(task, {"input": {"q": "hi", "fail": True}}, {}, 10)
        assert failed.status == "error" and (failed.error or "").startswith("HTTP 500")
        wrong = task_of(parse_config(toml.replace("answer.text", "nope"), root=tmp_path), "t")
        assert run_task(wrong, {"input": {"q": "hi"}}, {}, 10).status == "bad_output"
    finally:
        server.shutdown()


def test_an_http_task_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    toml = '[tasks.t]\nurl = "http://example.com/x"\n'
    with pytest.raises(TraceproofError) as caught:
        task_of(parse_config(toml, root=tmp_path), "t")
    assert caught.value.code == ErrorCode.INVALID_CONFIG and "allow_remote" in str(caught.value)
    allowed = task_of(parse_config(toml + "allow_remote = true\n", root=tmp_path), "t")
    assert allowed.url == "http://example.com/x"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('[tasks.t]\ncommand = "python app.py"\n', "list of strings"),
        ('[tasks.t]\ncommand = ["x"]\nshell = true\n', "unknown key 'shell'"),
        ('[tasks.t]\nfunction = "app.answer"\n', "module:function"),
        ('[tasks.t]\nkind = "lambda"\n', "not a kind"),
        ('[tasks.t]\ncommand = ["x"]\ntimeout = -1\n', "positive"),
    ],
)
def test_a_wrong_task_table_is_an_invalid_config_naming_the_key(
    tmp_path: Path, table: str, words: str
) -> None:
    with pytest.raises(TraceproofError) as caught:
        task_of(parse_config(table, root=tmp_path), "t")
    assert caught.value.code == ErrorCode.INVALID_CONFIG and words in str(caught.value)
    assert "tasks.t" in str(caught.value)


def test_a_timeout_kills_the_whole_process_group_grandchildren_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "slow.py").write_text(script)
    outcome = one_run(f'[tasks.t]\ncommand = [{PY}, "slow.py"]\n', tmp_path, {"input": {}},
                      timeout=1.5)  # fmt: skip
    assert outcome.status == "timeout" and "1.5 s" in (outcome.error or "")
    parent, grandchild = map(int, pids.read_text().split())
    wait_until(lambda: not alive(parent) and not alive(grandchild), what="the group to die")


def test_crash_exit_status_huge_output_and_bad_json_are_recorded_with_their_reason(
    tmp_path: Path,
) -> None:
    crash = one_run(
        command_task("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"),
        tmp_path, {"input": {}},
    )  # fmt: skip
    assert crash.status == "crash" and "SIGSEGV" in (crash.error or "")
    exit3 = one_run(
        command_task("import sys; sys.stderr.write('bad thing'); sys.exit(3)"),
        tmp_path, {"input": {}},
    )  # fmt: skip
    assert exit3.status == "error" and exit3.error == "exit status 3: bad thing"
    huge = one_run(
        f'[tasks.t]\ncommand = [{PY}, "-c", "import sys; sys.stdout.write(\'x\' * 20_000_000)"]\n',
        tmp_path, {"input": {}}, max_output_bytes=10_000,
    )  # fmt: skip
    assert huge.status == "bad_output" and "20000000 bytes" in (huge.error or "")
    assert len(huge.output) == 10_000
    bad = one_run(
        f'[tasks.t]\ncommand = [{PY}, "-c", "print(\'not json\')"]\noutput = "json"\n',
        tmp_path, {"input": {}},
    )  # fmt: skip
    assert bad.status == "bad_output" and "not JSON" in (bad.error or "")
    died = one_run('[tasks.t]\nfunction = "gone:fn"\n', tmp_path, {"input": {}})
    assert died.status == "error" and "ModuleNotFoundError" in (died.error or "")


def test_failed_runs_are_stored_and_counted_not_raised(fast: Store, tmp_path: Path) -> None:
    add_dataset(fast, "qa", qa_examples(3))
    toml = ECHO_TOML.replace("['q']", "['missing']")
    exp_id, summary = experiment(fast, toml, tmp_path, task="echo", dataset="qa",
                                 evaluators=["same"])  # fmt: skip
    assert summary["status"] == {"error": 3}
    assert all("KeyError" in r["error"] for r in runs_of(fast, exp_id))
    # An evaluator that needs an output cannot judge a failed run: an error, not a verdict.
    assert summary["evaluators"]["same"] == {"count": 0, "mean": None, "labels": {}, "errors": 3}


# -- tracing ----------------------------------------------------------------------------------

TRACED_APP = """
import json, os, subprocess, sys, time
def export(question):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": "app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("agent", attributes={"openinference.span.kind": "AGENT"}):
        for tool in question["tools"]:
            with tracer.start_as_current_span(tool, attributes={
                    "openinference.span.kind": "TOOL", "tool.name": tool}):
                pass
    provider.shutdown()
if sys.argv[1:] == ["late"]:
    time.sleep(0.5)
    export(json.loads(os.environ["QUESTION"]))
else:
    question = json.load(sys.stdin)
    # The spans leave after the task exits: a detached exporter sends them half a second later.
    subprocess.Popen([sys.executable, __file__, "late"], start_new_session=True,
                     env={**os.environ, "QUESTION": json.dumps(question)})
    print(json.dumps({"answer": "done"}))
"""

TRACED_TOML = f"""
[tasks.agent]
command = [{PY}, "app.py"]
project = "app"

[evaluators.searched]
evaluator = "tool_called"
name = "search"

[evaluators.few_calls]
evaluator = "max_tool_calls"
max = 2
"""


def test_spans_that_arrive_after_the_process_exits_are_linked_and_evaluated(
    tmp_path: Path,
) -> None:
    settings = Settings(db=tmp_path / "store.duckdb", experiment_span_quiet_seconds=1.5)
    with Store.open(settings.db, settings) as store, LiveServer(store, settings):
        (tmp_path / "app.py").write_text(TRACED_APP)
        add_dataset(store, "agentic", [
            {"input": {"tools": ["search", "read"]}, "expected": None},
            {"input": {"tools": ["read", "read", "read"]}, "expected": None},
        ])  # fmt: skip
        exp_id, summary = experiment(
            store, TRACED_TOML, tmp_path, task="agent", dataset="agentic",
            evaluators=["searched", "few_calls"],
        )  # fmt: skip
        runs = runs_of(store, exp_id)
        with store.reader() as reader:
            resources = reader.rows(
                "SELECT DISTINCT json_extract_string(resource, '$.traceproof.experiment.id') "
                "FROM spans"
            )
    assert resources == [(exp_id,)]
    assert sorted(r["tool_calls"] for r in runs) == [2, 3]
    assert all(len(r["trace_ids"]) == 1 for r in runs)
    assert summary["tool_calls"] == 5
    assert summary["evaluators"]["searched"]["labels"] == {"pass": 1, "fail": 1}
    assert summary["evaluators"]["few_calls"]["labels"] == {"pass": 1, "fail": 1}


# -- cancel, resume, dry run ------------------------------------------------------------------

GATED_TOML = f"""
[tasks.gated]
command = [{PY}, "gated.py"]

[evaluators.same]
evaluator = "exact_match"
"""

GATED_APP = """
import json, os, sys, time
question = json.load(sys.stdin)
if question.get("slow") and os.path.exists("gate"):
    open("slow.pid", "w").write(str(os.getpid()))
    time.sleep(120)
print(json.dumps(question["q"]))
"""


def test_a_cancelled_experiment_kills_its_processes_and_a_resume_runs_only_what_is_missing(
    fast: Store, tmp_path: Path
) -> None:
    (tmp_path / "gated.py").write_text(GATED_APP)
    (tmp_path / "gate").write_text("closed")
    fast.settings.config = write_config(tmp_path, GATED_TOML)
    examples = qa_examples(3)
    examples[1]["input"]["slow"] = True
    add_dataset(fast, "qa", examples)
    started = run_experiment(fast, task="gated", dataset="qa", evaluators=["same"],
                             concurrency=3, wait=0)  # fmt: skip
    assert started.status == "running"
    wait_until((tmp_path / "slow.pid").exists, what="the slow run to start")
    wait_until(lambda: len(runs_of(fast, started.id)) == 2, what="the fast runs to finish")
    slow = int((tmp_path / "slow.pid").read_text())
    cancelled = cancel_experiment(fast, id=started.id)
    assert cancelled.status == "cancelled"
    wait_until(lambda: not alive(slow), what="the slow run to be killed")
    shown = get_experiment(fast, id=started.id)
    assert shown.status == "cancelled" and len(shown.runs) == 2
    assert (shown.done, shown.total) == (2, 3)
    (tmp_path / "gate").unlink()
    resumed = run_experiment(fast, resume=started.id, wait=60)
    assert (resumed.id, resumed.status, resumed.total) == (started.id, "done", 1)
    assert resumed.summary is not None and resumed.summary["status"] == {"ok": 3}
    again = run_experiment(fast, resume=started.id, wait=60)
    assert again.total == 0 and "Nothing to resume" in (again.note or "")


def test_a_resume_refuses_a_changed_task(fast: Store, tmp_path: Path) -> None:
    add_dataset(fast, "qa", qa_examples(1))
    exp_id, _ = experiment(fast, ECHO_TOML, tmp_path, task="echo", dataset="qa")
    changed = ECHO_TOML.replace("['q']", "['q'] ")
    with pytest.raises(TraceproofError) as caught:
        experiment(fast, changed, tmp_path, task=None, dataset=None, resume=exp_id)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT and "changed" in str(caught.value)


def test_a_dry_run_runs_a_few_examples_and_records_nothing(fast: Store, tmp_path: Path) -> None:
    add_dataset(fast, "qa", qa_examples(10))
    exp_id, summary = experiment(fast, ECHO_TOML, tmp_path, task="echo", dataset="qa",
                                 evaluators=["same"], dry_run=True, repetitions=3)  # fmt: skip
    assert exp_id.startswith("dry_")
    assert summary["runs"] == 3 and summary["evaluators"]["same"]["labels"] == {"pass": 3}
    assert [r["status"] for r in summary["dry_runs"]] == ["ok"] * 3
    with fast.reader() as reader:
        counts = reader.rows(
            "SELECT (SELECT count(*) FROM experiments), (SELECT count(*) FROM experiment_runs), "
            "(SELECT count(*) FROM annotations)"
        )
    assert counts == [(0, 0, 0)]


# -- provenance -------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_provenance_records_the_commit_and_whether_the_tree_was_dirty(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None, "diff_hash": None}
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "app.py").write_text("x = 1\n")
    _git(tmp_path, "add", "app.py")
    _git(tmp_path, "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["git_dirty"] is False and clean["diff_hash"] is None
    assert len(clean["git_commit"] or "") == 40
    (tmp_path / "app.py").write_text("x = 2\n")
    dirty = git_state(tmp_path)
    (tmp_path / "app.py").write_text("x = 3\n")
    other = git_state(tmp_path)
    assert dirty["git_dirty"] is True and dirty["git_commit"] == clean["git_commit"]
    assert dirty["diff_hash"] and dirty["diff_hash"] != other["diff_hash"]


def test_an_experiment_stores_its_provenance(fast: Store, tmp_path: Path) -> None:
    add_dataset(fast, "qa", qa_examples(1))
    exp_id, _ = experiment(fast, ECHO_TOML, tmp_path, task="echo", dataset="qa",
                           evaluators=["same"])  # fmt: skip
    shown = get_experiment(fast, id=exp_id)
    prov = shown.provenance
    task = task_of(parse_config(ECHO_TOML, root=tmp_path), "echo")
    assert prov["task_hash"] == task.content_hash and prov["dataset_version"] == 1
    assert prov["evaluators"][0]["name"] == "same" and prov["traceproof_version"]
    assert prov["git_commit"] is None


# -- the tools over MCP -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_experiment_tools_answer_over_mcp_within_their_budget(
    fast: Store, tmp_path: Path
) -> None:
    fast.settings.config = write_config(tmp_path, ECHO_TOML)
    add_dataset(fast, "qa", qa_examples(30))
    async with Client(create_mcp_server(fast)) as client:
        seen: list[float] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append(done)

        started = await client.call_tool(
            "run_experiment",
            {"task": "echo", "dataset": "qa", "evaluators": ["same"], "wait": 120},
            progress_callback=progress,
        )
        assert not started.is_error, started
        answer = started.structured_content
        assert answer is not None and answer["status"] == "done" and answer["total"] == 30
        shown = await client.call_tool(
            "get_experiment", {"id": answer["id"], "limit": 1000, "max_chars": 2000}
        )
        page = shown.structured_content
        assert page is not None and len(json.dumps(page)) <= 2000
        assert 0 < len(page["runs"]) < 30 and page["next_cursor"]
        assert page["runs"][0]["scores"] == {"same": "pass"}
        following = await client.call_tool(
            "get_experiment", {"id": answer["id"], "cursor": page["next_cursor"]}
        )
        rest = following.structured_content
        assert rest is not None
        assert len(page["runs"]) + len(rest["runs"]) == 30
        ended = await client.call_tool("cancel_experiment", {"id": answer["id"]})
        assert ended.structured_content is not None
        assert ended.structured_content["status"] == "done"
        missing = await client.call_tool("get_experiment", {"id": "exp_nope"})
        assert missing.is_error and "[not_found]" in str(missing.content)
    assert seen and max(seen) == 30


def test_an_experiment_left_running_by_a_dead_server_reads_as_interrupted(
    fast: Store, tmp_path: Path
) -> None:
    add_dataset(fast, "qa", qa_examples(1))
    config = parse_config(ECHO_TOML, root=tmp_path)
    plan = runner.plan_experiment(fast, config, task="echo", dataset="qa")
    shown = get_experiment(fast, id=plan.id)
    assert shown.status == "interrupted" and f"resume='{plan.id}'" in (shown.note or "")


def test_the_runs_environment_names_the_experiment_example_and_repetition(
    fast: Store, tmp_path: Path
) -> None:
    names = ["OTEL_RESOURCE_ATTRIBUTES", "TRACEPARENT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
    code = f"import os, json; print(json.dumps({{k: os.environ.get(k) for k in {names}}}))"
    toml = command_task(code, extra='project = "mine"\n').replace("tasks.t", "tasks.env")
    add_dataset(fast, "qa", qa_examples(1))
    exp_id, _ = experiment(fast, toml, tmp_path, task="env", dataset="qa")
    (run,) = runs_of(fast, exp_id)
    seen = json.loads(run["output"])
    assert seen["OTEL_RESOURCE_ATTRIBUTES"] == (
        f"openinference.project.name=mine,traceproof.experiment.id={exp_id},"
        f"traceproof.example.id={run['example_id']},traceproof.run.repetition=1"
    )
    assert seen["TRACEPARENT"].startswith("00-") and seen["TRACEPARENT"].endswith("-01")
    assert seen["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_experiment_run_serves_otlp_meanwhile_and_exits_0_when_it_ran_3_when_it_could_not(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from traceproof.cli import cli

    db = tmp_path / "store.duckdb"
    settings = Settings(db=db)
    with Store.open(db, settings) as store:
        add_dataset(store, "agentic", [{"input": {"tools": ["search"]}, "expected": None}])
    (tmp_path / "app.py").write_text(TRACED_APP.replace("time.sleep(0.5)", "pass"))
    config = write_config(tmp_path, TRACED_TOML)
    base = ["--db", str(db), "--config", str(config), "--port", "0"]
    ran = CliRunner().invoke(
        cli,
        ["experiment", "run", "agent", "--dataset", "agentic", "--evaluator", "searched",
         "--json", *base],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    answer = json.loads(ran.stdout)
    assert answer["summary"]["evaluators"]["searched"]["labels"] == {"pass": 1}
    assert answer["summary"]["tool_calls"] == 1  # the spans reached the in-process receiver
    shown = CliRunner().invoke(cli, ["experiment", "show", answer["id"], "--db", str(db),
                                     "--json"])  # fmt: skip
    assert shown.exit_code == 0 and json.loads(shown.stdout)["runs"][0]["scores"] == {
        "searched": "pass"
    }
    unknown = CliRunner().invoke(cli, ["experiment", "run", "nope", "--dataset", "agentic", *base])
    assert unknown.exit_code == 3 and "[invalid_config]" in unknown.output
    cancel = CliRunner().invoke(cli, ["experiment", "cancel", answer["id"], "--db", str(db)])
    assert cancel.exit_code == 0 and "already ended" in cancel.output


def test_a_resume_runs_failed_runs_again_and_replaces_them(fast: Store, tmp_path: Path) -> None:
    code = "import json, os, sys; q = json.load(sys.stdin)['q']; "
    code += "broken = os.path.exists('broken') and q.endswith('1'); "
    code += "sys.exit('broken') if broken else print(json.dumps(q))"
    toml = command_task(code, extra="").replace("tasks.t", "tasks.flaky")
    toml += '\n[evaluators.same]\nevaluator = "exact_match"\n'
    (tmp_path / "broken").write_text("")
    add_dataset(fast, "qa", qa_examples(3))
    exp_id, first = experiment(fast, toml, tmp_path, task="flaky", dataset="qa",
                               evaluators=["same"])  # fmt: skip
    assert first["status"] == {"error": 1, "ok": 2}
    (tmp_path / "broken").unlink()
    config = parse_config(toml, root=tmp_path)
    plan = runner.plan_experiment(fast, config, task=None, dataset=None, resume=exp_id)
    assert len(plan.todo) == 1 and plan.todo[0][0]["input"] == {"q": "question 1"}
    summary = runner.execute(fast, plan)
    assert summary["status"] == {"ok": 3}
    assert summary["evaluators"]["same"]["labels"] == {"pass": 3}
    assert [r["status"] for r in runs_of(fast, exp_id)] == ["ok"] * 3


def test_a_baseline_is_kept_per_task_and_dataset(fast: Store) -> None:
    from traceproof.storage import comparison as db

    with fast.reader() as reader:
        assert db.get_baseline(reader, "echo", "ds_1") is None
    db.set_baseline(fast, "echo", "ds_1", "exp_a")
    db.set_baseline(fast, "echo", "ds_1", "exp_b")
    db.set_baseline(fast, "echo", "ds_2", "exp_c")
    with fast.reader() as reader:
        found = (db.get_baseline(reader, "echo", "ds_1"), db.get_baseline(reader, "echo", "ds_2"))
    assert found == ("exp_b", "exp_c")


def test_a_custom_code_evaluator_scores_runs_in_its_child_process(
    fast: Store, tmp_path: Path
) -> None:
    (tmp_path / "checks.py").write_text(
        "def right(output, expected, input):\n"
        "    return {'score': float(output == expected), 'explanation': input['q']}\n"
    )
    toml = ECHO_TOML + '\n[evaluators.right]\nfunction = "checks:right"\n'
    add_dataset(fast, "qa", qa_examples(3))
    _, summary = experiment(fast, toml, tmp_path, task="echo", dataset="qa",
                            evaluators=["right"])  # fmt: skip
    assert summary["evaluators"]["right"]["mean"] == 1.0
    with fast.reader() as reader:
        explanations = reader.rows(
            "SELECT explanation FROM annotations WHERE name = 'right' ORDER BY explanation"
        )
    assert explanations == [("question 0",), ("question 1",), ("question 2",)]


def test_an_unknown_dataset_or_version_is_not_found_naming_the_known_datasets(
    fast: Store, tmp_path: Path
) -> None:
    add_dataset(fast, "qa", qa_examples(3))
    config = parse_config(ECHO_TOML, root=tmp_path)
    with pytest.raises(TraceproofError) as unknown:
        runner.plan_experiment(fast, config, task="echo", dataset="nope", dry_run=True)
    assert unknown.value.code == ErrorCode.NOT_FOUND and "'qa'" in str(unknown.value)
    with pytest.raises(TraceproofError) as version:
        runner.plan_experiment(fast, config, task="echo", dataset="qa", version=2, dry_run=True)
    assert version.value.code == ErrorCode.NOT_FOUND and "versions 1 to 1" in str(version.value)


def test_runs_are_planned_in_example_id_order_across_versions(fast: Store, tmp_path: Path) -> None:
    examples = [Example(input={"q": f"question {i}"}) for i in range(8)]
    first, later = examples[:4], examples[4:]
    # Version 2 adds an example whose id sorts before some of version 1's.
    if min(e.id for e in later) > max(e.id for e in first):
        first, later = later, first
    made = create_dataset(fast, "two", first)
    add_examples(fast, made.id, later)
    config = parse_config(ECHO_TOML, root=tmp_path)
    plan = runner.plan_experiment(fast, config, task="echo", dataset="two")
    ids = [example["id"] for example, _ in plan.todo]
    assert ids == sorted(e.id for e in examples)


def test_a_non_zero_exit_keeps_the_tail_of_stderr_from_a_line_start(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for i in range(500): print('line', i, file=sys.stderr)\n"
        "print('fatal: boom at the end', file=sys.stderr); sys.exit(1)\n"
    )
    outcome = one_run(command_task(code), tmp_path, {"input": {}})
    error = outcome.error or ""
    assert outcome.status == "error" and error.startswith("exit status 1: ")
    assert error.endswith("line 499\nfatal: boom at the end")
    assert len(error) <= runner.ERROR_CHARS
    marker, first = error.removeprefix("exit status 1: ").split("\n")[:2]
    assert "clipped" in marker and first.startswith("line ") and first[5:].isdigit()


PY_VALUES = """
import math, os

def an_object(input):
    return object()

def a_set_inside(input):
    return {"a": [1, {2, 3}]}

def not_a_number(input):
    return math.nan

def dies(input):
    os._exit(9)
"""


def test_a_python_value_json_cannot_hold_is_bad_output_naming_its_type(tmp_path: Path) -> None:
    (tmp_path / "values.py").write_text(PY_VALUES)
    for function, words in (
        ("an_object", "a value of type object"),
        ("a_set_inside", "a dict holding a value of type set"),
        ("not_a_number", "a float that is not JSON"),
    ):
        toml = f'[tasks.t]\nfunction = "values:{function}"\n'
        outcome = one_run(toml, tmp_path, {"input": {}})
        assert outcome.status == "bad_output", (function, outcome)
        assert words in (outcome.error or "") and outcome.output is None


def test_a_python_worker_that_dies_is_a_crash(tmp_path: Path) -> None:
    (tmp_path / "values.py").write_text(PY_VALUES)
    outcome = one_run('[tasks.t]\nfunction = "values:dies"\n', tmp_path, {"input": {}})
    assert outcome.status == "crash" and "exit status 9" in (outcome.error or "")
