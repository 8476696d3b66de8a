"""The trace-level tools: list_projects, search_traces and get_session.

Answers are checked against SQL written by hand over the same store; pages are read to the end
and compared with the full set; every error code the tools raise is provoked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.test_store import S, table
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Reader, Store
from traceproof.tools.common import ToolFailure, encode_cursor, one_line, size
from traceproof.tools.projects import list_projects
from traceproof.tools.traces import TraceList, TraceRow, get_session, search_traces


def sql(store: Store, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.reader() as reader:
        return reader.rows(query, params)


def trace_ids(store: Store, query: str, params: list[Any] | None = None) -> list[str]:
    return [row[0] for row in sql(store, query, params)]


def all_pages(
    store: Store, max_chars: int | None = None, **arguments: Any
) -> tuple[list[TraceRow], list[TraceList]]:
    """Every row of a search, page after page, checking each page's budget."""
    rows: list[TraceRow] = []
    pages: list[TraceList] = []
    cursor = None
    while True:
        page = search_traces(store, cursor=cursor, max_chars=max_chars, **arguments)
        assert size(page) <= (max_chars or store.settings.response_chars)
        pages.append(page)
        rows += page.traces
        if not page.truncated:
            assert page.next_cursor is None
            return rows, pages
        assert page.traces, "a truncated page must show at least one row"
        assert page.next_cursor is not None
        assert page.next_call == "search_traces(<same arguments>, cursor=next_cursor)"
        cursor = page.next_cursor
        assert len(pages) < 500


def failure(call: Callable[[], BaseModel]) -> TraceproofError:
    with pytest.raises(TraceproofError) as info:
        call()
    return info.value


# -- list_projects ---------------------------------------------------------------------------


def test_list_projects_counts_match_sql_over_the_demo(demo_store: Store) -> None:
    result = list_projects(demo_store)
    assert result.total == 1 and not result.truncated
    (demo,) = result.projects
    expected = sql(
        demo_store,
        "SELECT count(DISTINCT trace_id), count(*), count(*) FILTER (WHERE status = 'ERROR'), "
        "count(DISTINCT trace_id) FILTER (WHERE status = 'ERROR'), min(start_time), "
        "max(end_time) FROM spans WHERE project = 'demo'",
    )[0]
    assert (demo.project, demo.traces, demo.spans, demo.errors) == ("demo", 90, 1064, 22)
    assert (demo.error_traces, demo.first_span, demo.last_span) == expected[3:]


def test_list_projects_stays_in_budget_and_counts_every_project(store: Store) -> None:
    spans = [
        S(f"s{i}", None, "root", 0, 10, trace_id=f"t{i}", project=f"project-{i:03d}")
        for i in range(40)
    ]
    store.write(table(spans))
    result = list_projects(store, max_chars=1000)
    assert size(result) <= 1000
    assert result.total == 40 and result.truncated
    shown = [p.project for p in result.projects]
    assert shown == [f"project-{i:03d}" for i in range(len(shown))] and shown
    assert f"OFFSET {len(shown)}" in (result.next_call or "")
    assert len(list_projects(store).projects) == 40


# -- search_traces: values and order ------------------------------------------------------------


def test_newest_first_by_default_with_values_from_the_traces_view(demo_store: Store) -> None:
    page = search_traces(demo_store, project="demo", limit=5)
    assert page.total == 90 and page.truncated
    expected = sql(
        demo_store,
        "SELECT trace_id, name, start_time, latency_ms, span_count, error_count, total_tokens, "
        "session_id, input_preview FROM traces ORDER BY start_time DESC, trace_id DESC LIMIT 5",
    )
    got = [
        (
            r.trace_id,
            r.name,
            r.start_time,
            r.latency_ms,
            r.span_count,
            r.error_count,
            r.total_tokens,
            r.session_id,
        )
        for r in page.traces
    ]
    assert got == [row[:8] for row in expected]
    first = page.traces[0]
    assert first.input == one_line(expected[0][8], 100) and first.input
    assert all(r.input is None or len(r.input) <= 100 for r in page.traces)
    assert all(r.output is None or len(r.output) <= 100 for r in page.traces)


