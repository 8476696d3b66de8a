"""Annotations: the model and its checks, writes through the single writer with history, and
where they show: the tools, the where filter, aggregate, the preview, span data and sql."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp_types import TextContent

from tests.conftest import NOT_THE_DEMOS
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationConfig,
    AnnotationInput,
    AnnotatorKind,
    ConfigKind,
    Direction,
    LabelChoice,
    TargetKind,
)
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import (
    get_configs,
    set_config,
    target_spans,
    write_annotations,
)
from traceproof.storage.judges import (
    Calibration,
    get_evaluator_definition,
    is_calibrated,
    list_calibrations,
    list_evaluator_definitions,
    save_calibration,
    save_evaluator_definition,
)
from traceproof.tools.aggregate import aggregate
from traceproof.tools.annotations import annotate, get_annotations
from traceproof.tools.preview import get_trace_preview
from traceproof.tools.spans import get_span_data, search_spans
from traceproof.tools.sql import sql

SPAN = TargetKind.SPAN


def llm_spans(store: Store, n: int = 3) -> list[tuple[str, str]]:
    with store.reader() as reader:
        return [
            (r[0], r[1])
            for r in reader.rows(
                "SELECT span_id, trace_id FROM spans WHERE span_kind = 'LLM' "
                f"ORDER BY start_time, span_id LIMIT {n}"
            )
        ]


def stored(store: Store, table: str = "annotations") -> list[dict[str, Any]]:
    """What the test wrote: the rows of ``table`` but the demo's own judgments."""
    with store.reader() as reader:
        return reader.dicts(
            f"SELECT * FROM {table} WHERE {NOT_THE_DEMOS} ORDER BY name, annotator, version"
        )


def correctness(store: Store) -> None:
    set_config(
        store,
        AnnotationConfig(
            "correctness",
            ConfigKind.CATEGORICAL,
            (LabelChoice("pass", 1.0), LabelChoice("fail", 0.0)),
            direction=Direction.MAXIMIZE,
        ),
    )


def refused(call: Any) -> TraceproofError:
    with pytest.raises(TraceproofError) as caught:
        call()
    return caught.value


# -- writes and history ------------------------------------------------------------------------


def test_a_person_overriding_a_judge_keeps_both_and_a_rewrite_keeps_its_history(
    demo_store: Store,
) -> None:
    correctness(demo_store)
    (span_id, trace_id), *_ = llm_spans(demo_store)
    judge = AnnotationInput(
        SPAN,
        span_id,
        "correctness",
        label="fail",
        explanation="refund amount wrong",
        annotator_kind=AnnotatorKind.LLM,
        annotator="judge@abc123",
    )
    person = AnnotationInput(SPAN, span_id, "correctness", label="fail", annotator="alice")
    first = write_annotations(demo_store, [judge, person])
    assert first.status == ["created", "created"]
    again = write_annotations(demo_store, [person])
    assert again.status == ["unchanged"] and again.ids == [first.ids[1]]
    changed = write_annotations(
        demo_store, [AnnotationInput(SPAN, span_id, "correctness", label="pass", annotator="alice")]
    )
    assert changed.status == ["updated"] and changed.ids == [first.ids[1]]
    rows = stored(demo_store)
    assert [(r["annotator"], r["label"], r["score"], r["version"]) for r in rows] == [
        ("alice", "pass", 1.0, 2),  # the score comes from the config's label
        ("judge@abc123", "fail", 0.0, 1),
    ]
    assert rows[0]["trace_id"] == trace_id and rows[0]["created_at"] < rows[0]["updated_at"]
    history = stored(demo_store, "annotation_history")
    assert [(r["annotator"], r["label"], r["version"]) for r in history] == [("alice", "fail", 1)]
    with demo_store.reader() as reader:
        versions = reader.rows(
            "SELECT annotator, label, version, is_current FROM annotation_versions "
            f"WHERE {NOT_THE_DEMOS} ORDER BY annotator, version"
        )
    assert versions == [
        ("alice", "fail", 1, False),
        ("alice", "pass", 2, True),
        ("judge@abc123", "fail", 1, True),
    ]


