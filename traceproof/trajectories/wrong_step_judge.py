"""An LLM judge choosing the first wrong step among the rules' candidates of a window.

The window is the first :data:`WINDOW` candidates (earliest first). The model sees the task,
the steps around each candidate (compact: number, action, tool, target, outcome, an excerpt of
the output) and the candidates with their rule and reason, and answers through one forced tool
call (:class:`~traceproof.evals.llm.LLMClient`, the judges' client): its explanation, then the
step number, an enum of the candidates' steps. An answer naming no candidate is refused
(``[llm_malformed]``), never taken as a choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from traceproof.errors import ErrorCode
from traceproof.evals.llm import LLMClient, LLMError, Tool
from traceproof.trajectories.analysis import Step
from traceproof.trajectories.wrong_step import Candidate, StepText

__all__ = ["TOOL_NAME", "WINDOW", "JudgeChoice", "judge_candidates", "window_prompt"]

TOOL_NAME = "pick_first_wrong_step"
#: Candidates the judge chooses among.
WINDOW = 6
#: Steps shown before and after each candidate.
BEFORE, AFTER = 3, 1
_TARGET_CHARS = 200
_OUTPUT_CHARS = 300
_TASK_CHARS = 1500

SYSTEM_PROMPT = (
    "You review a coding agent's trajectory. Deterministic rules flagged candidate steps where "
    "the run may have first gone wrong. Decide which candidate is the first step that really "
    "went wrong: the earliest mistake the rest of the run follows from, not a harmless or "
    f"justified step. Answer only by calling the tool {TOOL_NAME}: first your explanation, then "
    "the step number of the candidate you choose."
)


@dataclass(frozen=True, slots=True)
class JudgeChoice:
    candidate: Candidate
    explanation: str
    model: str
    cost_usd: float | None


def _clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(n: int, step: Step, text: StepText | None) -> str:
    if not step.is_tool:
        return f"{n}. llm {step.model or ''}".rstrip()
    parts = [f"{n}. {step.action or 'other'} {step.tool or ''}".rstrip()]
    if step.target:
        parts.append(_clip(step.target, _TARGET_CHARS))
    outcome = step.outcome or "?"
    if step.tests_failed is not None or step.tests_passed is not None:
        outcome += f" ({step.tests_failed or 0} failed, {step.tests_passed or 0} passed)"
    line = " | ".join(parts) + f" -> {outcome}"
    if text is not None and text.output.strip():
        line += f"\n   output: {_clip(text.output, _OUTPUT_CHARS)}"
    return line


def window_prompt(
    window: Sequence[Candidate],
    steps: Sequence[Step],
    texts: Mapping[str, StepText],
    task: str | None,
) -> str:
    """The user message: the task, the steps around the candidates, the candidates."""
    shown = sorted(
        {
            n
            for c in window
            for n in range(max(1, c.step - BEFORE), min(len(steps), c.step + AFTER) + 1)
        }
    )
    lines: list[str] = []
    previous = 0
    for n in shown:
        if n > previous + 1:
            lines.append("…")
        step = steps[n - 1]
        lines.append(_line(n, step, texts.get(step.span_id)))
        previous = n
    listed = "\n".join(f"- step {c.step} [{c.rule}]: {c.reason}" for c in window)
    return (
        f"Task:\n{_clip(task, _TASK_CHARS) or '(not recorded)'}\n\n"
        f"Steps ({len(steps)} in all; n. action tool | target -> outcome):\n"
        + "\n".join(lines)
        + f"\n\nCandidates:\n{listed}\n\nWhich candidate is the first wrong step?"
    )


def _tool(window: Sequence[Candidate]) -> Tool:
    return Tool(
        name=TOOL_NAME,
        description="Record which candidate is the first wrong step, and why.",
        input_schema={
            "type": "object",
            "properties": {
                "explanation": {
                    "type": "string",
                    "description": "Your reasoning, before the choice.",
                },
                "step": {
                    "type": "integer",
                    "enum": sorted({c.step for c in window}),
                    "description": "The step number of the chosen candidate.",
                },
            },
            "required": ["explanation", "step"],
        },
    )


def judge_candidates(
    client: LLMClient,
    found: Sequence[Candidate],
    steps: Sequence[Step],
    texts: Mapping[str, StepText],
    task: str | None,
) -> JudgeChoice:
    """The judge's choice among the first :data:`WINDOW` candidates; raises
    :class:`~traceproof.evals.llm.LLMError` (no credential, a failed call, an answer naming no
    candidate)."""
    window = list(found[:WINDOW])
    result = client.call_tool(
        system=SYSTEM_PROMPT,
        messages=[{"role": "user", "content": window_prompt(window, steps, texts, task)}],
        tool=_tool(window),
        max_tokens=1024,
    )
    answer = result.answer or {}
    raw = answer.get("step")
    step = raw if type(raw) is int else int(raw) if isinstance(raw, str) and raw.isdigit() else None
    chosen = [c for c in window if c.step == step]
    explanation = answer.get("explanation")
    if not chosen or not isinstance(explanation, str):
        listed = ", ".join(str(c.step) for c in window)
        raise LLMError(
            f"The judge answered {_clip(repr(raw), 40)} with "
            f"{'an' if isinstance(explanation, str) else 'no'} explanation, not one of the "
            f"candidates' steps ({listed}); the rules' choice stands.",
            code=ErrorCode.LLM_MALFORMED,
            usage=result,
        )
    return JudgeChoice(chosen[0], explanation, result.model, result.cost_usd)