@pytest.mark.parametrize(
    ("order_by", "order_sql"),
    [
        ("newest", "start_time DESC, trace_id DESC"),
        ("oldest", "start_time ASC, trace_id ASC"),
        ("latency", "latency_ms DESC, trace_id DESC"),
        ("tokens", "total_tokens DESC, trace_id DESC"),
        ("errors", "error_count DESC, start_time DESC, trace_id DESC"),
    ],
)
def test_every_order_pages_to_the_end_in_sqls_order_without_gaps_or_duplicates(
    demo_store: Store, order_by: str, order_sql: str
) -> None:
    rows, pages = all_pages(demo_store, order_by=order_by, limit=7)
    expected = trace_ids(demo_store, f"SELECT trace_id FROM traces ORDER BY {order_sql}")
    assert [r.trace_id for r in rows] == expected
    assert len(pages) == 13 and all(p.total == 90 for p in pages)


def test_ordering_by_latency_really_descends(demo_store: Store) -> None:
    rows, _ = all_pages(demo_store, order_by="latency", limit=100)
    latencies = [r.latency_ms for r in rows]
    assert latencies == sorted(latencies, reverse=True)
    assert latencies[0] == sql(demo_store, "SELECT max(latency_ms) FROM traces")[0][0]
    assert latencies[0] > latencies[-1]


# -- search_traces: filters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "condition"),
    [
        ({"status": "ERROR"}, "error_count > 0"),
        ({"status": "OK"}, "error_count = 0"),
        ({"min_latency_ms": 8000}, "latency_ms >= 8000"),
        ({"session_id": "sess-0005"}, "session_id = 'sess-0005'"),
        ({"user_id": "user-041"}, "user_id = 'user-041'"),
        ({"name": "support_agent"}, "name = 'support_agent'"),
        ({"since": "2026-11-01T12:00:00Z"}, "start_time >= TIMESTAMP '2026-11-01 12:00:00'"),
        ({"until": "2026-11-01T10:00:00"}, "start_time < TIMESTAMP '2026-11-01 10:00:00'"),
        ({"since": "100000d"}, "TRUE"),
    ],
)
def test_trace_filters_select_what_sql_selects(
    demo_store: Store, arguments: dict[str, Any], condition: str
) -> None:
    rows, pages = all_pages(demo_store, limit=100, **arguments)
    expected = trace_ids(demo_store, f"SELECT trace_id FROM traces WHERE {condition}")
    assert sorted(r.trace_id for r in rows) == sorted(expected)
    assert pages[0].total == len(expected)
    assert 0 < len(expected) <= 90


def test_status_filters_split_the_traces(demo_store: Store) -> None:
    errors = search_traces(demo_store, status="ERROR", limit=100)
    ok = search_traces(demo_store, status="OK", limit=100)
    assert errors.total == 20 and ok.total == 70
    assert all(r.error_count > 0 for r in errors.traces)
    assert all(r.error_count == 0 for r in ok.traces)


@pytest.mark.parametrize(
    ("where", "span_condition"),
    [
        (
            "metadata.intent = 'refund'",
            "json_extract_string(attributes, '$.metadata.intent') = 'refund'",
        ),
        ("latency_ms > 1200 and model = 'gpt-4.1'", "latency_ms > 1200 and model = 'gpt-4.1'"),
        (
            "llm.token_count.prompt > 5000",
            "TRY_CAST(json_extract_string(attributes, '$.llm.token_count.prompt') AS DOUBLE)"
            " > 5000",
        ),
    ],
)
def test_where_matches_traces_with_any_matching_span(
    demo_store: Store, where: str, span_condition: str
) -> None:
    rows, _ = all_pages(demo_store, where=where, limit=100)
    expected = trace_ids(demo_store, f"SELECT DISTINCT trace_id FROM spans WHERE {span_condition}")
    assert sorted(r.trace_id for r in rows) == sorted(expected)
    assert 0 < len(expected) < 90


def test_span_kind_keeps_traces_that_have_a_span_of_that_kind(demo_store: Store) -> None:
    rows, _ = all_pages(demo_store, span_kind="retriever", status="ERROR", limit=100)
    expected = trace_ids(
        demo_store,
        "SELECT DISTINCT trace_id FROM spans WHERE span_kind = 'RETRIEVER' AND trace_id IN "
        "(SELECT trace_id FROM traces WHERE error_count > 0)",
    )
    assert sorted(r.trace_id for r in rows) == sorted(expected)
    assert 0 < len(expected) < 90
    assert failure(lambda: search_traces(demo_store, span_kind="NOPE")).code is (
        ErrorCode.INVALID_ARGUMENT
    )


