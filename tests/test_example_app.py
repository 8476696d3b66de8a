"""The example application (examples/support_agent): a real child process, the real OpenTelemetry
SDK and OTLP/HTTP exporter, a real traceproof server on loopback.

Its spans arrive with OpenInference kinds and attributes; TRACEPARENT and OTEL_RESOURCE_ATTRIBUTES
land on them; the planted bug fails exactly the questions whose order id has a leading zero (ERROR
tool spans, wrong answers, a repeated call), the documented fix passes every question, and the bad
fix breaks exactly the four-digit ids; the built-in evaluators of its traceproof.toml see the same;
two runs answer and trace alike.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, free_port, wait_until
from traceproof.evals.builtin import evaluate_builtin, get_builtin
from traceproof.evals.config import BuiltinEvaluatorConfig, load_config
from traceproof.evals.evaluation import prepare
from traceproof.evals.target import EvalTarget, span_dict
from traceproof.settings import Settings

APP = Path(__file__).resolve().parents[1] / "examples" / "support_agent"
TOOLS_FILE = Path("support_agent") / "tools.py"
#: The bug, the fix and the bad fix, as README.md gives them (one line of support_agent/tools.py).
BUG_LINE = "    return str(int(order_id))\n"
FIX_LINE = "    return order_id\n"
BAD_FIX_LINE = "    return str(int(order_id)).zfill(5)\n"
DATASET = [json.loads(line) for line in (APP / "dataset.jsonl").read_text().splitlines()]
CASES = ("order", "leading_zero", "legacy_id", "docs", "no_order_id")


def app_copy(tmp_path: Path, line: str | None = None) -> Path:
    """A copy of the example to change; ``line`` replaces the bug's line when given."""
    dest = tmp_path / "support_agent_app"
    shutil.copytree(APP, dest, ignore=shutil.ignore_patterns("__pycache__", ".traceproof"))
    if line is not None:
        source = (dest / TOOLS_FILE).read_text()
        assert source.count(BUG_LINE) == 1, "README's one-line fix no longer matches tools.py"
        (dest / TOOLS_FILE).write_text(source.replace(BUG_LINE, line))
    return dest