def test_bad_writes_are_refused_whole_with_their_codes(demo_store: Store) -> None:
    correctness(demo_store)
    set_config(
        demo_store, AnnotationConfig("quality", ConfigKind.CONTINUOUS, lower_bound=0, upper_bound=1)
    )
    (span_id, _), *_ = llm_spans(demo_store)
    good = AnnotationInput(SPAN, span_id, "correctness", label="pass")
    cases = {
        ErrorCode.UNKNOWN_SPAN: AnnotationInput(SPAN, "ffffffffffffffff", "correctness", label="x"),
        ErrorCode.UNKNOWN_TRACE: AnnotationInput(TargetKind.TRACE, "nope", "x", label="y"),
        ErrorCode.UNKNOWN_SESSION: AnnotationInput(TargetKind.SESSION, "nope", "x", label="y"),
        ErrorCode.INVALID_ANNOTATION: AnnotationInput(SPAN, span_id, "correctness", label="meh"),
        ErrorCode.INVALID_ARGUMENT: AnnotationInput(
            SPAN, span_id, "x", explanation="e" * (Settings().annotation_text_max_chars + 1)
        ),
    }
    for code, bad in cases.items():
        error = refused(lambda bad=bad: write_annotations(demo_store, [good, bad]))
        assert error.code == code, error
    out_of_bounds = refused(
        lambda: write_annotations(
            demo_store, [AnnotationInput(SPAN, span_id, "quality", score=1.5)]
        )
    )
    assert out_of_bounds.code == ErrorCode.INVALID_ANNOTATION
    assert "scores from 0 to 1" in out_of_bounds.message
    label_error = refused(
        lambda: write_annotations(
            demo_store, [AnnotationInput(SPAN, span_id, "correctness", label="meh")]
        )
    )
    assert "'pass'" in label_error.message and "'fail'" in label_error.message
    surrogate = refused(
        lambda: write_annotations(demo_store, [AnnotationInput(SPAN, span_id, "x", label="\ud800")])
    )
    assert surrogate.code == ErrorCode.INVALID_ARGUMENT
    nothing = refused(lambda: write_annotations(demo_store, [AnnotationInput(SPAN, span_id, "x")]))
    assert nothing.code == ErrorCode.INVALID_ARGUMENT
    assert stored(demo_store) == []
    assert set(get_configs_of(demo_store)) == {
        "correctness",
        "quality",
        "resolved",
    }  # and the demo's


def get_configs_of(store: Store) -> dict[str, AnnotationConfig]:
    with store.reader() as reader:
        return get_configs(reader)


def test_partial_writes_report_the_items_they_skip(demo_store: Store) -> None:
    (span_id, _), *_ = llm_spans(demo_store)
    written = write_annotations(
        demo_store,
        [
            AnnotationInput(SPAN, "nope", "c", label="a"),
            AnnotationInput(SPAN, span_id, "c", label="a"),
            AnnotationInput(SPAN, span_id, "d", score=float("nan")),
        ],
        partial=True,
    )
    assert written.status == ["rejected", "created", "rejected"]
    assert [(r.index, r.code) for r in written.rejected] == [
        (0, "unknown_span"),
        (2, "invalid_argument"),
    ]
    assert len(stored(demo_store)) == 1


