"""get_span_data and search_spans: values, clipping and continuation, paths, paging, budgets."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traceproof.errors import ErrorCode
from traceproof.ingest.normalize import Event, SpanRows
from traceproof.settings import Settings
from traceproof.storage import Reader, Store
from traceproof.tools.common import ToolFailure, size
from traceproof.tools.spandoc import SELECT_COLUMNS, leaves
from traceproof.tools.spans import get_span_data, search_spans

T0 = datetime(2026, 3, 1, 12, 0, 0)
EPOCH = datetime(1970, 1, 1)


def ns(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def add_spans(store: Store, spans: list[dict[str, Any]], rows: SpanRows | None = None) -> None:
    """Write spans given as keyword dicts for ``SpanRows.add`` (times as ms after T0), through
    ``rows`` (default: today's ingest limits)."""
    rows = rows if rows is not None else SpanRows()
    for given in spans:
        spec = dict(given)
        start = T0 + timedelta(milliseconds=spec.pop("start_ms", 0))
        end = start + timedelta(milliseconds=spec.pop("duration_ms", 10))
        spec.setdefault("project", "p")
        spec.setdefault("trace_id", "trace-1")
        spec.setdefault("parent_span_id", None)
        spec.setdefault("status", "OK")
        spec.setdefault("status_message", None)
        rows.add(start_ns=ns(start), end_ns=ns(end), **spec)
    store.write(rows.table())


def big_text(chars: int, seed: int = 1) -> str:
    """Text with newlines, quotes, backslashes and non-ASCII: JSON escaping makes it longer."""
    rng = random.Random(seed)
    words = ["order", 'say "hi"', "back\\slash", "naïve", "日本", "line\nbreak", "tab\there", "€"]
    out: list[str] = []
    total = 0
    while total < chars:
        word = rng.choice(words)
        out.append(word)
        total += len(word) + 1
    return " ".join(out)[:chars]


def failure(call: Any) -> ToolFailure:
    with pytest.raises(ToolFailure) as info:
        call()
    return info.value


def demo_failed_tool(store: Store) -> dict[str, Any]:
    with store.reader() as reader:
        return reader.dicts(
            "SELECT trace_id, span_id, tool_name, input_value, error_type, error_message "
            "FROM spans "
            "WHERE span_kind = 'TOOL' AND status = 'ERROR' ORDER BY start_time, span_id LIMIT 1"
        )[0]


# -- get_span_data --------------------------------------------------------------------------------


def test_a_failed_tool_call_shows_its_arguments_and_exception_event(demo_store: Store) -> None:
    tool = demo_failed_tool(demo_store)
    data = get_span_data(demo_store, span_id=tool["span_id"])
    assert data.trace_id == tool["trace_id"]
    assert data.fields["span_kind"] == "TOOL"
    assert data.fields["status"] == "ERROR"
    assert data.fields["tool_name"] == tool["tool_name"]
    assert data.fields["input_value"] == tool["input_value"]
    assert data.fields["events.0.name"] == "exception"
    assert data.fields["events.0.attributes.exception.message"] == tool["error_message"]
    assert data.fields["resource.service.name"] == "support-agent"
    assert data.fields["attributes.tool.name"] == tool["tool_name"]
    assert data.clipped == [] and data.omitted_fields == 0
    assert size(data) <= 20_000


def test_path_patterns_select_fields_with_wildcards_and_without_the_attributes_prefix(
    store: Store,
) -> None:
    messages = {
        f"llm.input_messages.{i}.message.{k}": f"{k} {i}"
        for i in range(3)
        for k in ("role", "content")
    }
    add_spans(
        store,
        [
            {
                "span_id": "s1",
                "name": "llm",
                "attributes": {"openinference.span.kind": "LLM", **messages},
                "events": [Event("exception", ns(T0), {"exception.message": "boom"})],
                "resource_json": '{"service": {"name": "svc"}}',
            }
        ],
    )
    contents = get_span_data(store, span_id="s1", paths=["llm.input_messages.*.message.content"])
    assert contents.fields == {
        f"attributes.llm.input_messages.{i}.message.content": f"content {i}" for i in range(3)
    }
    events = get_span_data(store, span_id="s1", paths=["events", "resource.service.name"])
    assert events.fields == {
        "events.0.name": "exception",
        "events.0.timestamp": "2026-03-01T12:00:00.000000000Z",
        "events.0.attributes.exception.message": "boom",
        "resource.service.name": "svc",
    }
    one = get_span_data(store, span_id="s1", paths=["attributes.llm.input_messages.1.*.role"])
    assert one.fields == {"attributes.llm.input_messages.1.message.role": "role 1"}
    columns = get_span_data(store, span_id="s1", paths=["name", "span_kind"])
    assert columns.fields == {"name": "llm", "span_kind": "LLM"}


def test_a_1mb_value_is_clipped_and_read_to_the_end_in_pieces_with_no_gap_or_overlap(
    store: Store,
) -> None:
    value = big_text(1_000_000)
    add_spans(
        store,
        [
            {
                "span_id": "big",
                "name": "llm",
                "attributes": {"openinference.span.kind": "LLM", "input.value": value},
            }
        ],
    )
    whole = get_span_data(store, span_id="big")
    assert size(whole) <= 20_000
    assert whole.fields["name"] == "llm"  # short values whole
    [clip] = whole.clipped
    assert clip.path == "input_value" and clip.offset == 0 and clip.total_chars == 1_000_000
    assert whole.fields["input_value"] == value[: clip.returned_chars]
    assert clip.chars_cut == 1_000_000 - clip.returned_chars > 0
    assert clip.next_call == (
        f"get_span_data(span_id='big', paths=['input_value'], offset={clip.returned_chars})"
    )

    pieces = [whole.fields["input_value"]]
    offset, calls = clip.returned_chars, 0
    while True:
        part = get_span_data(store, span_id="big", paths=["input_value"], offset=offset)
        calls += 1
        assert size(part) <= 20_000
        [note] = part.clipped
        assert note.offset == offset
        assert note.returned_chars == len(part.fields["input_value"]) > 0
        pieces.append(part.fields["input_value"])
        offset += note.returned_chars
        assert note.chars_cut == 1_000_000 - offset
        if note.next_call is None:
            break
        assert note.next_call.endswith(f"paths=['input_value'], offset={offset})")
    assert "".join(pieces) == value
    assert calls < 100  # each piece uses most of the budget


@pytest.mark.parametrize("max_chars", [1_000, 3_000, 20_000, 80_000])
def test_every_response_fits_its_budget(demo_store: Store, max_chars: int) -> None:
    with demo_store.reader() as reader:
        big = reader.scalar("SELECT span_id FROM spans ORDER BY length(input_value) DESC LIMIT 1")
    data = get_span_data(demo_store, span_id=big, max_chars=max_chars)
    assert size(data) <= max_chars
    clipped = {c.path for c in data.clipped}
    assert "input_value" in clipped or data.omitted_fields > 0
    piece = get_span_data(
        demo_store, span_id=big, paths=["input_value"], offset=1234, max_chars=max_chars
    )
    assert size(piece) <= max_chars
    assert piece.clipped[0].returned_chars > max_chars // 2


def test_a_span_with_thousands_of_attributes_leaves_fields_out_and_says_how_to_select_them(
    store: Store,
) -> None:
    attributes = {f"app.field_{i:04d}": f"value number {i}" for i in range(3000)}
    add_spans(store, [{"span_id": "wide", "name": "wide", "attributes": attributes}])
    data = get_span_data(store, span_id="wide", max_chars=5_000)
    assert size(data) <= 5_000
    assert data.omitted_fields > 0
    with store.reader() as reader:
        row = reader.dicts(f"SELECT {SELECT_COLUMNS} FROM spans WHERE span_id = 'wide'")[0]
    every = [leaf.path for leaf in leaves(row)]
    assert len(data.fields) > 50
    assert list(data.fields) + every[len(data.fields) :] == every
    assert data.omitted_fields == len(every) - len(data.fields)
    first_omitted = every[len(data.fields)]
    assert data.next_call == f"get_span_data(span_id='wide', paths=[{first_omitted!r}])"


def test_unknown_and_ambiguous_spans_and_bad_paths_are_errors(store: Store) -> None:
    add_spans(
        store,
        [
            {"span_id": "dup", "name": "a", "trace_id": "t1", "attributes": {"x.y": "1"}},
            {"span_id": "dup", "name": "b", "trace_id": "t2", "attributes": {"x.y": "2"}},
        ],
    )
    assert failure(lambda: get_span_data(store, span_id="nope")).code == ErrorCode.UNKNOWN_SPAN
    assert (
        failure(lambda: get_span_data(store, span_id="dup", trace_id="t9")).code
        == ErrorCode.UNKNOWN_SPAN
    )
    ambiguous = failure(lambda: get_span_data(store, span_id="dup"))
    assert ambiguous.code == ErrorCode.INVALID_ARGUMENT and "trace_id" in ambiguous.message
    assert get_span_data(store, span_id="dup", trace_id="t2").fields["attributes.x.y"] == "2"

    no_path = failure(lambda: get_span_data(store, span_id="dup", trace_id="t1", paths=["x.z"]))
    assert no_path.code == ErrorCode.INVALID_ARGUMENT
    assert "attributes.x.y" in no_path.message
    many = failure(
        lambda: get_span_data(store, span_id="dup", trace_id="t1", paths=["*"], offset=3)
    )
    assert many.code == ErrorCode.INVALID_ARGUMENT
    past = failure(
        lambda: get_span_data(store, span_id="dup", trace_id="t1", paths=["name"], offset=5)
    )
    assert past.code == ErrorCode.INVALID_ARGUMENT


# -- search_spans ---------------------------------------------------------------------------------


def test_which_tools_a_trace_called_with_which_arguments(demo_store: Store) -> None:
    trace_id = demo_failed_tool(demo_store)["trace_id"]
    with demo_store.reader() as reader:
        expected = reader.rows(
            "SELECT span_id, tool_name, input_value FROM spans WHERE trace_id = ? AND "
            "span_kind = 'TOOL' ORDER BY start_time DESC, trace_id DESC, span_id DESC",
            [trace_id],
        )
    found = search_spans(demo_store, trace_id=trace_id, span_kind="TOOL")
    assert [(r.span_id, r.tool_name, r.input_preview) for r in found.spans] == expected
    assert all(r.input_preview and r.input_preview.startswith('{"order_id"') for r in found.spans)
    assert not found.truncated and found.next_cursor is None
    failed = [r for r in found.spans if r.status == "ERROR"]
    assert failed and all(r.error for r in failed)


def test_where_an_error_text_appears_across_traces(demo_store: Store) -> None:
    tool = demo_failed_tool(demo_store)
    text = tool["error_message"]
    found = search_spans(demo_store, pattern=re.escape(text), limit=100)
    by_id = {r.span_id: r for r in found.spans}
    assert tool["span_id"] in by_id
    match = by_id[tool["span_id"]].match
    assert match is not None and match.path == "status_message"
    assert f"«{text}»" in match.snippet
    with demo_store.reader() as reader:
        expected = reader.scalar(
            "SELECT count(*) FROM spans WHERE contains(name, ?) OR contains(input_value, ?) "
            "OR contains(output_value, ?) OR contains(status_message, ?) "
            "OR contains(error_message, ?) OR contains(CAST(attributes AS VARCHAR), ?)",
            [text] * 6,
        )
    assert len(found.spans) == expected


def test_the_pattern_can_ignore_case(demo_store: Store) -> None:
    tool = demo_failed_tool(demo_store)
    upper = re.escape(tool["error_message"].upper())
    assert search_spans(demo_store, pattern=upper).spans == []
    found = search_spans(demo_store, pattern=upper, ignore_case=True, limit=100)
    assert tool["span_id"] in {r.span_id for r in found.spans}


@pytest.mark.parametrize(
    ("order_by", "order_sql"),
    [
        ("newest", "start_time DESC, trace_id DESC, span_id DESC"),
        ("oldest", "start_time, trace_id, span_id"),
        ("latency", "latency_ms DESC, trace_id, span_id"),
    ],
)
def test_paging_reads_every_span_once_in_order(
    demo_store: Store, order_by: str, order_sql: str
) -> None:
    with demo_store.reader() as reader:
        expected = [
            r[0]
            for r in reader.rows(
                f"SELECT span_id FROM spans WHERE span_kind = 'LLM' ORDER BY {order_sql}"
            )
        ]
    seen: list[str] = []
    cursor = None
    while True:
        page = search_spans(demo_store, span_kind="LLM", order_by=order_by, limit=37, cursor=cursor)  # type: ignore[arg-type]
        seen += [r.span_id for r in page.spans]
        assert page.truncated == (page.next_cursor is not None)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected


def test_a_small_budget_shortens_pages_without_losing_rows(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        expected = [
            r[0]
            for r in reader.rows(
                "SELECT span_id FROM spans WHERE status = 'ERROR' AND ("
                "regexp_matches(name, 'Error') OR regexp_matches(input_value, 'Error') OR "
                "regexp_matches(output_value, 'Error') OR regexp_matches(status_message, 'Error') "
                "OR regexp_matches(error_message, 'Error') OR regexp_matches(attributes, 'Error'))"
                "ORDER BY start_time DESC, trace_id DESC, span_id DESC"
            )
        ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = search_spans(
            demo_store, status="ERROR", pattern="Error", limit=100, cursor=cursor, max_chars=1_000
        )
        pages += 1
        assert size(page) <= 1_000
        assert page.spans
        seen += [r.span_id for r in page.spans]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(expected) > 5
    assert seen == expected and pages > 1


def test_search_errors_have_their_codes(demo_store: Store) -> None:
    bad = failure(lambda: search_spans(demo_store, pattern="(unclosed"))
    assert bad.code == ErrorCode.INVALID_REGEX and "missing )" in bad.message
    lookaround = failure(lambda: search_spans(demo_store, pattern="(?=x)"))
    assert lookaround.code == ErrorCode.INVALID_REGEX
    kind = failure(lambda: search_spans(demo_store, span_kind="BOGUS"))
    assert kind.code == ErrorCode.INVALID_ARGUMENT
    page = search_spans(demo_store, limit=1)
    assert page.next_cursor is not None
    other = failure(lambda: search_spans(demo_store, status="OK", cursor=page.next_cursor))
    assert other.code == ErrorCode.INVALID_CURSOR
    garbage = failure(lambda: search_spans(demo_store, cursor="not-a-cursor"))
    assert garbage.code == ErrorCode.INVALID_CURSOR


def test_where_filters_on_attribute_paths(demo_store: Store) -> None:
    found = search_spans(demo_store, where="llm.model_name = 'gpt-4.1'", limit=100)
    assert found.spans and {r.model for r in found.spans} == {"gpt-4.1"}


def big_llm_span(store: Store) -> str:
    with store.reader() as reader:
        return str(
            reader.scalar(
                "SELECT span_id FROM spans ORDER BY length(input_value) DESC NULLS LAST LIMIT 1"
            )
        )


def test_a_message_repeating_the_input_is_said_once_not_paid_twice(demo_store: Store) -> None:
    span_id = big_llm_span(demo_store)
    data = get_span_data(demo_store, span_id=span_id)
    content = "attributes.llm.input_messages.1.message.content"
    # The 400,000-character user message is inside input_value (JSON-escaped): named, not sent.
    assert data.fields[content] == "inside input_value (same text)"
    assert [c.path for c in data.clipped] == ["input_value"]
    assert data.fields["input_value"].startswith('{"model": "gpt-4o-mini"')
    # Asked for by its path alone, the message itself is read.
    alone = get_span_data(demo_store, span_id=span_id, paths=[content], max_chars=2_000)
    assert alone.fields[content].startswith("The standing desk from NW-")


def test_a_window_of_a_long_value_is_one_exact_call(demo_store: Store) -> None:
    span_id = big_llm_span(demo_store)
    with demo_store.reader() as reader:
        text = str(reader.scalar("SELECT input_value FROM spans WHERE span_id = ?", [span_id]))
    window = get_span_data(
        demo_store, span_id=span_id, paths=["input_value"], offset=200_000, length=1_000
    )
    assert window.fields["input_value"] == text[200_000:201_000]
    [clip] = window.clipped
    assert (clip.offset, clip.returned_chars, clip.chars_cut) == (
        200_000,
        1_000,
        len(text) - 201_000,
    )
    assert clip.next_call is not None and "offset=201000" in clip.next_call
    assert "length=1000" in clip.next_call
    # From the start too.
    head = get_span_data(demo_store, span_id=span_id, paths=["input_value"], length=50)
    assert head.fields["input_value"] == text[:50]


def test_rows_leave_out_the_trace_id_the_call_fixed(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        trace_id = str(reader.scalar("SELECT min(trace_id) FROM spans"))
    rows = search_spans(demo_store, trace_id=trace_id).spans
    assert rows and all(row.trace_id is None for row in rows)
    across = search_spans(demo_store, span_kind="TOOL", limit=3).spans
    assert all(row.trace_id for row in across)


def test_latencies_are_rounded_to_a_tenth_of_a_millisecond(store: Store) -> None:
    rows = SpanRows()
    rows.add(
        project="p", trace_id="r" * 32, span_id="s" * 16, parent_span_id=None, name="x",
        start_ns=1_000_000_000_000, end_ns=1_000_000_000_000 + 1_437_699_999,
        status="OK", status_message=None, attributes={},
    )  # fmt: skip
    store.write(rows.table())
    [row] = search_spans(store, trace_id="r" * 32).spans
    assert row.latency_ms == 1437.7


def test_the_snippet_of_a_pattern_only_re2_knows_shows_where_it_matched(store: Store) -> None:
    """The filter (DuckDB) and the snippet stage (Python) use one engine: a Unicode class
    Python re lacks still gives the row its match, not an input preview."""
    add_spans(
        store, [{"span_id": "j", "name": "llm", "attributes": {"input.value": "see 東京 now"}}]
    )
    (row,) = search_spans(store, pattern=r"\p{Han}+").spans
    assert row.match is not None
    assert (row.match.path, row.match.offset) == ("input_value", 4)
    assert "«東京»" in row.match.snippet


@pytest.fixture
def many_spans(tmp_path: Path) -> Iterator[Store]:
    """600 spans over ten minutes (out of time order on disk, with ties), one in three saying
    "refund"; searches read them in windows of about 16 spans."""
    settings = Settings(db=tmp_path / "windows.duckdb", search_window_spans=16)
    with Store.open(settings.db, settings) as opened:
        add_spans(
            opened,
            [
                {
                    "span_id": f"s{i:04d}",
                    "trace_id": f"t{i % 41:03d}",
                    "name": "step",
                    "start_ms": (i * 7919) % 300 * 2000,  # two spans share each instant
                    "attributes": {"input.value": "refund issued" if i % 3 == 0 else "quiet"},
                }
                for i in range(600)
            ],
        )
        yield opened


@pytest.mark.parametrize(
    ("order_by", "order_sql"),
    [
        ("newest", "start_time DESC, trace_id DESC, span_id DESC"),
        ("oldest", "start_time, trace_id, span_id"),
    ],
)
@pytest.mark.parametrize("limit", [1, 7, 100])
def test_a_pattern_search_read_in_time_windows_pages_exactly(
    many_spans: Store, order_by: str, order_sql: str, limit: int
) -> None:
    with many_spans.reader() as reader:
        expected = [
            r[0]
            for r in reader.rows(
                f"SELECT span_id FROM spans WHERE input_value LIKE '%refund%' ORDER BY {order_sql}"
            )
        ]
    seen: list[str] = []
    cursor = None
    while True:
        page = search_spans(
            many_spans,
            pattern="ref+und",
            order_by=order_by,
            limit=limit,
            cursor=cursor,  # type: ignore[arg-type]
        )
        seen += [r.span_id for r in page.spans]
        assert page.truncated == (page.next_cursor is not None)
        assert all(r.match is not None for r in page.spans)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and len(expected) == 200


def test_a_newest_first_pattern_search_stops_reading_once_its_page_is_full(
    many_spans: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on the store's reader (it runs every query unchanged): the page of a common pattern
    is found in the newest spans, and the older ones are never searched."""
    searched: list[tuple[str, list[Any]]] = []
    dicts = Reader.dicts

    def spy(self: Reader, sql: str, params: Any = None, *, untrusted: bool = False) -> Any:
        if "regexp_matches" in sql and "ORDER BY" in sql:
            searched.append((sql, list(params or [])))
        return dicts(self, sql, params, untrusted=untrusted)

    monkeypatch.setattr(Reader, "dicts", spy)
    page = search_spans(many_spans, pattern="refund", limit=5)
    assert len(page.spans) == 5 and page.truncated
    # Every query that ran the regex had a lower bound on start_time: the oldest spans of the
    # store (before the newest window's start) were not read.
    assert searched and all("start_time >= ?" in sql for sql, _ in searched)
    with many_spans.reader() as reader:
        oldest = reader.scalar("SELECT min(start_time) FROM spans")
    lowest = min(p for _, params in searched for p in params if isinstance(p, datetime))
    assert lowest > oldest
