"""find_first_wrong_step: where a coding agent's trace or session first went wrong.

The candidates come from the rules of :mod:`traceproof.trajectories.wrong_step`; with
``judge=true`` an LLM chooses among the first ones
(:mod:`traceproof.trajectories.wrong_step_judge`). With ``write=true`` (the default) the answer
is stored as annotations, so it reads back in previews and groups in ``aggregate``:

- ``wrong_step_candidate`` on the span of each rule's first candidate (label: the rule, score:
  the step number, explanation: the reason; identifier ``trace`` or ``session``, the scope the
  step is numbered in). A candidate an earlier run wrote that no longer holds (its failure was
  fixed since) is relabelled ``withdrawn``.
- ``first_wrong_step`` on the trace or session itself (label: the rule, ``none`` when no rule
  fired; score: the step number; metadata: the step, its span and the trajectory's length), by
  the rules (annotator ``traceproof.wrong_step``, kind CODE) and, when judged, by the judge
  (``traceproof.wrong_step.judge``, kind LLM). ``aggregate(over='traces',
  group_by=['annotation.first_wrong_step.score'])`` is the heatmap of where failures start.

Writing the same answer again changes nothing (annotations are keyed by target, name,
annotator and identifier).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.evals.llm import LLMClient, LLMError
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import write_annotations
from traceproof.storage.trajectories import Scope, trajectory_steps
from traceproof.storage.trajectory_texts import candidate_annotations, step_texts, trajectory_task
from traceproof.tools.common import MaxChars, budget, one_line, size
from traceproof.tools.filters import ProjectParam
from traceproof.tools.trajectories import (
    STATS_MAX_STEPS,
    SessionParam,
    TraceParam,
    project_of,
    scope_of,
    step_of,
)
from traceproof.trajectories.wrong_step import (
    RULES,
    Candidate,
    StepText,
    candidates,
    first_wrong_step,
)
from traceproof.trajectories.wrong_step_judge import judge_candidates

__all__ = ["ANNOTATOR", "CANDIDATE", "FIRST", "FirstWrongStep", "find_first_wrong_step"]

FIRST = "first_wrong_step"
CANDIDATE = "wrong_step_candidate"
ANNOTATOR = "traceproof.wrong_step"
JUDGE_ANNOTATOR = "traceproof.wrong_step.judge"
WITHDRAWN = "withdrawn"
#: Candidates an answer lists at most.
LIST_MAX = 50


class WrongStepCandidate(BaseModel):
    step: int = Field(description="Step number, as get_trajectory numbers it.")
    turn: int
    span_id: str
    rule: str
    reason: str


class JudgeVerdict(BaseModel):
    step: int
    explanation: str
    model: str
    cost_usd: float | None = None


class FirstWrongStep(BaseModel):
    project: str
    trace_id: str | None
    session_id: str | None
    steps: int = Field(description="Steps of the trajectory.")
    first: WrongStepCandidate | None = Field(
        description="The first wrong step (the judge's choice when judged); None: no rule fired."
    )
    chosen_by: Literal["rules", "judge"] | None
    candidates: list[WrongStepCandidate] = Field(description="Earliest first.")
    by_rule: dict[str, int] = Field(description="Candidates per rule.")
    judge: JudgeVerdict | None = None
    note: str | None = None
    written: dict[str, int] | None = Field(
        default=None, description="Annotations created, updated, unchanged."
    )
    partial: bool = Field(description=f"True past {STATS_MAX_STEPS} steps.")
    truncated: bool = Field(description="True when candidates were cut to fit max_chars.")


def llm_client(settings: Settings) -> LLMClient:
    """The judge's client (``[llm_unavailable]`` without a credential). Tests replace it."""
    return LLMClient(settings)


