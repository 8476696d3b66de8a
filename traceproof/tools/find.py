"""``find_in_trace``: Ctrl+F over every field of every span of one trace.

The regex (RE2, the engine of every tool: ``search_spans`` and ``search_traces`` run it inside
DuckDB) runs over each span's leaves (see :mod:`traceproof.tools.spandoc`):
columns, attributes, events, links, resource. Every match is reported with its span, field
path, character offset in that field and a snippet; counts per span cover the whole trace, and
the matches are paged with a cursor that resumes after the last match shown.

RE2 matches in time linear in the text, whatever the pattern (``(a|a)*b`` included), so no
pattern can pin a worker; what it cannot do in linear time (backreferences, lookaround) it
refuses, and the call answers ``invalid_regex``. Offsets are character offsets (the ``re2``
module converts from UTF-8 bytes), the ones ``get_span_data`` takes. Two limits bound the
work of one call:

- at most :data:`MAX_MATCHES_PER_FIELD` matches are counted in one field and
  :data:`MAX_MATCHES` in one call;
- at most :data:`MAX_SCAN_CHARS` characters are scanned in one call.

When a limit stops the scan, ``capped`` is true and the totals are lower bounds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import re2  # type: ignore[import-untyped]
from pydantic import BaseModel, Field

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.paging import NEXT_CALL_DESCRIPTION, next_call
from traceproof.tools.spandoc import SELECT_COLUMNS, Leaf, leaves

MAX_MATCHES_PER_FIELD = 1_000
MAX_MATCHES = 10_000
MAX_SCAN_CHARS = 50_000_000
#: Characters of a match shown in its snippet; a longer match is cut with an ellipsis.
MATCH_SHOWN = 200
#: Span counts listed before the list is cut to leave room for matches.
MAX_SPAN_COUNTS = 200


# -- regexes -------------------------------------------------------------------------------------


def compile_regex(pattern: str, ignore_case: bool) -> Any:
    """``pattern`` compiled by RE2 (linear time: no pattern can pin a worker, however long the
    text); one RE2 does not accept raises INVALID_REGEX saying what it does not support."""
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ToolFailure(
            f"The pattern {pattern[:200]!r} is not a valid RE2 regular expression ({reason}). "
            r"Fix it: escape literal characters such as ( [ . * + ? with \; RE2 has no "
            "backreferences (\\1) or lookaround ((?=…), (?!…), (?<=…)).",
            code=ErrorCode.INVALID_REGEX,
        ) from None


def snippet(text: str, start: int, end: int, context: int) -> str:
    """``text`` around ``[start, end)`` with the match marked «like this»."""
    shown = text[start:end]
    if len(shown) > MATCH_SHOWN:
        shown = shown[:MATCH_SHOWN] + "…"
    before = text[max(0, start - context) : start]
    after = text[end : end + context]
    head = "…" if start - context > 0 else ""
    tail = "…" if end + context < len(text) else ""
    return f"{head}{before}«{shown}»{after}{tail}"


def fingerprint(*parts: Any) -> str:
    """A short digest of a call's parameters, kept in its cursors to refuse reuse elsewhere."""
    raw = repr(parts).encode()
    return hashlib.blake2b(raw, digest_size=6).hexdigest()


# -- the tool -------------------------------------------------------------------------------------


class FieldMatch(BaseModel):
    span_id: str = Field(description="Span holding the match.")
    span_name: str = Field(description="That span's name.")
    path: str = Field(
        description="Field path: a column (input_value), attributes.<dotted path>, "
        "events.<i>.attributes.exception.message, resource.…"
    )
    offset: int = Field(description="Character offset of the match in the field's text.")
    snippet: str = Field(description="Text around the match, the match marked «like this».")


class SpanMatchCount(BaseModel):
    span_id: str = Field(description="A span with matches.")
    name: str = Field(description="Its name.")
    matches: int = Field(description="Matches in that span.")


class TraceMatches(BaseModel):
    trace_id: str = Field(description="The trace searched.")
    total_matches: int = Field(description="Matches in the whole trace (all pages).")
    spans_with_matches: int = Field(description="Spans holding at least one match.")
    span_counts: list[SpanMatchCount] = Field(
        description="Matches per span, in trace order (may be cut: see span_counts_omitted)."
    )
    span_counts_omitted: int = Field(
        default=0, description="Spans with matches left out of span_counts."
    )
    matches: list[FieldMatch] = Field(description="This page of matches, in trace order.")
    truncated: bool = Field(description="More matches follow this page.")
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor to read the next page."
    )
    next_call: str | None = Field(default=None, description=NEXT_CALL_DESCRIPTION)
    capped: bool = Field(
        default=False,
        description="A scan limit was reached (too many matches or characters): totals are "
        "lower bounds. Narrow the pattern.",
    )


@dataclass(frozen=True, slots=True)
class _Hit:
    key: tuple[int, str, int, int]  # (span order, span_id, field index, offset)
    span: int
    leaf: Leaf
    start: int
    end: int


