"""find_in_trace: matches with field paths and exact offsets, counts, paging, limits, errors."""

from __future__ import annotations

import re

import pytest

from tests.tools.test_spans import add_spans, big_text, demo_failed_tool, failure
from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.tools.common import size
from traceproof.tools.find import MAX_MATCHES_PER_FIELD, find_in_trace
from traceproof.tools.spans import get_span_data


def field_text(store: Store, span_id: str, path: str, start: int, length: int) -> str:
    """Characters [start, start+length) of a field, read back with get_span_data."""
    data = get_span_data(store, span_id=span_id, paths=[path], offset=start, max_chars=2_000)
    return str(data.fields[path])[:length]


def test_where_an_error_text_appears_in_a_trace(demo_store: Store) -> None:
    tool = demo_failed_tool(demo_store)
    text = tool["error_message"]
    found = find_in_trace(demo_store, trace_id=tool["trace_id"], pattern=re.escape(text))
    in_tool = [m for m in found.matches if m.span_id == tool["span_id"]]
    assert [m.path for m in in_tool] == [
        "status_message",
        "error_message",
        "events.0.attributes.exception.message",
        "events.0.attributes.exception.stacktrace",
    ]
    status_offset = len(tool["error_type"]) + 2  # "PermissionError: <message>"
    assert [m.offset for m in in_tool[:3]] == [status_offset, 0, 0]
    assert in_tool[3].offset > 100
    for match in in_tool:
        assert field_text(demo_store, tool["span_id"], match.path, match.offset, len(text)) == text
        assert f"«{text}»" in match.snippet
        assert match.span_name == tool["tool_name"]
    # the error is passed back to the model: the next LLM spans quote it in their input
    assert any(m.path == "attributes.llm.input_messages.3.message.content" for m in found.matches)
    counts = {c.span_id: c.matches for c in found.span_counts}
    assert counts[tool["span_id"]] == 4
    assert sum(counts.values()) == found.total_matches == len(found.matches)
    assert found.spans_with_matches == len(counts)
    assert not found.truncated and found.next_cursor is None and not found.capped


def test_offsets_point_at_the_match_inside_a_1mb_value(store: Store) -> None:
    needle = "refund of order 4471-B"
    value = big_text(500_000, seed=2) + needle + big_text(500_000, seed=3)
    add_spans(
        store,
        [
            {"span_id": "root", "name": "agent", "attributes": {"input.value": "go"}},
            {
                "span_id": "big",
                "parent_span_id": "root",
                "name": "llm",
                "start_ms": 5,
                "attributes": {
                    "input.value": value,
                    "llm.output_messages.0.message.content": needle,
                },
            },
        ],
    )
    found = find_in_trace(store, trace_id="trace-1", pattern=r"refund of order \d+-\w")
    assert [(m.span_id, m.path, m.offset) for m in found.matches] == [
        ("big", "input_value", value.index(needle)),
        ("big", "attributes.llm.output_messages.0.message.content", 0),
    ]
    assert found.matches[0].snippet.startswith("…")
    assert f"«{needle}»" in found.matches[0].snippet
    assert len(found.matches[0].snippet) < 2 * 80 + len(needle) + 10
    assert field_text(store, "big", "input_value", found.matches[0].offset, len(needle)) == needle


def test_the_pattern_can_ignore_case(store: Store) -> None:
    add_spans(store, [{"span_id": "a", "name": "Lookup_Order", "attributes": {}}])
    assert find_in_trace(store, trace_id="trace-1", pattern="lookup").total_matches == 0
    found = find_in_trace(store, trace_id="trace-1", pattern="lookup", ignore_case=True)
    assert [(m.path, m.offset) for m in found.matches] == [("name", 0)]


@pytest.mark.parametrize(("per_page", "max_chars"), [(3, None), (50, 1_000), (500, 2_000)])
def test_paging_reads_every_match_once_in_trace_order(
    demo_store: Store, per_page: int, max_chars: int | None
) -> None:
    trace_id = demo_failed_tool(demo_store)["trace_id"]
    everything = find_in_trace(
        demo_store, trace_id=trace_id, pattern="order", max_matches=500, max_chars=80_000
    )
    assert not everything.truncated and everything.total_matches > 40
    expected = [(m.span_id, m.path, m.offset) for m in everything.matches]
    assert len(set(expected)) == len(expected)
    seen: list[tuple[str, str, int]] = []
    cursor = None
    while True:
        page = find_in_trace(
            demo_store,
            trace_id=trace_id,
            pattern="order",
            max_matches=per_page,
            cursor=cursor,
            max_chars=max_chars,
        )
        assert size(page) <= (max_chars or 20_000)
        assert page.total_matches == everything.total_matches
        assert page.matches
        seen += [(m.span_id, m.path, m.offset) for m in page.matches]
        assert page.truncated == (page.next_cursor is not None)
        if page.next_cursor is None:
            break
        assert page.next_call == "find_in_trace(<same arguments>, cursor=next_cursor)"
        cursor = page.next_cursor
    assert seen == expected