def test_regex_finds_exactly_the_traces_containing_a_known_string(demo_store: Store) -> None:
    # The two turns the demo agent gives up on end with an AgentExecutionError.
    found = search_traces(demo_store, regex=r"AgentExecutionError: giving up")
    assert found.total == 2
    expected = trace_ids(
        demo_store,
        "SELECT DISTINCT trace_id FROM spans WHERE error_type = 'AgentExecutionError'",
    )
    assert sorted(r.trace_id for r in found.traces) == sorted(expected)
    assert all(r.error_count >= 1 for r in found.traces)


def test_regex_reads_inputs_attributes_and_honours_ignore_case(demo_store: Store) -> None:
    # "charged twice" is only in the 400,000-character input of one LLM span.
    (big,) = trace_ids(demo_store, "SELECT trace_id FROM spans WHERE length(input_value) > 300000")
    assert [r.trace_id for r in search_traces(demo_store, regex="charged twice").traces] == [big]
    # A help-center document id lives only in the RETRIEVER spans' attributes.
    expected = trace_ids(
        demo_store,
        "SELECT DISTINCT trace_id FROM spans WHERE CAST(attributes AS VARCHAR) LIKE '%kb-106%'",
    )
    rows, _ = all_pages(demo_store, regex=r"kb-10[6]", limit=100)
    assert sorted(r.trace_id for r in rows) == sorted(expected) and expected
    assert search_traces(demo_store, regex="CHARGED TWICE").total == 0
    assert search_traces(demo_store, regex="CHARGED TWICE", ignore_case=True).total == 1


def test_filters_combine(demo_store: Store) -> None:
    rows, _ = all_pages(
        demo_store, status="ERROR", where="tool_name = 'get_shipping_status'", limit=100
    )
    expected = trace_ids(
        demo_store,
        "SELECT DISTINCT s.trace_id FROM spans s JOIN traces t USING (project, trace_id) "
        "WHERE s.tool_name = 'get_shipping_status' AND t.error_count > 0",
    )
    assert sorted(r.trace_id for r in rows) == sorted(expected) and expected


def test_which_sessions_had_failing_tool_calls_is_one_call(demo_store: Store) -> None:
    """The issue's "done when" question, answered by one search_traces call."""
    answer = search_traces(
        demo_store, where="span_kind = 'TOOL' and status = 'ERROR'", limit=100, max_chars=20000
    )
    assert not answer.truncated and size(answer) <= 20000
    sessions = {r.session_id for r in answer.traces}
    expected = {
        row[0]
        for row in sql(
            demo_store,
            "SELECT DISTINCT session_id FROM spans WHERE span_kind = 'TOOL' AND status = 'ERROR'",
        )
    }
    assert sessions == expected and len(expected) == 16


# -- search_traces: paging and budget ---------------------------------------------------------


def test_a_tiny_budget_still_pages_through_everything(demo_store: Store) -> None:
    rows, pages = all_pages(demo_store, max_chars=1000, where="status = 'ERROR'", limit=100)
    expected = trace_ids(
        demo_store,
        "SELECT trace_id FROM traces WHERE error_count > 0 ORDER BY start_time DESC, trace_id DESC",
    )
    assert [r.trace_id for r in rows] == expected
    assert len(pages) > 1 and all(len(p.traces) >= 1 for p in pages)


def test_a_page_too_big_for_the_budget_is_shortened_and_continues(demo_store: Store) -> None:
    page = search_traces(demo_store, limit=100, max_chars=5000)
    assert size(page) <= 5000 and page.truncated
    assert 1 < len(page.traces) < 90
    rest = search_traces(demo_store, limit=100, max_chars=5000, cursor=page.next_cursor)
    newest = trace_ids(
        demo_store, "SELECT trace_id FROM traces ORDER BY start_time DESC, trace_id DESC"
    )
    shown = [r.trace_id for r in page.traces + rest.traces]
    assert shown == newest[: len(shown)]


def test_default_budget_holds_a_full_page(demo_store: Store) -> None:
    page = search_traces(demo_store, limit=100)
    assert size(page) <= demo_store.settings.response_chars
    assert page.total == 90


def test_ties_on_the_order_key_are_broken_by_trace_id(store: Store) -> None:
    store.write(table([S("r", None, "same", 0, 100, trace_id=f"t{i}") for i in range(9)]))
    rows, pages = all_pages(store, limit=2, order_by="latency")
    assert [r.trace_id for r in rows] == [f"t{i}" for i in reversed(range(9))]
    assert len(pages) == 5


