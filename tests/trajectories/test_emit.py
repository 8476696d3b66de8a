"""StepSpans are stored like any other span: kinds, sessions, tool names and tokens in columns."""

from __future__ import annotations

from pathlib import Path

from traceproof.ingest.normalize import SpanRows
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.trajectories.common import StepSpan, span_id_for, trace_id_for
from traceproof.trajectories.emit import add_steps


def test_a_turn_of_step_spans_is_stored_with_its_columns_and_ids_are_stable(
    tmp_path: Path,
) -> None:
    trace = trace_id_for("claude_code", "s1", "u1")
    assert trace == trace_id_for("claude_code", "s1", "u1") != trace_id_for("codex", "s1", "u1")
    root = span_id_for("claude_code", "s1", "u1")
    session = {"session.id": "s1"}
    spans = [
        StepSpan(trace, root, None, "turn", "AGENT", 1_000, 9_000, attributes=session),
        StepSpan(trace, span_id_for("claude_code", "s1", "m1"), root, "claude", "LLM", 2_000,
                 3_000, attributes={**session, "llm.model_name": "claude-sonnet-4-5",
                                    "llm.token_count.prompt": 120}),
        StepSpan(trace, span_id_for("claude_code", "s1", "t1"), root, "Bash", "TOOL", 4_000,
                 5_000, "ERROR", "exit 1", attributes={**session, "tool.name": "Bash",
                                                      "input.value": '{"command": "pytest"}'}),
        StepSpan(trace, "", root, "no id", "TOOL", 6_000, 7_000),
    ]  # fmt: skip
    rows = SpanRows()
    rejected = add_steps(rows, spans, project="agents", source="claude_code")
    assert [(span.name, reason) for span, reason in rejected] == [("no id", "span has no span id")]
    db = tmp_path / "s.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        store.write(rows.table())
        with store.reader() as reader:
            got = reader.rows(
                "SELECT name, span_kind, session_id, tool_name, model, prompt_tokens, status, "
                "error_message, attributes->>'$.trajectory.source' FROM spans ORDER BY start_time"
            )
    assert got == [
        ("turn", "AGENT", "s1", None, None, None, "OK", None, "claude_code"),
        ("claude", "LLM", "s1", None, "claude-sonnet-4-5", 120, "OK", None, "claude_code"),
        ("Bash", "TOOL", "s1", "Bash", None, None, "ERROR", "exit 1", "claude_code"),
    ]


def test_resources_equal_in_python_but_of_other_types_keep_their_own_json() -> None:
    trace = trace_id_for("claude_code", "s2", "u1")
    spans = [
        StepSpan(trace, span_id_for("claude_code", "s2", str(i)), None, "turn", "AGENT", 1_000,
                 2_000, resource={"process.pid": value, "host.name": "h"})
        for i, value in enumerate([1, True, 1.0, 1, "1"])
    ]  # fmt: skip
    rows = SpanRows()
    assert add_steps(rows, spans, project="agents", source="claude_code") == []
    assert rows.table().column("resource").to_pylist() == [
        '{"process":{"pid":1},"host":{"name":"h"}}',
        '{"process":{"pid":true},"host":{"name":"h"}}',
        '{"process":{"pid":1.0},"host":{"name":"h"}}',
        '{"process":{"pid":1},"host":{"name":"h"}}',
        '{"process":{"pid":"1"},"host":{"name":"h"}}',
    ]
