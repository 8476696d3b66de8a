"""What a judge is shown of a trace, and whether its quotes come from it.

:func:`trace_context` renders span dicts (rows of the ``spans`` table, or anything with those
keys) within a token budget: first the trace's compact tree, drawn by the same machinery as
``get_trace_preview`` (:mod:`traceproof.tools.tree`, :mod:`traceproof.tools.layout`), then the
spans' own texts (input, output, error), each tagged with its span id so the judge can cite it,
shared fairly among the spans until the budget is spent.

:class:`Sources` answers whether a quote the judge gave appears in what it judged (whitespace,
quotes, backslashes and case ignored, as previews clean them; ``…`` marks an elision).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from traceproof.tools.layout import Frame, Layout, clean
from traceproof.tools.tree import SpanFacts, build_forest, mark_critical_path, prepare

__all__ = ["CHARS_PER_TOKEN", "Sources", "span_facts", "trace_context"]

#: Characters per token when a budget in tokens is turned into characters (English text and
#: JSON average about four).
CHARS_PER_TOKEN = 4
#: Span texts shorter than this are not worth a line once the budget is nearly spent.
MIN_TEXT_CHARS = 80
_CALL = re.compile(r" → (?:get_trace_preview|search_spans)\(.*$")
_ELLIPSIS = re.compile(r"\s*(?:…|\.\.\.)\s*")


def _us(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000)
    return int(value)


def span_facts(span: Mapping[str, Any]) -> SpanFacts:
    """One span dict as the facts a preview line needs (``start_us``/``end_us`` or
    ``start_time``/``end_time``; the ``spans`` table's other column names)."""
    status = span.get("status")
    error_text = span.get("error_message") or span.get("status_message") or span.get("error_type")
    return SpanFacts(
        span_id=str(span.get("span_id") or ""),
        parent_id=span.get("parent_span_id") or span.get("parent_id"),
        name=str(span.get("name") or ""),
        kind=str(span.get("span_kind") or span.get("kind") or "UNKNOWN"),
        error=status == "ERROR" or bool(span.get("error")),
        start_us=_us(span.get("start_us", span.get("start_time"))),
        end_us=_us(span.get("end_us", span.get("end_time"))),
        model=span.get("model"),
        tool=span.get("tool_name") or span.get("tool"),
        tokens=span.get("total_tokens") or span.get("tokens"),
        input=_text(span.get("input_value", span.get("input"))),
        output=_text(span.get("output_value", span.get("output"))),
        error_text=_text(error_text),
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def trace_context(spans: Iterable[Mapping[str, Any]], budget_tokens: int) -> str:
    """The trace of ``spans`` as text of at most ``budget_tokens`` (about): its tree, then its
    spans' texts. Empty when there are no spans."""
    facts = [span_facts(span) for span in spans]
    if not facts:
        return ""
    budget = budget_tokens * CHARS_PER_TOKEN
    tree = _tree(facts, budget * 2 // 5)
    lines = ["Trace (one line per span: name KIND span_id +start duration ...):", *tree]
    heading = ["", "Span texts ([span_id] part: text; … where cut):"]
    used = sum(len(line) + 1 for line in [*lines, *heading])
    texts = _span_texts(facts, budget - used)
    if texts:
        lines += [*heading, *texts]
    text = "\n".join(lines)
    return text if len(text) <= budget else text[: budget - 1] + "…"


def _tree(facts: list[SpanFacts], budget: int) -> list[str]:
    top, _nodes = build_forest(facts)
    order = prepare(top)
    mark_critical_path(top)
    start = min(f.start_us for f in facts)
    end = max(f.end_us for f in facts)
    layout = Layout(
        order, top, Frame(trace_id="", project=None, start_us=start, latency_us=end - start), None
    )
    width = layout.fit(0, budget)
    lines, _collapsed = layout.render(width)
    kept: list[str] = []
    used = 0
    for drawn in lines:
        # Calls that open hidden parts are for agents with tools; the judge has none.
        line = _CALL.sub("", drawn)
        if used + len(line) + 1 > budget:
            kept.append(f"… {len(lines) - len(kept)} more lines cut")
            break
        kept.append(line)
        used += len(line) + 1
    return kept


def _span_texts(facts: list[SpanFacts], room: int) -> list[str]:
    parts: list[tuple[str, str, str]] = []
    ordered = sorted(facts, key=lambda f: (not f.error, f.start_us, f.span_id))
    for span in ordered:
        for label, text in (("err", span.error_text), ("in", span.input), ("out", span.output)):
            if text:
                parts.append((span.span_id, label, " ".join(text.split())))
    lines: list[str] = []
    for index, (span_id, label, text) in enumerate(parts):
        head = f"[{span_id}] {label}: "
        # A fair share of what is left, but at least a readable piece: early spans (errors
        # first, then in start order) get text, later ones are cut when the room runs out.
        share = max(room // max(1, len(parts) - index), MIN_TEXT_CHARS + len(head) + 1)
        chars = min(share, room - 40) - len(head) - 1
        if chars < min(MIN_TEXT_CHARS, len(text)):
            if room > 40:
                lines.append(f"… {len(parts) - index} more span texts cut")
            break
        shown = text if len(text) <= chars else text[: chars - 1] + "…"
        lines.append(head + shown)
        room -= len(lines[-1]) + 1
    return lines


def _normal(text: str) -> str:
    return clean(text).casefold()


class Sources:
    """The texts a judgment may quote: each span's, and the target's own (span id None)."""

    def __init__(self, spans: Iterable[Mapping[str, Any]], extra: Iterable[str | None] = ()):
        self.by_span: dict[str, str] = {}
        for span in spans:
            facts = span_facts(span)
            text = " ".join(
                t for t in (facts.name, facts.input, facts.output, facts.error_text) if t
            )
            self.by_span[facts.span_id] = _normal(text)
        self.extra = [_normal(text) for text in extra if text]

    def check(self, quote: str, span_id: str | None) -> str | None:
        """None when ``quote`` is in the cited span (or, uncited, anywhere); else why not:
        ``unsupported`` (nowhere) or ``wrong_span`` (elsewhere than the cited span)."""
        pieces = [_normal(p) for p in _ELLIPSIS.split(quote)]
        pieces = [p for p in pieces if p]
        if not pieces:
            return "unsupported"
        if span_id is not None and span_id in self.by_span and _has(self.by_span[span_id], pieces):
            return None
        if any(_has(text, pieces) for text in self.extra):
            return None  # the target's own input, output or expected text
        if any(_has(text, pieces) for text in self.by_span.values()):
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
