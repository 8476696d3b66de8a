"""Running an experiment: a task over a dataset version's examples, every run evaluated.

:func:`plan_experiment` resolves what to run (the task and evaluators of the project's
traceproof.toml, the dataset version, the examples times repetitions still to run) and records the
experiment with its provenance; :func:`execute` runs it:

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
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals import evaluation
from traceproof.evals.annotations import AnnotationInput
from traceproof.evals.config import ProjectConfig
from traceproof.evals.evaluation import Prepared, Tally, TargetJudge, TargetRef
from traceproof.evals.llm import LLMClient
from traceproof.evals.target import EvalTarget, span_dict
from traceproof.experiments.provenance import provenance
from traceproof.experiments.tasks import Processes, RunOutcome, Task, new_traceparent, run_task
from traceproof.experiments.tasks import task_of as _task_of
from traceproof.storage import Store
from traceproof.storage import datasets as datasets_db
from traceproof.storage import experiments as db
from traceproof.storage.annotations import write_annotations
from traceproof.storage.judges import is_calibrated, save_evaluator_definition

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
class ExperimentPlan:
    """What :func:`execute` runs."""

    id: str
    task: Task
    project: str
    dataset_id: str
    dataset_version: int
    split: str | None
    evaluators: list[Prepared]
    evaluator_info: list[dict[str, Any]]
    repetitions: int
    concurrency: int
    timeout: float
    dry_run: bool
    examples: int
    total: int
    todo: list[tuple[dict[str, Any], int]]
    resumed: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """One finished run, as a dry run reports it."""

    example_id: str
    repetition: int
    outcome: RunOutcome
    trace_ids: list[str]
    scores: dict[str, Any]


def _resolve_dataset(store: Store, dataset: str, version: int | None) -> tuple[str, int]:
    """The id of the dataset named (or with id) ``dataset`` and ``version`` checked (None: the
    newest); ``[not_found]`` for an unknown dataset or version."""
    with store.reader() as reader:
        dataset_id = str(datasets_db.resolve_dataset(reader, dataset)["id"])
        return dataset_id, datasets_db.dataset_version(reader, dataset_id, version)


def plan_experiment(
    store: Store,
    config: ProjectConfig,
    *,
    task: str | None,
    dataset: str | None,
    version: int | None = None,
    split: str | None = None,
    evaluators: Sequence[str] = (),
    repetitions: int = 1,
    concurrency: int | None = None,
    timeout: float | None = None,
    name: str | None = None,
    dry_run: bool = False,
    resume: str | None = None,
) -> ExperimentPlan:
    """Resolve an experiment and, unless ``dry_run``, record it (status ``running``). With
    ``resume`` the stored experiment's task, dataset version, split, evaluators and
    repetitions are used, and only what is missing or failed is planned."""
    settings = store.settings
    stored: dict[str, Any] | None = None
    if resume is not None:
        with store.reader() as reader:
            stored = db.get_experiment(reader, resume)
        if stored is None:
            raise TraceproofError(
                f"No experiment {resume[:60]!r} to resume; get_experiment or `traceproof "
                "experiment show` name the stored ones.",
                code=ErrorCode.NOT_FOUND,
            )
        task = str(stored["task"])
        dataset_id, version_n = str(stored["dataset_id"]), int(stored["dataset_version"])
        split = stored["split"]
        evaluators = [str(e["name"]) for e in stored["evaluators"]]
        repetitions = int(stored["repetitions"])
        concurrency = concurrency or int(stored["concurrency"])
        timeout = timeout or float(stored["timeout_s"])
    else:
        if task is None or dataset is None:
            raise TraceproofError(
                "Name the task (a [tasks.NAME] of traceproof.toml) and the dataset, or pass "
                "resume with an experiment id.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        dataset_id, version_n = _resolve_dataset(store, dataset, version)
    the_task = _task_of(config, task)
    prepared = [evaluation.prepare(config.evaluator(e)) for e in dict.fromkeys(evaluators)]
    info = []
    with store.reader() as reader:
        for p in prepared:
            entry: dict[str, Any] = {"name": p.name, "kind": p.kind, "hash": p.definition_hash,
                                     "annotator": p.annotator}  # fmt: skip
            if p.judge is not None:
                entry["calibrated"] = is_calibrated(reader, p.definition_hash)
            info.append(entry)
        # In example id order: runs (and a dry run's first few) go in the order list_runs reads.
        examples = sorted(
            datasets_db.dataset_examples(reader, dataset_id, version_n, split),
            key=lambda e: str(e["id"]),
        )
        done_runs = db.runs_by_key(reader, resume) if resume else {}
    if stored is not None:
        if stored["task_hash"] != the_task.content_hash:
            raise TraceproofError(
                f"tasks.{task} changed since experiment {resume} started (its definition hash "
                "differs): resuming would mix two tasks. Start a new experiment instead.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        before = {e["name"]: e["hash"] for e in stored["evaluators"]}
        changed = [e["name"] for e in info if before.get(e["name"]) != e["hash"]]
        if changed:
            raise TraceproofError(
                f"Evaluator(s) {', '.join(changed)} changed since experiment {resume} started; "
                "start a new experiment instead.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
    if not examples:
        where = f" split {split!r}" if split else ""
        raise TraceproofError(
            f"Dataset version {version_n}{where} has no examples; add_examples adds some.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if dry_run:
        examples = examples[: settings.experiment_dry_run_examples]
        repetitions = 1
    run_timeout = float(timeout or the_task.timeout or settings.experiment_timeout_seconds)
    workers = int(concurrency or settings.experiment_concurrency)
    project = the_task.project or settings.default_project
    experiment_id = ("dry_" if dry_run else "exp_") + uuid.uuid4().hex[:12]
    if resume is not None:
        experiment_id = resume
    all_runs = [(ex, rep) for ex in examples for rep in range(1, repetitions + 1)]
    todo = all_runs
    if resume is not None:
        verdicts = _verdicts(store, prepared, resume)
        todo = [
            (ex, rep) for ex, rep in all_runs
            if done_runs.get((ex["id"], rep)) != "ok"
            or any(f"{resume}:{ex['id']}:{rep}" not in v for v in verdicts)
        ]  # fmt: skip
    prov = provenance(
        config.root,
        dataset_id=dataset_id,
        dataset_version=version_n,
        task=the_task.name,
        task_hash=the_task.content_hash,
        evaluators=info,
    )
    plan = ExperimentPlan(
        id=experiment_id,
        task=the_task,
        project=project if stored is None else str(stored["project"]),
        dataset_id=dataset_id,
        dataset_version=version_n,
        split=split,
        evaluators=prepared,
        evaluator_info=info,
        repetitions=repetitions,
        concurrency=workers,
        timeout=run_timeout,
        dry_run=dry_run,
        examples=len(examples),
        total=len(all_runs),
        todo=todo,
        resumed=resume is not None,
        provenance=prov if stored is None else dict(stored["provenance"]),
    )
    if dry_run:
        return plan
    for p in prepared:
        save_evaluator_definition(
            store, hash=p.definition_hash, name=p.name, kind=p.kind,
            definition=p.stored_definition(),
        )  # fmt: skip
    if stored is None:
        db.create_experiment(
            store,
            {
                "id": experiment_id,
                "name": name,
                "project": project,
                "task": the_task.name,
                "task_hash": the_task.content_hash,
                "dataset_id": dataset_id,
                "dataset_version": version_n,
                "split": split,
                "evaluators": info,
                "repetitions": repetitions,
                "concurrency": workers,
                "timeout_s": run_timeout,
                "status": "running",
                "provenance": prov,
                "summary": None,
            },
        )
    else:
        db.set_status(store, experiment_id, "running")
    return plan


def _verdicts(store: Store, prepared: Sequence[Prepared], experiment_id: str) -> list[set[str]]:
    """Per evaluator, the run ids of this experiment it has a verdict on."""
    out = []
    with store.reader() as reader:
        for p in prepared:
            rows = reader.rows(
                "SELECT target_id FROM annotations WHERE target_kind = 'experiment_run' AND "
                "name = ? AND annotator = ? AND identifier = '' AND starts_with(target_id, ?) "
                "AND (metadata IS NULL OR json_extract(metadata, '$.error') IS NULL)",
                [p.name, p.annotator, experiment_id + ":"],
            )
            out.append({str(r[0]) for r in rows})
    return out


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
    span_counts = _SpanCounts(store, plan.id, _now() - timedelta(minutes=5))

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


class _SpanCounts:
    """The span counts of an experiment's waiting runs, from one grouped query that every run
    asking at about the same time shares (a query per run and poll would load the store as
    much as the runs themselves). A run asks for counts taken after it asked."""

    def __init__(self, store: Store, experiment_id: str, since: datetime) -> None:
        self.store, self.experiment_id, self.since = store, experiment_id, since
        self._lock = threading.Lock()
        self._taken = 0.0
        self._by_run: dict[tuple[str, str], int] = {}
        self._by_trace: dict[str, int] = {}
        self._waiting: Counter[str] = Counter()
        self._waiting_lock = threading.Lock()

    def wait_on(self, trace_id: str, delta: int) -> None:
        with self._waiting_lock:
            self._waiting[trace_id] += delta
            if self._waiting[trace_id] <= 0:
                del self._waiting[trace_id]

    def count(self, example_id: str, rep: int, trace_id: str) -> int:
        asked = time.monotonic()
        with self._lock:
            if self._taken <= asked:
                self._taken = time.monotonic()
                with self._waiting_lock:
                    traces = list(self._waiting)
                with self.store.reader() as reader:
                    self._by_run, self._by_trace = db.span_counts(
                        reader, experiment_id=self.experiment_id, since=self.since,
                        trace_ids=traces,
                    )  # fmt: skip
            return self._by_run.get((example_id, str(rep)), 0) + self._by_trace.get(trace_id, 0)


def _wait_for_spans(
    store: Store,
    plan: ExperimentPlan,
    counts: _SpanCounts,
    example_id: str,
    rep: int,
    trace_id: str,
) -> list[dict[str, Any]]:
    settings = store.settings
    deadline = time.monotonic() + settings.experiment_span_wait_seconds
    quiet = settings.experiment_span_quiet_seconds
    counts.wait_on(trace_id, 1)
    try:
        last = -1
        while True:
            count = counts.count(example_id, rep, trace_id)
            if count == last or time.monotonic() >= deadline:
                break
            last = count
            time.sleep(quiet)
    finally:
        counts.wait_on(trace_id, -1)
    if not count:
        return []
    with store.reader() as reader:
        return db.run_spans(
            reader, trace_id=trace_id, experiment_id=plan.id, example_id=example_id,
            repetition=rep, since=counts.since,
        )  # fmt: skip


def _finish_run(
    store: Store,
    plan: ExperimentPlan,
    judges: Sequence[TargetJudge],
    span_counts: _SpanCounts,
    example: dict[str, Any],
    rep: int,
    outcome: RunOutcome,
    trace_id: str,
    started: datetime,
    ended: datetime,
) -> tuple[RunResult, dict[str, Any], list[AnnotationInput]]:
    example_id = str(example["id"])
    rows = _wait_for_spans(store, plan, span_counts, example_id, rep, trace_id)
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
