"""A trace as a forest of span nodes, and the facts each line of its preview shows.

:mod:`traceproof.tools.layout` decides what to show within the budget; this module only knows
the shape of a trace: parents and children (orphans grouped under their missing parent, parent
cycles broken), start order with ties broken by span id (so a preview renders the same every
time), the critical path, self times, and runs of similar siblings. Every walk is iterative: a
trace may nest thousands of spans deep.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: Consecutive siblings with the same name and kind shown as one line from this many on.
RUN_MIN = 5
#: A run whose members each stand for at most this many spans is one line from the start.
RUN_SMALL = 3


@dataclass(slots=True)
class SpanFacts:
    """What one preview line needs of a span (loaded with previews already cut in SQL)."""

    span_id: str
    parent_id: str | None
    name: str
    kind: str
    error: bool
    start_us: int
    end_us: int
    model: str | None = None
    tool: str | None = None
    tokens: int | None = None
    input: str | None = None
    output: str | None = None
    error_text: str | None = None
    #: Its annotations as a compact mark (``correctness=fail``), shown as ``[…]``.
    marks: str | None = None


@dataclass(eq=False, slots=True)
class Node:
    """A span of the tree, or a synthetic group (orphans of one missing parent, a cycle)."""

    span: SpanFacts | None
    label: str = ""
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None
    depth: int = 0
    index: int = 0
    critical: bool = False
    #: Spans under this node, errors among them, and whether the critical path runs below it.
    descendants: int = 0
    descendant_errors: int = 0
    critical_below: bool = False
    start_us: int = 0
    end_us: int = 0

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.start_us, self.span.span_id if self.span else self.label)

    @property
    def is_error(self) -> bool:
        return self.span is not None and self.span.error

    @property
    def weight(self) -> int:
        """Spans this node stands for with everything under it."""
        return self.descendants + (self.span is not None)

    @property
    def errors(self) -> int:
        return self.descendant_errors + self.is_error


@dataclass(eq=False)
class Run:
    """Consecutive siblings with the same name and kind, shown as one line."""

    members: list[Node]
    index: int = -1
    #: Small runs are always one line; a run of larger members is drawn in full or folded.
    small: bool = True

    @property
    def first(self) -> Node:
        return self.members[0]

    @property
    def last(self) -> Node:
        return self.members[-1]

    @property
    def hidden(self) -> int:
        return sum(m.weight for m in self.members)

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.members)

    @property
    def critical(self) -> bool:
        return any(m.critical or m.critical_below for m in self.members)


Item = Node | Run


def build_forest(spans: Iterable[SpanFacts]) -> tuple[list[Node], dict[str, Node]]:
    """The trace's top-level nodes (roots, and one group per missing parent) in start order, and
    every span's node by id."""
    nodes = {s.span_id: Node(s, start_us=s.start_us, end_us=s.end_us) for s in spans}
    top: list[Node] = []
    groups: dict[str, Node] = {}
    for node in nodes.values():
        assert node.span is not None
        own, parent_id = node.span.span_id, node.span.parent_id
        parent = nodes.get(parent_id) if parent_id and parent_id != own else None
        if parent is not None:
            _attach(node, parent)
        elif parent_id and parent_id != own:
            if parent_id not in groups:
                groups[parent_id] = Node(None, label=f"(missing parent {parent_id})")
                top.append(groups[parent_id])
            _attach(node, groups[parent_id])
        else:
            top.append(node)
    _break_cycles(nodes, top)
    for node in _walk(top):
        node.children.sort(key=lambda n: n.sort_key)
    for group in [*groups.values(), *(n for n in top if n.span is None)]:
        group.start_us = min(c.start_us for c in group.children)
        group.end_us = max(c.end_us for c in group.children)
    top.sort(key=lambda n: n.sort_key)
    return top, nodes


def _attach(node: Node, parent: Node) -> None:
    node.parent = parent
    parent.children.append(node)


def _break_cycles(nodes: dict[str, Node], top: list[Node]) -> None:
    """Spans whose parent chain loops never reach a root: cut each loop at its earliest span
    and show it under a "(parent cycle)" group."""
    reached = {id(n) for n in _walk(top)}
    if len(reached) >= len(nodes) + sum(n.span is None for n in top):
        return
    group = Node(None, label="(parent cycle)")
    for node in sorted(nodes.values(), key=lambda n: n.sort_key):
        if id(node) in reached:
            continue
        assert node.parent is not None
        node.parent.children.remove(node)
        _attach(node, group)
        reached.update(id(n) for n in _walk([node]))
    top.append(group)


