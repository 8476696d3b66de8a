"""Two runs of the same task side by side: where they part ways, and the loops one has.

:func:`diff` aligns the tool steps of two trajectories on (action, normalised target) with
:class:`difflib.SequenceMatcher` (after their common head and tail; junk heuristics off up to
:data:`EXACT_MAX` differing steps, so frequent steps such as the test run still match) and
returns the aligned blocks: ``equal`` (same action and target, both failed or
both not), ``only_a``, ``only_b`` and ``changed`` (a stretch each run did differently, or the
same step with a different outcome). A target is normalised (:func:`normalise_target`) so that
the same file or command of two runs in different working directories matches.

Loops (:func:`loops`): ``fix`` (a failed verification, other steps, then a verification again),
``recover`` (any other failed step, other steps, then that step again),
``retry`` (a failed step run again unchanged at once) and ``repeat`` (the same command run more
than once); :func:`loop_differences` keeps those whose counts differ between the runs.
Everything is deterministic: the same steps give the same diff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from itertools import pairwise
from typing import Literal

from traceproof.trajectories.analysis import COMMAND_ACTIONS, FAILED, Step

__all__ = [
    "Aligned",
    "Block",
    "Diff",
    "LoopDifference",
    "Op",
    "RunSummary",
    "diff",
    "loop_differences",
    "loops",
    "normalise_target",
    "numbered",
    "summary",
]

Op = Literal["equal", "only_a", "only_b", "changed"]
LoopKind = Literal["fix", "recover", "retry", "repeat"]
#: Past this many differing tool steps a side, steps as frequent as a test run (over 1 % of a
#: run) no longer anchor the alignment, only extend it (difflib's ``autojunk``): exact
#: matching is quadratic in them (benchmarks/trajectory_diff.py).
EXACT_MAX = 2000
_OPS: dict[str, Op] = {"replace": "changed", "delete": "only_a", "insert": "only_b"}
_LOOP_ORDER: dict[str, int] = {"fix": 0, "recover": 1, "retry": 2, "repeat": 3}

_SPACES = re.compile(r"\s+")
#: ``2>&1`` and a trailing ``| head …`` / ``| tail …``: how much output an agent looks at, not
#: what it runs.
_REDIRECT = re.compile(r"\s*\d?>&\d")
_PAGER = re.compile(r"(?:\s*\|\s*(?:head|tail|less|more|cat)\b[^|]*)+$")
_DOT_SLASH = re.compile(r"(^|[\s=:'\"(])\./(?=\S)")
_CD_HERE = re.compile(r"^cd \.\s*(?:&&|;)\s*")


def normalise_target(target: str | None, roots: Sequence[str] = ()) -> str:
    """``target`` as two runs of one task can share it: each of the run's working directories
    (``roots``, longest first) removed as a path prefix (``/w/shop/src/a.py`` → ``src/a.py``)
    and as a word (``cd /w/shop && pytest`` → ``pytest``), ``./`` dropped, ``2>&1`` and trailing
    pagers (``| tail -20``) dropped, whitespace collapsed."""
    if not target:
        return ""
    text = _SPACES.sub(" ", target).strip()
    for root in sorted({r.rstrip("/\\") for r in roots if r.strip("/\\")}, key=len, reverse=True):
        escaped = re.escape(root)
        text = re.sub(escaped + r"[/\\]*(?=$|[\s;&|)'\"])", ".", text)
        text = re.sub(escaped + r"[/\\]+", "", text)
    text = _DOT_SLASH.sub(r"\1", text)
    text = _CD_HERE.sub("", text)
    text = _PAGER.sub("", _REDIRECT.sub("", text))
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Aligned:
    """A tool step as the diff sees it."""

    #: Its number in the trajectory (LLM and TOOL steps from 1, as get_trajectory numbers it).
    n: int
    step: Step
    action: str
    #: The normalised target ("" when the step has none).
    target: str

    @property
    def key(self) -> tuple[str, str]:
        return self.action, self.target

    @property
    def failed(self) -> bool:
        return self.step.outcome in FAILED


def numbered(steps: Sequence[Step], roots: Sequence[str] = ()) -> list[Aligned]:
    """The tool steps of ``steps`` with their step numbers and normalised targets."""
    seen: dict[str | None, str] = {}  # a run repeats its targets: each is normalised once
    aligned: list[Aligned] = []
    for n, step in enumerate(steps, 1):
        if step.is_tool:
            if step.target not in seen:
                seen[step.target] = normalise_target(step.target, roots)
            aligned.append(Aligned(n, step, step.action or "other", seen[step.target]))
    return aligned


@dataclass(frozen=True, slots=True)
class Block:
    op: Op
    a: tuple[Aligned, ...]
    b: tuple[Aligned, ...]


def _opcodes(left: Sequence[int], right: Sequence[int]) -> list[tuple[str, int, int, int, int]]:
    """SequenceMatcher's opcodes, the common head and tail taken off first (the matcher is
    quadratic in the worst case; two runs of one task often share both ends; past
    :data:`EXACT_MAX` steps, frequent steps only extend matches). The middle starts and ends
    with a difference, so no two equal stretches touch."""
    head = 0
    while head < min(len(left), len(right)) and left[head] == right[head]:
        head += 1
    tail = 0
    while tail < min(len(left), len(right)) - head and left[-1 - tail] == right[-1 - tail]:
        tail += 1
    a, b = left[head : len(left) - tail], right[head : len(right) - tail]
    middle = SequenceMatcher(None, a, b, autojunk=max(len(a), len(b)) > EXACT_MAX)
    codes = [("equal", 0, head, 0, head)] if head else []
    codes += [
        (tag, i1 + head, i2 + head, j1 + head, j2 + head)
        for tag, i1, i2, j1, j2 in middle.get_opcodes()
        if i1 != i2 or j1 != j2
    ]
    if tail:
        codes.append(("equal", len(left) - tail, len(left), len(right) - tail, len(right)))
    return codes


def _blocks(a: Sequence[Aligned], b: Sequence[Aligned]) -> list[Block]:
    ids: dict[tuple[str, str], int] = {}  # keys as small ints: cheaper to hash and compare
    left = [ids.setdefault(s.key, len(ids)) for s in a]
    right = [ids.setdefault(s.key, len(ids)) for s in b]
    blocks: list[Block] = []
    for tag, i1, i2, j1, j2 in _opcodes(left, right):
        if tag == "equal":
            blocks += _split_by_outcome(a[i1:i2], b[j1:j2])
        else:
            blocks.append(Block(_OPS[tag], tuple(a[i1:i2]), tuple(b[j1:j2])))
    return blocks


def _split_by_outcome(a: Sequence[Aligned], b: Sequence[Aligned]) -> list[Block]:
    """An equal stretch cut where the same step failed in one run only (``changed``)."""
    blocks: list[Block] = []
    start = 0
    for i in range(len(a) + 1):
        boundary = i == len(a) or a[i].failed != b[i].failed
        if not boundary:
            continue
        if i > start:
            blocks.append(Block("equal", tuple(a[start:i]), tuple(b[start:i])))
        if i < len(a):
            blocks.append(Block("changed", (a[i],), (b[i],)))
        start = i + 1
    return blocks


@dataclass(frozen=True, slots=True)
class Loop:
    kind: LoopKind
    action: str
    target: str
    #: Step numbers where each occurrence starts (``repeat``: every run of the command).
    steps: tuple[int, ...]


def loops(steps: Sequence[Aligned]) -> list[Loop]:
    """The loops of one run: ``fix`` (a failed verification, at least one other step, then a
    verification again; keyed by the failed one), ``recover`` (another failed step, at least
    one other step, then the same action and target again), ``retry`` (a failed step whose
    next tool step is the same action and target) and ``repeat`` (every run of a command, as
    trajectory_stats counts them: a ``repeat`` of one run is not a loop, but the other run may
    repeat it)."""
    found: dict[tuple[LoopKind, str, str], list[int]] = {}
    verifies = [i for i, s in enumerate(steps) if s.action == "verify"]
    for i, j in pairwise(verifies):
        if steps[i].failed and j > i + 1:
            found.setdefault(("fix", "verify", steps[i].target), []).append(steps[i].n)
    following: dict[tuple[str, str], int] = {}  # key -> the index of its next occurrence
    again: list[int | None] = [None] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        again[i] = following.get(steps[i].key)
        following[steps[i].key] = i
    for i, (step, next_at) in enumerate(zip(steps, again, strict=True)):
        if step.failed and step.action != "verify" and next_at is not None and next_at > i + 1:
            found.setdefault(("recover", step.action, step.target), []).append(step.n)
    for step, after in pairwise(steps):
        if step.failed and after.key == step.key:
            found.setdefault(("retry", step.action, step.target), []).append(step.n)
    runs: dict[tuple[str, str], list[int]] = {}
    for step in steps:
        if step.target and step.action in COMMAND_ACTIONS:
            runs.setdefault(step.key, []).append(step.n)
    for (action, target), at in runs.items():
        found[("repeat", action, target)] = at
    return [Loop(kind, action, target, tuple(at)) for (kind, action, target), at in found.items()]


@dataclass(frozen=True, slots=True)
class LoopDifference:
    kind: LoopKind
    action: str
    target: str
    a: tuple[int, ...]
    b: tuple[int, ...]


def loop_differences(a: Iterable[Loop], b: Iterable[Loop]) -> list[LoopDifference]:
    """The loops whose count differs between the runs (a command run more than once in at least
    one of them, for repeats): fix loops first, then recoveries, retries and repeats, the largest
    difference first."""
    mine = {(x.kind, x.action, x.target): x.steps for x in a}
    theirs = {(x.kind, x.action, x.target): x.steps for x in b}
    found: list[LoopDifference] = []
    for key in mine.keys() | theirs.keys():
        left, right = mine.get(key, ()), theirs.get(key, ())
        kind, action, target = key
        if len(left) != len(right) and (kind != "repeat" or max(len(left), len(right)) > 1):
            found.append(LoopDifference(kind, action, target, left, right))
    return sorted(
        found,
        key=lambda d: (_LOOP_ORDER[d.kind], -abs(len(d.a) - len(d.b)), d.action, d.target),
    )


@dataclass(frozen=True, slots=True)
class RunSummary:
    steps: int
    edits: int
    verifications: int
    errors: int
    recoveries: int
    fix_loops: int
    #: Outcome of the last verification (None: nothing was verified).
    last_verify: str | None
    #: Tokens of the model calls (prompt with cache, plus completion).
    tokens: int


def summary(steps: Sequence[Step], aligned: Sequence[Aligned], found: Iterable[Loop]) -> RunSummary:
    verifies = [s.step.outcome for s in aligned if s.action == "verify"]
    llm = [s for s in steps if s.kind == "LLM"]
    return RunSummary(
        steps=len(aligned),
        edits=sum(s.action == "edit" for s in aligned),
        verifications=len(verifies),
        errors=sum(s.failed for s in aligned),
        recoveries=sum(s.step.recover for s in aligned),
        fix_loops=sum(len(x.steps) for x in found if x.kind == "fix"),
        last_verify=verifies[-1] if verifies else None,
        tokens=sum(s.prompt_tokens + s.completion_tokens for s in llm),
    )


@dataclass(frozen=True, slots=True)
class Diff:
    a: RunSummary
    b: RunSummary
    blocks: list[Block]
    loops: list[LoopDifference] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """The runs took the same steps with the same outcomes."""
        return all(block.op == "equal" for block in self.blocks)

    @property
    def common_prefix(self) -> int:
        """Tool steps the runs share before they part ways."""
        if self.blocks and self.blocks[0].op == "equal":
            return len(self.blocks[0].a)
        return 0

    @property
    def parted(self) -> Block | None:
        """The first block where the runs differ (None: they never do)."""
        return next((block for block in self.blocks if block.op != "equal"), None)

    def parting(self) -> tuple[Aligned | None, Aligned | None]:
        """What each run did where they part: its first step from the first differing block
        on (a run the block has no step of goes on with its next one; None: it had ended, or
        they never part)."""
        at = next((i for i, block in enumerate(self.blocks) if block.op != "equal"), None)
        if at is None:
            return None, None
        rest = self.blocks[at:]
        first_a = next((block.a[0] for block in rest if block.a), None)
        first_b = next((block.b[0] for block in rest if block.b), None)
        return first_a, first_b


def diff(
    a: Sequence[Step],
    b: Sequence[Step],
    a_roots: Sequence[str] = (),
    b_roots: Sequence[str] = (),
) -> Diff:
    """Align runs ``a`` and ``b`` (their steps in order, LLM steps included for numbering and
    tokens), each with its working directories (``*_roots``) for :func:`normalise_target`."""
    left, right = numbered(a, a_roots), numbered(b, b_roots)
    left_loops, right_loops = loops(left), loops(right)
    return Diff(
        a=summary(a, left, left_loops),
        b=summary(b, right, right_loops),
        blocks=_blocks(left, right),
        loops=loop_differences(left_loops, right_loops),
    )