def test_trace_and_session_targets_record_their_trace_and_session(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        ((trace_id, session_id),) = reader.rows(
            "SELECT trace_id, session_id FROM traces WHERE session_id IS NOT NULL "
            "ORDER BY start_time LIMIT 1"
        )
    write_annotations(
        demo_store,
        [
            AnnotationInput(TargetKind.TRACE, trace_id, "helpful", label="yes"),
            AnnotationInput(TargetKind.SESSION, session_id, "escalated", score=1),
        ],
    )
    rows = {r["name"]: r for r in stored(demo_store)}
    assert rows["helpful"]["trace_id"] == trace_id
    assert rows["helpful"]["session_id"] == session_id
    assert rows["escalated"]["trace_id"] is None
    assert rows["escalated"]["session_id"] == session_id
    with demo_store.reader() as reader:
        spans = target_spans(reader, TargetKind.SESSION, session_id)
        trace_spans = target_spans(reader, "trace", trace_id)
    assert {s["trace_id"] for s in trace_spans} == {trace_id}
    assert len(spans) >= len(trace_spans) > 1


def test_evaluator_definitions_and_calibrations_are_stored_and_read(store: Store) -> None:
    assert save_evaluator_definition(
        store, hash="h1", name="judge", kind="llm", definition={"rubric": "x", "labels": ["a"]}
    )
    assert not save_evaluator_definition(store, hash="h1", name="judge", kind="llm", definition={})
    saved = save_calibration(
        store,
        Calibration("judge", "h1", "human_correctness", 40, {"kappa": 0.7}, True, {"kappa": 0.6}),
    )
    with store.reader() as reader:
        definition = get_evaluator_definition(reader, "h1")
        assert definition is not None and definition["definition"]["labels"] == ["a"]
        assert [d["hash"] for d in list_evaluator_definitions(reader, "judge")] == ["h1"]
        (found,) = list_calibrations(reader, judge_hash="h1")
        assert found.id == saved.id and found.metrics == {"kappa": 0.7} and found.passed
        assert is_calibrated(reader, "h1") and not is_calibrated(reader, "h2")


# -- the tools ---------------------------------------------------------------------------------


def test_annotate_with_filters_counts_first_and_needs_confirm_above_the_setting(
    demo_store: Store,
) -> None:
    preview = annotate(demo_store, name="tone", score=0.5, where="span_kind = 'LLM'")
    assert preview.confirm_needed and preview.created == 0 and preview.matched > 20
    assert stored(demo_store) == []
    done = annotate(demo_store, name="tone", score=0.5, where="span_kind = 'LLM'", confirm=True)
    assert done.created == preview.matched
    few = annotate(demo_store, name="slow", label="yes", where="latency_ms > 10000")
    assert not few.confirm_needed and few.created == few.matched > 0
    traces = annotate(
        demo_store, name="has_error", label="yes", target="trace", where="status = 'ERROR'"
    )
    with demo_store.reader() as reader:
        errors = reader.scalar("SELECT count(*) FROM traces WHERE error_count > 0")
    assert traces.matched == errors


def test_annotate_refuses_what_it_cannot_write(demo_store: Store) -> None:
    assert refused(lambda: annotate(demo_store, name="x", label="y")).code == "invalid_argument"
    assert refused(lambda: annotate(demo_store, name="x", label="y", ids=["nope"])).code == (
        ErrorCode.UNKNOWN_SPAN
    )
    assert (
        refused(lambda: annotate(demo_store, name="x", label="y", where="no_such_column = 1")).code
        == ErrorCode.INVALID_FILTER
    )


def test_get_annotations_counts_per_name_and_label_then_pages_rows(demo_store: Store) -> None:
    spans = llm_spans(demo_store, 30)
    for i, (span_id, _) in enumerate(spans):
        annotate(
            demo_store,
            name="correctness",
            label="fail" if i % 3 == 0 else "pass",
            ids=[span_id],
            annotator_kind="HUMAN",
        )
    first = get_annotations(demo_store, name="correctness", limit=12)
    assert first.total == 30
    assert [(c.label, c.n, c.by_kind) for c in first.counts] == [
        ("pass", 20, {"HUMAN": 20}),
        ("fail", 10, {"HUMAN": 10}),
    ]
    assert len(first.rows) == 12 and first.truncated and first.next_cursor
    seen = [r.id for r in first.rows]
    cursor = first.next_cursor
    while cursor:
        page = get_annotations(demo_store, name="correctness", limit=12, cursor=cursor)
        seen += [r.id for r in page.rows]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 30
    fails = get_annotations(demo_store, label="fail", where="span_kind = 'LLM'", name="correctness")
    assert fails.total == 10
    stale = refused(lambda: get_annotations(demo_store, label="pass", cursor=first.next_cursor))
    assert stale.code == ErrorCode.INVALID_CURSOR


def test_where_aggregate_preview_span_data_and_sql_see_annotations(demo_store: Store) -> None:
    (bad, trace_id), (good, _), _ = llm_spans(demo_store)
    write_annotations(
        demo_store,
        [
            AnnotationInput(
                SPAN,
                bad,
                "correctness",
                label="fail",
                score=0.0,
                annotator_kind=AnnotatorKind.LLM,
                annotator="judge@1",
            ),
            AnnotationInput(SPAN, bad, "correctness", label="pass", annotator="alice"),
            AnnotationInput(
                SPAN,
                good,
                "correctness",
                label="fail",
                score=0.2,
                annotator_kind=AnnotatorKind.LLM,
                annotator="judge@1",
            ),
        ],
    )
    # A person's verdict wins over the judge's in where and aggregate.
    hits = search_spans(demo_store, where="annotation.correctness = 'fail'")
    assert [s.span_id for s in hits.spans] == [good]
    scored = search_spans(demo_store, where="annotation.correctness.score > 0.1")
    assert [s.span_id for s in scored.spans] == [good]
    grouped = aggregate(
        demo_store,
        group_by=["annotation.correctness"],
        metrics=["count"],
        where="span_kind = 'LLM'",
    )
    counts = {row[0]: row[1] for row in grouped.rows}
    assert counts["fail"] == 1 and counts["pass"] == 1 and counts[None] > 10
    preview = get_trace_preview(demo_store, trace_id=trace_id)
    line = next(line for line in preview.tree if bad in line)
    assert f"{bad} [correctness=fail|pass]" in line
    data = get_span_data(demo_store, span_id=bad)
    assert data.fields["annotations.0.annotator"] == "alice"
    assert data.fields["annotations.1.label"] == "fail"
    result = sql(
        demo_store,
        query="SELECT label, count(*) AS n FROM annotations WHERE name = 'correctness' "
        "GROUP BY label ORDER BY label",
    )
    assert result.rows == [["fail", 2], ["pass", 1]]


# -- over MCP ----------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_annotate_and_get_annotations_over_mcp(demo_store: Store) -> None:
    (span_id, _), *_ = llm_spans(demo_store)
    async with Client(create_mcp_server(demo_store, toolsets=["judgment"])) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) >= {"annotate", "get_annotations"}
        assert tools["annotate"].annotations.read_only_hint is False  # type: ignore[union-attr]
        written = await client.call_tool(
            "annotate", {"name": "correctness", "label": "fail", "ids": [span_id]}
        )
        assert not written.is_error and written.structured_content is not None
        assert written.structured_content["created"] == 1
        bad = await client.call_tool("annotate", {"name": "c", "label": "x", "ids": ["nope"]})
        read = await client.call_tool("get_annotations", {"name": "correctness"})
    assert bad.is_error
    block = bad.content[0]
    assert isinstance(block, TextContent) and block.text.startswith("[unknown_span]")
    assert read.structured_content is not None
    assert read.structured_content["counts"][0]["label"] == "fail"
    assert read.structured_content["rows"][0]["annotator"] == "llm"
    assert len(json.dumps(read.structured_content)) <= Settings().response_chars
