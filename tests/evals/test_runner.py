"""The runner: built-ins over real demo targets, any batch evaluator, summaries."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import parse_config
from traceproof.evals.runner import run_evaluator, summarize
from traceproof.evals.target import EvalResult, EvalTarget
from traceproof.settings import Settings


def test_a_builtin_runs_over_every_demo_trace_with_progress(
    demo_traces: list[EvalTarget], tmp_path: Path
) -> None:
    config = parse_config('[evaluators.ok]\nevaluator = "no_error"\n', root=tmp_path)
    seen: list[tuple[int, int]] = []
    results = run_evaluator(
        config.evaluator("ok"), demo_traces, progress=lambda d, t: seen.append((d, t))
    )
    assert [r.target_id for r in results] == [t.id for t in demo_traces]
    assert seen[-1] == (90, 90)
    summary = summarize(results)
    assert summary.total == 90 and summary.errors == 0
    assert sum(summary.labels.values()) == 90
    assert set(summary.labels) == {"pass", "fail"}
    failing = {r.target_id for r in results if r.label == "fail"}
    assert set(summary.examples["fail"]) <= failing and len(summary.examples["fail"]) == 3
    assert summary.mean_score == pytest.approx(summary.labels["pass"] / 90)


def test_a_judge_table_is_not_run_by_the_code_runner(tmp_path: Path) -> None:
    config = parse_config('[evaluators.j]\nkind = "judge"\n', root=tmp_path)
    with pytest.raises(TraceproofError) as info:
        run_evaluator(config.evaluator("j"), [EvalTarget(kind="span", id="s")])
    assert info.value.code == ErrorCode.INVALID_ARGUMENT


class Lengths:
    """A batch evaluator of our own (what the LLM judge provides): records its threads."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.barrier = threading.Barrier(2, timeout=20)

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # two batches in flight at once, or this times out
        return [
            EvalResult(target_kind=t.kind, target_id=t.id, score=float(len(str(t.output))))
            for t in targets
        ]


def test_any_batch_evaluator_runs_batches_concurrently_in_order() -> None:
    items = [EvalTarget(kind="span", id=str(i), output="x" * i) for i in range(4)]
    lengths = Lengths()
    results = run_evaluator(lengths, items, concurrency=2, batch_size=2, settings=Settings())
    assert [r.score for r in results] == [0.0, 1.0, 2.0, 3.0]
    assert len(lengths.threads) == 2
    assert summarize(results).labels == {"(none)": 4}


def test_a_failing_batch_evaluator_fails_the_run() -> None:
    class Broken:
        def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
            return []

    with pytest.raises(RuntimeError, match="0 results for 1 targets"):
        run_evaluator(Broken(), [EvalTarget(kind="span", id="s")], settings=Settings())


def test_an_empty_run_summarizes_to_nothing() -> None:
    assert run_evaluator(Lengths(), [], settings=Settings()) == []
    empty = summarize([])
    assert (empty.total, empty.mean_score, empty.labels) == (0, None, {})
