"""``evaluate``: run an evaluator of the project's traceproof.toml over spans, traces or sessions.

A thin function over :mod:`traceproof.evals.evaluation` (the run) and :mod:`traceproof.jobs`
(the background). The call chooses the targets (ids, or the shared filters, newest first up to
``limit``), skips those this evaluator version already judged, starts the run as a job and waits
up to ``wait`` seconds for it (reporting progress to whoever listens: MCP progress
notifications, the CLI's bar). A run that outlasts the wait answers with its job id and goes on
in the background; ``evaluate(job=ID)`` answers its status, and once it is done the same summary.
A job record lives in memory only; what a run wrote is annotations, so after a restart the same
call resumes where the store says it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals import evaluation
from traceproof.evals.config import load_config
from traceproof.evals.evaluation import Prepared, Tally, TargetRef
from traceproof.evals.llm import LLMClient
from traceproof.jobs import Job, JobStatus, jobs_for, report_progress
from traceproof.storage import Reader, Store
from traceproof.storage.judges import is_calibrated, save_evaluator_definition
from traceproof.tools.common import MaxChars, ToolFailure, budget, size
from traceproof.tools.filters import (
    FilterRef,
    ProjectParam,
    SpanFilter,
    span_source,
    where_errors,
)

log = logging.getLogger(__name__)

#: Labels listed in an answer (the most frequent); the rest are summed in the note.
LABELS_SHOWN = 30


class EvalError(BaseModel):
    id: str
    error: str


class Evaluation(BaseModel):
    evaluator: str
    version: str = Field(description="Annotations record annotator evaluator@version.")
    status: Literal["running", "done", "cancelled"]
    job: str | None = Field(default=None, description="For evaluate(job=...).")
    targets: int = Field(description="Targets chosen.")
    done: int = Field(description="Of total, run so far.")
    total: int = Field(description="Targets to run (chosen minus skipped).")
    written: int = Field(description="Annotations created or updated.")
    skipped: int = Field(description="Already judged by this version: not run again.")
    errors: int
    error_examples: list[EvalError] = Field(default_factory=list)
    labels: dict[str, int] = Field(
        default_factory=dict, description="Verdicts per label, skipped ones included."
    )
    mean_score: float | None = None
    examples: dict[str, list[str]] = Field(
        default_factory=dict, description="A few target ids per label."
    )
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    uncalibrated: bool | None = Field(
        default=None, description="A judge whose definition has no passing calibration."
    )
    note: str | None = None


@dataclass
class _Run:
    """What a job's record carries besides its progress (``Job.meta``)."""

    prepared: Prepared
    targets: int
    tally: Tally
    uncalibrated: bool | None
    note: str | None


