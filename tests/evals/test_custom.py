"""Custom code evaluators: a real module in a project folder, run in real child processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import CodeEvaluatorConfig, load_config
from traceproof.evals.custom import CodeEvaluator
from traceproof.evals.runner import run_evaluator, summarize
from traceproof.evals.target import EvalResult, EvalTarget
from traceproof.settings import Settings

MODULE = """
import asyncio, dataclasses, json, os, time

def shapes(output):
    print("chatter on stdout must not break the protocol")
    kind, _, rest = output.partition(":")
    return {
        "true": True, "false": False, "int": 3, "float": 0.25, "label": "polite",
        "score_expl": (0.5, "half right"), "label_expl": ("rude", "says 'whatever'"),
        "triple": (1, "good", "all fine"), "dict": {"label": "ok", "score": 1, "explanation": "e",
                                                    "tokens": 12},
        "dataclass": Verdict("meh", 0.4), "none": None, "nan": float("nan"),
        "object": object(), "list4": [1, 2, 3, 4],
    }[kind]

@dataclasses.dataclass
class Verdict:
    label: str
    score: float

def bound(output, expected, metadata):
    return {"label": "seen", "explanation": json.dumps([output, expected, metadata])}

def everything(**kwargs):
    return {"label": ",".join(sorted(kwargs)), "score": len(kwargs["trace"] or [])}

def positional_only(output, /):
    return output == "yes"

async def asynchronous(output):
    await asyncio.sleep(0)
    return len(output)

def raises(input):
    if input == "bad":
        raise KeyError("no such order")
    return True

def pid(output):
    return str(os.getpid())

