"""What a trace preview shows within its budget, and the text of each line.

A line per span is dense by design (about 80 characters before its previews), so an ordinary
agent trace of 70 spans fits in about 6,000 characters. When the tree is larger than that, the
layout first narrows the input/output previews (down to none), then collapses subtrees into one
line each with the exact call that expands them. Collapsing is greedy over a cost model that
counts exactly what the lines cost as JSON: subtrees with neither errors nor the critical path
go first, then those with errors, then the critical path; within a tier, the smallest subtree
whose collapse is enough, else the largest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, Field

from traceproof.tools.common import one_line
from traceproof.tools.tree import Item, Node, Run, items, self_time_us, subtree

#: Input/output preview widths tried, widest first, until the tree fits its density target.
PREVIEW_WIDTHS = (80, 60, 48, 36, 28, 20, 14, 0)
#: An error message keeps at least this many characters whatever the preview width.
ERROR_CHARS = 48
NAME_CHARS = 60
#: Characters a preview aims at per line, plus a fixed allowance for the summary and legend.
DENSITY_PER_LINE = 78
DENSITY_FIXED = 600
DENSITY_MIN = 4_000

LEGEND = (
    "name KIND [ERROR] span_id +start duration [self:time not in children] %trace latency "
    "[model|tool] [tokens] in:/out: previews (^ same as parent) [err:]. *critical path. "
    "N× run of similar siblings. … hidden spans and the call that shows them."
)


class CollapsedSpans(BaseModel):
    """Spans the preview shows as one line, and the call that shows them."""

    span_id: str = Field(description="The span whose subtree is hidden, or a run's first span.")
    hidden: int = Field(description="Spans hidden.")
    errors: int = Field(description="Error spans among them.")
    call: str = Field(description="The exact call that shows them.")


@dataclass(frozen=True)
class Frame:
    """What lines are relative to, and what calls they give."""

    trace_id: str
    project: str | None
    start_us: int
    latency_us: int


@dataclass(frozen=True)
class Collapse:
    """The one line that stands for everything under ``node``."""

    node: Node


Line = Node | Run | Collapse


class Layout:
    """The nodes of a view, which of them are drawn, and their lines' text and cost."""

    def __init__(self, order: list[Node], view: list[Node], frame: Frame, max_depth: int | None):
        self.order, self.view, self.frame = order, view, frame
        self.blocks: dict[int, list[Item]] = {n.index: items(n.children) for n in order}
        self.hidden = [False] * len(order)
        self.collapsed: set[int] = set()
        self._texts = _Texts(order)
        self._collapse_cost: dict[int, int] = {}
        for node in order:
            if self.hidden[node.index]:
                continue
            for item in self.blocks[node.index]:
                if isinstance(item, Run):
                    for member in item.members:
                        self._hide(member, including_self=True)
            if max_depth is not None and node.depth >= max_depth and node.children:
                self._collapse(node)

    # -- choosing ---------------------------------------------------------------------------------

    def fit(self, fixed: int, budget: int) -> int:
        """Pick the widest preview width that fits the density target, then collapse subtrees
        until the whole fits ``budget``. Returns the width chosen."""
        lines = sum(1 for _ in self._lines())
        target = min(budget, max(DENSITY_MIN, DENSITY_FIXED + DENSITY_PER_LINE * lines))
        for width in PREVIEW_WIDTHS:
            if fixed + self.cost(width) <= target:
                return width
        self._collapse_until(budget - fixed, 0)
        return 0

    def cost(self, width: int) -> int:
        """Characters of the tree lines and collapsed entries as JSON, at ``width``."""
        return sum(self._line_cost(line, depth, width) for line, depth in self._lines())

    def _collapse_until(self, room: int, width: int) -> None:
        block = self._block_costs(width)
        total = sum(self._node_cost(n, width) + block[n.index] for n in self.view)
        excess = total - room
        while excess > 0:
            node = self._choose(block, excess, width)
            if node is None:
                return
            saved = block[node.index] - self._collapsed_cost(node, width)
            self._collapse(node)
            block[node.index] -= saved
            parent = node.parent
            while parent is not None and parent.index < len(self.order):
                if self.order[parent.index] is not parent:
                    break
                block[parent.index] -= saved
                parent = parent.parent
            excess -= saved

    def _choose(self, block: list[int], excess: int, width: int) -> Node | None:
        """The next subtree to collapse: lowest tier first (no errors, no critical path), then
        the smallest whose collapse is enough, else the one that saves most."""
        best: tuple[tuple[int, int, int], Node] | None = None
        for node in self.order:
            if (
                self.hidden[node.index]
                or node.index in self.collapsed
                or not node.children
                or node.depth == 0
            ):
                continue
            saved = block[node.index] - self._collapsed_cost(node, width)
            if saved <= 0:
                continue
            tier = 2 if node.critical_below else 1 if node.descendant_errors else 0
            key = (tier, 0, saved) if saved >= excess else (tier, 1, -saved)
            if best is None or key < best[0]:
                best = (key, node)
        return None if best is None else best[1]

    def _block_costs(self, width: int) -> list[int]:
        """For each node, the cost of every line drawn under it."""
        block = [0] * len(self.order)
        for node in reversed(self.order):
            if self.hidden[node.index] or not node.children:
                continue
            if node.index in self.collapsed:
                block[node.index] = self._collapsed_cost(node, width)
                continue
            for item in self.blocks[node.index]:
                if isinstance(item, Run):
                    block[node.index] += self._line_cost(item, node.depth + 1, width)
                else:
                    block[node.index] += self._node_cost(item, width) + block[item.index]
        return block

    def _collapsed_cost(self, node: Node, width: int) -> int:
        if node.index not in self._collapse_cost:
            line = Collapse(node)
            self._collapse_cost[node.index] = self._line_cost(line, node.depth + 1, width)
        return self._collapse_cost[node.index]

    def _collapse(self, node: Node) -> None:
        self._hide(node, including_self=False)
        self.collapsed.add(node.index)

    def _hide(self, node: Node, *, including_self: bool) -> None:
        for below in subtree(node):
            if below is node and not including_self:
                continue
            self.hidden[below.index] = True
            self.collapsed.discard(below.index)

    # -- drawing ----------------------------------------------------------------------------------

    def _lines(self) -> Iterator[tuple[Line, int]]:
        """Every drawn line and its depth, in display order."""
        for line, depth, _prefix in self._drawn():
            yield line, depth

    def _drawn(self) -> Iterator[tuple[Line, int, str]]:
        stack: list[tuple[Line, int, str]] = [(n, 0, "") for n in reversed(self.view)]
        while stack:
            line, depth, prefix = stack.pop()
            yield line, depth, prefix
            if not isinstance(line, Node) or not line.children:
                continue
            below: list[Line] = (
                [Collapse(line)] if line.index in self.collapsed else [*self.blocks[line.index]]
            )
            inner = "" if depth == 0 else prefix[:-2] + ("  " if prefix.endswith("└─") else "│ ")
            for position in range(len(below) - 1, -1, -1):
                last = position == len(below) - 1
                stack.append((below[position], depth + 1, inner + ("└─" if last else "├─")))

    def render(self, width: int) -> tuple[list[str], list[CollapsedSpans]]:
        """The tree's lines and the collapsed entries, at preview ``width``."""
        lines: list[str] = []
        entries: list[CollapsedSpans] = []
        for line, _depth, prefix in self._drawn():
            lines.append(prefix + self._text(line, width))
            entry = self._entry(line)
            if entry is not None:
                entries.append(entry)
        return lines, entries

    def _line_cost(self, line: Line, depth: int, width: int) -> int:
        cost = 2 * depth + _json_len(self._text(line, width)) + 1
        entry = self._entry(line)
        return cost if entry is None else cost + len(entry.model_dump_json()) + 1

    def _node_cost(self, node: Node, width: int) -> int:
        return self._line_cost(node, node.depth, width)

    def _text(self, line: Line, width: int) -> str:
        if isinstance(line, Collapse):
            return self._collapse_text(line.node)
        if isinstance(line, Run):
            return self._run_text(line, width)
        return self._node_text(line, width)

    def _entry(self, line: Line) -> CollapsedSpans | None:
        if isinstance(line, Collapse):
            node = line.node
            return CollapsedSpans(
                span_id=_span_id(node),
                hidden=node.descendants,
                errors=node.descendant_errors,
                call=self._expand_call(node),
            )
        if isinstance(line, Run):
            return CollapsedSpans(
                span_id=_span_id(line.first),
                hidden=line.hidden,
                errors=line.errors,
                call=self._list_call(line),
            )
        return None

    # -- text -------------------------------------------------------------------------------------

    def _node_text(self, node: Node, width: int) -> str:
        mark = "*" if node.critical else ""
        span = node.span
        if span is None:
            return f"{mark}{node.label}: {node.descendants} spans"
        frame = self.frame
        parts = [mark + (_flat(span.name, NAME_CHARS) or "(unnamed)")]
        parts.append(span.kind)
        if span.error:
            parts.append("ERROR")
        parts.append(span.span_id)
        parts.append(f"+{duration(span.start_us - frame.start_us)}")
        parts.append(duration(span.end_us - span.start_us))
        if node.children:
            parts.append(f"self {duration(self_time_us(node))}")
        if frame.latency_us > 0:
            parts.append(f"{100 * (span.end_us - span.start_us) / frame.latency_us:.0f}%")
        detail = span.model or (span.tool if span.tool and span.tool != span.name else None)
        if detail:
            parts.append(_flat(detail, 40))
        if span.tokens:
            parts.append(tokens(span.tokens))
        parts.extend(self._texts.previews(node, width))
        return " ".join(parts)

    def _run_text(self, run: Run, width: int) -> str:
        span, frame = run.first.span, self.frame
        assert span is not None
        durations = [m.end_us - m.start_us for m in run.members]
        parts = ["*" if run.critical else "", f"{len(run.members)}× ", _flat(span.name, NAME_CHARS)]
        text = "".join(parts) + f" {span.kind}"
        if run.errors:
            text += f" ({run.errors} error{'s' if run.errors != 1 else ''})"
        under = run.hidden - len(run.members)
        if under:
            text += f" (+{under} spans under them)"
        text += (
            f" first {_span_id(run.first)} last {_span_id(run.last)}"
            f" +{duration(run.first.start_us - frame.start_us)}"
            f" total {duration(sum(durations))} avg {duration(sum(durations) // len(durations))}"
        )
        failed = next((m for m in run.members if m.is_error), None)
        if failed is not None:
            text += " " + self._texts.error(failed, max(width, ERROR_CHARS))
        return f"{text} → {self._list_call(run)}"

    def _collapse_text(self, node: Node) -> str:
        mark = "*" if node.critical_below else ""
        errors = node.descendant_errors
        counted = f" ({errors} error{'s' if errors != 1 else ''})" if errors else ""
        return f"{mark}… {node.descendants} spans{counted} → {self._expand_call(node)}"

    def _expand_call(self, node: Node) -> str:
        project = f", project='{self.frame.project}'" if self.frame.project else ""
        span = "" if node.span is None else f", span_id='{node.span.span_id}'"
        return f"get_trace_preview(trace_id='{self.frame.trace_id}'{project}{span})"

    def _list_call(self, run: Run) -> str:
        span = run.first.span
        assert span is not None
        parent = span.parent_id
        project = f"project='{self.frame.project}', " if self.frame.project else ""
        where = f"trace_id='{self.frame.trace_id}' and parent_span_id='{parent}'"
        return f'search_spans({project}name={_quoted(span.name)}, where="{where}")'


