"""``run_experiment``, ``get_experiment``, ``cancel_experiment``: proof by re-running the app.

Thin functions over :mod:`traceproof.experiments.runner` (the work) and :mod:`traceproof.jobs`
(the background). ``run_experiment`` records the experiment, starts its runs as a job and waits
up to ``wait`` seconds (progress goes to whoever listens: MCP progress notifications, the CLI's
bar); a longer experiment answers with its id and goes on. ``get_experiment`` reads the store
(status, provenance, summary, done/total, runs paged within the budget: when not even one run
fits, previews shorten, then provenance and the summary's details go; without an id, the newest
experiments, paged); an experiment still ``running`` in
the store but with no job in this server was interrupted (a restart): ``run_experiment(resume=
ID)`` runs what is missing or failed. ``cancel_experiment`` stops the job and kills its
processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.config import load_config
from traceproof.experiments.runner import ExperimentPlan, execute, plan_experiment
from traceproof.experiments.tasks import RunStatus
from traceproof.jobs import Job, JobStatus, jobs_for, report_progress
from traceproof.storage import Reader, Store
from traceproof.storage import datasets as datasets_db
from traceproof.storage import experiments as db
from traceproof.tools.common import (
    Cursor,
    CursorValue,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.paging import cut, largest_fit, next_call

log = logging.getLogger(__name__)

#: Characters of a run's output and error shown in a row.
PREVIEW_CHARS = 160

Status = Literal["running", "done", "failed", "cancelled", "interrupted"]
#: The statuses a run ends with (get_experiment's ``status`` filter).
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
#: Characters of a run's output and error previews when the budget is too small for
#: :data:`PREVIEW_CHARS`.
SHORT_PREVIEW_CHARS = 40


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


class ExperimentItem(BaseModel):
    """One experiment of a listing (get_experiment without an id)."""

    id: str
    name: str | None = None
    status: Status
    task: str
    dataset_id: str
    dataset_version: int
    created_at: str
    finished_at: str | None = None


class Experiment(BaseModel):
    """One experiment (``id`` given), or the newest experiments (``experiments``)."""

    id: str | None = None
    name: str | None = None
    status: Status | None = None
    task: str | None = None
    dataset_id: str | None = None
    dataset_version: int | None = None
    split: str | None = None
    repetitions: int | None = None
    created_at: str | None = None
    finished_at: str | None = None
    provenance: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    done: int | None = Field(default=None, description="Runs done (stored).")
    total: int | None = Field(default=None, description="Runs planned.")
    runs: list[RunRow] = Field(default_factory=list)
    experiments: list[ExperimentItem] | None = Field(default=None, description="Without id.")
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
        repetitions=repetitions,
        concurrency=concurrency,
        timeout=timeout,
        name=name,
        dry_run=dry_run,
        resume=resume,
    )
    if not plan.todo:  # a resume with nothing to run: an ended experiment stays as it is
        with store.reader() as reader:
            row = db.get_experiment(reader, plan.id)
            summary = db.experiment_summary(reader, plan.id, plan.evaluator_info)
        if row is None or row["status"] != "done":
            db.set_status(store, plan.id, "done", summary=summary)
        elif isinstance(row["summary"], dict):
            summary = row["summary"]
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
            shown = str(value) if isinstance(value, int) else f"{value:g}"
            raise ToolFailure(
                f"{key}={shown} is out of range; pass {span}.", code=ErrorCode.INVALID_ARGUMENT
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
    id: Annotated[str | None, Field(description="Experiment id; omit to list.")] = None,
    status: Annotated[str | None, Field(description="Only runs of this status.")] = None,
    limit: Annotated[int, Field(ge=0, le=1000, description="Rows per page.")] = 50,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> Experiment:
    """An experiment: status, provenance, summary, runs with their scores (paged). Without
    id: the newest experiments."""
    room = budget(max_chars, store.settings)
    if id is None:
        if status is not None:
            raise ToolFailure(
                "status keeps one status of an experiment's runs: pass id with it, or omit "
                "status to list the newest experiments.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        return _list(store, limit, cursor, room)
    if status is not None and status not in RUN_STATUSES:
        raise ToolFailure(
            f"No run status {status[:60]!r}; a run ends {', '.join(RUN_STATUSES)}. Pass one "
            "of them, or omit status for every run.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    fingerprint = f"{id}|{status}"
    after: tuple[str, int] | None = None
    if cursor is not None:
        key = decode_cursor(cursor, "get_experiment", fingerprint)
        if len(key) != 2 or not isinstance(key[0], str) or not isinstance(key[1], int):
            raise ToolFailure(
                "Malformed cursor; omit it to start again.", code=ErrorCode.INVALID_CURSOR
            )
        after = (key[0], key[1])
    job = _job_of(store, id)
    live = job is not None and not job.finished
    with store.reader() as reader:
        row = db.get_experiment(reader, id)
        if row is None:
            known = ", ".join(e["id"] for e in db.list_experiments(reader, 5)) or "none"
            raise ToolFailure(
                f"No experiment {id[:60]!r}; the newest: {known}. get_experiment without an "
                "id lists them; run_experiment starts one.",
                code=ErrorCode.NOT_FOUND,
            )
        runs = db.list_runs(reader, id, after=after, limit=limit + 1, status=status)
        done, total = _progress(reader, row, job if live else None)
    state: str = row["status"]
    note = None
    if state == "running" and not live:
        state = "interrupted"
        note = f"Interrupted (no job runs it); run_experiment(resume='{id}') runs what is missing."
    more = len(runs) > limit
    rows = [_row(r) for r in runs[:limit]]
    head = Experiment(
        id=row["id"],
        name=cut(row["name"]),
        status=state,  # type: ignore[arg-type]
        task=cut(row["task"]),
        dataset_id=row["dataset_id"],
        dataset_version=row["dataset_version"],
        split=cut(row["split"]),
        repetitions=row["repetitions"],
        created_at=_iso(row["created_at"]) or "",
        finished_at=_iso(row["finished_at"]),
        provenance=row["provenance"],
        summary=row["summary"],
        done=done,
        total=total,
        note=note,
    )
    # A page of no run: this one again.
    restart: list[CursorValue] = [after[0], after[1]] if after else ["", 0]

    def page(base: Experiment, shown: list[RunRow]) -> Callable[[int], Experiment]:
        def build(n: int) -> Experiment:
            cut_here = n < len(shown) or more
            last: list[CursorValue] = (
                [shown[n - 1].example_id, shown[n - 1].repetition] if n else restart
            )
            return base.model_copy(
                update={
                    "runs": shown[:n],
                    "next_cursor": encode_cursor("get_experiment", fingerprint, last)
                    if cut_here and shown
                    else None,
                    "next_call": next_call("get_experiment") if cut_here and shown else None,
                }
            )

        return build

    for base, shown in _smaller(head, rows):
        build = page(base, shown)
        answer = build(largest_fit(build, len(shown), room))
        if size(answer) <= room:
            return answer
    return page(*list(_smaller(head, rows))[-1])(0)


def _smaller(head: Experiment, rows: list[RunRow]) -> Iterator[tuple[Experiment, list[RunRow]]]:
    """``head`` and ``rows`` as they are, then ever smaller (when the budget holds not even one
    run): shorter previews, then provenance and the summary's details left out, then runs
    without previews, then no summary."""
    yield head, rows
    short = [
        r.model_copy(update={"output": _clip(r.output), "error": _clip(r.error)}) for r in rows
    ]
    yield head, short
    said = "max_chars too small: provenance and the summary's details left out."
    summary = head.summary or {}
    slim = head.model_copy(
        update={
            "provenance": None,
            "summary": {k: summary[k] for k in ("runs", "status") if k in summary} or None,
            "note": f"{head.note} {said}" if head.note else said,
        }
    )
    yield slim, short
    bare = [r.model_copy(update={"output": None, "error": None, "scores": {}}) for r in rows]
    yield slim, bare
    yield slim.model_copy(update={"summary": None}), bare


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= SHORT_PREVIEW_CHARS:
        return text
    return text[: SHORT_PREVIEW_CHARS - 1] + "…"


def _progress(reader: Reader, row: dict[str, Any], job: Job | None) -> tuple[int, int]:
    """Runs done and planned: while a job runs, those it need not run plus those it finished;
    else the runs stored, of the examples (of its split) times the repetitions."""
    if job is not None and isinstance(job.meta, ExperimentPlan):
        plan = job.meta
        return plan.total - len(plan.todo) + job.done, plan.total
    counts = datasets_db.split_counts(reader, str(row["dataset_id"]), int(row["dataset_version"]))
    split = row["split"]
    examples = sum(counts.values()) if split is None else counts.get(str(split), 0)
    return db.run_count(reader, str(row["id"])), examples * int(row["repetitions"])


def _list(store: Store, limit: int, cursor: str | None, room: int) -> Experiment:
    """The newest experiments, paged by ``(created_at, id)``, within ``room``."""
    after: tuple[datetime, str] | None = None
    if cursor is not None:
        key = decode_cursor(cursor, "get_experiment", "list")
        if len(key) != 2 or not all(isinstance(k, str) for k in key):
            raise ToolFailure(
                "Malformed cursor; omit it to start again.", code=ErrorCode.INVALID_CURSOR
            )
        after = (datetime.fromisoformat(str(key[0])), str(key[1]))
    with store.reader() as reader:
        found = db.list_experiments(reader, limit + 1, after=after)
    more = len(found) > limit
    rows = found[:limit]
    items = []
    for r in rows:
        state = r["status"]
        if state == "running":
            job = _job_of(store, str(r["id"]))
            state = "running" if job is not None and not job.finished else "interrupted"
        items.append(
            ExperimentItem(
                id=r["id"], name=cut(r["name"]), status=state, task=cut(r["task"]) or "",
                dataset_id=r["dataset_id"], dataset_version=r["dataset_version"],
                created_at=_iso(r["created_at"]) or "", finished_at=_iso(r["finished_at"]),
            )
        )  # fmt: skip
    note = None if items or after else "No experiment yet; run_experiment starts one."

    def build(n: int) -> Experiment:
        cut_here = n < len(items) or more
        last = rows[n - 1] if n else None
        return Experiment(
            experiments=items[:n],
            next_cursor=encode_cursor(
                "get_experiment", "list", [last["created_at"].isoformat(), str(last["id"])]
            )
            if cut_here and last is not None
            else None,
            next_call=next_call("get_experiment") if cut_here and last is not None else None,
            note=note,
        )

    return build(largest_fit(build, len(items), room))


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
            raise ToolFailure(
                f"No experiment {id[:60]!r}; get_experiment without an id lists them.",
                code=ErrorCode.NOT_FOUND,
            )
        done, total = _progress(reader, row, None)
    if row["status"] == "running":
        db.set_status(store, id, "interrupted")
        return ExperimentStatus(
            id=id, status="interrupted", done=done, total=total, note="No job was running it."
        )
    return ExperimentStatus(
        id=id, status=row["status"], done=done, total=total, note="It had already ended."
    )
