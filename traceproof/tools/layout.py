"""What a trace preview shows within its budget, and the text of each line.

A line per span is dense by design (about 80 characters before its previews), so an ordinary
agent trace of 70 spans fits in about 6,000 characters. When the whole tree fits the budget,
it is all shown, with the widest previews that keep it near that density. When it does not,
the tree is opened from the top, node by node, while the lines fit: the critical path first,
then the way to errors, then breadth first; a node left closed is one line with the exact call
that opens it. Costs are counted exactly as the lines cost in JSON.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import BaseModel, Field

from traceproof.tools.common import one_line
from traceproof.tools.tree import RUN_SMALL, Item, Node, Run, items, self_time_us

#: Preview widths (primary, secondary) tried, widest first, until the tree fits its density
#: target. Primary previews say most per character: a tool's arguments, a retriever's query,
#: the top span's input and output; the others (an LLM's answer…) go first.
Widths = tuple[int, int]
PREVIEW_WIDTHS: tuple[Widths, ...] = (
    (80, 80), (60, 60), (48, 40), (40, 32), (40, 24), (40, 16), (40, 0), (32, 0), (24, 0),
    (16, 0), (0, 0),
)  # fmt: skip
#: An error message keeps at least this many characters whatever the preview width.
ERROR_CHARS = 48
NAME_CHARS = 60
#: Characters a preview aims at per line, plus a fixed allowance for the summary.
DENSITY_PER_LINE = 82
DENSITY_FIXED = 300
DENSITY_MIN = 4_000
#: Preview widths when the tree is too large to show whole: tools' arguments only, briefly.
FOLDED_WIDTHS: Widths = (24, 0)


#: Characters of a span's annotation mark (``[correctness=fail]``) on its line.
MARK_CHARS = 60


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
    """The nodes of a view, which of them are drawn, and their lines' text and cost.

    A node is *open* when its children are drawn; otherwise one line stands for everything
    under it. A run of similar siblings whose members are small (a tool call and its HTTP span)
    is always one line; a run of larger members (the steps of an agent loop) is drawn in full,
    or *folded* when the budget needs it: its first and last members and those on the critical
    path stay, one line stands for the rest.
    """

    def __init__(self, order: list[Node], view: list[Node], frame: Frame, max_depth: int | None):
        self.order, self.view, self.frame = order, view, frame
        self.max_depth = max_depth
        self.blocks: dict[int, list[Item]] = {n.index: items(n.children) for n in order}
        self.open: set[int] = {n.index for n in order if n.children and self._may_open(n)}
        self.folds: dict[int, tuple[list[Node], Run, list[Node]]] = {}
        self._texts = _Texts(order)
        run_count = 0
        for node in order:
            for item in self.blocks[node.index]:
                if isinstance(item, Run):
                    item.index, run_count = run_count, run_count + 1
                    item.small = max(m.weight for m in item.members) <= RUN_SMALL

    def _may_open(self, node: Node) -> bool:
        return self.max_depth is None or node.depth < self.max_depth

    # -- choosing ---------------------------------------------------------------------------------

    def fit(self, fixed: int, budget: int, allowance: int = 0) -> Widths:
        """The widest previews with which the whole tree fits its density target (raised by
        ``allowance``: parts of the result that grow with the tree but are not lines); when
        even the narrowest does not fit the budget, the tree opened top-down within it."""
        lines = sum(1 for _ in self._drawn())
        density = DENSITY_FIXED + DENSITY_PER_LINE * lines + allowance
        target = min(budget, max(DENSITY_MIN, density))
        narrowest = PREVIEW_WIDTHS[-1]
        if fixed + self.cost(narrowest) > target:
            if fixed + self.cost(narrowest) > budget:
                self._open_within(budget - fixed, FOLDED_WIDTHS)
                return FOLDED_WIDTHS
            return narrowest
        low, high = 0, len(PREVIEW_WIDTHS) - 1  # the answer is in low..high; high fits
        while low < high:
            middle = (low + high) // 2
            if fixed + self.cost(PREVIEW_WIDTHS[middle]) <= target:
                high = middle
            else:
                low = middle + 1
        return PREVIEW_WIDTHS[high]

    def cost(self, width: Widths) -> int:
        """Characters of the tree lines and collapsed entries as JSON, at ``width``."""
        return sum(self._line_cost(line, depth, width) for line, depth, _ in self._drawn())

    def _open_within(self, room: int, width: Widths) -> None:
        """Open nodes from the top while the lines fit ``room``: the critical path first, then
        the way to errors, then breadth first; a node whose children do not fit stays one line
        (with the call that opens it). The view's top is always open."""
        self.open, self.folds = set(), {}
        total = self.cost(width)
        queue: list[tuple[tuple[int, int, int, int], Node]] = []
        for node in self.view:
            if node.children and self._may_open(node):
                total += self._open_best(node, width, room - total, force=True)
                self._enqueue_children(queue, node)
        while queue:
            _, node = heapq.heappop(queue)
            added = self._open_best(node, width, room - total, force=False)
            if node.index in self.open:
                total += added
                self._enqueue_children(queue, node)

    def _open_best(self, node: Node, width: Widths, room: int, *, force: bool) -> int:
        """Open ``node`` if its children fit ``room``, with big runs drawn in full or, when
        that is too much, folded to use at most half the room (the rest is for going deeper);
        returns the characters added (0 when it stays closed)."""
        full = self._opening_cost(node, width, None)
        if full <= room:
            self.open.add(node.index)
            return full
        longest = max((len(i.members) for i in self._big_runs(node)), default=0)
        for keep_errors in (True, False):
            low, high = 0, longest - 2  # the most leading members kept, 0 when none fits
            while low < high:
                middle = (low + high + 1) // 2
                if self._opening_cost(node, width, (middle, keep_errors)) <= room // 2:
                    low = middle
                else:
                    high = middle - 1
            if low or force:
                fold = (max(low, 1), keep_errors and low > 0)
                self.open.add(node.index)
                for run in self._big_runs(node):
                    head, rest, tail = _split_run(run, *fold)
                    if rest is not None:
                        self.folds[run.index] = (head, rest, tail)
                return self._opening_cost(node, width, fold)
        return 0

    def _big_runs(self, node: Node) -> list[Run]:
        return [i for i in self.blocks[node.index] if isinstance(i, Run) and not i.small]

    def _opening_cost(self, node: Node, width: Widths, fold: tuple[int, bool] | None) -> int:
        depth = node.depth + 1
        cost = -self._line_cost(Collapse(node), depth, width)
        for item in self.blocks[node.index]:
            if isinstance(item, Run) and item.small:
                cost += self._line_cost(item, depth, width)
                continue
            members = item.members if isinstance(item, Run) else [item]
            if fold is not None and isinstance(item, Run):
                head, rest, tail = _split_run(item, *fold)
                if rest is not None:
                    cost += self._line_cost(rest, depth, width)
                    members = [*head, *tail]
            for child in members:
                cost += self._line_cost(child, depth, width)
                if child.children:
                    cost += self._line_cost(Collapse(child), depth + 1, width)
        return cost

    def _enqueue_children(
        self, queue: list[tuple[tuple[int, int, int, int], Node]], node: Node
    ) -> None:
        for line in self._below(node):
            if isinstance(line, Node) and line.children and self._may_open(line):
                tier = 0 if line.critical_below else 1 if line.descendant_errors else 2
                heapq.heappush(queue, ((tier, line.depth, line.start_us, line.index), line))

    # -- drawing ----------------------------------------------------------------------------------

    def _below(self, node: Node) -> list[Line]:
        """The lines right under ``node``."""
        if node.index not in self.open:
            return [Collapse(node)]
        below: list[Line] = []
        for item in self.blocks[node.index]:
            if not isinstance(item, Run) or item.small:
                below.append(item)
            elif item.index in self.folds:
                head, rest, tail = self.folds[item.index]
                below.extend([*head, rest, *tail])
            else:
                below.extend(item.members)
        return below

    def _drawn(self) -> Iterator[tuple[Line, int, str]]:
        """Every drawn line, its depth and its tree prefix, in display order."""
        stack: list[tuple[Line, int, str]] = [(n, 0, "") for n in reversed(self.view)]
        while stack:
            line, depth, prefix = stack.pop()
            yield line, depth, prefix
            if not isinstance(line, Node) or not line.children:
                continue
            below = self._below(line)
            inner = "" if depth == 0 else prefix[:-2] + ("  " if prefix.endswith("└─") else "│ ")
            for position in range(len(below) - 1, -1, -1):
                last = position == len(below) - 1
                stack.append((below[position], depth + 1, inner + ("└─" if last else "├─")))

    def render(self, width: Widths) -> tuple[list[str], list[CollapsedSpans]]:
        """The tree's lines and the collapsed entries, at preview ``width``."""
        lines: list[str] = []
        entries: list[CollapsedSpans] = []
        for line, _depth, prefix in self._drawn():
            lines.append(prefix + self._text(line, width))
            entry = self._entry(line)
            if entry is not None:
                entries.append(entry)
        return lines, entries

    def _line_cost(self, line: Line, depth: int, width: Widths) -> int:
        cost = 2 * depth + _json_len(self._text(line, width)) + 1
        entry = self._entry(line)
        return cost if entry is None else cost + len(entry.model_dump_json()) + 1

    def _node_cost(self, node: Node, width: Widths) -> int:
        return self._line_cost(node, node.depth, width)

    def _text(self, line: Line, width: Widths) -> str:
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

    def _node_text(self, node: Node, width: Widths) -> str:
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
        if span.marks:
            parts.append(f"[{_flat(span.marks, MARK_CHARS)}]")
        parts.append(f"+{duration(span.start_us - frame.start_us)}")
        parts.append(duration(span.end_us - span.start_us))
        if node.children:
            parts.append(f"self {duration(self_time_us(node))}")
        share = 100 * (span.end_us - span.start_us) / max(frame.latency_us, 1)
        if share >= 0.5:
            parts.append(f"{share:.0f}%")
        detail = span.model or (span.tool if span.tool and span.tool != span.name else None)
        if detail:
            parts.append(_flat(detail, 40))
        if span.tokens:
            parts.append(tokens(span.tokens))
        parts.extend(self._texts.previews(node, width))
        return " ".join(parts)

    def _run_text(self, run: Run, width: Widths) -> str:
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
            text += " " + self._texts.error(failed, max(width[0], ERROR_CHARS))
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
        siblings = run.first.parent.children if run.first.parent is not None else []
        if sum(c.span is not None and c.span.name == span.name for c in siblings) > len(
            run.members
        ):
            first, last = _timestamp(run.first.start_us), _timestamp(run.last.start_us)
            where += f" and start_time between '{first}' and '{last}'"
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

    def previews(self, node: Node, width: Widths) -> list[str]:
        parts: list[str] = []
        for label, texts in (("in", self.inputs), ("out", self.outputs)):
            text = texts.get(node.index)
            chars = width[0] if _primary(node, label) else width[1]
            if not text or not chars:
                continue
            parent = node.parent
            same = parent is not None and self._same(parent, texts, text)
            parts.append(f"{label}:^" if same else f"{label}:{_flat(text, chars)}")
        if node.index in self.errors:
            parts.append(self.error(node, max(width[0], ERROR_CHARS)))
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


