"""What a judge is shown of a trace, and whether its quotes come from it.

:func:`trace_context` renders span dicts (rows of the ``spans`` table, or anything with those
keys) within a token budget: first the trace's tree, one short line per span, built by the same
machinery as ``get_trace_preview`` (:mod:`traceproof.tools.tree`: orphans, cycles, critical
path; the line parts of :mod:`traceproof.tools.layout`), then the spans' own texts (error, input,
output), each tagged with its span id so the judge can cite it, shared among the spans (errors
first) until the budget is spent. The preview's own width fitting is not used: it costs ~20 ms
a trace, four times the judge's whole overhead budget (benchmarks/judge.py), and the texts
section shows what its previews would.

:class:`Sources` answers whether a quote the judge gave appears in what it judged (whitespace,
quotes, backslashes and case ignored, as previews clean them; ``…`` marks an elision).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from traceproof.tools.layout import NAME_CHARS, clean, duration, tokens
from traceproof.tools.tree import Node, SpanFacts, build_forest, mark_critical_path, prepare

__all__ = ["CHARS_PER_TOKEN", "Sources", "span_facts", "trace_context"]

#: Characters per token when a budget in tokens is turned into characters (English text and
#: JSON average about four).
CHARS_PER_TOKEN = 4
#: Span texts shorter than this are not worth a line once the budget is nearly spent.
MIN_TEXT_CHARS = 80
_ELLIPSIS = re.compile(r"\s*(?:…|\.\.\.)\s*")


_MISSING: Any = object()


def _us(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is int:
        return value
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000)
    return int(value)


def span_facts(span: Mapping[str, Any]) -> SpanFacts:
    """One span dict as the facts a preview line needs (``start_us``/``end_us`` or
    ``start_time``/``end_time``; the ``spans`` table's other column names)."""
    get = span.get
    error_text = get("error_message") or get("status_message") or get("error_type")
    start = get("start_us", _MISSING)
    end = get("end_us", _MISSING)
    text_in = get("input_value", _MISSING)
    text_out = get("output_value", _MISSING)
    return SpanFacts(
        span_id=str(get("span_id") or ""),
        parent_id=get("parent_span_id") or get("parent_id"),
        name=str(get("name") or ""),
        kind=str(get("span_kind") or get("kind") or "UNKNOWN"),
        error=get("status") == "ERROR" or bool(get("error")),
        start_us=_us(get("start_time") if start is _MISSING else start),
        end_us=_us(get("end_time") if end is _MISSING else end),
        model=get("model"),
        tool=get("tool_name") or get("tool"),
        tokens=get("total_tokens") or get("tokens"),
        input=_text(get("input") if text_in is _MISSING else text_in),
        output=_text(get("output") if text_out is _MISSING else text_out),
        error_text=_text(error_text),
    )


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return str(value)


def trace_context(spans: Iterable[Mapping[str, Any] | SpanFacts], budget_tokens: int) -> str:
    """The trace of ``spans`` (dicts, or :func:`span_facts` of them) as text of at most
    ``budget_tokens`` (about): its tree, then its spans' texts. Empty when there are none."""
    facts = [s if isinstance(s, SpanFacts) else span_facts(s) for s in spans]
    if not facts:
        return ""
    budget = budget_tokens * CHARS_PER_TOKEN
    tree = _tree(facts, budget * 2 // 5)
    lines = ["Trace (one line per span: name KIND span_id +start duration ...):", *tree]
    heading = ["", "Span texts ([span_id] part: text; … where cut):"]
    used = sum(map(len, lines)) + sum(map(len, heading)) + len(lines) + len(heading)
    texts = _span_texts(facts, budget - used)
    if texts:
        lines += [*heading, *texts]
    text = "\n".join(lines)
    return text if len(text) <= budget else text[: budget - 1] + "…"


def _tree(facts: list[SpanFacts], budget: int) -> list[str]:
    """One line per span in tree order (``*`` on the critical path); when they do not all fit,
    the top, the critical path and the way to errors first, then the shallowest, with one
    ``… N spans hidden`` line for each stretch left out."""
    top, _nodes = build_forest(facts)
    order = prepare(top)
    mark_critical_path(top)
    start = min(f.start_us for f in facts)
    texts = [_line(node, start) for node in order]
    if sum(map(len, texts)) + len(texts) <= budget:
        return texts
    chosen: set[int] = set()
    used = 0
    ranked = sorted(
        order,
        key=lambda n: (
            not (n.depth == 0 or n.critical or n.is_error or n.descendant_errors),
            n.depth,
            n.index,
        ),
    )
    for node in ranked:
        cost = len(texts[node.index]) + 1
        if used + cost > budget - 40:
            break
        chosen.add(node.index)
        used += cost
    lines: list[str] = []
    hidden = 0
    for node in order:
        if node.index in chosen:
            if hidden:
                lines.append(f"{'  ' * node.depth}… {hidden} spans hidden")
                hidden = 0
            lines.append(texts[node.index])
        else:
            hidden += 1
    if hidden:
        lines.append(f"… {hidden} spans hidden")
    return lines


def _line(node: Node, start_us: int) -> str:
    span = node.span
    indent = "  " * node.depth + ("*" if node.critical else "")
    if span is None:
        return f"{indent}{node.label}: {node.descendants} spans"
    name = " ".join(span.name.split())[:NAME_CHARS]
    line = (
        f"{indent}{name or '(unnamed)'} {span.kind}{' ERROR' if span.error else ''} "
        f"{span.span_id} +{duration(span.start_us - start_us)} "
        f"{duration(span.end_us - span.start_us)}"
    )
    detail = span.model or (span.tool if span.tool and span.tool != span.name else None)
    if detail:
        line += " " + detail[:40]
    if span.tokens:
        line += " " + tokens(span.tokens)
    return line


def _text_order(span: SpanFacts) -> tuple[bool, int, str]:
    return (not span.error, span.start_us, span.span_id)


def _span_texts(facts: list[SpanFacts], room: int) -> list[str]:
    """The spans' texts, errors first, then in start order: each a fair share of the room
    left, but at least a readable piece; the rest are cut with one line saying how many."""
    parts: list[tuple[str, str]] = []
    for span in sorted(facts, key=_text_order):
        if span.error_text:
            parts.append((f"[{span.span_id}] err: ", span.error_text))
        if span.input:
            parts.append((f"[{span.span_id}] in: ", span.input))
        if span.output:
            parts.append((f"[{span.span_id}] out: ", span.output))
    lines: list[str] = []
    left = len(parts)
    for head, text in parts:
        size = len(head)
        share = max(room // left, MIN_TEXT_CHARS + size + 1)
        chars = min(share, room - 40) - size - 1
        if chars < min(MIN_TEXT_CHARS, len(text)):
            if room > 40:
                lines.append(f"… {left} more span texts cut")
            break
        flat = " ".join(text[: chars * 2].split())  # a prefix: whitespace collapses
        if len(flat) > chars or len(text) > chars * 2:
            flat = flat[: chars - 1] + "…"
        line = head + flat
        lines.append(line)
        room -= len(line) + 1
        left -= 1
    return lines


def _normal(text: str) -> str:
    return clean(text).casefold()


def _rough(text: str) -> str:
    """``text`` casefolded without quotes and backslashes, whitespace left as it is: cheap (no
    split), and every whitespace-free part of :func:`_normal` of ``text`` is in it (an escape
    that ``clean`` turns into a space leaves its letter here instead, and a word of the
    normal text never spans one)."""
    return text.casefold().replace('"', "").replace("\\", "")


class Sources:
    """The texts a judgment may quote: each span's, and the target's own (span id None)."""

    def __init__(
        self, spans: Iterable[Mapping[str, Any] | SpanFacts], extra: Iterable[str | None] = ()
    ):
        self._raw: dict[str, str] = {}
        for span in spans:
            facts = span if isinstance(span, SpanFacts) else span_facts(span)
            parts = (facts.name, facts.input, facts.output, facts.error_text)
            self._raw[facts.span_id] = " ".join(t for t in parts if t)
        self._extra_raw = [text for text in extra if text]
        self._normal: dict[str, str] = {}
        self._all: list[str] | None = None
        self._all_rough: str | None = None
        self._extra: list[str] | None = None

    def _span(self, span_id: str) -> str | None:
        if span_id not in self._raw:
            return None
        if span_id not in self._normal:
            self._normal[span_id] = _normal(self._raw[span_id])
        return self._normal[span_id]

    def _anywhere(self, pieces: list[str]) -> bool:
        """Whether ``pieces`` are in one span's text. Every word of them must be somewhere in
        the rough text of all spans first; only then are all the spans normalised (in one
        pass, kept apart by a NUL) and searched."""
        if self._all_rough is None:
            self._all_rough = _rough(" ".join(self._raw.values()))
        rough = self._all_rough
        if not all(word in rough for piece in pieces for word in piece.split()):
            return False
        if self._all is None:
            self._all = _normal(" \x00 ".join(self._raw.values())).split("\x00")
        return any(_has(text, pieces) for text in self._all)

    def check(self, quote: str, span_id: str | None) -> str | None:
        """None when ``quote`` is in the cited span (or, uncited, anywhere); else why not:
        ``unsupported`` (nowhere) or ``wrong_span`` (elsewhere than the cited span)."""
        pieces = [_normal(p) for p in _ELLIPSIS.split(quote)]
        pieces = [p for p in pieces if p and "\x00" not in p]
        if not pieces:
            return "unsupported"
        cited = self._span(span_id) if span_id is not None else None
        if cited is not None and _has(cited, pieces):
            return None
        if self._extra is None:
            self._extra = [_normal(text) for text in self._extra_raw]
        if any(_has(text, pieces) for text in self._extra):
            return None  # the target's own input, output or expected text
        if self._anywhere(pieces):
            return None if span_id is None else "wrong_span"
        return "unsupported"


def _has(text: str, pieces: list[str]) -> bool:
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True