def _texts(rows: dict[str, dict[str, Any]]) -> dict[str, StepText]:
    out: dict[str, StepText] = {}
    for span_id, row in rows.items():
        arguments: dict[str, Any] = {}
        if row["input"]:
            try:
                parsed = orjson.loads(row["input"])
            except orjson.JSONDecodeError:
                parsed = None
            # Not a JSON object (a raw patch, a command): the rules read it as the input.
            arguments = parsed if isinstance(parsed, dict) else {"input": row["input"]}
        out[span_id] = StepText(arguments, row["output"] or "")
    return out


def find_first_wrong_step(
    store: Store,
    *,
    trace_id: TraceParam = None,
    session_id: SessionParam = None,
    project: ProjectParam = None,
    judge: Annotated[bool, Field(description="An LLM chooses among the candidates.")] = False,
    write: Annotated[bool, Field(description="Store as annotations.")] = True,
    max_chars: MaxChars = None,
) -> FirstWrongStep:
    """Where a coding agent's trace or session first went wrong: steps flagged by rule (failed
    verification never fixed, edit reverted, error ignored, edit of an unread file), stored as
    annotations first_wrong_step and wrong_step_candidate."""
    scope, key = scope_of(trace_id, session_id)
    limit_chars = budget(max_chars, store.settings)
    resolved = project_of(store, scope, key, project)
    with store.reader() as reader:
        rows = trajectory_steps(reader, resolved, scope, key, limit=STATS_MAX_STEPS + 1)
        texts = _texts(step_texts(reader, resolved, scope, key))
        task = trajectory_task(reader, resolved, scope, key) if judge else None
    partial = len(rows) > STATS_MAX_STEPS
    rows = rows[:STATS_MAX_STEPS]
    steps = [step_of(row) for row in rows]
    turns = {row["span_id"]: int(row["turn"]) for row in rows}
    found = candidates(steps, texts)
    chosen, chosen_by = first_wrong_step(found), "rules" if found else None
    verdict: JudgeVerdict | None = None
    note: str | None = None
    if judge and not found:
        note = "No rule flagged a step: the judge was not called."
    elif judge:
        try:
            choice = judge_candidates(llm_client(store.settings), found, steps, texts, task)
        except LLMError as error:
            used = "was not used" if error.code == ErrorCode.LLM_UNAVAILABLE else "failed"
            note = f"The judge {used} ({error.message}); the first wrong step is the rules' choice."
        else:
            chosen, chosen_by = choice.candidate, "judge"
            verdict = JudgeVerdict(step=choice.candidate.step, explanation=choice.explanation,
                                   model=choice.model, cost_usd=choice.cost_usd)  # fmt: skip
    written = None
    if write:
        items = _annotations(store, resolved, scope, key, found, len(steps), verdict, chosen)
        # The judge's verdict in a later transaction: where both are stored, it is the latest
        # (the one aggregate and where read), never tied with the rules' on its timestamp.
        judged = [item for item in items if item.annotator == JUDGE_ANNOTATOR]
        batches = [[item for item in items if item.annotator != JUDGE_ANNOTATOR], judged]
        done = [write_annotations(store, batch) for batch in batches if batch]
        written = {k: sum(d.count(k) for d in done) for k in ("created", "updated", "unchanged")}

    def shown(c: Candidate) -> WrongStepCandidate:
        return WrongStepCandidate(step=c.step, turn=turns.get(c.span_id, 1), span_id=c.span_id,
                                  rule=c.rule, reason=c.reason)  # fmt: skip

    answer = FirstWrongStep(
        project=resolved,
        trace_id=trace_id,
        session_id=session_id,
        steps=len(steps),
        first=shown(chosen) if chosen else None,
        chosen_by=chosen_by,  # type: ignore[arg-type]
        candidates=[shown(c) for c in found[:LIST_MAX]],
        by_rule={rule: n for rule in RULES if (n := sum(c.rule == rule for c in found))},
        judge=verdict,
        note=note,
        written=written,
        partial=partial,
        truncated=len(found) > LIST_MAX,
    )
    return _fit(answer, limit_chars)


