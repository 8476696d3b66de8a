"""A span belongs to its trace's session and user, even when only the root span says so (as
many instrumentations do) and whatever order the spans arrive in: every span-level filter and
group sees them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from traceproof.ingest.normalize import SpanRows
from traceproof.storage import Store
from traceproof.tools.aggregate import aggregate
from traceproof.tools.jqtool import jq
from traceproof.tools.spans import search_spans
from traceproof.tools.traces import search_traces

T0 = datetime(2026, 3, 1, 12, 0, 0)
EPOCH = datetime(1970, 1, 1)


def _ns(ms: float) -> int:
    return int((T0 - EPOCH) / timedelta(microseconds=1) + ms * 1000) * 1000


def _rows(trace: str, spans: list[tuple[str, str | None, str, dict[str, Any], bool]]) -> SpanRows:
    rows = SpanRows()
    for i, (span_id, parent, kind, attributes, failed) in enumerate(spans):
        rows.add(
            project="p",
            trace_id=trace,
            span_id=span_id,
            parent_span_id=parent,
            name=kind.lower(),
            start_ns=_ns(10 * i),
            end_ns=_ns(10 * i + 5),
            status="ERROR" if failed else "OK",
            status_message="boom" if failed else None,
            attributes={"openinference.span.kind": kind, **attributes},
        )
    return rows


@pytest.fixture
def sessions_on_roots(store: Store) -> Store:
    """Two traces in two sessions (users u1, u2); each has a failing tool span. Only the roots
    carry session.id and user.id, and each root arrives after its children."""
    for n, (session, user) in enumerate((("sess-a", "u1"), ("sess-b", "u2"))):
        trace = f"{n}" * 32
        root = f"root{n:012d}"
        children = [
            (f"tool{n:012d}", root, "TOOL", {}, True),
            (f"llm0{n:012d}", root, "LLM", {}, False),
        ]
        store.write(_rows(trace, children).table())
        attributes = {"session.id": session, "user.id": user}
        store.write(_rows(trace, [(root, None, "AGENT", attributes, False)]).table())
    return store


def test_aggregate_groups_failing_tool_spans_by_their_traces_sessions(
    sessions_on_roots: Store,
) -> None:
    result = aggregate(sessions_on_roots, group_by=["session_id"], span_kind="TOOL", status="ERROR")
    assert sorted(result.rows) == [["sess-a", 1], ["sess-b", 1]]
    by_user = aggregate(sessions_on_roots, group_by=["user_id"], span_kind="TOOL")
    assert sorted(by_user.rows) == [["u1", 1], ["u2", 1]]
    # Over traces, the filter picks traces through their spans the same way.
    traces = aggregate(sessions_on_roots, over="traces", where="user_id = 'u2'")
    assert traces.rows == [[1]]


def test_session_and_user_filters_see_the_traces_session(sessions_on_roots: Store) -> None:
    found = search_spans(sessions_on_roots, session_id="sess-a", span_kind="TOOL")
    assert [s.span_id for s in found.spans] == ["tool000000000000"]
    found = search_spans(sessions_on_roots, where="user_id = 'u2' and span_kind = 'LLM'")
    assert [s.span_id for s in found.spans] == ["llm0000000000001"]
    counted = aggregate(sessions_on_roots, session_id="sess-b")
    assert counted.rows == [[3]]


def test_jq_over_filtered_spans_sees_the_traces_session(sessions_on_roots: Store) -> None:
    result = jq(sessions_on_roots, program=".[] | [.span_id, .session_id, .user_id]",
                session_id="sess-b")  # fmt: skip
    assert sorted(result.results) == [
        ["llm0000000000001", "sess-b", "u2"],
        ["root000000000001", "sess-b", "u2"],
        ["tool000000000001", "sess-b", "u2"],
    ]


def test_search_traces_where_on_a_span_sees_the_traces_user(sessions_on_roots: Store) -> None:
    found = search_traces(sessions_on_roots, span_kind="TOOL", where="user_id = 'u1'")
    assert [t.trace_id for t in found.traces] == ["0" * 32]