def test_paging_neither_skips_nor_repeats_while_new_traces_arrive(store: Store) -> None:
    store.write(table([S("r", None, "old", i * 10, i * 10 + 5, trace_id=f"old{i:02d}")
                       for i in range(10)]))  # fmt: skip
    first = search_traces(store, limit=4)
    # Newer traces arrive between pages: newest-first pages carry on where they stopped.
    store.write(table([S("r", None, "new", 1000 + i, 1001 + i, trace_id=f"new{i}")
                       for i in range(5)]))  # fmt: skip
    rows = list(first.traces)
    cursor = first.next_cursor
    while cursor:
        page = search_traces(store, limit=4, cursor=cursor)
        rows += page.traces
        cursor = page.next_cursor
    assert [r.trace_id for r in rows] == [f"old{i:02d}" for i in reversed(range(10))]
    assert search_traces(store).total == 15


def test_a_trace_without_its_root_is_named_by_its_earliest_span(store: Store) -> None:
    store.write(table([S("c", "missing", "child", 0, 10, trace_id="orphan", input="x")]))
    (row,) = search_traces(store).traces
    assert (row.name, row.input, row.span_count) == ("child", None, 1)


# -- search_traces: errors --------------------------------------------------------------------


def test_unknown_project_lists_the_known_ones(demo_store: Store) -> None:
    error = failure(lambda: search_traces(demo_store, project="dmeo"))
    assert error.code is ErrorCode.UNKNOWN_PROJECT
    assert "'demo'" in error.message and "list_projects" in error.message


def test_a_bad_regex_is_invalid_regex(demo_store: Store) -> None:
    error = failure(lambda: search_traces(demo_store, regex="order (NW-"))
    assert error.code is ErrorCode.INVALID_REGEX
    assert "missing )" in error.message
    lookahead = failure(lambda: search_traces(demo_store, regex="a(?=b)"))
    assert lookahead.code is ErrorCode.INVALID_REGEX


@pytest.mark.parametrize(
    "where", ["no_such_column > 1", "latency_ms >", "llm..bad = 1", "1=1; DROP TABLE spans"]
)
def test_a_bad_where_is_invalid_filter(demo_store: Store, where: str) -> None:
    error = failure(lambda: search_traces(demo_store, where=where))
    assert error.code is ErrorCode.INVALID_FILTER


def test_a_where_cannot_reach_outside_the_spans(demo_store: Store) -> None:
    error = failure(
        lambda: search_traces(
            demo_store, where="trace_id IN (SELECT * FROM read_csv('/etc/passwd'))"
        )
    )
    assert error.code is ErrorCode.FORBIDDEN_QUERY


def test_a_bad_since_is_invalid_argument(demo_store: Store) -> None:
    error = failure(lambda: search_traces(demo_store, since="last tuesday"))
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert "2h" in error.message
    assert failure(lambda: search_traces(demo_store, until="soon")).code is (
        ErrorCode.INVALID_ARGUMENT
    )
    bad_order = failure(lambda: search_traces(demo_store, order_by="random"))  # type: ignore[arg-type]
    assert bad_order.code is ErrorCode.INVALID_ARGUMENT


def test_cursors_are_checked(demo_store: Store) -> None:
    page = search_traces(demo_store, status="ERROR", limit=2)
    assert page.next_cursor
    for bad in (
        "not-a-cursor",
        encode_cursor("get_session", "x", []),
        encode_cursor("search_traces", "x", [1, "a", "b"]),
    ):
        with pytest.raises(ToolFailure) as info:
            search_traces(demo_store, cursor=bad)
        assert info.value.code is ErrorCode.INVALID_CURSOR
    # A cursor continues only the query it came from.
    other = failure(lambda: search_traces(demo_store, status="OK", cursor=page.next_cursor))
    assert other.code is ErrorCode.INVALID_CURSOR
    again = search_traces(demo_store, status="ERROR", limit=2, cursor=page.next_cursor)
    assert again.traces[0].trace_id not in {r.trace_id for r in page.traces}


# -- get_session ------------------------------------------------------------------------------