def _annotations(
    store: Store,
    project: str,
    scope: Scope,
    key: str,
    found: list[Candidate],
    total: int,
    verdict: JudgeVerdict | None,
    chosen: Candidate | None,
) -> list[AnnotationInput]:
    firsts = [next(c for c in found if c.rule == rule) for rule in RULES
              if any(c.rule == rule for c in found)]  # fmt: skip
    items = [
        AnnotationInput(TargetKind.SPAN, c.span_id, CANDIDATE, label=c.rule, score=c.step,
                        explanation=c.reason, metadata={"step": c.step, "steps": total},
                        annotator_kind=AnnotatorKind.CODE, annotator=ANNOTATOR, identifier=scope,
                        trace_id=c.trace_id, project=project)
        for c in firsts
    ]  # fmt: skip
    current = {c.span_id for c in firsts}
    with store.reader() as reader:
        earlier = candidate_annotations(reader, project, scope, key, name=CANDIDATE,
                                        annotator=ANNOTATOR, identifier=scope)  # fmt: skip
    for old in earlier:
        if old["span_id"] in current or old["label"] == WITHDRAWN:
            continue
        was = f"No longer a candidate (was {old['label']}: {old['explanation'] or ''})"
        items.append(AnnotationInput(
            TargetKind.SPAN, old["span_id"], CANDIDATE, label=WITHDRAWN, explanation=was[:2000],
            metadata=orjson.loads(old["metadata"]) if old["metadata"] else None,
            annotator_kind=AnnotatorKind.CODE, annotator=ANNOTATOR, identifier=scope,
            trace_id=old["trace_id"], project=project,
        ))  # fmt: skip
    target = TargetKind.TRACE if scope == "trace" else TargetKind.SESSION
    rules_first = first_wrong_step(found)
    reason = rules_first.reason if rules_first else "No rule flagged a step."
    items.append(_first(target, key, project, rules_first, total, AnnotatorKind.CODE, ANNOTATOR,
                        reason))  # fmt: skip
    if verdict is not None and chosen is not None:
        items.append(_first(target, key, project, chosen, total, AnnotatorKind.LLM,
                            JUDGE_ANNOTATOR, verdict.explanation, verdict.model))  # fmt: skip
    return items


def _first(
    target: TargetKind,
    key: str,
    project: str,
    chosen: Candidate | None,
    total: int,
    kind: AnnotatorKind,
    annotator: str,
    explanation: str,
    model: str | None = None,
) -> AnnotationInput:
    metadata: dict[str, Any] = {"steps": total}
    if chosen is not None:
        metadata |= {"step": chosen.step, "span_id": chosen.span_id, "trace_id": chosen.trace_id,
                     "rule": chosen.rule}  # fmt: skip
    if model is not None:
        metadata["model"] = model
    return AnnotationInput(
        target, key, FIRST, label=chosen.rule if chosen else "none",
        score=chosen.step if chosen else None, explanation=explanation[:4000], metadata=metadata,
        annotator_kind=kind, annotator=annotator, project=project,
    )  # fmt: skip


def _fit(answer: FirstWrongStep, limit: int) -> FirstWrongStep:
    """Candidates dropped from the end, then reasons and the judge's explanation clipped,
    until the answer fits."""
    while size(answer) > limit and len(answer.candidates) > 1:
        answer.candidates = answer.candidates[: len(answer.candidates) // 2]
        answer.truncated = True
    if size(answer) > limit:
        for item in [*answer.candidates, *([answer.first] if answer.first else [])]:
            item.reason = one_line(item.reason, 80) or ""
        if answer.judge is not None:
            answer.judge.explanation = one_line(answer.judge.explanation, 200) or ""
        if answer.note is not None:
            answer.note = one_line(answer.note, 200)
        answer.truncated = True
    return answer
