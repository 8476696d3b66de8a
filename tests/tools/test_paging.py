"""Paging hints are short and exact (issue 9 §3): a compact cursor, and a ``next_call`` that
names the cursor instead of writing it a second time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from traceproof.errors import ErrorCode
from traceproof.server.mcp import compact_json
from traceproof.server.schemas import trimmed
from traceproof.storage import Store
from traceproof.tools import registry
from traceproof.tools.common import ToolFailure

#: (tool, arguments of a call whose answer has more pages); ``@trace`` is a failing demo trace.
PAGED: list[tuple[str, dict[str, Any]]] = [
    ("search_traces", {"status": "ERROR", "limit": 2}),
    ("search_traces", {"order_by": "latency", "limit": 1}),
    ("search_spans", {"trace_id": "@trace", "limit": 2}),
    ("search_spans", {"span_kind": "LLM", "order_by": "latency", "limit": 1}),
    ("find_in_trace", {"trace_id": "@trace", "pattern": "e", "max_matches": 2}),
    ("get_session", {"session_id": "sess-0004", "max_chars": 1000}),
]


def _error_trace(store: Store) -> str:
    with store.reader() as reader:
        return str(
            reader.scalar(
                "SELECT trace_id FROM traces WHERE error_count > 0 ORDER BY trace_id LIMIT 1"
            )
        )


def _call(store: Store, tool: str, arguments: dict[str, Any]) -> BaseModel:
    return registry.call(store, tool, arguments)


def _hint(answer: BaseModel) -> str:
    """What the answer spends on paging, as a client receives it."""
    data = trimmed(answer)
    return compact_json({k: data[k] for k in ("next_cursor", "next_call") if k in data})


@pytest.mark.parametrize(("tool", "given"), PAGED)
def test_a_paging_hint_is_short_and_the_call_it_names_reads_the_next_page(
    demo_store: Store, tool: str, given: dict[str, Any]
) -> None:
    trace = _error_trace(demo_store)
    arguments = {k: trace if v == "@trace" else v for k, v in given.items()}
    first = _call(demo_store, tool, arguments)
    cursor = getattr(first, "next_cursor", None)
    assert getattr(first, "truncated", False) and cursor
    assert len(cursor) <= 60, cursor
    assert getattr(first, "next_call", None) == f"{tool}(<same arguments>, cursor=next_cursor)"
    assert len(_hint(first)) <= 140, _hint(first)
    # Following it (the same arguments, cursor set to next_cursor) moves on.
    second = _call(demo_store, tool, {**arguments, "cursor": cursor})
    assert trimmed(second) != trimmed(first)


_ROWS: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
    "search_traces": lambda data: [row["trace_id"] for row in data["traces"]],
    "search_spans": lambda data: [row["span_id"] for row in data["spans"]],
}


@pytest.mark.parametrize("tool", ["search_traces", "search_spans"])
@pytest.mark.parametrize("order_by", ["newest", "oldest", "latency"])
def test_compact_cursors_page_through_every_row_once(
    demo_store: Store, tool: str, order_by: str
) -> None:
    arguments = {"order_by": order_by, "limit": 3, "status": "ERROR"}
    everything = trimmed(_call(demo_store, tool, {**arguments, "limit": 100}))
    assert not everything["truncated"] and len(_ROWS[tool](everything)) >= 20
    seen: list[Any] = []
    cursor = None
    while True:
        page = trimmed(_call(demo_store, tool, {**arguments, "cursor": cursor}))
        seen += _ROWS[tool](page)
        cursor = page.get("next_cursor")
        if cursor is None:
            break
    assert seen == _ROWS[tool](everything) and len(seen) == len(set(seen))


def test_a_cursor_altered_by_one_character_is_invalid_cursor(demo_store: Store) -> None:
    page = _call(demo_store, "search_traces", {"status": "ERROR", "limit": 2})
    cursor = getattr(page, "next_cursor", "")
    middle = len(cursor) // 2
    altered = cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1 :]
    with pytest.raises(ToolFailure) as info:
        _call(demo_store, "search_traces", {"status": "ERROR", "limit": 2, "cursor": altered})
    assert info.value.code is ErrorCode.INVALID_CURSOR


def test_search_spans_sends_times_as_every_other_tool_does(demo_store: Store) -> None:
    """RFC 3339 with its offset (issue 9 §1): search_spans' start_time is get_span_data's."""
    row = trimmed(_call(demo_store, "search_spans", {"limit": 1}))["spans"][0]
    span = trimmed(_call(demo_store, "get_span_data", {"span_id": row["span_id"]}))
    assert row["start_time"].endswith("Z") and row["start_time"] == span["fields"]["start_time"]
