"""``get_span_data``: one span in full, within the response budget.

A span is read as a document of ``(path, value)`` leaves (:mod:`traceproof.tools.spandoc`).
Without ``paths`` every leaf is returned; when they do not all fit, the budget is spread by
water-filling: short values whole, the long ones cut to one common length, each cut value listed
in ``clipped`` with the exact call that reads on from where it stopped. With one path and an
``offset``, the response is that value's characters ``[offset, offset + n)``, ``n`` as large as
the budget allows, so following ``next_call`` reads a 1 MB value to its end with no gap and no
overlap.

``search_spans`` lives in :mod:`traceproof.tools.spansearch` and is re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.evals.annotations import TargetKind
from traceproof.storage import Store
from traceproof.storage.annotations import target_annotations
from traceproof.storage.judges import uncalibrated
from traceproof.tools.common import JsonValue, MaxChars, ToolFailure, budget, size
from traceproof.tools.filters import SPANS_WITH_TRACE
from traceproof.tools.spandoc import SELECT_COLUMNS, Leaf, dumps, leaves, path_matcher, suggest
from traceproof.tools.spansearch import SpanList, search_spans

__all__ = ["ClippedValue", "SpanData", "SpanList", "get_span_data", "search_spans"]

#: When not every field fits, as many are kept as fit with long values cut to this length.
USEFUL_CLIP = 200

#: A text at least this long that an earlier selected field already holds (whole, or inside
#: it JSON-escaped, as an LLM's messages sit inside its input_value) is named, not sent again.
DUPLICATE_MIN_CHARS = 500

#: Digits assumed for numbers in a clip note while the budget is planned (values up to 10^9).
_WIDE = 999_999_999


class ClippedValue(BaseModel):
    path: str = Field(description="Field whose value in `fields` is only a part.")
    total_chars: int = Field(description="Characters of the whole value.")
    offset: int = Field(description="Character offset where the returned part starts.")
    returned_chars: int = Field(description="Characters returned.")
    chars_cut: int = Field(description="Characters after the returned part, not returned.")
    next_call: str | None = Field(
        default=None,
        description="The exact call that reads the value on from where this part ends.",
    )


class SpanData(BaseModel):
    span_id: str = Field(description="The span.")
    trace_id: str = Field(description="Its trace.")
    fields: dict[str, JsonValue] = Field(
        description="Field path → value: columns by name (input_value, status…), "
        "attributes.<dotted path>, events.<i>.…, links.<i>.…, resource.…; empty columns left out."
    )
    clipped: list[ClippedValue] = Field(
        default_factory=list, description="Values in `fields` that are cut, and how to read on."
    )
    omitted_fields: int = Field(
        default=0, description="Fields left out whole for lack of room; select them with paths."
    )
    next_call: str | None = Field(
        default=None, description="A call that reads the omitted fields, when some were left out."
    )


def get_span_data(
    store: Store,
    *,
    span_id: str,
    trace_id: Annotated[str | None, Field(description="If the span id is ambiguous.")] = None,
    paths: Annotated[
        list[str] | None,
        Field(
            description="Path patterns ('*': a segment), e.g. "
            "['llm.input_messages.*.message.content']."
        ),
    ] = None,
    offset: Annotated[int, Field(description="Character one selected value starts at.", ge=0)] = 0,
    length: Annotated[
        int | None,
        Field(description="Characters of it to read (a window).", ge=1),
    ] = None,
    max_chars: MaxChars = None,
) -> SpanData:
    """One span in full: columns, attributes, events, resource. Pick parts with path patterns;
    a clipped value gives the call that reads on."""
    limit = budget(max_chars, store.settings)
    row = _span_row(store, span_id, trace_id)
    items = leaves(row) + _annotation_leaves(store, row["span_id"], row["trace_id"])
    if paths:
        items = _select(items, paths)
    call = _Calls(span_id, trace_id, length)
    ident = _Ident(row["span_id"], row["trace_id"])
    if offset or length is not None:
        leaf = _single(items, paths or [], offset)
        return _piece(ident, leaf, offset, limit if length is None else length, limit, call)
    return _whole(ident, _said_once(items), limit, call)


#: Fields of each annotation a span's document shows, as ``annotations.<i>.<field>`` (and
#: ``uncalibrated: true`` for a verdict of a judge with no passing calibration).
ANNOTATION_FIELDS = ("name", "label", "score", "explanation", "annotator_kind", "annotator")


def _annotation_leaves(store: Store, span_id: str, trace_id: str) -> list[Leaf]:
    """The span's current annotations, after its own fields."""
    with store.reader() as reader:
        found = target_annotations(reader, TargetKind.SPAN, span_id, trace_id)
        flags = uncalibrated(reader, found)
    return [
        Leaf(f"annotations.{i}.{key}", value)
        for i, (row, flag) in enumerate(zip(found, flags, strict=True))
        for key, value in [*((k, row[k]) for k in ANNOTATION_FIELDS), ("uncalibrated", flag)]
        if value is not None and value is not False
    ]


