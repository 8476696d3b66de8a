"""Trajectory analysis: pure functions over the labelled steps of a trace or a session.

A :class:`Step` is what the store holds of one LLM or TOOL span (its ``trajectory.*`` labels,
see :mod:`traceproof.trajectories.actions`, and its tokens); the functions here take the steps
of one trajectory in order and answer the figures ``trajectory_stats`` reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from traceproof.evals.llm import Price, Usage, cost
from traceproof.trajectories.actions import FAILED

__all__ = [
    "COMMAND_ACTIONS",
    "FAILED",
    "Repeat",
    "Step",
    "Tokens",
    "by_action",
    "edits_before_first_verify",
    "errors_without_change",
    "files_read_and_edited",
    "recoveries",
    "repeated_commands",
    "tokens",
    "verifies_after_last_edit",
]

#: Actions whose target is a command (so repeating it is running the same command again).
COMMAND_ACTIONS = frozenset({"execute", "verify", "vcs", "localize"})


@dataclass(frozen=True, slots=True)
class Step:
    """One LLM or TOOL span of a trajectory, as stored."""

    trace_id: str
    span_id: str
    kind: str
    action: str | None = None
    tool: str | None = None
    target: str | None = None
    outcome: str | None = None
    files: tuple[str, ...] = ()
    tests_passed: int | None = None
    tests_failed: int | None = None
    recover: bool = False
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def is_tool(self) -> bool:
        return self.kind == "TOOL"


def _tools(steps: Sequence[Step]) -> list[Step]:
    return [s for s in steps if s.is_tool]


def by_action(steps: Sequence[Step]) -> dict[str, int]:
    """Tool steps per action (unlabelled ones as ``other``), most frequent first."""
    counts = Counter(s.action or "other" for s in _tools(steps))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def edits_before_first_verify(steps: Sequence[Step]) -> int:
    """Edit steps before the first verification (every edit when nothing was verified)."""
    count = 0
    for step in _tools(steps):
        if step.action == "verify":
            break
        count += step.action == "edit"
    return count


def verifies_after_last_edit(steps: Sequence[Step]) -> int | None:
    """Verifications after the last edit; None when nothing was edited."""
    tools = _tools(steps)
    last = max((i for i, s in enumerate(tools) if s.action == "edit"), default=None)
    if last is None:
        return None
    return sum(s.action == "verify" for s in tools[last + 1 :])


@dataclass(frozen=True, slots=True)
class Repeat:
    """A command run more than once, and how often."""

    tool: str | None
    target: str
    count: int
    #: Positions (1-based, in the trajectory) of its runs.
    steps: tuple[int, ...] = field(default=())


def _positions(steps: Sequence[Step]) -> dict[str, int]:
    return {s.span_id: i for i, s in enumerate(steps, 1)}


def repeated_commands(steps: Sequence[Step]) -> list[Repeat]:
    """Commands (tool and target, among shell-like steps) run more than once, most repeated
    first."""
    where = _positions(steps)
    runs: dict[tuple[str | None, str], list[int]] = {}
    for step in _tools(steps):
        if step.target and step.action in COMMAND_ACTIONS:
            runs.setdefault((step.tool, step.target), []).append(where[step.span_id])
    repeats = [Repeat(t, target, len(at), tuple(at)) for (t, target), at in runs.items()]
    return sorted((r for r in repeats if r.count > 1), key=lambda r: (-r.count, r.steps[0]))


def errors_without_change(steps: Sequence[Step]) -> list[int]:
    """Positions of failed steps (an error, failed tests) whose next tool step tries the same
    tool on the same target again: an error not followed by a change of approach."""
    where = _positions(steps)
    tools = _tools(steps)
    found: list[int] = []
    for step, after in pairwise(tools):
        if step.outcome in FAILED and (after.tool, after.target) == (step.tool, step.target):
            found.append(where[step.span_id])
    return found


def recoveries(steps: Sequence[Step]) -> int:
    """Steps marked ``recover`` (the step after an error or a failed verification)."""
    return sum(s.recover for s in _tools(steps))


def files_read_and_edited(steps: Sequence[Step]) -> tuple[list[str], list[str]]:
    """The files read (``localize`` steps) and edited (``edit`` steps), each in first-seen
    order."""
    read: dict[str, None] = {}
    edited: dict[str, None] = {}
    for step in _tools(steps):
        if step.action == "localize":
            read.update(dict.fromkeys(step.files))
        elif step.action == "edit":
            edited.update(dict.fromkeys(step.files))
    return list(read), list(edited)


@dataclass(frozen=True, slots=True)
class Tokens:
    llm_calls: int
    prompt: int
    completion: int
    cache_read: int
    cache_write: int
    #: USD over the priced models; None when no model had a price.
    cost_usd: float | None
    #: Models without a known price (their calls are not in ``cost_usd``).
    unpriced: tuple[str, ...]


def tokens(steps: Sequence[Step], prices: Mapping[str, Price] | None = None) -> Tokens:
    """Token totals of the LLM steps and their cost (``prompt`` includes cache reads and
    writes; cost prices uncached input, cache writes and reads apart)."""
    llm = [s for s in steps if s.kind == "LLM"]
    total: float | None = None
    unpriced: dict[str, None] = {}
    for step in llm:
        if not step.model:
            if step.prompt_tokens or step.completion_tokens:
                unpriced["(no model)"] = None
            continue
        cached = step.cache_read_tokens + step.cache_write_tokens
        usage = Usage(
            input_tokens=max(0, step.prompt_tokens - cached),
            output_tokens=step.completion_tokens,
            cache_write_tokens=step.cache_write_tokens,
            cache_read_tokens=step.cache_read_tokens,
        )
        usd, _ = cost(step.model, usage, prices)
        if usd is None:
            unpriced[step.model] = None
        else:
            total = (total or 0.0) + usd
    return Tokens(
        llm_calls=len(llm),
        prompt=sum(s.prompt_tokens for s in llm),
        completion=sum(s.completion_tokens for s in llm),
        cache_read=sum(s.cache_read_tokens for s in llm),
        cache_write=sum(s.cache_write_tokens for s in llm),
        cost_usd=None if total is None else round(total, 6),
        unpriced=tuple(unpriced),
    )
