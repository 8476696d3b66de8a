"""``run_experiment``, ``get_experiment``, ``cancel_experiment``: proof by re-running the app.

Thin functions over :mod:`traceproof.experiments.runner` (the work) and :mod:`traceproof.jobs`
(the background). ``run_experiment`` records the experiment, starts its runs as a job and waits
up to ``wait`` seconds (progress goes to whoever listens: MCP progress notifications, the CLI's
bar); a longer experiment answers with its id and goes on. ``get_experiment`` reads the store
(status, provenance, summary, runs paged within the budget); an experiment still ``running`` in
the store but with no job in this server was interrupted (a restart): ``run_experiment(resume=
ID)`` runs what is missing or failed. ``cancel_experiment`` stops the job and kills its
processes.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import load_config
from traceproof.experiments.runner import ExperimentPlan, execute, plan_experiment
from traceproof.jobs import Job, JobStatus, jobs_for, report_progress
from traceproof.storage import Store
from traceproof.storage import experiments as db
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.paging import largest_fit, next_call

log = logging.getLogger(__name__)

#: Characters of a run's output and error shown in a row.
PREVIEW_CHARS = 160

Status = Literal["running", "done", "failed", "cancelled", "interrupted"]


class ExperimentStatus(BaseModel):
    id: str
    status: Status
    done: int | None = Field(default=None, description="Runs finished in this call's job.")
    total: int | None = Field(default=None, description="Runs to run.")
    summary: dict[str, Any] | None = None
    note: str | None = None


class RunRow(BaseModel):
    example_id: str
    repetition: int
    status: str
    error: str | None = None
    output: str | None = Field(default=None, description="Preview.")
    trace_id: str | None = None
    latency_ms: float | None = None
    scores: dict[str, Any] = Field(default_factory=dict, description="Label or score.")


class Experiment(BaseModel):
    id: str
    name: str | None = None
    status: Status
    task: str
    dataset_id: str
    dataset_version: int
    split: str | None = None
    repetitions: int
    created_at: str
    finished_at: str | None = None
    provenance: dict[str, Any]
    summary: dict[str, Any] | None = None
    done: int | None = Field(default=None, description="Runs done, while it runs.")
    total: int | None = None
    runs: list[RunRow] = Field(default_factory=list)
    next_cursor: str | None = None
    next_call: str | None = None
    note: str | None = None


def _job_key(experiment_id: str) -> tuple[str, str]:
    return ("experiment", experiment_id)


def _job_of(store: Store, experiment_id: str) -> Job | None:
    for job in jobs_for(store).jobs():
        if job.key == _job_key(experiment_id):
            return job
    return None


def run_experiment(
    store: Store,
    *,
    task: Annotated[str | None, Field(description="traceproof.toml task.")] = None,
    dataset: str | None = None,
    evaluators: Annotated[list[str] | None, Field(description="Names.")] = None,
    version: Annotated[int | None, Field(description="Else newest.")] = None,
    split: str | None = None,
    repetitions: int | None = None,
    concurrency: int | None = None,
    timeout: Annotated[float | None, Field(description="Per run, s.")] = None,
    name: str | None = None,
    dry_run: Annotated[bool, Field(description="No records.")] = False,
    resume: Annotated[str | None, Field(description="Id: rerun missing/failed.")] = None,
    wait: Annotated[int, Field(description="Seconds.")] = 20,
    max_chars: MaxChars = None,
) -> ExperimentStatus:
    """Run a task over a dataset, score each run; background past wait."""
    settings = store.settings
    room = budget(max_chars, settings)
    _check_numbers(version=version, repetitions=repetitions, concurrency=concurrency,
                   timeout=timeout, wait=wait)  # fmt: skip
    if resume is not None:
        running = _job_of(store, resume)
        if running is not None and not running.finished:
            return _answer(running, min(float(wait), settings.eval_wait_max_seconds), room)
    config = load_config(settings.config)
    plan = plan_experiment(
        store,
        config,
        task=task,
        dataset=dataset,
        version=version,
        split=split,
        evaluators=evaluators or [],
        repetitions=repetitions or 1,
        concurrency=concurrency,
        timeout=timeout,
        name=name,
        dry_run=dry_run,
        resume=resume,
    )
    if not plan.todo:
        with store.reader() as reader:
            summary = db.experiment_summary(reader, plan.id, plan.evaluator_info)
        db.set_status(store, plan.id, "done", summary=summary)
        return ExperimentStatus(
            id=plan.id, status="done", done=0, total=0, summary=summary,
            note="Nothing to resume: every run ended ok and is scored.",
        )  # fmt: skip

    def work(job: Job) -> dict[str, Any]:
        try:
            return execute(
                store,
                plan,
                progress=job.progress,
                cancelled=lambda: job.cancelled,
            )
        except BaseException:
            if not plan.dry_run:
                db.set_status(store, plan.id, "failed")
            raise

    job = jobs_for(store).start(
        "experiment", work, total=len(plan.todo), key=_job_key(plan.id), meta=plan
    )
    return _answer(job, min(float(wait), settings.eval_wait_max_seconds), room)


#: Bounds of run_experiment's numbers (kept out of its schema: tools/list is paid every turn).
_BOUNDS = {"version": (1, None), "repetitions": (1, 100), "concurrency": (1, 64),
           "timeout": (0.001, None), "wait": (0, 600)}  # fmt: skip


def _check_numbers(**given: float | None) -> None:
    for key, value in given.items():
        low, high = _BOUNDS[key]
        if value is not None and (value < low or (high is not None and value > high)):
            span = f"from {low:g}" + (f" to {high:g}" if high is not None else " up")
            raise ToolFailure(
                f"{key}={value:g} is out of range; pass {span}.", code=ErrorCode.INVALID_ARGUMENT
            )


def _answer(job: Job, wait: float, room: int) -> ExperimentStatus:
    job.wait(wait, on_progress=report_progress)
    plan = job.meta
    assert isinstance(plan, ExperimentPlan)
    if job.status is JobStatus.FAILED:
        error = job.error
        if isinstance(error, TraceproofError):
            raise error
        log.error("experiment %s failed", plan.id, exc_info=error)
        raise TraceproofError(
            f"Experiment {plan.id} failed inside traceproof. The server log (stderr) has the "
            f"details; run_experiment(resume='{plan.id}') runs what is missing.",
            code=ErrorCode.INTERNAL_ERROR,
        )
    status: Status = "running"
    note = None
    if job.status is JobStatus.RUNNING:
        note = f"Running in the background; get_experiment(id='{plan.id}') for its status."
    elif job.status is JobStatus.CANCELLED or (job.result and job.cancelled):
        status = "cancelled"
        note = f"Cancelled; run_experiment(resume='{plan.id}') runs what is missing."
    else:
        status = "done"
        if plan.dry_run:
            note = "Dry run: nothing was recorded."
    summary = dict(job.result) if isinstance(job.result, dict) else None
    answer = ExperimentStatus(
        id=plan.id, status=status, done=job.done, total=job.total, summary=summary, note=note
    )
    return _fit(answer, room)


def follow(store: Store, experiment_id: str, wait: float) -> ExperimentStatus | None:
    """The answer of the job running ``experiment_id`` in this process after waiting up to
    ``wait`` seconds for it (progress to the listener), or None when no job runs it here."""
    job = _job_of(store, experiment_id)
    if job is None:
        return None
    return _answer(job, wait, budget(None, store.settings))


def _fit(answer: ExperimentStatus, room: int) -> ExperimentStatus:
    """Within ``room``: a dry run's outputs as previews, then fewer of them, then no summary."""
    summary = answer.summary
    if summary is None or size(answer) <= room:
        return answer
    runs = summary.get("dry_runs")
    if isinstance(runs, list):
        summary["dry_runs"] = runs = [
            r | {"output": _preview(r.get("output")), "error": _preview(r.get("error"))}
            for r in runs
        ]
        while runs and size(answer) > room:
            runs.pop()
    if size(answer) > room:
        answer.summary = None
        answer.note = (answer.note or "") + " The summary did not fit; get_experiment shows it."
    return answer


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def get_experiment(
    store: Store,
    *,
    id: Annotated[str, Field(description="Experiment id.")],
    status: Annotated[str | None, Field(description="Only runs of this status.")] = None,
    limit: Annotated[int, Field(ge=0, le=1000, description="Runs per page.")] = 50,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> Experiment:
    """An experiment: status, provenance, summary, runs with their scores (paged)."""
    room = budget(max_chars, store.settings)
    fingerprint = f"{id}|{status}"
    after: tuple[str, int] | None = None
    if cursor is not None:
        key = decode_cursor(cursor, "get_experiment", fingerprint)
        if len(key) != 2 or not isinstance(key[0], str) or not isinstance(key[1], int):
            raise ToolFailure(
                "Malformed cursor; omit it to start again.", code=ErrorCode.INVALID_CURSOR
            )
        after = (key[0], key[1])
    with store.reader() as reader:
        row = db.get_experiment(reader, id)
        if row is None:
            known = ", ".join(e["id"] for e in db.list_experiments(reader, 5)) or "none"
            raise ToolFailure(
                f"No experiment {id[:60]!r}; the newest: {known}. run_experiment starts one.",
                code=ErrorCode.NOT_FOUND,
            )
        runs = db.list_runs(reader, id, after=after, limit=limit + 1, status=status)
    job = _job_of(store, id)
    state: str = row["status"]
    note = None
    if state == "running" and (job is None or job.finished):
        state = "interrupted"
        note = f"Interrupted (no job runs it); run_experiment(resume='{id}') runs what is missing."
    live = job is not None and not job.finished
    more = len(runs) > limit
    rows = [_row(r) for r in runs[:limit]]

    def build(n: int) -> Experiment:
        cut = n < len(rows) or more
        last = rows[n - 1] if n else None
        return Experiment(
            id=row["id"],
            name=row["name"],
            status=state,  # type: ignore[arg-type]
            task=row["task"],
            dataset_id=row["dataset_id"],
            dataset_version=row["dataset_version"],
            split=row["split"],
            repetitions=row["repetitions"],
            created_at=_iso(row["created_at"]) or "",
            finished_at=_iso(row["finished_at"]),
            provenance=row["provenance"],
            summary=row["summary"],
            done=job.done if live and job else None,
            total=job.total if live and job else None,
            runs=rows[:n],
            next_cursor=encode_cursor(
                "get_experiment", fingerprint, [last.example_id, last.repetition]
            )
            if cut and last
            else None,
            next_call=next_call("get_experiment") if cut and last else None,
            note=note,
        )

    return build(largest_fit(build, len(rows), room))


def _row(run: dict[str, Any]) -> RunRow:
    scores: dict[str, Any] = {}
    for s in run.get("scores") or []:
        if s.get("error"):
            scores[s["name"]] = f"error: {s['error']}"
        else:
            scores[s["name"]] = s["label"] if s.get("label") is not None else s.get("score")
    trace_ids = run.get("trace_ids") or []
    return RunRow(
        example_id=run["example_id"],
        repetition=run["repetition"],
        status=run["status"],
        error=_preview(run["error"]),
        output=_preview(run["output"]),
        trace_id=trace_ids[0] if trace_ids else None,
        latency_ms=None if run["latency_ms"] is None else round(run["latency_ms"], 1),
        scores=scores,
    )


def cancel_experiment(
    store: Store,
    *,
    id: Annotated[str, Field(description="Experiment id.")],
    max_chars: MaxChars = None,
) -> ExperimentStatus:
    """Stop a running experiment and kill its processes; what it stored stays."""
    budget(max_chars, store.settings)  # the answer is small; an over-ceiling wish is refused
    job = _job_of(store, id)
    if job is not None and not job.finished:
        job.cancel()
        job.wait(30)
        return ExperimentStatus(
            id=id, status="cancelled", done=job.done, total=job.total,
            note=f"Cancelled; run_experiment(resume='{id}') runs what is missing.",
        )  # fmt: skip
    with store.reader() as reader:
        row = db.get_experiment(reader, id)
    if row is None:
        raise ToolFailure(f"No experiment {id[:60]!r}.", code=ErrorCode.NOT_FOUND)
    if row["status"] == "running":
        db.set_status(store, id, "interrupted")
        return ExperimentStatus(id=id, status="interrupted", note="No job was running it.")
    return ExperimentStatus(id=id, status=row["status"], note="It had already ended.")