class _Texts:
    """Each span's cleaned previews, computed once; "^" where a preview repeats its parent's."""

    def __init__(self, order: list[Node]) -> None:
        self.inputs: dict[int, str] = {}
        self.outputs: dict[int, str] = {}
        self.errors: dict[int, str] = {}
        for node in order:
            span = node.span
            if span is None:
                continue
            if span.input:
                self.inputs[node.index] = _input_preview(span.input, span.kind == "LLM")
            if span.output:
                self.outputs[node.index] = clean(span.output)
            if span.error and span.error_text:
                self.errors[node.index] = clean(span.error_text)
        self._order = order

    def previews(self, node: Node, width: int) -> list[str]:
        parts: list[str] = []
        if width > 0:
            for label, texts in (("in", self.inputs), ("out", self.outputs)):
                text = texts.get(node.index)
                if not text:
                    continue
                parent = node.parent
                same = parent is not None and self._same(parent, texts, text)
                parts.append(f"{label}:^" if same else f"{label}:{_flat(text, width)}")
        if node.index in self.errors:
            parts.append(self.error(node, max(width, ERROR_CHARS)))
        return parts

    def error(self, node: Node, width: int) -> str:
        return f"err:{_flat(self.errors.get(node.index, 'failed'), width)}"

    def _same(self, parent: Node, texts: dict[int, str], text: str) -> bool:
        index = parent.index
        drawn = index < len(self._order) and self._order[index] is parent
        return drawn and texts.get(index) == text