def app_env(server: LiveServer | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k not in ("TRACEPARENT", "TRACESTATE")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # no server: a closed port, and a short export timeout
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = server.url if server else "http://127.0.0.1:9"
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "10" if server else "1"
    return {**env, **extra}


def run_app(
    cwd: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "support_agent", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def spans_of(server: LiveServer, where: str = "TRUE") -> list[dict[str, Any]]:
    with server.store.reader() as reader:
        rows = reader.dicts(f"SELECT * FROM spans WHERE {where} ORDER BY start_time, span_id")
    return [span_dict(r) for r in rows]


def wait_for_spans(server: LiveServer, count: int, where: str = "TRUE") -> list[dict[str, Any]]:
    wait_until(lambda: len(spans_of(server, where)) >= count, what=f"{count} spans")
    spans = spans_of(server, where)
    assert len(spans) == count
    return spans


def by_question(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each trace's spans (in start order) by the question its AGENT span answered."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        traces[s["trace_id"]].append(s)
    out = {}
    for group in traces.values():
        (agent,) = [s for s in group if s["span_kind"] == "AGENT"]
        out[json.loads(agent["input_value"])["question"]] = group
    return out


def dig(value: Any, path: str) -> Any:
    """``value`` down a dotted path (list indexes as numbers); flat dotted keys are tried too."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(value, dict):
            if part in value:
                value = value[part]
                continue
            return value.get(".".join(parts[i:]))
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
            continue
        return None
    return value


def run_dataset(server: LiveServer, cwd: Path, run: str = "1") -> dict[str, Any]:
    """The app over dataset.jsonl (one process, one trace per question): the outputs and the
    traces by question."""
    env = app_env(server, OTEL_RESOURCE_ATTRIBUTES=f"test.run={run}")
    done = run_app(cwd, env, "--file", "dataset.jsonl")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["input"] for line in lines] == [row["input"] for row in DATASET]
    where = f"json_extract_string(resource, '$.test.run') = '{run}'"
    wait_until(
        lambda: len(by_question(spans_of(server, where))) == len(DATASET),
        what="a trace per question",
    )
    traces = by_question(spans_of(server, where))
    return {
        "answers": {line["input"]["question"]: line["output"]["answer"] for line in lines},
        "outputs": {line["input"]["question"]: line["output"] for line in lines},
        "traces": traces,
        "stdout": done.stdout,
    }


def questions(*cases: str) -> set[str]:
    return {row["input"]["question"] for row in DATASET if row["metadata"]["case"] in cases}


# -- the spans of one question ------------------------------------------------------------------


def test_one_question_is_one_trace_of_agent_llm_and_tool_spans_with_openinference_attributes(
    live_server: LiveServer,
) -> None:
    question = "My kettle from order 10234 arrived damaged, I want a refund."
    item = {"question": question, "session_id": "sess-test", "customer_id": "cust-7"}
    done = run_app(APP, app_env(live_server), stdin=json.dumps(item))
    assert done.returncode == 0, done.stderr
    answer = (
        "I have refunded $39.00 for order 10234 (blue kettle). Refund RF-10234 reaches your "
        "original payment method within 5 business days."
    )
    assert json.loads(done.stdout) == {"answer": answer}

    spans = wait_for_spans(live_server, 6)
    assert [(s["name"], s["span_kind"], s["status"]) for s in spans] == [
        ("support_agent", "AGENT", "OK"),
        ("llm", "LLM", "OK"),
        ("lookup_order", "TOOL", "OK"),
        ("llm", "LLM", "OK"),
        ("refund", "TOOL", "OK"),
        ("llm", "LLM", "OK"),
    ]
    agent, llm1, lookup, llm2, refund, llm3 = spans
    assert len({s["trace_id"] for s in spans}) == 1
    assert agent["parent_span_id"] is None
    assert {s["parent_span_id"] for s in spans[1:]} == {agent["span_id"]}
    assert {s["project"] for s in spans} == {"support-agent"}  # service.name
    assert {s["session_id"] for s in spans} == {"sess-test"}
    assert {s["user_id"] for s in spans} == {"cust-7"}
    assert json.loads(agent["input_value"]) == item
    assert json.loads(agent["output_value"]) == {"answer": answer}
    assert agent["input_mime_type"] == agent["output_mime_type"] == "application/json"

    for llm in (llm1, llm2, llm3):
        assert llm["model"] == "scripted-support-1"
        assert llm["prompt_tokens"] > 0 and llm["completion_tokens"] > 0
        assert llm["total_tokens"] == llm["prompt_tokens"] + llm["completion_tokens"]
        attrs = llm["attributes"]
        assert dig(attrs, "openinference.span.kind") == "LLM"
        assert dig(attrs, "llm.input_messages.0.message.role") == "system"
        assert dig(attrs, "llm.input_messages.1.message.content") == question
        tools = [dig(attrs, f"llm.tools.{i}.tool.json_schema.function.name") for i in range(3)]
        assert tools == ["lookup_order", "refund", "search_docs"]
    first = "llm.output_messages.0.message.tool_calls.0.tool_call"
    assert dig(llm1["attributes"], f"{first}.function.name") == "lookup_order"
    assert dig(llm1["attributes"], f"{first}.function.arguments") == {"order_id": "10234"}
    assert dig(llm2["attributes"], "llm.input_messages.3.message.role") == "tool"
    assert dig(llm2["attributes"], "llm.input_messages.3.message.tool_call_id") == dig(
        llm1["attributes"], f"{first}.id"
    )
    assert dig(llm2["attributes"], f"{first}.function.arguments") == {
        "order_id": "10234",
        "reason": "damaged",
    }
    assert dig(llm3["attributes"], "llm.output_messages.0.message.role") == "assistant"
    assert dig(llm3["attributes"], "llm.output_messages.0.message.content") == answer

    assert lookup["tool_name"] == "lookup_order"
    assert json.loads(lookup["input_value"]) == {"order_id": "10234"}
    assert json.loads(lookup["output_value"])["item"] == "blue kettle"
    assert refund["tool_name"] == "refund"
    assert json.loads(refund["output_value"])["refund_id"] == "RF-10234"
    assert dig(refund["attributes"], "tool.parameters.required") == ["order_id", "reason"]


def test_traceparent_is_continued_and_resource_attributes_land_on_every_span(
    live_server: LiveServer,
) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    env = app_env(
        live_server,
        TRACEPARENT=f"00-{trace_id}-{parent}-01",
        OTEL_RESOURCE_ATTRIBUTES="traceproof.experiment.id=exp_0123456789ab,"
        "traceproof.example.id=ex42,traceproof.run.repetition=2,"
        "openinference.project.name=support-experiments",
        OTEL_SERVICE_NAME="support",
    )
    done = run_app(APP, env, "Where is order 20417?")
    assert done.returncode == 0, done.stderr
    spans = wait_for_spans(live_server, 4)
    assert {s["trace_id"] for s in spans} == {trace_id}
    (agent,) = [s for s in spans if s["span_kind"] == "AGENT"]
    assert agent["parent_span_id"] == parent
    for s in spans:
        assert dig(s["resource"], "traceproof.experiment.id") == "exp_0123456789ab"
        assert dig(s["resource"], "traceproof.example.id") == "ex42"
        assert dig(s["resource"], "traceproof.run.repetition") == "2"
        assert dig(s["resource"], "service.name") == "support"  # the environment wins
        assert s["project"] == "support-experiments"


def test_the_python_task_function_flushes_each_runs_spans_under_its_own_environment(
    live_server: LiveServer,
) -> None:
    """``support_agent.task:run`` called twice in one process (as a long-lived worker would),
    each time with another TRACEPARENT and resource; the process then ends with ``os._exit``,
    which runs no exit handler: only what ``run`` flushed itself can arrive."""
    ids = [(secrets.token_hex(16), secrets.token_hex(8)) for _ in range(2)]
    script = f"""
import json, os, sys
from support_agent.task import run
answers = []
for n, (trace_id, parent) in enumerate({ids!r}):
    os.environ["TRACEPARENT"] = f"00-{{trace_id}}-{{parent}}-01"
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"traceproof.example.id=ex{{n}}"
    answers.append(run({{"question": "Do you take PayPal?"}}))
sys.stdout.write(json.dumps(answers))
sys.stdout.flush()
os._exit(0)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=APP,
        env=app_env(live_server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = "We accept Visa, Mastercard, American Express and PayPal. (Help center: Payment.)"
    assert json.loads(done.stdout) == [{"answer": answer}] * 2
    spans = wait_for_spans(live_server, 8)  # each: agent, llm, search_docs, llm
    for n, (trace_id, parent) in enumerate(ids):
        trace = [s for s in spans if s["trace_id"] == trace_id]
        assert [s["name"] for s in trace] == ["support_agent", "llm", "search_docs", "llm"]
        assert trace[0]["parent_span_id"] == parent
        assert {dig(s["resource"], "traceproof.example.id") for s in trace} == {f"ex{n}"}


def test_an_input_that_is_not_a_question_exits_2_saying_what_it_expects(tmp_path: Path) -> None:
    done = run_app(APP, app_env(None), stdin=json.dumps({"q": "where is my order?"}))
    assert done.returncode == 2
    assert done.stdout == ""
    assert 'expected {"question": "..."}' in done.stderr


# -- the planted bug, the fix, the bad fix --------------------------------------------------------


def evaluate_all(result: dict[str, Any]) -> dict[str, set[str]]:
    """Every built-in evaluator of traceproof.toml on every question, as an experiment run is
    evaluated (the example's input and expected, the app's output, the run's trace): the
    questions each one fails. An evaluator that cannot judge a question fails the test."""
    config = load_config(APP / "traceproof.toml")
    failed: dict[str, set[str]] = {}
    for name, definition in config.evaluators.items():
        if not isinstance(definition, BuiltinEvaluatorConfig):
            continue
        builtin = get_builtin(definition.evaluator)
        failed[name] = set()
        for row in DATASET:
            question = row["input"]["question"]
            trace = result["traces"][question]
            target = EvalTarget(
                kind="experiment_run",
                id=question,
                input=row["input"],
                output=result["outputs"][question],
                expected=row["expected"],
                metadata=row["metadata"],
                span=trace[0],
                trace=trace,
            )
            verdict = evaluate_builtin(builtin, definition.params, target)
            assert verdict.error is None, (name, question, verdict.error)
            if verdict.label != "pass":
                failed[name].add(question)
    return failed


@pytest.mark.parametrize(
    ("variant", "line", "broken"),
    [
        ("bug", None, ("leading_zero",)),
        ("fix", FIX_LINE, ()),
        ("bad_fix", BAD_FIX_LINE, ("legacy_id",)),
    ],
    ids=["bug", "fix", "bad_fix"],
)
def test_error_spans_and_wrong_answers_fall_exactly_on_the_questions_the_variant_breaks(
    live_server: LiveServer, tmp_path: Path, variant: str, line: str | None, broken: tuple[str, ...]
) -> None:
    result = run_dataset(live_server, app_copy(tmp_path, line))
    wrong = questions(*broken)
    assert len(questions("leading_zero")) == 7 and len(questions("legacy_id")) == 4

    for row in DATASET:
        question = row["input"]["question"]
        trace = result["traces"][question]
        errors = [s for s in trace if s["status"] == "ERROR"]
        if question not in wrong:
            assert result["answers"][question] == row["expected"], question
            assert errors == [], question
            continue
        typed = re.findall(r"\d{4,6}", question)[0]  # the id as the customer wrote it
        assert result["answers"][question] == (
            f"I could not find order {typed}. Please check the order number and try again."
        )
        # the agent retried the failed lookup once, with the same argument
        assert [(s["name"], s["status"]) for s in trace if s["span_kind"] == "TOOL"] == [
            ("lookup_order", "ERROR"),
            ("lookup_order", "ERROR"),
        ]
        for span in errors:
            assert span["error_type"] == "support_agent.tools.OrderNotFound"
            assert json.loads(span["input_value"]) == {"order_id": typed}
            looked_up = str(int(typed)) if variant == "bug" else typed.zfill(5)
            assert span["status_message"] == (
                f"OrderNotFound: no order '{looked_up}' in the order service"
            )

    failed = evaluate_all(result)
    for name in ("correct", "no_error", "finds_orders", "no_repeated_calls"):
        assert failed[name] == wrong, name
    assert failed["few_tool_calls"] == set()
    assert failed["looked_up_order"] == questions("docs", "no_order_id")


def test_two_runs_answer_and_trace_the_same(live_server: LiveServer) -> None:
    def shape(result: dict[str, Any]) -> list[Any]:
        out = []
        for question, trace in sorted(result["traces"].items()):
            index = {s["span_id"]: i for i, s in enumerate(trace)}
            for s in trace:
                out.append(
                    (
                        question,
                        s["name"],
                        s["span_kind"],
                        s["status"],
                        s["status_message"],
                        index.get(s["parent_span_id"]),
                        s["input_value"],
                        s["output_value"],
                        s["total_tokens"],
                        s["session_id"],
                        json.dumps(s["attributes"], sort_keys=True),
                    )
                )
        return out

    first, second = run_dataset(live_server, APP, "1"), run_dataset(live_server, APP, "2")
    assert first["stdout"] == second["stdout"]
    assert shape(first) == shape(second)
    assert len(shape(first)) > 4 * len(DATASET)


# -- the files the walkthrough uses -------------------------------------------------------------


def test_the_dataset_has_an_expected_answer_per_question_and_a_case_per_example() -> None:
    assert len(DATASET) == 31
    assert len({row["input"]["question"] for row in DATASET}) == len(DATASET)
    for row in DATASET:
        assert set(row) == {"input", "expected", "metadata"}
        assert set(row["input"]) == {"question"}
        assert isinstance(row["expected"], str) and row["expected"]
        assert row["metadata"]["case"] in CASES
    assert {c: len(questions(c)) for c in CASES} == {
        "order": 12,
        "leading_zero": 7,
        "legacy_id": 4,
        "docs": 6,
        "no_order_id": 2,
    }


def test_traceproof_toml_declares_the_tasks_evaluators_judge_and_annotation_configs() -> None:
    config = load_config(APP / "traceproof.toml")
    assert config.root == APP
    assert config.tasks["support"].table["command"] == ["python", "-m", "support_agent"]
    assert config.tasks["support_py"].table["function"] == "support_agent.task:run"
    kinds = {name: prepare(d).kind for name, d in config.evaluators.items()}
    assert kinds == {
        "correct": "builtin",
        "no_error": "builtin",
        "finds_orders": "builtin",
        "no_repeated_calls": "builtin",
        "few_tool_calls": "builtin",
        "looked_up_order": "builtin",
        "answer_quality": "judge",
    }
    judge = prepare(config.evaluators["answer_quality"]).judge
    assert judge is not None
    assert judge.all_labels == ("fail", "pass", "insufficient_evidence")
    assert {"correctness", "corrected_answer", "failure_mode", "answer_quality"} <= set(
        config.annotations
    )


def test_the_apps_default_endpoint_is_traceproofs_default_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(APP))
    tracing = importlib.import_module("support_agent.tracing")

    settings = Settings()
    assert f"http://{settings.host}:{settings.port}" == tracing.DEFAULT_ENDPOINT
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert tracing.exporter()._endpoint == f"{tracing.DEFAULT_ENDPOINT}/v1/traces"


def test_without_a_server_or_an_endpoint_the_app_says_its_spans_are_not_exported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README's setup step runs the app before any server: it must not spend seconds retrying
    a closed port (the exporter's backoff), but say in one line that nothing was exported."""
    import socket

    monkeypatch.syspath_prepend(str(APP))
    tracing = importlib.import_module("support_agent.tracing")
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    closed = free_port()
    monkeypatch.setattr(tracing, "DEFAULT_ENDPOINT", f"http://127.0.0.1:{closed}")
    assert tracing.span_exporter() is None
    said = capsys.readouterr().err
    assert f"nothing listens at http://127.0.0.1:{closed}" in said and "traceproof serve" in said
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setattr(tracing, "DEFAULT_ENDPOINT", f"http://127.0.0.1:{port}")
        found = tracing.span_exporter()
        assert found is not None and found._endpoint == f"http://127.0.0.1:{port}/v1/traces"
    # An endpoint the environment names (as the experiment runner sets it) is used as is.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed}")
    named = tracing.span_exporter()
    assert named is not None and named._endpoint == f"http://127.0.0.1:{closed}/v1/traces"
    assert capsys.readouterr().err == ""
