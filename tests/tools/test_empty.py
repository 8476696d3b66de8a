"""An empty search says which filter emptied it: the time window (with the age of the newest
trace), one filter no row satisfies, or filters that match only apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.spansearch import search_spans
from traceproof.tools.traces import search_traces


def test_a_window_after_the_newest_trace_says_how_old_it_is(demo_store: Store) -> None:
    # The test demo ends 2026-11-01 14:37 UTC, so "2h" is long after it.
    found = search_traces(demo_store, project="demo", since="2h", status="ERROR")
    assert (found.traces, found.total) == ([], 0)
    assert found.note is not None
    assert found.note.startswith("No traces since 2h: the newest trace in project 'demo' started ")
    assert found.note.endswith(" days ago (2026-11-01 14:37 UTC).")
    spans = search_spans(demo_store, since="2026-11-02T00:00:00Z")
    assert spans.spans == []
    assert spans.note is not None
    assert spans.note.startswith("No spans since 2026-11-02T00:00:00Z: the newest span in the ")


def test_a_window_before_the_oldest_trace_names_its_start(demo_store: Store) -> None:
    found = search_traces(demo_store, until="2026-10-01")
    assert found.note == (
        "No traces before 2026-10-01: the oldest trace in the store started 2026-11-01 09:08 UTC."
    )


def test_a_filter_that_matches_nothing_is_named(demo_store: Store) -> None:
    found = search_traces(demo_store, project="demo", status="ERROR", name="no-such-root")
    assert found.note == "Project 'demo' has no traces with name='no-such-root'."
    where = search_traces(demo_store, where="latency_ms > 1e9", since="100000d")
    assert where.note == "The store has no traces with where='latency_ms > 1e9' since 100000d."
    spans = search_spans(demo_store, span_kind="TOOL", name="nope")
    assert spans.note == "The store has no spans with name='nope'."


def test_filters_that_match_only_apart_are_counted(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        calm = reader.scalar(
            "SELECT session_id FROM traces GROUP BY session_id HAVING max(error_count) = 0 "
            "ORDER BY session_id LIMIT 1"
        )
        turns = reader.scalar("SELECT count(*) FROM traces WHERE session_id = ?", [calm])
    found = search_traces(demo_store, status="ERROR", session_id=calm)
    assert found.note == (
        "No traces match all the filters together; each matches some in the store "
        f"(status='ERROR': 20; session_id='{calm}': {turns})."
    )
    spans = search_spans(demo_store, span_kind="RETRIEVER", status="ERROR")
    assert spans.note == (
        "No spans match all the filters together; each matches some in the store "
        "(status='ERROR': 22; span_kind='RETRIEVER': 43)."
    )


def test_an_empty_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        assert search_traces(store, status="ERROR").note == "No traces: the store has none yet."
        assert search_spans(store).note == "No spans: the store has none yet."


@pytest.mark.parametrize("tool", [search_traces, search_spans])
def test_a_page_with_rows_has_no_note(demo_store: Store, tool: object) -> None:
    assert callable(tool)
    assert tool(demo_store, status="ERROR").note is None