def test_a_session_reads_as_turns_in_time_order(demo_store: Store) -> None:
    view = get_session(demo_store, session_id="sess-0005")
    expected = sql(
        demo_store,
        "SELECT trace_count, span_count, error_count, total_tokens, start_time, end_time, "
        "user_id FROM sessions WHERE session_id = 'sess-0005'",
    )[0]
    assert (
        view.turn_count,
        view.span_count,
        view.error_count,
        view.total_tokens,
        view.start_time,
        view.end_time,
        view.user_id,
    ) == expected
    turns = trace_ids(
        demo_store,
        "SELECT trace_id FROM traces WHERE session_id = 'sess-0005' ORDER BY start_time",
    )
    assert [t.trace_id for t in view.turns] == turns
    assert [t.turn for t in view.turns] == list(range(1, len(turns) + 1))
    assert not view.truncated and view.next_cursor is None
    assert view.project == "demo" and view.error_turns == 1


def test_a_failed_turn_shows_its_first_error(demo_store: Store) -> None:
    view = get_session(demo_store, session_id="sess-0005")
    (failed,) = [t for t in view.turns if t.error_count]
    assert failed.error == "lookup_order: OrderNotFound: no order NW-690518 found for user-041"
    assert (
        failed.error_span_id
        == sql(
            demo_store,
            "SELECT span_id FROM spans WHERE trace_id = ? AND status = 'ERROR'",
            [failed.trace_id],
        )[0][0]
    )
    assert all(t.error is None for t in view.turns if not t.error_count)


def test_an_abandoned_turn_names_the_tool_error_before_the_agents(demo_store: Store) -> None:
    (trace_id,) = trace_ids(
        demo_store,
        "SELECT trace_id FROM spans WHERE error_type = 'AgentExecutionError' ORDER BY "
        "start_time LIMIT 1",
    )
    (session,) = trace_ids(
        demo_store, "SELECT session_id FROM traces WHERE trace_id = ?", [trace_id]
    )
    view = get_session(demo_store, session_id=session, project="demo")
    (turn,) = [t for t in view.turns if t.trace_id == trace_id]
    assert turn.error is not None and "AgentExecutionError" not in turn.error
    assert turn.output and turn.output.startswith("Sorry, something went wrong")


def test_session_previews_are_longer_than_search_rows(demo_store: Store) -> None:
    long_question = trace_ids(
        demo_store,
        "SELECT session_id FROM traces WHERE length(output_preview) > 150 LIMIT 1",
    )[0]
    view = get_session(demo_store, session_id=long_question)
    assert max(len(t.output or "") for t in view.turns) > 150
    assert all(len(t.input or "") <= 300 and len(t.output or "") <= 300 for t in view.turns)


def test_a_session_pages_within_a_small_budget(demo_store: Store) -> None:
    session = trace_ids(
        demo_store, "SELECT session_id FROM sessions ORDER BY trace_count DESC, session_id"
    )[0]
    expected = trace_ids(
        demo_store,
        "SELECT trace_id FROM traces WHERE session_id = ? ORDER BY start_time, trace_id",
        [session],
    )
    turns = []
    cursor = None
    while True:
        view = get_session(demo_store, session_id=session, cursor=cursor, max_chars=1200)
        assert size(view) <= 1200 and view.turns
        turns += view.turns
        if not view.truncated:
            break
        cursor = view.next_cursor
        assert cursor and view.next_call == "get_session(<same arguments>, cursor=next_cursor)"
    assert [t.trace_id for t in turns] == expected
    assert [t.turn for t in turns] == list(range(1, len(expected) + 1))


def test_unknown_session_says_how_to_list_sessions(demo_store: Store) -> None:
    error = failure(lambda: get_session(demo_store, session_id="sess-9999"))
    assert error.code is ErrorCode.UNKNOWN_SESSION
    assert "search_traces" in error.message and "sessions view" in error.message
    other_project = failure(lambda: get_session(demo_store, session_id="sess-0005", project="x"))
    assert other_project.code is ErrorCode.UNKNOWN_PROJECT


def test_session_cursors_are_checked(demo_store: Store) -> None:
    view = get_session(demo_store, session_id="sess-0004", max_chars=1000)
    assert view.next_cursor
    moved = failure(
        lambda: get_session(demo_store, session_id="sess-0005", cursor=view.next_cursor)
    )
    assert moved.code is ErrorCode.INVALID_CURSOR
    garbage = failure(lambda: get_session(demo_store, session_id="sess-0004", cursor="zz"))
    assert garbage.code is ErrorCode.INVALID_CURSOR


