"""Running an experiment: a task over a dataset version's examples, every run evaluated.

:func:`traceproof.experiments.plan.plan_experiment` (re-exported here) resolves what to run and
records the experiment; :func:`execute` runs it:

- runs go through a pool of ``concurrency`` threads, each driving one task process (or HTTP
  call) at a time; a run's environment points its tracing at this server
  (``OTEL_EXPORTER_OTLP_ENDPOINT``), names the run in ``OTEL_RESOURCE_ATTRIBUTES``
  (``traceproof.experiment.id``, ``traceproof.example.id``, ``traceproof.run.repetition``) and
  gives it a fresh ``TRACEPARENT``, whose trace id links the run to its trace when the
  application continues that context;
- once a task ended, a second pool (so waiting holds no process slot) waits for its spans: the
  receiver answers an export only once it is stored, so spans a task flushed before exiting are
  there; the runner polls until no new span arrived for ``experiment_span_quiet_seconds``,
  at most ``experiment_span_wait_seconds``. Then it stores the run (status, output, traces,
  latency, tokens, cost, tool calls) and runs every evaluator on it (a target of kind
  ``experiment_run``: the example's input, expected and metadata, the run's output, its spans
  as the trace), writing the annotations at once. Every run is evaluated, failed ones too
  (their output is None; an evaluator that needs an output records an error there, which is
  not a verdict): the summary counts runs by status, so failures are never silently dropped;
- a cancel kills every running process group; the experiment is then ``cancelled``. Re-running
  with ``resume`` runs again only the runs that are missing, did not end ``ok``, or lack a
  verdict of an evaluator;
- ``dry_run`` runs the first few examples once and records nothing (no experiment, no runs, no
  annotations; the application's own spans are stored as any spans are).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from traceproof.evals import evaluation
from traceproof.evals.annotations import AnnotationInput
from traceproof.evals.evaluation import Tally, TargetJudge, TargetRef
from traceproof.evals.llm import LLMClient
from traceproof.evals.target import EvalTarget, span_dict
from traceproof.experiments.plan import ExperimentPlan, plan_experiment
from traceproof.experiments.spanwait import SpanCounts, wait_for_spans
from traceproof.experiments.tasks import Processes, RunOutcome, Task, new_traceparent, run_task
from traceproof.storage import Store
from traceproof.storage import experiments as db
from traceproof.storage.annotations import write_annotations

__all__ = [
    "ExperimentPlan",
    "RunResult",
    "execute",
    "otlp_endpoint",
    "otlp_endpoint_for",
    "plan_experiment",
    "set_otlp_endpoint",
]

#: Most runs stored in one batch.
BATCH_RUNS = 500
#: Characters of an error reason stored with a run.
ERROR_CHARS = 2000

_ENDPOINTS: weakref.WeakKeyDictionary[Store, str] = weakref.WeakKeyDictionary()


def set_otlp_endpoint(store: Store, url: str) -> None:
    """Say where the OTLP receiver writing into ``store`` listens (the server does, when it
    starts)."""
    _ENDPOINTS[store] = url


def otlp_endpoint(store: Store) -> str:
    """The OTLP/HTTP base URL runs export to: the server's, else the settings' host and port."""
    found = _ENDPOINTS.get(store)
    if found:
        return found
    return otlp_endpoint_for(store.settings.host, store.settings.port)


def otlp_endpoint_for(host: str, port: int) -> str:
    """The URL a local process reaches a server bound to ``host:port`` at."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class RunResult:
    """One finished run, as a dry run reports it."""

    example_id: str
    repetition: int
    outcome: RunOutcome
    trace_ids: list[str]
    scores: dict[str, Any]


# -- executing --------------------------------------------------------------------------------


class _Batcher:
    """Stores finished runs and their annotations from one thread, in batches: what finished
    while the last batch was written goes in the next one (a write transaction per run would
    make the store's single writer the bottleneck). Runs go first: an annotation of a run is
    resolved against its stored row."""

    def __init__(
        self,
        store: Store,
        stored: Callable[[int], None],
        failed: Callable[[BaseException], None],
        *,
        write: bool,
    ) -> None:
        self.store, self.stored, self.failed, self.write = store, stored, failed, write
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], list[AnnotationInput]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, daemon=True, name="traceproof-store")
        self._thread.start()

    def put(self, run: dict[str, Any], items: list[AnnotationInput]) -> None:
        self._queue.put((run, items))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        broken = False
        while True:
            first = self._queue.get()
            batch = [] if first is None else [first]
            done = first is None
            while not done and len(batch) < BATCH_RUNS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                else:
                    batch.append(more)
            if batch and not broken:
                try:
                    if self.write:
                        db.upsert_runs(self.store, [run for run, _ in batch])
                        items = [item for _, found in batch for item in found]
                        if items:
                            write_annotations(self.store, items, partial=True)
                    self.stored(len(batch))
                except BaseException as exc:
                    broken = True
                    self.failed(exc)
            if done:
                return