def _walk(top: list[Node]) -> Iterator[Node]:
    """Nodes in preorder (children in their list order)."""
    stack = list(reversed(top))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def prepare(view: list[Node]) -> list[Node]:
    """Number and measure the nodes under ``view`` (the shown top level) in preorder: depth
    from the view, spans and errors below each node. Returns the preorder."""
    order: list[Node] = []
    stack = [(n, 0) for n in reversed(view)]
    while stack:
        node, depth = stack.pop()
        node.depth, node.index = depth, len(order)
        node.critical = node.critical_below = False
        order.append(node)
        stack.extend((c, depth + 1) for c in reversed(node.children))
    for node in reversed(order):
        node.descendants = sum(c.weight for c in node.children)
        node.descendant_errors = sum(c.errors for c in node.children)
    return order


def mark_critical_path(view: list[Node]) -> list[Node]:
    """The critical path: the spans that set the end time, found the standard way. From a
    node's end walk back: the child that ended last before the cursor is on the path (its
    own children are walked the same way, from its end), then the cursor moves to that child's
    start and the next child that ended before it is taken, until none is left. Children are
    clamped to their parent's end (one that outlives its parent counts up to the parent's end;
    one that starts after it is not on the path). Ties: the later start, then the larger id.
    The top-level nodes are walked as the children of the whole view.

    Marks the path (and ``critical_below`` on its ancestors). Returns its spans ordered by
    the time each holds the path itself (its section of the path minus its critical
    children's), longest first, ties in tree order."""
    if not view:
        return []
    end = max(n.end_us for n in view)
    held: dict[int, tuple[Node, int]] = {}
    # A frame: the node walked (None: the view), its children latest-ending first with their
    # clamped ends, and [next child to consider, cursor, start of the node's section].
    stack: list[tuple[Node | None, list[tuple[int, Node]], list[int]]] = [
        (None, _by_end(view, end), [0, end, min(n.start_us for n in view)])
    ]
    while stack:
        owner, children, state = stack[-1]
        position, cursor, floor = state
        while position < len(children) and children[position][0] > cursor:
            position += 1
        if position == len(children):
            stack.pop()
            continue
        clamped, child = children[position]
        state[0], state[1] = position + 1, child.start_us
        start = max(child.start_us, floor)
        child.critical = True
        held[id(child)] = (child, max(0, clamped - start))
        if owner is not None:  # its own ancestors were marked when it was taken
            owner.critical_below = True
            parent, time = held[id(owner)]
            held[id(owner)] = (parent, time - max(0, clamped - start))
        if child.children:
            stack.append((child, _by_end(child.children, clamped), [0, clamped, start]))
    ranked = sorted(held.values(), key=lambda pair: (-pair[1], pair[0].index))
    return [node for node, _ in ranked if node.span is not None]


def _by_end(children: list[Node], limit: int) -> list[tuple[int, Node]]:
    """Children that start by ``limit``, with their ends clamped to it, latest end first."""
    kept = [(min(c.end_us, limit), c) for c in children if c.start_us <= limit]
    kept.sort(key=lambda pair: (pair[0], pair[1].sort_key), reverse=True)
    return kept


def self_time_us(node: Node) -> int:
    """The node's duration minus the union of its children's intervals clipped to it."""
    start, end = node.start_us, node.end_us
    covered, reach = 0, start
    for child in node.children:  # sorted by start
        lo, hi = max(child.start_us, reach), min(child.end_us, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return max(0, end - start - covered)


def items(children: list[Node]) -> list[Item]:
    """Children as shown: runs of RUN_MIN or more consecutive spans with the same name and
    kind become one :class:`Run`."""
    out: list[Item] = []
    i = 0
    while i < len(children):
        j = i + 1
        key = _run_key(children[i])
        while key is not None and j < len(children) and _run_key(children[j]) == key:
            j += 1
        if j - i >= RUN_MIN:
            out.append(Run(children[i:j]))
        else:
            out.extend(children[i:j])
        i = j
    return out


def _run_key(node: Node) -> tuple[str, str] | None:
    return (node.span.name, node.span.kind) if node.span is not None else None


def subtree(node: Node) -> Iterator[Node]:
    """``node`` and everything under it, in preorder."""
    return _walk([node])