def find_in_trace(
    store: Store,
    *,
    trace_id: str,
    pattern: Annotated[str, Field(description="Regex (RE2), e.g. 'timed? ?out'.")],
    ignore_case: bool = False,
    context_chars: Annotated[int, Field(description="Context each side.", ge=0, le=500)] = 80,
    max_matches: Annotated[int, Field(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> TraceMatches:
    """Ctrl+F in one trace: regex over every span field; matches give span, path, offset and
    snippet. Use it to find where a text (error, id, value) appears."""
    limit = budget(max_chars, store.settings)
    regex = compile_regex(pattern, ignore_case)
    digest = fingerprint(trace_id, pattern, ignore_case)
    after: tuple[int, str, int, int] | None = None
    if cursor is not None:
        after = _cursor_key(cursor, digest)

    rows = _trace_rows(store, trace_id)
    hits, capped = _scan(rows, regex)
    counts = _span_counts(rows, hits)
    page_hits = [h for h in hits if after is None or h.key > after][: max_matches + 1]
    more = len(page_hits) > max_matches
    page_hits = page_hits[:max_matches]
    result = TraceMatches(
        trace_id=trace_id,
        total_matches=len(hits),
        spans_with_matches=len(counts),
        span_counts=counts[:MAX_SPAN_COUNTS],
        span_counts_omitted=max(0, len(counts) - MAX_SPAN_COUNTS),
        matches=[_field_match(rows, h, context_chars) for h in page_hits],
        truncated=more,
        capped=capped,
    )
    return _fit(result, page_hits, more, limit, digest)


def _cursor_key(cursor: str, digest: str) -> tuple[int, str, int, int]:
    """The key of the last match shown, from a cursor this call made: anything else (another
    call's cursor, a forged one of the wrong shape) is ``invalid_cursor``."""
    key = decode_cursor(cursor, "find_in_trace", digest)
    shape = (int, str, int, int)
    if len(key) != len(shape) or not all(
        type(value) is kind for value, kind in zip(key, shape, strict=True)
    ):
        raise ToolFailure(
            "The cursor is damaged (its key has the wrong shape). Pass the next_cursor of the "
            "previous find_in_trace call unchanged, or omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return key[0], key[1], key[2], key[3]  # type: ignore[return-value]


def _trace_rows(store: Store, trace_id: str) -> list[dict[str, Any]]:
    with store.reader(timeout=store.settings.sql_timeout_seconds) as reader:
        rows = reader.dicts(
            f"SELECT {SELECT_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_time, span_id",
            [trace_id],
        )
    if not rows:
        raise ToolFailure(
            f"No trace {trace_id!r}. Call search_traces to list recent traces.",
            code=ErrorCode.UNKNOWN_TRACE,
        )
    return rows


def _scan(rows: list[dict[str, Any]], regex: Any) -> tuple[list[_Hit], bool]:
    """Every match in trace order, within the scan limits; and whether a limit was reached."""
    hits: list[_Hit] = []
    scanned = 0
    for index, row in enumerate(rows):
        for field, leaf in enumerate(leaves(row)):
            text = leaf.text
            scanned += len(text)
            if scanned > MAX_SCAN_CHARS:
                return hits, True
            for count, match in enumerate(_nonempty(regex, text)):
                if count >= MAX_MATCHES_PER_FIELD or len(hits) >= MAX_MATCHES:
                    return hits, True
                key = (index, row["span_id"], field, match.start())
                hits.append(_Hit(key, index, leaf, match.start(), match.end()))
    return hits, False


def _nonempty(regex: Any, text: str) -> Iterator[Any]:
    """Matches of ``regex`` in ``text``, skipping empty ones (``a*`` matches everywhere)."""
    return (m for m in regex.finditer(text) if m.end() > m.start())


def _span_counts(rows: list[dict[str, Any]], hits: list[_Hit]) -> list[SpanMatchCount]:
    per_span: dict[int, int] = {}
    for hit in hits:
        per_span[hit.span] = per_span.get(hit.span, 0) + 1
    return [
        SpanMatchCount(span_id=rows[i]["span_id"], name=rows[i]["name"], matches=n)
        for i, n in per_span.items()
    ]


def _field_match(rows: list[dict[str, Any]], hit: _Hit, context: int) -> FieldMatch:
    row = rows[hit.span]
    return FieldMatch(
        span_id=row["span_id"],
        span_name=row["name"],
        path=hit.leaf.path,
        offset=hit.start,
        snippet=snippet(hit.leaf.text, hit.start, hit.end, context),
    )


def _fit(
    result: TraceMatches,
    page_hits: list[_Hit],
    more: bool,
    limit: int,
    digest: str,
) -> TraceMatches:
    """``result`` within ``limit`` characters: span counts cut first (down to 20), then matches
    dropped from the end of the page; the cursor resumes after the last match kept."""
    while True:
        if page_hits and (more or len(result.matches) < len(page_hits)):
            last = page_hits[len(result.matches) - 1].key if result.matches else None
            if last is not None:
                token = encode_cursor("find_in_trace", digest, list(last))
                result.next_cursor = token
                result.next_call = next_call("find_in_trace")
            result.truncated = True
        if size(result) <= limit:
            return result
        if len(result.span_counts) > 20:
            keep = max(20, len(result.span_counts) // 2)
            result.span_counts_omitted += len(result.span_counts) - keep
            result.span_counts = result.span_counts[:keep]
        elif len(result.matches) > 1:
            result.matches = result.matches[:-1]
        elif result.matches and result.matches[0].snippet:
            only = result.matches[0]
            only.snippet = only.snippet[: max(0, len(only.snippet) - (size(result) - limit) - 1)]
        else:
            result.span_counts = []
            result.span_counts_omitted = result.spans_with_matches
            return result