def test_matches_are_capped_per_field_and_say_so(store: Store) -> None:
    add_spans(store, [{"span_id": "x", "name": "x", "attributes": {"input.value": "ab" * 3000}}])
    found = find_in_trace(store, trace_id="trace-1", pattern="b", max_matches=10)
    assert found.capped
    assert found.total_matches == MAX_MATCHES_PER_FIELD
    assert [m.offset for m in found.matches] == [2 * i + 1 for i in range(10)]


def test_empty_matches_are_not_reported(store: Store) -> None:
    add_spans(store, [{"span_id": "x", "name": "xyz", "attributes": {}}])
    found = find_in_trace(store, trace_id="trace-1", pattern="y*")
    assert [(m.path, m.offset, m.snippet) for m in found.matches] == [("name", 1, "x«y»z")]


def test_find_errors_have_their_codes(demo_store: Store) -> None:
    trace_id = demo_failed_tool(demo_store)["trace_id"]
    bad = failure(lambda: find_in_trace(demo_store, trace_id=trace_id, pattern="(unclosed"))
    assert bad.code == ErrorCode.INVALID_REGEX and "missing )" in str(bad)
    # What RE2 cannot match in linear time is refused, saying what is not supported.
    for unsupported, reason in [
        (r"(a)\1", "invalid escape sequence: \\1"),
        (r"error(?=x)", "invalid perl operator: (?="),
        (r"(?<!a)b", "invalid perl operator: (?<!"),
        (r"(a++)*", "bad repetition operator: ++"),
    ]:
        refused = failure(
            lambda p=unsupported: find_in_trace(demo_store, trace_id=trace_id, pattern=p)
        )  # type: ignore[misc]
        assert refused.code == ErrorCode.INVALID_REGEX
        assert reason in str(refused), str(refused)
    # Nested repeats are plain patterns for a linear-time engine.
    for fine in [r"(a+)+$", r"(\w+\s?)*x", r"(?:ab)+", r"(\d{3},)*", r"\w+ \w+"]:
        find_in_trace(demo_store, trace_id=trace_id, pattern=fine)
    missing = failure(lambda: find_in_trace(demo_store, trace_id="nope", pattern="x"))
    assert missing.code == ErrorCode.UNKNOWN_TRACE
    page = find_in_trace(demo_store, trace_id=trace_id, pattern="order", max_matches=1)
    other = failure(
        lambda: find_in_trace(
            demo_store, trace_id=trace_id, pattern="refund", cursor=page.next_cursor
        )
    )
    assert other.code == ErrorCode.INVALID_CURSOR
    garbage = failure(
        lambda: find_in_trace(demo_store, trace_id=trace_id, pattern="x", cursor="zz")
    )
    assert garbage.code == ErrorCode.INVALID_CURSOR


@pytest.mark.parametrize(
    "pattern", [r"(a|a)*b", r"(a|aa)*b", r"(.*a){12}b", r"error(.|\s)*timeout", r"(a+)+b"]
)
def test_backtracking_patterns_run_in_linear_time_over_long_values(
    store: Store, pattern: str
) -> None:
    """Python re takes 2**n steps for (a|a)*b over n a's; RE2 is linear: with 5,000 a's the
    call returns (and finds nothing) instead of pinning the server for ever."""
    text = "a" * 5_000 + " error " + "a" * 5_000
    add_spans(store, [{"span_id": "x", "name": "llm", "attributes": {"input.value": text}}])
    found = find_in_trace(store, trace_id="trace-1", pattern=pattern)
    assert found.total_matches == 0 and not found.capped


def test_offsets_are_characters_in_non_ascii_text_and_read_back_with_get_span_data(
    store: Store,
) -> None:
    value = "héllo wörld — 日本語のテキスト 🙂🙂 then: the needle ☃ and more"
    add_spans(store, [{"span_id": "u", "name": "llm", "attributes": {"input.value": value}}])
    found = find_in_trace(store, trace_id="trace-1", pattern=r"needle ☃")
    (match,) = found.matches
    assert match.offset == value.index("needle ☃")
    assert field_text(store, "u", "input_value", match.offset, len("needle ☃")) == "needle ☃"
    # RE2 classes Python re lacks, and case folding beyond ASCII.
    letters = find_in_trace(store, trace_id="trace-1", pattern=r"\p{Han}+")
    assert [m.offset for m in letters.matches if m.path == "input_value"] == [value.index("日")]
    folded = find_in_trace(store, trace_id="trace-1", pattern="WÖRLD", ignore_case=True)
    assert [m.offset for m in folded.matches if m.path == "input_value"] == [value.index("wörld")]