class _Counts:
    def __init__(self) -> None:
        self.done = 0
        self.status: Counter[str] = Counter()
        self.lock = threading.Lock()


def execute(
    store: Store,
    plan: ExperimentPlan,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    llm: LLMClient | None = None,
) -> dict[str, Any]:
    """Run ``plan``'s runs; the summary (stored with the experiment unless a dry run). A
    cancel (``cancelled()`` turning true) kills the running tasks and marks the experiment
    ``cancelled``; an error of traceproof itself marks it ``failed`` and is raised."""
    settings = store.settings
    if any(p.judge is not None for p in plan.evaluators) and llm is None:
        llm = LLMClient(settings)  # [llm_unavailable] before anything runs
    processes = Processes()
    tallies = {p.name: Tally() for p in plan.evaluators}
    judges = [TargetJudge(store, p, tally=tallies[p.name], llm=llm) for p in plan.evaluators]
    counts = _Counts()
    results: list[RunResult] = []
    endpoint = otlp_endpoint(store)
    todo = len(plan.todo)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            if cancelled():
                processes.kill_all()
                return

    watcher = threading.Thread(target=watch, daemon=True, name=f"traceproof-cancel-{plan.id}")
    watcher.start()
    failure: list[BaseException] = []

    def stored(n: int) -> None:
        with counts.lock:
            counts.done += n
            done = counts.done
        if progress is not None:
            progress(done, todo)

    def failed(exc: BaseException) -> None:
        failure.append(exc)
        processes.kill_all()

    batcher = _Batcher(store, stored, failed, write=not plan.dry_run)
    span_counts = SpanCounts(store, plan.id, _now() - timedelta(minutes=5))

    def finalize(example: dict[str, Any], rep: int, outcome: RunOutcome, trace_id: str,
                 started: datetime, ended: datetime) -> None:  # fmt: skip
        try:
            result, row, items = _finish_run(store, plan, judges, span_counts, example, rep,
                                             outcome, trace_id, started, ended)  # fmt: skip
        except BaseException as exc:
            failed(exc)
            return
        with counts.lock:
            counts.status[outcome.status] += 1
            if plan.dry_run:
                results.append(result)
        batcher.put(row, items)

    finishing: list[Future[None]] = []
    finish_lock = threading.Lock()
    with (
        ThreadPoolExecutor(plan.concurrency, thread_name_prefix="traceproof-run") as runs,
        ThreadPoolExecutor(
            _linkers(plan.concurrency), thread_name_prefix="traceproof-link"
        ) as linking,
    ):

        def one(example: dict[str, Any], rep: int) -> None:
            if processes.cancelled.is_set() or failure:
                return
            traceparent, trace_id = new_traceparent()
            resource = (
                f"traceproof.experiment.id={plan.id},"
                f"traceproof.example.id={example['id']},"
                f"traceproof.run.repetition={rep}"
            )
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_RESOURCE_ATTRIBUTES": _resource(plan.task, resource),
                "TRACEPARENT": traceparent,
                "TRACEPROOF_EXPERIMENT_ID": plan.id,
            }
            started = _now()
            outcome = run_task(
                plan.task,
                example,
                env,
                plan.timeout,
                max_output_bytes=settings.experiment_output_max_bytes,
                processes=processes,
            )
            if processes.cancelled.is_set() and outcome.error and "cancelled" in outcome.error:
                return  # not recorded: a resume runs it
            ended = _now()
            with finish_lock:
                finishing.append(
                    linking.submit(finalize, example, rep, outcome, trace_id, started, ended)
                )

        started_runs = [runs.submit(one, ex, rep) for ex, rep in plan.todo]
        for f in started_runs:
            f.result()
        for g in list(finishing):
            g.result()
    batcher.close()
    stop.set()
    for j in judges:
        j.close()
    if failure:
        if not plan.dry_run:
            db.set_status(store, plan.id, "failed")
        raise failure[0]
    status = "cancelled" if processes.cancelled.is_set() else "done"
    if plan.dry_run:
        return _dry_summary(plan, results, tallies, counts.status)
    with store.reader() as reader:
        summary = db.experiment_summary(reader, plan.id, plan.evaluator_info)
    db.set_status(store, plan.id, status, summary=summary)
    return summary