_ESCAPES = re.compile(r"\\[nrt]")
_CONTENT = '"content":'


def clean(text: str) -> str:
    """One line without quotes or backslashes: each of those costs two characters in JSON, and
    a preview is for reading, not parsing."""
    text = _ESCAPES.sub(" ", text).replace('"', "").replace("\\", "")
    return " ".join(text.split())


def _input_preview(text: str, llm: bool) -> str:
    """An LLM's input is read from its end (the SQL loads the tail): the latest message is what
    is new in this call; the system prompt and history repeat across calls."""
    if not llm:
        return clean(text)
    at = text.rfind(_CONTENT)
    if at >= 0:
        return clean(text[at + len(_CONTENT) :]).rstrip("}]) ,") or clean(text)
    return "…" + clean(text)


def duration(us: int) -> str:
    """Compact duration: 0.4ms, 850ms, 1.31s, 12.5s, 3m05s, 2h07m."""
    if us < 1000:
        return "0ms" if us <= 0 else f"{us / 1000:.1f}ms"
    ms = us / 1000
    if ms < 999.5:
        return f"{ms:.0f}ms"
    seconds = ms / 1000
    if seconds < 9.995:
        return f"{seconds:.2f}s"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def tokens(count: int) -> str:
    if count < 1000:
        return f"{count}tok"
    if count < 1_000_000:
        return f"{count / 1000:.1f}ktok"
    return f"{count / 1_000_000:.1f}Mtok"


def _flat(text: str, limit: int) -> str:
    return one_line(text, limit) or ""


def _span_id(node: Node) -> str:
    return node.span.span_id if node.span is not None else node.label


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _json_len(text: str) -> int:
    return len(orjson.dumps(text).decode())