def _primary(node: Node, label: str) -> bool:
    kind = node.span.kind if node.span is not None else ""
    if node.depth == 0:
        return True
    return label == "in" and kind in ("TOOL", "RETRIEVER")


def _split_run(run: Run, head: int, keep_errors: bool) -> tuple[list[Node], Run | None, list[Node]]:
    """A run folded: its first ``head`` members, the longest of those on the critical path
    (in a run of sequential steps all are), those with errors if ``keep_errors``, and its last
    member stay; one line stands for the rest (None when fewer than two would be folded)."""
    members = run.members
    kept = {id(m) for m in members[:head]} | {id(members[-1])}
    critical = [m for m in members if m.critical or m.critical_below]
    if critical:
        kept.add(id(max(critical, key=lambda m: m.end_us - m.start_us)))
    for member in members:
        if keep_errors and member.errors:
            kept.add(id(member))
    rest = [m for m in members if id(m) not in kept]
    if len(rest) < 2:
        return members, None, []
    shown = [m for m in members if id(m) in kept]
    return shown[:head], Run(rest, index=run.index, small=True), shown[head:]


def _timestamp(us: int) -> str:
    """A SQL timestamp literal for microseconds since the epoch (UTC, as stored)."""
    return (datetime(1970, 1, 1) + timedelta(microseconds=us)).isoformat(sep=" ")


def _flat(text: str, limit: int) -> str:
    return one_line(text, limit) or ""


def _span_id(node: Node) -> str:
    return node.span.span_id if node.span is not None else node.label


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _json_len(text: str) -> int:
    return len(orjson.dumps(text).decode())