def evaluate(
    store: Store,
    *,
    evaluator: Annotated[str | None, Field(description="Name in traceproof.toml.")] = None,
    target: Annotated[Literal["span", "trace", "session"], Field(description="Kind.")] = "span",
    ids: Annotated[list[str] | None, Field(description="Else filters.")] = None,
    project: ProjectParam = None,
    since: FilterRef = None,
    where: FilterRef = None,
    limit: Annotated[int, Field(ge=1)] = 1000,
    wait: Annotated[int, Field(le=600, description="Seconds.")] = 20,
    job: Annotated[str | None, Field(description="Status of a job.")] = None,
    max_chars: MaxChars = None,
) -> Evaluation:
    """Run a traceproof.toml evaluator on ids or filters (as search_spans); writes annotations."""
    room = budget(max_chars, store.settings)
    settings = store.settings
    waited = min(float(wait), settings.eval_wait_max_seconds)
    registry = jobs_for(store)
    if job is not None:
        found = registry.get(job)
        if found is None or not isinstance(found.meta, _Run):
            raise ToolFailure(
                f"No job {job[:40]!r} on this server (jobs are kept in memory: a restarted "
                "server forgets them). Call evaluate again with the same arguments: targets "
                "already judged by this version are skipped, so it resumes.",
                code=ErrorCode.UNKNOWN_JOB,
            )
        return _answer(found, found.meta, waited, room)
    config = load_config(settings.config)
    if evaluator is None:
        known = ", ".join(config.evaluators) or "none"
        raise ToolFailure(
            f"Name the evaluator to run (declared in traceproof.toml: {known}), or pass job "
            "for a run's status.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    prepared = evaluation.prepare(config.evaluator(evaluator))
    flt = SpanFilter(project=project, since=since, where=where)
    refs, matched = choose(store, target, ids, flt, limit)
    planned = evaluation.plan(store, prepared, refs, target)
    uncalibrated = None
    if prepared.judge is not None:
        with store.reader() as reader:
            uncalibrated = True if not is_calibrated(reader, prepared.definition_hash) else None
    note = None
    if matched > len(refs):
        note = (
            f"{matched} {target}s match; the newest {len(refs)} were chosen. Raise limit or "
            "narrow the filters for the rest."
        )
    tally = Tally()
    tally.add_stored((r.id, *planned.stored[r.key]) for r in refs if r.key in planned.stored)
    run_info = _Run(prepared, len(refs), tally, uncalibrated, note)
    if not planned.todo:
        return _summary(run_info, None, JobStatus.DONE, 0, 0, room)
    llm = LLMClient(settings) if prepared.judge is not None else None  # [llm_unavailable]
    save_evaluator_definition(
        store,
        hash=prepared.definition_hash,
        name=prepared.name,
        kind=prepared.kind,
        definition=prepared.stored_definition(),
    )
    todo = planned.todo

    def work(job: Job) -> None:
        evaluation.run(
            store,
            prepared,
            todo,
            tally=tally,
            progress=job.progress,
            check_cancelled=job.check_cancelled,
            llm=llm,
        )

    key = ("evaluate", prepared.annotator, target, hash(tuple(r.key for r in todo)))
    started = registry.start("evaluate", work, total=len(todo), key=key, meta=run_info)
    if not isinstance(started.meta, _Run):  # pragma: no cover - keys are evaluate's own
        raise TraceproofError("A job of another kind holds this key.")
    return _answer(started, started.meta, waited, room)


def _answer(job: Job, run: _Run, wait: float, room: int) -> Evaluation:
    job.wait(wait, on_progress=report_progress)
    if job.status is JobStatus.FAILED:
        error = job.error
        if isinstance(error, TraceproofError):
            raise error
        log.error("evaluate job %s failed", job.id, exc_info=error)
        raise TraceproofError(
            f"The run of {run.prepared.name} failed inside traceproof (job {job.id}). The "
            "server log (stderr) has the details; what it wrote stays, and calling evaluate "
            "again resumes it.",
            code=ErrorCode.INTERNAL_ERROR,
        )
    return _summary(run, job.id, job.status, job.done, job.total, room)


def _summary(
    run: _Run, job_id: str | None, status: JobStatus, done: int, total: int, room: int
) -> Evaluation:
    found = run.tally.snapshot()
    notes = [run.note] if run.note else []
    if status is JobStatus.RUNNING:
        notes.append(
            f"Still running in the background; call evaluate(job='{job_id}') for its status."
        )
    elif status is JobStatus.CANCELLED:
        notes.append("Cancelled; what it wrote stays. The same call again resumes it.")
    notes.extend(found["cost_notes"])
    judged = run.prepared.judge is not None
    labels: dict[str, int] = found["labels"]
    shown = dict(list(labels.items())[:LABELS_SHOWN])
    if len(shown) < len(labels):
        rest = sum(labels.values()) - sum(shown.values())
        notes.append(f"{len(labels) - len(shown)} more labels ({rest} verdicts) not shown.")
    result = Evaluation(
        evaluator=run.prepared.name,
        version=run.prepared.version,
        status=status.value,  # type: ignore[arg-type]
        job=job_id,
        targets=run.targets,
        done=done,
        total=total,
        written=found["written"],
        skipped=found["skipped"],
        errors=found["errors"],
        error_examples=[EvalError(id=i, error=e) for i, e in found["error_examples"]],
        labels=shown,
        mean_score=None if found["mean_score"] is None else round(found["mean_score"], 4),
        examples={k: v for k, v in found["examples"].items() if k in shown},
        input_tokens=found["input_tokens"] if judged else None,
        output_tokens=found["output_tokens"] if judged else None,
        cost_usd=None if found["cost_usd"] is None else round(found["cost_usd"], 6),
        uncalibrated=run.uncalibrated,
        note=" ".join(notes) or None,
    )
    # Within the budget: examples go first, then labels past the first, then error examples.
    while size(result) > room and result.examples:
        result.examples.popitem()
    while size(result) > room and len(result.labels) > 1:
        result.labels.popitem()
    while size(result) > room and result.error_examples:
        result.error_examples.pop()
    return result


# -- choosing the targets -----------------------------------------------------------------------

_NEWEST = {
    "span": (
        "SELECT project, trace_id, span_id FROM {src} WHERE {cond} "
        "ORDER BY start_time DESC, span_id"
    ),
    "trace": (
        "SELECT project, trace_id, NULL FROM {src} WHERE {cond} GROUP BY project, trace_id "
        "ORDER BY min(start_time) DESC, trace_id"
    ),
    "session": (
        "SELECT project, NULL, session_id FROM {src} WHERE {cond} AND session_id IS NOT NULL "
        "GROUP BY project, session_id ORDER BY min(start_time) DESC, session_id"
    ),
}
_COUNT = {
    "span": "SELECT count(*) FROM {src} WHERE {cond}",
    "trace": "SELECT count(DISTINCT (project, trace_id)) FROM {src} WHERE {cond}",
    "session": (
        "SELECT count(DISTINCT (project, session_id)) FROM {src} WHERE {cond} "
        "AND session_id IS NOT NULL"
    ),
}
#: Ids go in as one text joined by the unit separator (DuckDB converts a Python list item by
#: item, at a cost).
_IDS = "(SELECT unnest(string_split(?, chr(31))))"
_BY_ID = {
    "span": f"SELECT project, trace_id, span_id FROM spans WHERE span_id IN {_IDS}",
    "trace": f"SELECT project, trace_id, NULL FROM trace_index WHERE trace_id IN {_IDS}",
    "session": (
        f"SELECT DISTINCT project, NULL, session_id FROM trace_index WHERE session_id IN {_IDS}"
    ),
}
_UNKNOWN = {
    "span": (ErrorCode.UNKNOWN_SPAN, "search_spans lists span ids"),
    "trace": (ErrorCode.UNKNOWN_TRACE, "search_traces lists trace ids"),
    "session": (ErrorCode.UNKNOWN_SESSION, "search_traces shows session ids"),
}


def choose(
    store: Store, kind: str, ids: list[str] | None, flt: SpanFilter, limit: int
) -> tuple[list[TargetRef], int]:
    """The targets of ``kind``: ``ids`` (all of them must be stored), else those with a span
    matching ``flt``, newest first, at most ``limit``; and how many matched."""
    cap = min(limit, store.settings.eval_max_targets)
    with store.reader() as reader:
        if ids is not None:
            if flt != SpanFilter(project=flt.project):
                raise ToolFailure(
                    "Pass ids or filters, not both (project may narrow ids). Use ids for known "
                    "targets, filters to choose them.",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            return _by_id(reader, kind, list(dict.fromkeys(ids)), flt.project, cap)
        cond, params = flt.sql()
        src = span_source(cond, "session_id") if kind == "session" else span_source(cond)
        with where_errors(flt.where):
            matched = reader.rows(
                _COUNT[kind].format(src=src, cond=cond), params, untrusted=flt.untrusted
            )[0][0]
            rows = reader.rows(
                _NEWEST[kind].format(src=src, cond=cond) + f" LIMIT {cap}",
                params,
                untrusted=flt.untrusted,
            )
    return [_ref(kind, row) for row in rows], int(matched or 0)


def _ref(kind: str, row: tuple[Any, ...]) -> TargetRef:
    project, trace_id, other = row
    if kind == "span":
        return TargetRef("span", str(other), str(project), str(trace_id))
    if kind == "trace":
        return TargetRef("trace", str(trace_id), str(project))
    return TargetRef("session", str(other), str(project))


def _by_id(
    reader: Reader, kind: str, ids: list[str], project: str | None, cap: int
) -> tuple[list[TargetRef], int]:
    if len(ids) > cap:
        raise ToolFailure(
            f"{len(ids)} ids is more than the {cap} one call evaluates (limit, setting "
            "eval_max_targets). Split them into several calls.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    rows = reader.rows(_BY_ID[kind], ["\x1f".join(ids)])
    if project is not None:
        rows = [r for r in rows if r[0] == project]
    found = [_ref(kind, row) for row in rows]
    have = {ref.id for ref in found}
    missing = [i for i in ids if i not in have]
    if missing:
        code, hint = _UNKNOWN[kind]
        shown = ", ".join(repr(m[:80]) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        where = f" in project {project!r}" if project else ""
        raise ToolFailure(
            f"No {kind} {shown}{more}{where} in the store; nothing was run. Pass stored "
            f"{kind} ids ({hint}), or choose them with filters.",
            code=code,
        )
    order = {target_id: n for n, target_id in enumerate(ids)}
    found.sort(key=lambda ref: order[ref.id])
    return found, len(found)