def test_a_session_id_shared_by_two_projects_needs_a_project(store: Store) -> None:
    store.write(
        table(
            [
                S("a", None, "turn", 0, 10, session="s1", trace_id="ta", project="p1"),
                S("b", None, "turn", 0, 10, session="s1", trace_id="tb", project="p2"),
            ]
        )
    )
    error = failure(lambda: get_session(store, session_id="s1"))
    assert error.code is ErrorCode.INVALID_ARGUMENT and "'p1'" in error.message
    view = get_session(store, session_id="s1", project="p2")
    assert [t.trace_id for t in view.turns] == ["tb"] and view.turn_count == 1


# -- newest-first regex searches read the store in time windows ---------------------------------


@pytest.fixture
def windowed(tmp_path: Path) -> Iterator[Store]:
    """123 traces written out of time order, three spans each; in one trace of three only a
    late child (up to 80 s after the trace starts, many windows newer) says "refund"; searches
    read the spans in windows of about 16. Trace "dup" exists in two projects at one instant."""
    settings = Settings(db=tmp_path / "windows.duckdb", search_window_spans=16)
    spans: list[S] = []
    for i in range(120):
        start, trace, project = (i * 37) % 120 * 1000, f"t{i:03d}", "q" if i % 7 == 0 else "p"
        late = start + 20_000 * (i % 5)
        spans += [
            S(f"{trace}-r", None, "root", start, late + 10, trace_id=trace, project=project,
              input="refund please" if i % 4 == 1 else "hello"),
            S(f"{trace}-a", f"{trace}-r", "a", start + 500, start + 600, trace_id=trace,
              project=project),
            S(f"{trace}-b", f"{trace}-r", "b", late, late + 5, trace_id=trace, project=project,
              input="refund issued" if i % 3 == 0 else "quiet"),
        ]  # fmt: skip
    for project in ("p", "q", "z"):
        spans.append(S(f"dup-{project}", None, "root", 60_500, 60_600, trace_id="dup",
                       project=project, input="a refund"))  # fmt: skip
    with Store.open(settings.db, settings) as opened:
        opened.write(table(spans))
        yield opened


def refund_traces(store: Store, order: str) -> list[tuple[str, str]]:
    return [
        (row[0], row[1])
        for row in sql(
            store,
            "SELECT project, trace_id FROM traces t WHERE EXISTS (SELECT 1 FROM spans s WHERE "
            "s.project = t.project AND s.trace_id = t.trace_id AND s.input_value LIKE '%refund%')"
            f" {order}",
        )
    ]


@pytest.mark.parametrize("limit", [1, 4, 100])
@pytest.mark.parametrize("project", [None, "p"])
def test_a_newest_first_regex_read_in_windows_pages_exactly(
    windowed: Store, limit: int, project: str | None
) -> None:
    expected = [
        pair
        for pair in refund_traces(windowed, "ORDER BY start_time DESC, trace_id DESC, project DESC")
        if project is None or pair[0] == project
    ]
    rows, pages = all_pages(windowed, regex="ref+und", limit=limit, project=project)
    assert [(r.project, r.trace_id) for r in rows] == expected and len(expected) > 40
    # The last page read to the end of the store knows the total; the first stopped early.
    assert pages[-1].total in (None, len(expected))
    if limit < 100:
        assert pages[0].total is None and pages[0].truncated
    else:
        assert pages[0].total == len(expected)


def test_a_newest_first_regex_stops_before_the_oldest_spans(
    windowed: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on the store's reader (it runs every query unchanged): every query that ran the
    regex had a lower bound on start_time above the store's oldest span."""
    searched: list[list[Any]] = []
    rows = Reader.rows

    def spy(self: Reader, query: str, params: Any = None, *, untrusted: bool = False) -> Any:
        if "regexp_matches" in query and "FROM spans" in query:
            searched.append(list(params or []))
        return rows(self, query, params, untrusted=untrusted)

    monkeypatch.setattr(Reader, "rows", spy)
    page = search_traces(windowed, regex="refund", limit=3)
    monkeypatch.undo()
    assert len(page.traces) == 3 and page.truncated
    expected = refund_traces(windowed, "ORDER BY start_time DESC, trace_id DESC, project DESC")
    assert [(r.project, r.trace_id) for r in page.traces] == expected[:3]
    (oldest,) = sql(windowed, "SELECT min(start_time) FROM spans")[0]
    assert searched
    assert all(any(isinstance(p, datetime) and p > oldest for p in ps) for ps in searched)
