"""The aggregate and jq tools on the demo store: values checked against the rows themselves."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.aggregate import aggregate
from traceproof.tools.common import size
from traceproof.tools.jqtool import jq


def rows(store: Store, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.reader() as reader:
        return reader.rows(query, params)


def quantile_cont(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def failure(call: Any) -> TraceproofError:
    with pytest.raises(TraceproofError) as caught:
        call()
    return caught.value


# -- aggregate ----------------------------------------------------------------------------------


def test_average_and_p95_latency_and_tokens_by_model_match_the_rows(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        group_by=["model"],
        metrics=[
            "count",
            "avg(latency_ms)",
            "p95(latency_ms)",
            "sum(total_tokens)",
            "avg(total_tokens)",
        ],
        span_kind="LLM",
    )
    assert result.columns == [
        "model",
        "count",
        "avg(latency_ms)",
        "p95(latency_ms)",
        "sum(total_tokens)",
        "avg(total_tokens)",
    ]
    spans = rows(
        demo_store, "SELECT model, latency_ms, total_tokens FROM spans WHERE span_kind = 'LLM'"
    )
    by_model: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for model, latency, tokens in spans:
        by_model[model].append((latency, tokens))
    assert len(result.rows) == len(by_model) >= 3
    for model, count, avg_ms, p95_ms, tokens, avg_tokens in result.rows:
        mine = by_model[model]
        latencies = [latency for latency, _ in mine]
        assert count == len(mine)
        assert avg_ms == pytest.approx(statistics.fmean(latencies), abs=0.05)
        assert p95_ms == pytest.approx(quantile_cont(latencies, 0.95), abs=0.05)
        assert tokens == sum(t for _, t in mine)
        assert avg_tokens == pytest.approx(statistics.fmean(t for _, t in mine), abs=0.05)
    counts = [row[1] for row in result.rows]
    assert counts == sorted(counts, reverse=True)  # default order: first metric, descending
    assert result.truncated is False and result.note is None


def test_attribute_paths_group_and_measure_like_columns(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        group_by=["llm.provider"],
        metrics=["count", "max(llm.token_count.prompt)"],
        span_kind="LLM",
        order_by="llm.provider asc",
    )
    found = rows(
        demo_store,
        "SELECT attributes->>'$.llm.provider' AS p, count(*), "
        "max(TRY_CAST(attributes->>'$.llm.token_count.prompt' AS DOUBLE)) FROM spans "
        "WHERE span_kind = 'LLM' GROUP BY p ORDER BY p NULLS LAST",
    )
    assert [tuple(row) for row in result.rows] == found
    assert {"openai", "anthropic"} <= {row[0] for row in result.rows}


def test_hourly_buckets_over_traces_count_every_trace(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        over="traces",
        group_by=["hour(start_time)", "status"],
        metrics=["count", "sum(error_count)"],
        order_by="hour(start_time) asc",
        limit=1000,
    )
    assert result.columns == ["hour(start_time)", "status", "count", "sum(error_count)"]
    assert sum(row[2] for row in result.rows) == 90
    assert sum(row[3] for row in result.rows) == 22
    hours = [row[0] for row in result.rows]
    assert hours == sorted(hours)
    assert all(h.endswith(":00:00Z") for h in hours)
    assert {row[1] for row in result.rows if row[3] > 0} == {"ERROR"}


def test_over_traces_filters_pick_traces_with_a_matching_span(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        over="traces",
        metrics=["count", "avg(latency_ms)", "count_distinct(session_id)"],
        span_kind="TOOL",
        status="ERROR",
    )
    expected = rows(
        demo_store,
        "SELECT count(*), avg(latency_ms), count(DISTINCT session_id) FROM traces WHERE "
        "trace_id IN (SELECT trace_id FROM spans WHERE span_kind = 'TOOL' AND status = 'ERROR')",
    )[0]
    assert result.rows[0][0] == expected[0] > 0
    assert result.rows[0][1] == pytest.approx(expected[1])
    assert result.rows[0][2] == expected[2]


def test_which_sessions_had_failing_tool_calls(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        group_by=["session_id", "tool_name"],
        span_kind="TOOL",
        status="ERROR",
        limit=1000,
    )
    expected = Counter(
        rows(
            demo_store,
            "SELECT session_id, tool_name FROM spans WHERE span_kind = 'TOOL' AND status = 'ERROR'",
        )
    )
    assert {(s, t): n for s, t, n in result.rows} == dict(expected)


def test_limit_and_truncated_are_exact(demo_store: Store) -> None:
    names = rows(demo_store, "SELECT count(DISTINCT name) FROM spans")[0][0]
    cut = aggregate(demo_store, group_by=["name"], limit=3)
    assert len(cut.rows) == 3 and cut.truncated is True
    assert cut.note is not None and "More than 3 groups" in cut.note
    whole = aggregate(demo_store, group_by=["name"], limit=names)
    assert len(whole.rows) == names and whole.truncated is False
    assert whole.rows[:3] == cut.rows


def test_where_filters_use_columns_and_attribute_paths(demo_store: Store) -> None:
    result = aggregate(
        demo_store,
        metrics=["count"],
        where="latency_ms > 1000 and llm.token_count.prompt > 100",
    )
    expected = rows(
        demo_store,
        "SELECT count(*) FROM spans WHERE latency_ms > 1000 AND "
        "TRY_CAST(attributes->>'$.llm.token_count.prompt' AS DOUBLE) > 100",
    )[0][0]
    assert result.rows == [[expected]] and expected > 0


def test_groups_that_do_not_fit_the_budget_are_dropped_and_reported(demo_store: Store) -> None:
    result = aggregate(demo_store, group_by=["span_id", "trace_id"], limit=1000, max_chars=2000)
    assert size(result) <= 2000
    assert 0 < len(result.rows) < 1000
    assert result.truncated is True
    assert result.note is not None and "did not fit" in result.note


@pytest.mark.parametrize(
    ("arguments", "named", "allowed"),
    [
        ({"metrics": ["median(latency_ms)"]}, "median(latency_ms)", "p95(x)"),
        ({"metrics": ["p95(model)"]}, "p95(model)", "latency_ms"),
        ({"metrics": ["avg(latency_ms); drop table spans"]}, "drop table", "p95(x)"),
        ({"group_by": ["latency"]}, "latency", "tool_name"),
        ({"group_by": ["year(start_time)"]}, "year(start_time)", "hour(start_time)"),
        ({"group_by": ["hour(input_value)"]}, "hour(input_value)", "day(start_time)"),
        ({"group_by": ["model); DROP TABLE spans; --"]}, "DROP TABLE", "model"),
        ({"over": "traces", "group_by": ["model"]}, "model", "span_count"),
        ({"order_by": "p99(latency_ms)"}, "p99(latency_ms)", "count"),
    ],
)
def test_bad_metrics_and_groups_name_the_culprit_and_list_what_is_allowed(
    demo_store: Store, arguments: dict[str, Any], named: str, allowed: str
) -> None:
    error = failure(lambda: aggregate(demo_store, **arguments))
    assert error.code == ErrorCode.INVALID_ARGUMENT
    assert named in error.message and allowed in error.message


ESCAPES = [
    "1=1) UNION SELECT span_id FROM spans WHERE (1=1",
    "read_csv('/etc/passwd') IS NOT NULL",
    "EXISTS (SELECT * FROM read_csv('/etc/passwd'))",
    "EXISTS (SELECT * FROM 'https://example.com/x.csv')",
    "1=1; DROP TABLE spans",
    "1=1 -- comment",
]


@pytest.mark.parametrize("where", ESCAPES)
def test_where_cannot_escape_aggregate(demo_store: Store, where: str) -> None:
    error = failure(lambda: aggregate(demo_store, where=where))
    assert error.code in (
        ErrorCode.INVALID_FILTER,
        ErrorCode.INVALID_QUERY,
        ErrorCode.FORBIDDEN_QUERY,
    )
    assert "root:" not in error.message
    assert rows(demo_store, "SELECT count(*) FROM spans")[0][0] == 1064


@pytest.mark.parametrize("where", ESCAPES)
def test_where_cannot_escape_jq(demo_store: Store, where: str) -> None:
    error = failure(lambda: jq(demo_store, program="length", where=where))
    assert error.code in (
        ErrorCode.INVALID_FILTER,
        ErrorCode.INVALID_QUERY,
        ErrorCode.FORBIDDEN_QUERY,
    )
    assert "root:" not in error.message


# -- jq -----------------------------------------------------------------------------------------


def a_failed_tool_span(store: Store) -> tuple[str, str, str, str]:
    return rows(
        store,
        "SELECT trace_id, span_id, tool_name, error_message FROM spans "
        "WHERE span_kind = 'TOOL' AND status = 'ERROR' ORDER BY start_time LIMIT 1",
    )[0]


def test_jq_over_one_span_sees_columns_attributes_and_events(demo_store: Store) -> None:
    trace_id, span_id, tool, message = a_failed_tool_span(demo_store)
    result = jq(
        demo_store,
        program="{tool_name, kind: .attributes.openinference.span.kind, "
        "event: .events[0].attributes.exception.message, service: .resource.service.name, "
        "start: .start_time}",
        span_id=span_id,
    )
    assert result.results == [
        {
            "tool_name": tool,
            "kind": "TOOL",
            "event": message,
            "service": "support-agent",
            "start": rows(demo_store, "SELECT start_time FROM spans WHERE span_id = ?", [span_id])[
                0
            ][0].isoformat()
            + "Z",
        }
    ]
    assert result.spans_read == 1 and result.truncated is False
    assert span_id in result.input and trace_id in result.input


def test_jq_over_a_trace_gets_its_spans_in_start_order(demo_store: Store) -> None:
    trace_id = a_failed_tool_span(demo_store)[0]
    result = jq(demo_store, program="map(.name)", trace_id=trace_id)
    names = [
        n
        for (n,) in rows(
            demo_store,
            "SELECT name FROM spans WHERE trace_id = ? ORDER BY start_time, span_id",
            [trace_id],
        )
    ]
    assert result.results == [names]
    assert result.spans_read == len(names)
    calls = jq(
        demo_store,
        program='.[] | select(.span_kind == "TOOL") | {tool_name, input_value}',
        trace_id=trace_id,
    )
    expected = rows(
        demo_store,
        "SELECT tool_name, input_value FROM spans WHERE trace_id = ? "
        "AND span_kind = 'TOOL' ORDER BY start_time, span_id",
        [trace_id],
    )
    assert [(r["tool_name"], r["input_value"]) for r in calls.results] == expected


def test_jq_over_filters_reads_the_matching_spans(demo_store: Store) -> None:
    result = jq(
        demo_store,
        program="map(.tool_name) | sort",
        project="demo",
        span_kind="TOOL",
        status="ERROR",
    )
    expected = sorted(
        t
        for (t,) in rows(
            demo_store, "SELECT tool_name FROM spans WHERE span_kind = 'TOOL' AND status = 'ERROR'"
        )
    )
    assert result.results == [expected]
    assert result.spans_read == len(expected) and result.spans_capped is False


def test_jq_over_filters_reads_at_most_max_spans_the_latest_and_says_so(
    demo_store: Store,
) -> None:
    result = jq(demo_store, program="map(.span_id)", project="demo", max_spans=5)
    latest = rows(
        demo_store, "SELECT span_id FROM spans ORDER BY start_time DESC, span_id DESC LIMIT 5"
    )
    assert result.results == [[s for (s,) in reversed(latest)]]
    assert result.spans_capped is True and result.truncated is True
    assert "until=" in result.input


def test_jq_outputs_beyond_the_budget_are_dropped_with_a_working_continuation(
    demo_store: Store,
) -> None:
    program = ".[] | {span_id, name, latency_ms}"
    result = jq(demo_store, program=program, project="demo", max_chars=1500)
    assert size(result) <= 1500
    shown = len(result.results)
    assert shown > 0 and result.dropped == result.spans_read - shown
    assert result.truncated is True and not result.dropped_more
    assert result.note is not None
    continuation = result.note.split("run '")[1].split("' to read on")[0]
    assert continuation == f"[{program}] | .[{shown}:][]"
    rest = jq(demo_store, program=continuation, project="demo", max_chars=80_000)
    assert (
        result.results + rest.results
        == jq(demo_store, program=f"[{program}]", project="demo", max_chars=80_000).results[0]
    )


def test_one_huge_jq_output_is_clipped_with_a_marker(demo_store: Store) -> None:
    span_id, value = rows(
        demo_store,
        "SELECT span_id, input_value FROM spans ORDER BY length(input_value) DESC LIMIT 1",
    )[0]
    result = jq(demo_store, program=".input_value", span_id=span_id)
    assert size(result) <= 20_000
    assert result.clipped is True and result.truncated is True
    (text,) = result.results
    kept, marker = text.split("…[clipped: ")
    assert value.startswith(kept) and len(kept) > 10_000
    assert f"of {len(value):,} chars" in marker and f".input_value[{len(kept)}:" in marker


def test_jq_errors_carry_jq_own_message(demo_store: Store) -> None:
    _, span_id, _, _ = a_failed_tool_span(demo_store)
    syntax = failure(lambda: jq(demo_store, program=".[", span_id=span_id))
    assert syntax.code == ErrorCode.INVALID_JQ
    assert "syntax error" in syntax.message and "line 1, column 2" in syntax.message
    runtime = failure(lambda: jq(demo_store, program=".name | .x", span_id=span_id))
    assert runtime.code == ErrorCode.INVALID_JQ
    assert "Cannot index string" in runtime.message
    module = failure(lambda: jq(demo_store, program='import "x" as x; .', span_id=span_id))
    assert module.code == ErrorCode.INVALID_JQ


def test_jq_cannot_read_the_server_environment(demo_store: Store) -> None:
    _, span_id, _, _ = a_failed_tool_span(demo_store)
    assert jq(demo_store, program="env", span_id=span_id).results == [{}]
    assert jq(demo_store, program="$ENV", span_id=span_id).results == [{}]
    assert jq(demo_store, program="$ENV.PATH", span_id=span_id).results == [None]


def test_jq_unknown_ids_and_bad_combinations(demo_store: Store) -> None:
    assert failure(lambda: jq(demo_store, program=".", span_id="nope")).code == (
        ErrorCode.UNKNOWN_SPAN
    )
    assert failure(lambda: jq(demo_store, program=".", trace_id="nope")).code == (
        ErrorCode.UNKNOWN_TRACE
    )
    both = failure(lambda: jq(demo_store, program=".", trace_id="x", status="ERROR"))
    assert both.code == ErrorCode.INVALID_ARGUMENT
    nothing = failure(lambda: jq(demo_store, program="."))
    assert nothing.code == ErrorCode.INVALID_ARGUMENT


@pytest.fixture
def quick_timeout_store(tmp_path: Path) -> Iterator[Store]:
    settings = Settings(db=tmp_path / "store.duckdb", sql_timeout_seconds=0.5)
    with Store.open(settings.db, settings) as opened:
        yield opened


def test_a_jq_program_that_never_ends_is_stopped_and_the_next_one_runs(
    quick_timeout_store: Store,
) -> None:
    error = failure(lambda: jq(quick_timeout_store, program="last(range(1e15))", project="none"))
    assert error.code == ErrorCode.QUERY_TIMEOUT
    assert "limit(" in error.message
    assert jq(quick_timeout_store, program="length", project="none").results == [0]


def test_averages_and_percentiles_are_rounded_not_float_noise(demo_store: Store) -> None:
    result = aggregate(
        demo_store, group_by=["model"], metrics=["avg(latency_ms)", "p95(latency_ms)"],
        span_kind="LLM",
    )  # fmt: skip
    for row in result.rows:
        for value in row[1:]:
            assert value == round(value, 1), row
    small = aggregate(demo_store, metrics=["avg(error_count)"], over="traces")
    [[value]] = small.rows
    assert len(repr(value)) <= 6  # three significant digits below 100 (e.g. 0.244)