def hang(output):
    if output == "hang":
        with open("hung.pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
    return True

def crash(output):
    if output == "crash":
        import sys
        sys.stderr.write("about to die\\n")
        os._exit(7)
    return True

def env(output):
    return {"label": os.environ.get("TRACEPROOF_TOKEN", "absent"),
            "explanation": os.environ.get("EVALS_VISIBLE", "")}

def needs_more(output, context):
    return True

not_callable = 3
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myevals").mkdir()
    (tmp_path / "myevals" / "__init__.py").write_text("")
    (tmp_path / "myevals" / "checks.py").write_text(MODULE)
    return tmp_path


def evaluator(project: Path, function: str, **extra: Any) -> CodeEvaluatorConfig:
    lines = [f'[evaluators.e]\nfunction = "myevals.checks:{function}"']
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    (project / "traceproof.toml").write_text("\n".join(lines).replace("'", '"') + "\n")
    definition = load_config(root=project).evaluator("e")
    assert isinstance(definition, CodeEvaluatorConfig)
    return definition


def targets(*outputs: str, **fields: Any) -> list[EvalTarget]:
    return [EvalTarget(kind="span", id=f"s{i}", output=o, **fields) for i, o in enumerate(outputs)]


def run(definition: CodeEvaluatorConfig, items: list[EvalTarget], **kw: Any) -> list[EvalResult]:
    return run_evaluator(definition, items, settings=Settings(), **kw)


def test_every_return_shape_is_understood_as_the_evaluation_libraries_do(project: Path) -> None:
    kinds = ["true", "false", "int", "float", "label", "score_expl", "label_expl", "triple",
             "dict", "dataclass"]  # fmt: skip
    results = run(evaluator(project, "shapes"), targets(*kinds))
    got = {k: (r.label, r.score, r.explanation) for k, r in zip(kinds, results, strict=True)}
    assert got == {
        "true": ("pass", 1.0, None),
        "false": ("fail", 0.0, None),
        "int": (None, 3.0, None),
        "float": (None, 0.25, None),
        "label": ("polite", None, None),
        "score_expl": (None, 0.5, "half right"),
        "label_expl": ("rude", None, "says 'whatever'"),
        "triple": ("good", 1.0, "all fine"),
        "dict": ("ok", 1.0, "e"),
        "dataclass": ("meh", 0.4, None),
    }
    assert results[kinds.index("dict")].metadata == {"tokens": 12}
    assert all(r.error is None and r.duration_ms >= 0 for r in results)


def test_returns_that_are_no_verdict_are_errors_never_scores(project: Path) -> None:
    results = run(evaluator(project, "shapes"), targets("none", "nan", "object", "list4"))
    assert [r.score for r in results] == [None] * 4
    assert [r.label for r in results] == [None] * 4
    errors = [r.error or "" for r in results]
    assert all(e.startswith("bad_return: ") for e in errors), errors
    assert "not finite" in errors[1]


def test_arguments_are_bound_by_name(project: Path) -> None:
    item = EvalTarget(kind="span", id="s", output="o", expected="x", metadata={"k": 1}, input="i")
    (result,) = run(evaluator(project, "bound"), [item])
    assert result.explanation == '["o", "x", {"k": 1}]'
    trace_target = EvalTarget(kind="trace", id="t", span={"name": "root"}, trace=[{}, {}])
    (everything,) = run(evaluator(project, "everything"), [trace_target])
    assert (everything.label, everything.score) == ("expected,input,metadata,output,span,trace", 2)
    assert [r.label for r in run(evaluator(project, "positional_only"), targets("yes", "no"))] == [
        "pass", "fail",
    ]  # fmt: skip
    assert [r.score for r in run(evaluator(project, "asynchronous"), targets("abc"))] == [3.0]


def test_an_exception_is_that_targets_error_and_the_others_are_judged(project: Path) -> None:
    items = [EvalTarget(kind="span", id=i, input=i) for i in ("good", "bad", "fine")]
    results = run(evaluator(project, "raises"), items)
    assert [(r.label, r.error) for r in results] == [
        ("pass", None),
        (None, "KeyError: 'no such order'"),
        ("pass", None),
    ]
    summary = summarize(results)
    assert (summary.labels, summary.errors, summary.mean_score) == ({"pass": 2}, 1, 1.0)
    assert summary.error_examples == [{"id": "bad", "error": "KeyError: 'no such order'"}]


def test_one_child_process_serves_many_targets(project: Path) -> None:
    results = run(evaluator(project, "pid"), targets(*["x"] * 500), concurrency=1, batch_size=50)
    pids = {r.label for r in results}
    assert len(pids) == 1 and str(os.getpid()) not in pids


def test_concurrent_batches_run_in_separate_children(project: Path) -> None:
    seen: list[tuple[int, int]] = []
    results = run(
        evaluator(project, "pid"),
        targets(*["x"] * 40),
        concurrency=2,
        batch_size=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert len({r.label for r in results}) in (1, 2)
    assert sorted(seen) == [(10, 40), (20, 40), (30, 40), (40, 40)]


def test_a_batch_past_its_timeout_kills_the_child_and_the_next_batch_runs(project: Path) -> None:
    definition = evaluator(project, "hang", timeout=1)
    results = run(definition, targets("ok", "hang", "after", "next-batch"), batch_size=3)
    assert results[0].label == "pass"
    assert [r.error for r in results[1:3]] == [
        "timeout: the batch ran past 1 s; the evaluator was killed"
    ] * 2
    assert results[3].label == "pass"  # a fresh child took the next batch
    hung = int((project / "hung.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)


def test_a_crashing_child_costs_one_target_and_quotes_its_stderr(project: Path) -> None:
    results = run(evaluator(project, "crash"), targets("a", "crash", "b"))
    assert [r.label for r in results] == ["pass", None, "pass"]
    error = results[1].error or ""
    assert error.startswith("crashed: the evaluator process died (exit status 7)")
    assert error.endswith("about to die")


def test_the_child_does_not_see_traceproofs_own_variables(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPROOF_TOKEN", "secret")
    monkeypatch.setenv("EVALS_VISIBLE", "yes")
    (result,) = run(evaluator(project, "env"), targets("x"))
    assert (result.label, result.explanation) == ("absent", "yes")


def test_a_named_interpreter_runs_the_child(project: Path) -> None:
    definition = evaluator(project, "pid", python=sys.executable)
    assert definition.python == Path(sys.executable)
    assert run(definition, targets("x"))[0].error is None


@pytest.mark.parametrize(
    ("function", "needle"),
    [
        ("missing", "AttributeError"),
        ("not_callable", "is not callable"),
        ("needs_more", "takes an argument 'context'"),
    ],
)
def test_a_function_that_cannot_load_fails_the_run(
    project: Path, function: str, needle: str
) -> None:
    with pytest.raises(TraceproofError) as info:
        run(evaluator(project, function), targets("x"))
    assert info.value.code == ErrorCode.EVALUATOR_FAILED
    assert needle in str(info.value)


def test_a_module_that_does_not_import_fails_the_run(project: Path) -> None:
    (project / "traceproof.toml").write_text('[evaluators.e]\nfunction = "nowhere.mod:f"\n')
    definition = load_config(root=project).evaluator("e")
    assert isinstance(definition, CodeEvaluatorConfig)
    with CodeEvaluator(definition, timeout=30) as child, pytest.raises(TraceproofError) as info:
        child.run_batch(targets("x"))
    assert info.value.code == ErrorCode.EVALUATOR_FAILED
    assert "ModuleNotFoundError: No module named 'nowhere'" in str(info.value)