def _said_once(items: list[Leaf]) -> list[Leaf]:
    """Long texts already held by an earlier field, replaced by the name of that field."""
    out: list[Leaf] = []
    held: list[Leaf] = []
    for leaf in items:
        value = leaf.value
        if not isinstance(value, str) or len(value) < DUPLICATE_MIN_CHARS:
            out.append(leaf)
            continue
        same = next((h.path for h in held if h.value == value), None)
        if same is not None:
            out.append(Leaf(leaf.path, f"same as {same}"))
            continue
        escaped = dumps(value)[1:-1]
        inside = next((h.path for h in held if escaped in h.value or value in h.value), None)
        if inside is not None:
            out.append(Leaf(leaf.path, f"inside {inside} (same text)"))
            continue
        held.append(leaf)
        out.append(leaf)
    return out


def _span_row(store: Store, span_id: str, trace_id: str | None) -> dict[str, Any]:
    # The trace's session and user when the span has none, as every filter sees them.
    sql = f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE span_id = ?"
    params = [span_id]
    if trace_id is not None:
        sql += " AND trace_id = ?"
        params.append(trace_id)
    with store.reader(timeout=store.settings.sql_timeout_seconds) as reader:
        rows = reader.dicts(sql + " LIMIT 3", params)
    if not rows:
        where = f" in trace {trace_id!r}" if trace_id is not None else ""
        raise ToolFailure(
            f"No span {span_id!r}{where}. Call get_trace_preview or search_spans to list span ids.",
            code=ErrorCode.UNKNOWN_SPAN,
        )
    if len(rows) > 1:
        traces = ", ".join(repr(r["trace_id"]) for r in rows)
        raise ToolFailure(
            f"Span id {span_id!r} exists in several traces ({traces}). Pass trace_id too.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return rows[0]


def _select(items: list[Leaf], patterns: list[str]) -> list[Leaf]:
    """The leaves matching any pattern; a pattern matching nothing is an error."""
    for pattern in patterns:
        matches = path_matcher([pattern])
        if not any(matches(leaf.path) for leaf in items):
            available = suggest(pattern, [leaf.path for leaf in items])
            raise ToolFailure(
                f"No field of this span matches {pattern!r}. Available paths include: "
                f"{', '.join(available)}. Call get_span_data without paths to see them all.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
    wanted = path_matcher(patterns)
    return [leaf for leaf in items if wanted(leaf.path)]


def _single(items: list[Leaf], patterns: list[str], offset: int) -> Leaf:
    if len(items) > 1:
        exact = [leaf for leaf in items if leaf.path in patterns]
        if len(exact) == 1:
            return exact[0]
    if len(items) != 1:
        shown = ", ".join(leaf.path for leaf in items[:5])
        raise ToolFailure(
            f"offset={offset} reads one value, but the paths select {len(items)} fields "
            f"({shown}…). Pass paths=[one exact path], e.g. paths=['input_value'].",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return items[0]


class _Ident(NamedTuple):
    span_id: str
    trace_id: str


class _Calls:
    """The text of continuation calls for one span."""

    def __init__(self, span_id: str, trace_id: str | None, length: int | None = None) -> None:
        self.head = f"get_span_data(span_id={span_id!r}"
        if trace_id is not None:
            self.head += f", trace_id={trace_id!r}"
        self.length = "" if length is None else f", length={length}"

    def read_on(self, path: str, offset: int) -> str:
        return f"{self.head}, paths=[{path!r}], offset={offset}{self.length})"

    def select(self, path: str) -> str:
        return f"{self.head}, paths=[{path!r}])"


# -- one value from an offset ---------------------------------------------------------------------


def _piece(
    ident: _Ident, leaf: Leaf, offset: int, window: int, limit: int, call: _Calls
) -> SpanData:
    """``leaf``'s text from ``offset``: at most ``window`` characters, as many as fit."""
    text = leaf.text
    if offset > len(text):
        raise ToolFailure(
            f"offset={offset} is past the end of {leaf.path} ({len(text)} characters). Use an "
            f"offset below {len(text)}.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    note = ClippedValue(
        path=leaf.path,
        total_chars=len(text),
        offset=offset,
        returned_chars=_WIDE,
        chars_cut=_WIDE,
        next_call=call.read_on(leaf.path, _WIDE),
    )
    result = SpanData(
        span_id=ident.span_id, trace_id=ident.trace_id, fields={leaf.path: ""}, clipped=[note]
    )
    room = limit - size(result) + 2
    part = _prefix(text, offset, room)[:window]
    while True:
        end = offset + len(part)
        note.returned_chars = len(part)
        note.chars_cut = len(text) - end
        note.next_call = call.read_on(leaf.path, end) if end < len(text) else None
        result.fields[leaf.path] = part
        excess = size(result) - limit
        if excess <= 0:
            return result
        part = part[: max(0, len(part) - excess)]


def _prefix(text: str, start: int, room: int) -> str:
    """The longest run of ``text`` from ``start`` whose JSON string (quotes included) fits in
    ``room`` characters. Removing k characters shortens the JSON by at least k, so one cut by
    the excess always fits."""
    part = text[start : start + max(0, room - 2)]
    while (excess := len(dumps(part)) - room) > 0:
        part = part[: max(0, len(part) - excess)]
    return part


# -- every selected value, the budget spread over them -------------------------------------------


class _Plan:
    """Costs of each leaf in the response, to choose the common length long values are cut to."""

    def __init__(self, base: int, items: list[Leaf], call: _Calls) -> None:
        self.base = base
        self.items = items
        self.key = [len(dumps(leaf.path)) + 2 for leaf in items]
        self.value = [len(dumps(leaf.value)) for leaf in items]
        self.text = [isinstance(leaf.value, str) for leaf in items]
        self.note = [
            size(
                ClippedValue(
                    path=leaf.path,
                    total_chars=_WIDE,
                    offset=0,
                    returned_chars=_WIDE,
                    chars_cut=_WIDE,
                    next_call=call.read_on(leaf.path, _WIDE),
                )
            )
            + 1
            for leaf in items
        ]

    def total(self, count: int, cap: int) -> int:
        """Characters of the first ``count`` leaves with strings cut to ``cap`` JSON chars."""
        out = self.base
        for i in range(count):
            out += self.key[i]
            if self.text[i] and self.value[i] > cap:
                out += cap + self.note[i]
            else:
                out += self.value[i]
        return out

    def best_cap(self, count: int, limit: int) -> int:
        """The largest cap at which the first ``count`` leaves fit ``limit`` (2 if none).

        ``total`` is not monotonic in the cap (cutting a value adds its note), but it is linear
        between two consecutive value lengths, where the set of cut values is fixed: walk those
        intervals from the top and take the first cap that fits."""
        fixed = self.base + sum(self.key[:count])
        texts: list[tuple[int, int]] = []
        for i in range(count):
            if self.text[i]:
                texts.append((self.value[i], self.note[i]))
            else:
                fixed += self.value[i]
        texts.sort()
        lengths = [2] + [v for v, _ in texts]
        whole = fixed + sum(v for v, _ in texts)
        if whole <= limit:
            return max(lengths)
        cut_notes = 0
        kept = whole
        for j in range(len(texts) - 1, -1, -1):  # values j.. are cut, in [lengths[j], v_j)
            value, note = texts[j]
            kept -= value
            cut_notes += note
            cut = len(texts) - j
            cap = min(value - 1, (limit - kept - cut_notes) // cut)
            if cap >= lengths[j]:
                return cap
        return 2


def _whole(ident: _Ident, items: list[Leaf], limit: int, call: _Calls) -> SpanData:
    empty = SpanData(
        span_id=ident.span_id,
        trace_id=ident.trace_id,
        fields={},
        omitted_fields=len(items),
        next_call=call.select(max((leaf.path for leaf in items), key=len, default="")),
    )
    plan = _Plan(size(empty), items, call)
    count = _most_fields(plan, limit, USEFUL_CLIP)
    if count == 0:
        count = _most_fields(plan, limit, 2)
    cap = plan.best_cap(count, limit)
    while True:
        result = _build(ident, items, count, cap, call)
        excess = size(result) - limit
        if excess <= 0:
            return result
        if result.clipped and cap > 2:
            cap = max(2, cap - excess)
        else:
            count -= 1


def _most_fields(plan: _Plan, limit: int, cap: int) -> int:
    """How many leaves fit with long strings cut to ``cap`` JSON characters."""
    low, high = 0, len(plan.items)
    while low < high:
        mid = (low + high + 1) // 2
        if plan.total(mid, cap) <= limit:
            low = mid
        else:
            high = mid - 1
    return low


def _build(ident: _Ident, items: list[Leaf], count: int, cap: int, call: _Calls) -> SpanData:
    fields: dict[str, Any] = {}
    clipped: list[ClippedValue] = []
    for leaf in items[:count]:
        value = leaf.value
        if isinstance(value, str) and len(dumps(value)) > cap:
            part = _prefix(value, 0, cap)
            clipped.append(
                ClippedValue(
                    path=leaf.path,
                    total_chars=len(value),
                    offset=0,
                    returned_chars=len(part),
                    chars_cut=len(value) - len(part),
                    next_call=call.read_on(leaf.path, len(part)),
                )
            )
            value = part
        fields[leaf.path] = value
    omitted = len(items) - count
    return SpanData(
        span_id=ident.span_id,
        trace_id=ident.trace_id,
        fields=fields,
        clipped=clipped,
        omitted_fields=omitted,
        next_call=call.select(items[count].path) if omitted else None,
    )
