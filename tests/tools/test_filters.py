"""The shared filters: attribute paths in SQL, relative times, cursors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from traceproof.errors import ErrorCode
from traceproof.storage import Store
from traceproof.tools.common import (
    CursorValue,
    ToolFailure,
    clip,
    decode_cursor,
    encode_cursor,
    one_line,
    parse_time,
)
from traceproof.tools.filters import SpanFilter, field_sql, json_path, where_sql
from traceproof.tools.invoke import run_tool


def count(store: Store, flt: SpanFilter) -> int:
    condition, params = flt.sql()
    with store.reader() as reader:
        return int(
            reader.rows(f"SELECT count(*) FROM spans WHERE {condition}", params, untrusted=True)[0][
                0
            ]
        )


def test_dotted_paths_become_json_paths_with_array_indices() -> None:
    assert json_path(["llm", "input_messages", "3", "message", "content"]) == (
        "$.llm.input_messages[3].message.content"
    )
    assert json_path(["a-b", "*"]) == '$."a-b"[*]'


def test_a_path_compared_with_a_number_is_read_as_a_number() -> None:
    sql = where_sql("llm.token_count.prompt > 1000 and model = 'gpt.4'")
    assert sql == (
        "TRY_CAST(json_extract_string(attributes, '$.llm.token_count.prompt') AS DOUBLE) > 1000"
        " and model = 'gpt.4'"
    )
    assert "TRY_CAST" not in where_sql("llm.model_name = 'x'")
    assert field_sql("resource.service.name") == ("json_extract_string(resource, '$.service.name')")


def test_where_refuses_comments_and_statement_separators() -> None:
    for bad in ("1=1; DROP TABLE spans", "1=1 -- x", "1=1 /* x */"):
        with pytest.raises(ToolFailure) as info:
            where_sql(bad)
        assert info.value.code is ErrorCode.INVALID_FILTER
    assert where_sql("name = 'a;b -- c'") == "name = 'a;b -- c'"


@pytest.mark.parametrize(
    ("tool", "where", "near"),
    [
        ("search_spans", "latency_ms >", "at end of input"),
        ("search_traces", "name = ", "at end of input"),
        ("aggregate", "latency_ms > > 3", 'at or near ">"'),
        ("search_spans", "nosuch_column > 3", "nosuch_column"),
    ],
)
def test_a_where_error_names_the_agents_own_text(
    store: Store, tool: str, where: str, near: str
) -> None:
    """Not the parenthesis the query wraps the expression in, and no doubled period."""
    with pytest.raises(ToolFailure) as failed:
        run_tool(store, tool, {"where": where})
    assert failed.value.code is ErrorCode.INVALID_FILTER
    message = failed.value.message
    assert message.startswith(f"where {where!r} ")
    assert near in message
    assert '")"' not in message
    assert ".." not in message


def test_filters_select_the_same_spans_as_hand_written_sql(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        expected = reader.scalar(
            "SELECT count(*) FROM spans WHERE span_kind = 'LLM' AND "
            "TRY_CAST(json_extract_string(attributes, '$.llm.token_count.prompt') AS DOUBLE) > 500"
        )
        tools = reader.scalar("SELECT count(*) FROM spans WHERE span_kind = 'TOOL'")
        errors = reader.scalar("SELECT count(*) FROM spans WHERE status = 'ERROR'")
    assert expected > 0
    assert count(demo_store, SpanFilter(span_kind="llm", where="llm.token_count.prompt > 500")) == (
        expected
    )
    assert count(demo_store, SpanFilter(span_kind="TOOL")) == tools
    assert count(demo_store, SpanFilter(status="ERROR", project="demo")) == errors == 22
    assert count(demo_store, SpanFilter(project="nope")) == 0


def test_an_unknown_span_kind_or_bad_path_is_an_actionable_error() -> None:
    with pytest.raises(ToolFailure) as info:
        SpanFilter(span_kind="LLMX").sql()
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    with pytest.raises(ToolFailure) as info:
        field_sql("not a path")
    assert info.value.code is ErrorCode.INVALID_FILTER


def test_relative_and_absolute_times() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now=now) == datetime(2026, 11, 22, 10, 0)
    assert parse_time("30m", now=now) == datetime(2026, 11, 22, 11, 30)
    assert parse_time("7d", now=now) == datetime(2026, 11, 15, 12, 0)
    assert parse_time("2026-11-01T09:00:00+01:00") == datetime(2026, 11, 1, 8, 0)
    with pytest.raises(ToolFailure) as info:
        parse_time("yesterday")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


KEYS: list[list[CursorValue]] = [
    [],
    [1796152560694000, "aa153f28f2eb9103dab9034f49888bc6", "demo"],
    [-5, 0, 2**63 - 1, -(2**63), 1437.6999999999998, -0.0, None],
    ["", "ab", "AB", "abc", "naïve 日本 \x00", "00" * 300],
]


@pytest.mark.parametrize("key", KEYS)
def test_cursors_round_trip_and_are_bound_to_their_tool_and_fingerprint(
    key: list[CursorValue],
) -> None:
    token = encode_cursor("search_traces", "f1", key)
    back = decode_cursor(token, "search_traces", "f1")
    assert back == key and [type(v) for v in back] == [type(v) for v in key]
    for tool, digest, bad in (
        ("search_traces", "f1", token + "x!"),
        ("search_traces", "f1", "garbage"),
        ("search_traces", "f1", ""),
        ("search_spans", "f1", token),  # another tool
        ("search_traces", "f2", token),  # other arguments
    ):
        with pytest.raises(ToolFailure) as info:
            decode_cursor(bad, tool, digest)
        assert info.value.code is ErrorCode.INVALID_CURSOR


def test_an_altered_cursor_is_refused() -> None:
    token = encode_cursor("search_traces", "f1", [1796152560694000, "aa153f28", "demo"])
    for at in range(len(token)):
        for char in "Aa0_-":
            if token[at] == char:
                continue
            altered = token[:at] + char + token[at + 1 :]
            try:
                key = decode_cursor(altered, "search_traces", "f1")
            except ToolFailure as error:
                assert error.code is ErrorCode.INVALID_CURSOR
            else:  # the last character's padding bits may change without changing a byte
                assert key == decode_cursor(token, "search_traces", "f1")


def test_a_trace_keyset_cursor_is_short() -> None:
    key: list[CursorValue] = [1796152560694000, "aa153f28f2eb9103dab9034f49888bc6", "demo"]
    assert len(encode_cursor("search_traces", "2b368dda2e05", key)) <= 52


def test_clip_and_one_line() -> None:
    assert clip("abcdef", 4) == ("abcd", 2)
    assert clip("abc", 4) == ("abc", 0)
    assert one_line("a\n\n  b   c", 20) == "a b c"
    assert one_line("x" * 50, 10) == "x" * 9 + "…"