def _linkers(concurrency: int) -> int:
    """Threads that wait for finished runs' spans: mostly asleep in the quiet period, so many
    (a run's quiet wait must not slow the runs behind it)."""
    return min(256, max(4, concurrency * 16))


def _resource(task: Task, ours: str) -> str:
    given = task.env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    parts = [given] if given else []
    if task.project and "openinference.project.name" not in given:
        parts.append(f"openinference.project.name={task.project}")
    return ",".join([*parts, ours])


def _finish_run(
    store: Store,
    plan: ExperimentPlan,
    judges: Sequence[TargetJudge],
    span_counts: SpanCounts,
    example: dict[str, Any],
    rep: int,
    outcome: RunOutcome,
    trace_id: str,
    started: datetime,
    ended: datetime,
) -> tuple[RunResult, dict[str, Any], list[AnnotationInput]]:
    example_id = str(example["id"])
    rows = wait_for_spans(store, plan.id, span_counts, example_id, rep, trace_id)
    spans = [span_dict(r) for r in rows]
    trace_ids = list(dict.fromkeys(str(s["trace_id"]) for s in spans))
    tokens = sum(
        int(s.get("total_tokens") or 0)
        or int(s.get("prompt_tokens") or 0) + int(s.get("completion_tokens") or 0)
        for s in spans
    )
    costs = [_cost(s) for s in spans]
    known = [c for c in costs if c is not None]
    run_id = f"{plan.id}:{example_id}:{rep}"
    run = {
        "id": run_id,
        "experiment_id": plan.id,
        "example_id": example_id,
        "repetition": rep,
        "status": outcome.status,
        "error": None if outcome.error is None else outcome.error[:ERROR_CHARS],
        "output": outcome.output,
        "trace_ids": trace_ids,
        "latency_ms": round(outcome.latency_ms, 3),
        "tokens": tokens if spans else None,
        "cost_usd": sum(known) if known else None,
        "tool_calls": sum(1 for s in spans if s.get("span_kind") == "TOOL") if spans else None,
        "started_at": started,
        "finished_at": ended,
    }
    root = spans[0] if spans else {}
    metadata = example.get("metadata")
    target = EvalTarget(
        kind="experiment_run",
        id=run_id,
        input=example.get("input"),
        output=outcome.output,
        expected=example.get("expected"),
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
        span=root,
        trace=spans,
        project=plan.project,
        trace_id=trace_ids[0] if trace_ids else None,
    )
    ref = TargetRef("experiment_run", run_id, plan.project)
    scores: dict[str, Any] = {}
    items = []
    limit = store.settings.annotation_text_max_chars
    for judge in judges:
        result = judge.judge([target])[0]
        items.append(evaluation.annotation_for(judge.prepared, ref, result, limit))
        scores[judge.prepared.name] = (
            {"error": result.error} if result.error else {"label": result.label,
                                                          "score": result.score}
        )  # fmt: skip
    return RunResult(example_id, rep, outcome, trace_ids, scores), run, items


def _cost(span: dict[str, Any]) -> float | None:
    attributes = span.get("attributes")
    if not isinstance(attributes, dict):
        return None
    llm = attributes.get("llm")
    cost = llm.get("cost") if isinstance(llm, dict) else None
    total = cost.get("total") if isinstance(cost, dict) else None
    return float(total) if isinstance(total, int | float) and not isinstance(total, bool) else None


def _dry_summary(
    plan: ExperimentPlan,
    results: list[RunResult],
    tallies: dict[str, Tally],
    status: Counter[str],
) -> dict[str, Any]:
    latencies = sorted(r.outcome.latency_ms for r in results)
    evaluators = {}
    for name, tally in tallies.items():
        snap = tally.snapshot()
        mean = snap["mean_score"]
        evaluators[name] = {
            "count": sum(snap["labels"].values()),
            "mean": None if mean is None else round(mean, 4),
            "labels": snap["labels"],
            "errors": snap["errors"],
        }
    return {
        "runs": len(results),
        "status": dict(status),
        "latency_p50_ms": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "evaluators": evaluators,
        "dry_runs": [
            {
                "example_id": r.example_id,
                "status": r.outcome.status,
                "error": r.outcome.error,
                "output": r.outcome.output,
                "trace_ids": r.trace_ids,
                "scores": r.scores,
            }
            for r in sorted(results, key=lambda r: r.example_id)
        ],
    }
