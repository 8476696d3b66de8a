"""diff_trajectories: two runs of the same task side by side (see
:mod:`traceproof.trajectories.diff`).

Each run is a trace id or a session id, resolved in that order. The answer starts with what
fits any budget (each run's figures, where they part, the loops one has and the other lacks)
and pages the aligned blocks: equal stretches as counts and step ranges, the others with their
steps (at most :data:`BLOCK_STEPS` a side, targets clipped).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.storage.reader import Reader
from traceproof.storage.trajectories import (
    Scope,
    trajectory_projects,
    trajectory_roots,
    trajectory_steps,
)
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    one_line,
    size,
)
from traceproof.tools.filters import ProjectParam
from traceproof.tools.paging import ID_CHARS, NEXT_CALL_DESCRIPTION, largest_fit, next_call
from traceproof.tools.trajectories import step_of
from traceproof.trajectories import diff as domain
from traceproof.trajectories.diff import Aligned, Block, LoopDifference, RunSummary

__all__ = ["DiffBlock", "DiffLoop", "DiffRun", "DiffStep", "TrajectoryDiff", "diff_trajectories"]

#: Steps (LLM and TOOL) of each run read at most (a longer run: ``partial``).
DIFF_MAX_STEPS = 20_000
#: Characters of a target, before a tight budget clips them further.
TARGET_CHARS = 120
#: Steps shown per side of a block that is not ``equal``.
BLOCK_STEPS = 8
#: Loops shown at most, and step numbers per loop and run.
LOOPS_MAX = 20
LOOP_STEPS = 10
#: Working directories shown per run, and their characters.
ROOTS_MAX = 3
ROOT_CHARS = 120

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")

RunParam = Annotated[str, Field(description="A trace_id or session_id.")]


class DiffStep(BaseModel):
    n: int = Field(description="Step number in its run, as get_trajectory numbers it.")
    action: str
    target: str | None = Field(default=None, description="Working directory stripped; clipped.")
    outcome: str | None = None
    span_id: str | None = Field(default=None, description="For get_span_data.")


class DiffBlock(BaseModel):
    op: Literal["equal", "only_a", "only_b", "changed"] = Field(
        description="equal: same action, target and success; changed: done differently."
    )
    count_a: int = Field(description="Tool steps of a in the block.")
    count_b: int
    a_range: list[int] = Field(description="First and last step number in a; [] none.")
    b_range: list[int]
    a: list[DiffStep] = Field(default_factory=list, description="Steps of a (not for equal).")
    b: list[DiffStep] = Field(default_factory=list)


class DiffLoop(BaseModel):
    kind: Literal["fix", "recover", "retry", "repeat"] = Field(
        description="fix: a failed verification, other steps, a verification again; recover: "
        "another failed step, other steps, the same step again; retry: a failed step run again "
        "at once; repeat: a command run more than once."
    )
    action: str
    target: str
    a: int = Field(description="Times in a.")
    b: int
    a_steps: list[int] = Field(description="Where each starts in a.")
    b_steps: list[int]


class DiffRun(BaseModel):
    id: str
    scope: Literal["trace", "session"]
    project: str
    roots: list[str] = Field(description="Working directories stripped from its targets.")
    steps: int = Field(description="Tool steps.")
    edits: int
    verifications: int
    errors: int = Field(description="Tool steps with outcome error or tests_failed.")
    recoveries: int
    fix_loops: int
    last_verify: str | None = Field(description="Outcome of the last verification.")
    tokens: int = Field(description="Tokens of its model calls.")


class TrajectoryDiff(BaseModel):
    a: DiffRun | None = Field(description="Figures of run a (first page only).")
    b: DiffRun | None = None
    same: bool = Field(description="Same steps with the same outcomes.")
    common_prefix: int = Field(description="Tool steps alike before they part.")
    parted_a: DiffStep | None = Field(
        default=None, description="What a did where they part (first page); None: it had ended."
    )
    parted_b: DiffStep | None = None
    loops: list[DiffLoop] = Field(description="Loops whose count differs (first page).")
    blocks: list[DiffBlock] = Field(description="This page of aligned blocks, in order.")
    partial: bool = Field(description=f"A run has more than {DIFF_MAX_STEPS} steps (first read).")
    truncated: bool = Field(description="True when blocks follow or lists were cut.")
    next_cursor: str | None = Field(default=None, description="Cursor of the next page.")
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)


def _resolve(reader: Reader, key: str, project: str | None, side: str) -> tuple[Scope, str]:
    """Run ``key``'s scope (a trace id first, else a session id) and its project."""
    for scope in ("trace", "session"):
        projects = trajectory_projects(reader, scope, key, project)
        if len(projects) > 1:
            names = ", ".join(repr(p) for p in projects[:10])
            raise ToolFailure(
                f"{side} {key[:ID_CHARS]!r} is a {scope} in several projects ({names}). "
                "Pass project to choose one.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        if projects:
            return scope, projects[0]
    where = f" in project {project!r}" if project is not None else ""
    code = ErrorCode.UNKNOWN_TRACE if _TRACE_ID.fullmatch(key) else ErrorCode.UNKNOWN_SESSION
    raise ToolFailure(
        f"No trace or session {key[:ID_CHARS]!r} ({side}){where}. Call search_traces to list "
        "traces and their session_id.",
        code=code,
    )


def _fingerprint(a: str, b: str, project: str | None) -> str:
    return hashlib.sha256(orjson.dumps(["diff", a, b, project])).hexdigest()[:12]


def _offset(cursor: str | None, fingerprint: str) -> int:
    if not cursor:
        return 0
    key = decode_cursor(cursor, "diff_trajectories", fingerprint)
    if len(key) != 1 or type(key[0]) is not int or key[0] < 0:
        raise ToolFailure(
            "The cursor is damaged. Pass next_cursor unchanged, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return key[0]


class _Shape:
    """How much of each list and text the answer shows; tightened until it fits."""

    def __init__(self) -> None:
        self.target = TARGET_CHARS
        self.block_steps = BLOCK_STEPS
        self.loops = LOOPS_MAX
        self.loop_steps = LOOP_STEPS
        self.roots = ROOTS_MAX
        self.root_chars = ROOT_CHARS
        self.spans = True

    def tighten(self) -> bool:
        """One step tighter, the least telling parts first; False when nothing is left."""
        steps: list[tuple[bool, dict[str, int | bool]]] = [
            (self.loops > 2, {"loops": self.loops // 2}),
            (self.target > 40, {"target": 40}),
            (self.block_steps > 2, {"block_steps": 2}),
            (self.loop_steps > 3, {"loop_steps": 3}),
            (self.root_chars > 40, {"roots": 1, "root_chars": 40}),
            (self.block_steps > 1, {"block_steps": 1, "target": 20}),
            (self.spans, {"spans": False}),
            (self.roots > 0, {"roots": 0}),
            (self.loops > 0, {"loops": 0}),
        ]
        for applies, change in steps:
            if applies:
                for name, value in change.items():
                    setattr(self, name, value)
                return True
        return False

    def step(self, step: Aligned, *, span: bool = False) -> DiffStep:
        return DiffStep(
            n=step.n,
            action=step.action,
            target=one_line(step.target, self.target) or None,
            outcome=step.step.outcome,
            span_id=step.step.span_id if span and self.spans else None,
        )

    def block(self, block: Block) -> DiffBlock:
        shown = block.op != "equal"
        return DiffBlock(
            op=block.op,
            count_a=len(block.a),
            count_b=len(block.b),
            a_range=[block.a[0].n, block.a[-1].n] if block.a else [],
            b_range=[block.b[0].n, block.b[-1].n] if block.b else [],
            a=[self.step(s) for s in block.a[: self.block_steps]] if shown else [],
            b=[self.step(s) for s in block.b[: self.block_steps]] if shown else [],
        )

    def loop(self, loop: LoopDifference) -> DiffLoop:
        return DiffLoop(
            kind=loop.kind,
            action=loop.action,
            target=one_line(loop.target, self.target) or "",
            a=len(loop.a),
            b=len(loop.b),
            a_steps=list(loop.a[: self.loop_steps]),
            b_steps=list(loop.b[: self.loop_steps]),
        )

    def cut(
        self, blocks: Sequence[Block], loops: Sequence[LoopDifference], roots: Sequence[list[str]]
    ) -> bool:
        """Whether this shape leaves something out."""
        return (
            len(loops) > self.loops
            or any(len(r) > self.roots for r in roots)
            or any(max(len(x.a), len(x.b)) > self.loop_steps for x in loops[: self.loops])
            or any(b.op != "equal" and max(len(b.a), len(b.b)) > self.block_steps for b in blocks)
        )

    def run(
        self, key: str, scope: Scope, project: str, roots: list[str], figures: RunSummary
    ) -> DiffRun:
        return DiffRun(
            id=key[:ID_CHARS],
            scope=scope,
            project=project,
            roots=[one_line(r, self.root_chars) or "" for r in roots[: self.roots]],
            steps=figures.steps,
            edits=figures.edits,
            verifications=figures.verifications,
            errors=figures.errors,
            recoveries=figures.recoveries,
            fix_loops=figures.fix_loops,
            last_verify=figures.last_verify,
            tokens=figures.tokens,
        )


def diff_trajectories(
    store: Store,
    *,
    a: RunParam,
    b: RunParam,
    project: ProjectParam = None,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> TrajectoryDiff:
    """Two runs of one task side by side: where they part ways, fix and retry loops one has
    and the other lacks, per-run figures."""
    limit_chars = budget(max_chars, store.settings)
    fingerprint = _fingerprint(a, b, project)
    offset = _offset(cursor, fingerprint)
    runs = []
    with store.reader() as reader:
        for side, key in (("a", a), ("b", b)):
            scope, resolved = _resolve(reader, key, project, side)
            rows = trajectory_steps(reader, resolved, scope, key, limit=DIFF_MAX_STEPS + 1)
            roots = trajectory_roots(reader, resolved, scope, key)
            runs.append((key, scope, resolved, roots, rows))
    partial = any(len(rows) > DIFF_MAX_STEPS for *_, rows in runs)
    steps = [[step_of(row) for row in rows[:DIFF_MAX_STEPS]] for *_, rows in runs]
    found = domain.diff(steps[0], steps[1], runs[0][3], runs[1][3])
    blocks = found.blocks[offset:]
    parted_a, parted_b = found.parting()
    shape = _Shape()

    def build(count: int) -> TrajectoryDiff:
        more = count < len(blocks)
        first = offset == 0  # the figures, where they part and the loops: on the first page
        view = TrajectoryDiff(
            a=shape.run(*runs[0][:4], found.a) if first else None,
            b=shape.run(*runs[1][:4], found.b) if first else None,
            same=found.same,
            common_prefix=found.common_prefix,
            parted_a=shape.step(parted_a, span=True) if first and parted_a else None,
            parted_b=shape.step(parted_b, span=True) if first and parted_b else None,
            loops=[shape.loop(x) for x in found.loops[: shape.loops]] if first else [],
            blocks=[shape.block(x) for x in blocks[:count]],
            partial=partial,
            truncated=more
            or shape.cut(
                blocks[:count], found.loops if first else [], [r[3] for r in runs if first]
            ),
        )
        if more and count:
            view.next_cursor = encode_cursor("diff_trajectories", fingerprint, [offset + count])
            view.next_call = next_call("diff_trajectories")
        return view

    while size(build(min(1, len(blocks)))) > limit_chars and shape.tighten():
        pass
    return build(largest_fit(build, len(blocks), limit_chars))
