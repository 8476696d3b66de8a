"""Numbers a tool sends carry no float noise (issue 9 §3): latencies read as 1437.7, the same in
every tool, never 1437.6999999999998."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.tools.test_spans import add_spans, ns
from traceproof.ingest.normalize import SpanRows
from traceproof.server.mcp import as_result
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools import registry
from traceproof.tools.paging import tidy

NOISY = 1437.6999999999998


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = Settings(db=tmp_path / "numbers.duckdb")
    opened = Store.open(settings.db, settings)
    # A trace of 1,437.699 ms (its times are kept to the microsecond), in a session.
    add_spans(
        opened,
        [
            {"span_id": "root", "name": "agent", "trace_id": "t1", "duration_ms": 1437.699,
             "attributes": {"session.id": "s1", "input.value": "hi", "temperature": 0.123456789}},
        ],
    )  # fmt: skip
    # A span whose stored latency is float noise (as arithmetic in another exporter leaves it).
    rows = SpanRows()
    start = ns(datetime(2026, 3, 1, 13, 0, 0))
    rows.add(
        start_ns=start,
        end_ns=start + 1_437_700_000,
        project="p",
        trace_id="t2",
        span_id="noisy",
        parent_span_id=None,
        name="llm",
        status="OK",
        status_message=None,
        attributes={},
    )
    table = rows.table()
    index = table.schema.get_field_index("latency_ms")
    table = table.set_column(index, "latency_ms", pa.array([NOISY], type=pa.float64()))
    opened.write(table)
    yield opened
    opened.close()


def _answer(store: Store, tool: str, arguments: dict[str, object]) -> str:
    """The text an MCP client receives."""
    content = as_result(registry.call(store, tool, arguments)).content[0]
    return str(getattr(content, "text", ""))


def test_tidy_takes_the_noise_off() -> None:
    assert tidy(NOISY) == 1437.7
    assert tidy(1437.699) == 1437.7
    assert tidy(0.24444) == 0.244


def test_search_traces_and_get_session_send_latencies_as_the_preview_does(store: Store) -> None:
    trace = registry.call(store, "search_traces", {"project": "p", "name": "agent"})
    assert trace.model_dump()["traces"][0]["latency_ms"] == 1437.7
    session = registry.call(store, "get_session", {"session_id": "s1"})
    assert session.model_dump()["turns"][0]["latency_ms"] == 1437.7
    preview = registry.call(store, "get_trace_preview", {"trace_id": "t1"})
    assert preview.model_dump()["latency_ms"] == 1437.7


def test_get_span_data_sends_the_latency_column_without_noise(store: Store) -> None:
    text = _answer(store, "get_span_data", {"span_id": "noisy"})
    assert '"latency_ms":1437.7' in text and "1437.69" not in text
    one = registry.call(store, "get_span_data", {"span_id": "noisy", "paths": ["latency_ms"]})
    assert one.model_dump()["fields"] == {"latency_ms": 1437.7}


def test_attribute_values_are_sent_as_recorded(store: Store) -> None:
    """An attribute is the application's data, not a measurement of ours: never rounded."""
    data = registry.call(store, "get_span_data", {"span_id": "root"}).model_dump()
    assert data["fields"]["attributes.temperature"] == 0.123456789


def test_no_tool_answer_on_the_demo_holds_float_noise(demo_store: Store) -> None:
    trace = registry.call(demo_store, "search_traces", {"limit": 1}).model_dump()["traces"][0]
    calls: list[tuple[str, dict[str, object]]] = [
        ("list_projects", {}),
        ("search_traces", {"order_by": "latency"}),
        ("search_spans", {"order_by": "latency"}),
        ("get_trace_preview", {"trace_id": trace["trace_id"]}),
        ("get_session", {"session_id": trace["session_id"]}),
        ("aggregate", {"group_by": ["model"], "metrics": ["avg(latency_ms)", "p95(latency_ms)"]}),
    ]
    for tool, arguments in calls:
        data = registry.call(demo_store, tool, arguments).model_dump()
        noisy = [x for x in _floats(data) if x != tidy(x)]
        assert not noisy, (tool, noisy[:5])


def _floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _floats(item)
