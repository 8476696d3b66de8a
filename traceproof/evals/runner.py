"""Run one evaluator over many targets, and sum up what it found.

:func:`run_evaluator` takes a definition from traceproof.toml (built-in or custom code) or any
:class:`BatchEvaluator` (what the LLM judge provides), runs it over the targets in batches
(``concurrency`` batches at once: child processes for custom code, threads for a judge; built-ins
run in this thread, they are pure CPU), and returns one :class:`EvalResult` per target, in
order. It writes nothing: the ``evaluate`` tool turns results into annotations.
:func:`summarize` counts them.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.builtin import BUILTINS, evaluate_builtin
from traceproof.evals.config import (
    BuiltinEvaluatorConfig,
    CodeEvaluatorConfig,
    EvaluatorDefinition,
    JudgeConfig,
)
from traceproof.evals.custom import CodeEvaluator
from traceproof.evals.target import EvalResult, EvalTarget
from traceproof.settings import Settings

__all__ = ["BatchEvaluator", "EvalSummary", "Progress", "run_evaluator", "summarize"]

#: ``progress(done, total)``, called from the running threads as batches finish.
Progress = Callable[[int, int], None]
#: Targets per progress report of a built-in evaluator.
BUILTIN_CHUNK = 1000
#: Example target ids kept per label in a summary.
EXAMPLES_PER_LABEL = 3


@runtime_checkable
class BatchEvaluator(Protocol):
    """Anything that judges a batch of targets (the LLM judge implements it)."""

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]: ...


def run_evaluator(
    definition: EvaluatorDefinition | BatchEvaluator,
    targets: Sequence[EvalTarget],
    *,
    concurrency: int | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    batch_size: int | None = None,
) -> list[EvalResult]:
    """One result per target, in the targets' order (see the module docstring)."""
    settings = settings or Settings()
    concurrency = max(1, concurrency or settings.eval_concurrency)
    total = len(targets)
    if isinstance(definition, BuiltinEvaluatorConfig):
        return _run_builtin(definition, targets, progress)
    if isinstance(definition, JudgeConfig):
        raise TraceproofError(
            f"evaluators.{definition.name} is an LLM judge: build it with "
            "traceproof.evals.judge and pass that to run_evaluator.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    size = max(1, batch_size or settings.eval_code_batch_size)
    batches = [list(range(i, min(i + size, total))) for i in range(0, total, size)]
    results: list[EvalResult | None] = [None] * total
    if not batches:
        return []
    work: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    for batch in batches:
        work.put(batch)
    lock = threading.Lock()
    done = [0]
    failures: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        evaluator: BatchEvaluator
        owned: CodeEvaluator | None = None
        if isinstance(definition, CodeEvaluatorConfig):
            owned = CodeEvaluator(definition, timeout=settings.eval_code_timeout_seconds)
            evaluator = owned
        else:
            evaluator = definition
        try:
            while not stop.is_set():
                try:
                    batch = work.get_nowait()
                except queue.Empty:
                    return
                answered = evaluator.run_batch([targets[i] for i in batch])
                if len(answered) != len(batch):
                    raise RuntimeError(f"{len(answered)} results for {len(batch)} targets")
                for i, result in zip(batch, answered, strict=True):
                    results[i] = result
                with lock:
                    done[0] += len(batch)
                    current = done[0]
                if progress is not None:
                    progress(current, total)
        except BaseException as exc:
            failures.append(exc)
            stop.set()
        finally:
            if owned is not None:
                owned.close()

    threads = [
        threading.Thread(target=worker, name=f"evaluator-{n}", daemon=True)
        for n in range(min(concurrency, len(batches)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [r for r in results if r is not None]


def _run_builtin(
    definition: BuiltinEvaluatorConfig, targets: Sequence[EvalTarget], progress: Progress | None
) -> list[EvalResult]:
    builtin = BUILTINS[definition.evaluator]
    out = []
    for n, target in enumerate(targets, 1):
        out.append(evaluate_builtin(builtin, definition.params, target))
        if progress is not None and (n % BUILTIN_CHUNK == 0 or n == len(targets)):
            progress(n, len(targets))
    return out


class EvalSummary(BaseModel):
    """What a run found: counts per label, mean score, errors, a few example ids per label."""

    total: int
    labels: dict[str, int] = Field(description="Results per label (unlabelled: '(none)').")
    mean_score: float | None = Field(description="Mean of the scores given; None when none.")
    scored: int
    errors: int
    error_examples: list[dict[str, str]] = Field(description="A few ids with their errors.")
    examples: dict[str, list[str]] = Field(description="A few target ids per label.")


def summarize(results: Sequence[EvalResult], *, examples: int = EXAMPLES_PER_LABEL) -> EvalSummary:
    """Counts per label (most frequent first), mean score, errors and example ids."""
    labels: Counter[str] = Counter()
    picks: dict[str, list[str]] = {}
    scores = []
    failed = []
    for r in results:
        if r.error is not None:
            failed.append(r)
            continue
        label = r.label if r.label is not None else "(none)"
        labels[label] += 1
        if len(picks.setdefault(label, [])) < examples:
            picks[label].append(r.target_id)
        if r.score is not None:
            scores.append(r.score)
    ordered = dict(labels.most_common())
    return EvalSummary(
        total=len(results),
        labels=ordered,
        mean_score=sum(scores) / len(scores) if scores else None,
        scored=len(scores),
        errors=len(failed),
        error_examples=[{"id": r.target_id, "error": r.error or ""} for r in failed[:examples]],
        examples={label: picks[label] for label in ordered},
    )
