"""OpenHands event streams and evaluation output read as spans: the shared real files and files
written here."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from tests.conftest import SHARED_DATA, needs_shared_data
from tests.trajectories.reader_helpers import (
    NoRedact,
    jsonl,
    kinds,
    malformed,
    read,
    skipped,
    spans_of,
    store_spans,
)
from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    RAW,
    STOP_REASON,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.openhands import OpenHandsReader
from traceproof.trajectories.records import RAW_CLIPPED, RAW_LIMIT, iso_ns

OPENHANDS = SHARED_DATA / "openhands"
EVAL = OPENHANDS / "multi_swe_bench_output.jsonl"


@needs_shared_data
def test_the_shared_event_streams_are_turns_of_model_calls_and_tool_calls() -> None:
    found = {}
    for name in ("basic", "basic_gui_mode", "basic_interactions", "wrong_initial_state"):
        path = OPENHANDS / f"{name}.json"
        assert OpenHandsReader().sniff(path, path.read_bytes()[:65536])
        items = read(OpenHandsReader(), path)
        assert malformed(items) == []
        spans = spans_of(items)
        found[name] = (
            dict(kinds(items)),
            len({span.trace_id for span in spans}),
            [span.name for span in spans if span.status == "ERROR"],
        )
    assert found == {
        "basic": ({"LLM": 2, "TOOL": 2, "AGENT": 1}, 1, []),
        "basic_gui_mode": ({"LLM": 5, "TOOL": 4, "AGENT": 1}, 1, ["execute_bash"]),
        "basic_interactions": ({"LLM": 3, "AGENT": 3, "TOOL": 1}, 3, []),
        "wrong_initial_state": ({"LLM": 4, "TOOL": 4, "AGENT": 1}, 1, []),
    }


@needs_shared_data
def test_a_shared_event_stream_keeps_models_tokens_cache_and_tool_results() -> None:
    spans = spans_of(read(OpenHandsReader(), OPENHANDS / "wrong_initial_state.json"))
    assert [(span.kind, span.name) for span in spans] == [
        ("LLM", "claude-3-5-sonnet-20241022"),
        ("TOOL", "str_replace_editor"),
        ("LLM", "claude-3-5-sonnet-20241022"),
        ("TOOL", "execute_bash"),
        ("LLM", "claude-3-5-sonnet-20241022"),
        ("TOOL", "str_replace_editor"),
        ("LLM", "claude-3-5-sonnet-20241022"),
        ("TOOL", "finish"),
        ("AGENT", "openhands turn"),
    ]
    root = spans[-1]
    assert root.trace_id == trace_id_for("openhands", "wrong_initial_state", "event:0")
    assert root.attributes["input.value"] == "Please rename game_2048.py to 2048.py"
    assert root.attributes["output.value"].startswith("The file has been successfully renamed")
    assert root.start_ns == iso_ns("2025-01-27T23:16:50.239610")
    llm = spans[2]
    assert llm.attributes["llm.token_count.prompt"] == 3616  # LiteLLM's prompt includes cache
    assert llm.attributes[CACHE_READ] == 3471
    assert llm.attributes[CACHE_WRITE] == 139
    assert llm.attributes[STOP_REASON] == "tool_calls"
    assert llm.span_id == span_id_for(
        "openhands", "wrong_initial_state", "response:chatcmpl-1f2bc7b4-848a-45ec-a2d8-aff83e5adbd6"
    )
    bash = spans[3]
    assert json.loads(bash.attributes["input.value"]) == {
        "command": "mv /workspace/game_2048.py /workspace/2048.py",
        "is_input": False,
        "blocking": False,
        "hidden": False,
        "confirmation_state": "confirmed",
    }
    assert bash.attributes["process.exit.code"] == 0
    assert (bash.start_ns, bash.end_ns) == (
        iso_ns("2025-01-27T23:16:56.951967"),
        iso_ns("2025-01-27T23:16:57.600730"),
    )
    assert (llm.start_ns, llm.end_ns) == (spans[1].end_ns, bash.start_ns)
    assert all(span.parent_span_id == root.span_id for span in spans[:-1])
    assert all(span.resource == {"service.name": "openhands"} for span in spans)


@needs_shared_data
def test_a_command_that_timed_out_is_an_error_and_state_changes_are_skipped() -> None:
    items = read(OpenHandsReader(), OPENHANDS / "basic_gui_mode.json")
    assert skipped(items) == {
        "observation/agent_state_changed": 4,
        "action/change_agent_state": 1,
        "observation/null": 3,
    }
    (failed,) = [span for span in spans_of(items) if span.status == "ERROR"]
    assert failed.attributes["process.exit.code"] == -1
    assert failed.status_message is not None
    assert failed.status_message.startswith("Command `cd /workspace/todo-app && python3 -m http")


@needs_shared_data
def test_the_shared_evaluation_output_is_one_trace_per_instance(tmp_path: Path) -> None:
    assert OpenHandsReader().sniff(EVAL, EVAL.read_bytes()[:65536])
    items = read(OpenHandsReader(), EVAL)
    spans = spans_of(items)
    assert skipped(items) == {"action/system": 3, "action/recall": 3, "observation/recall": 3}
    roots = [span for span in spans if span.kind == "AGENT"]
    assert [(root.attributes["openhands.instance_id"], root.status) for root in roots] == [
        ("ponylang__ponyc-4595", "OK"),
        ("ponylang__ponyc-4593", "OK"),
        ("ponylang__ponyc-4588", "ERROR"),
    ]
    assert roots[2].status_message == (
        "RuntimeError: Agent reached maximum iteration in headless mode. "
        "Current iteration: 50, max iteration: 50"
    )
    assert len({span.trace_id for span in spans}) == 3
    records = [json.loads(line) for line in EVAL.read_text().splitlines()]
    responses = sum(len(record["metrics"]["token_usages"]) for record in records)
    actions = sum(
        1 for r in records for e in r["history"] if "action" in e and e.get("tool_call_metadata")
    )
    assert kinds(items) == {"AGENT": 3, "LLM": responses, "TOOL": actions + 2}
    first = records[0]
    run = first["metadata"]["eval_output_dir"].rstrip("/").rsplit("/", 1)[-1]
    assert run == "openrouter-llama-4-maverick_maxiter_50_N_v0.35.0-no-hint-run_1"
    session = f"ponylang__ponyc-4595@{run}"
    assert roots[0].attributes["session.id"] == session
    assert roots[0].attributes["input.value"] == first["instruction"]
    assert roots[0].attributes["output.value"] == first["test_result"]["git_patch"]
    assert roots[0].resource["vcs.repository.name"] == "ponylang/ponyc"
    llm = next(span for span in spans if span.kind == "LLM")
    usage = first["metrics"]["token_usages"][0]
    latency = first["metrics"]["response_latencies"][0]["latency"]
    assert llm.span_id == span_id_for("openhands", session, f"response:{usage['response_id']}")
    assert llm.attributes["llm.token_count.prompt"] == usage["prompt_tokens"]
    assert llm.attributes["llm.model_name"] == "meta-llama/llama-4-maverick"
    assert llm.attributes["llm.latency_ms"] == round(latency * 1000, 3)
    for record, root in zip(records, roots, strict=True):  # calls add up to the run's totals
        calls = [s for s in spans if s.kind == "LLM" and s.trace_id == root.trace_id]
        total = record["metrics"]["accumulated_token_usage"]
        assert sum(s.attributes["llm.token_count.prompt"] for s in calls) == total["prompt_tokens"]
        assert (
            sum(s.attributes["llm.token_count.completion"] for s in calls)
            == (total["completion_tokens"])
        )
    errors = [span for span in spans if span.status == "ERROR" and span.kind == "TOOL"]
    exits = sum(
        1
        for r in records
        for e in r["history"]
        if e.get("observation") == "run" and e["extras"]["metadata"]["exit_code"] != 0
    )
    assert len(errors) == exits + 2  # two rejected tool calls answered by an error observation
    invalid = [span for span in errors if span.name == "error"]
    assert invalid[0].status_message is not None
    assert invalid[0].status_message.startswith("Parameter 'command' is expected to be one of")
    assert all(len(span.attributes[RAW]) <= RAW_LIMIT for span in spans)
    rows = store_spans(tmp_path, spans, "openhands")
    assert len(rows) == len(spans)
    assert sorted(row[0] for row in rows if not row[7]) == ["AGENT"] * 3


def event(id: int, second: float, source: str = "agent", **rest: Any) -> dict[str, Any]:
    return {"id": id, "timestamp": f"2025-03-01T10:00:{second:09.6f}", "source": source,
            "message": rest.pop("message", ""), **rest}  # fmt: skip


def tool_call(call: str, response: str, function: str = "execute_bash") -> dict[str, Any]:
    return {"function_name": function, "tool_call_id": call, "total_calls_in_response": 1,
            "model_response": {"id": response, "model": "gpt-4.1",
                               "choices": [{"finish_reason": "tool_calls",
                                            "message": {"content": "Läuft 🏃"}}],
                               "usage": {"prompt_tokens": 50, "completion_tokens": 5,
                                         "total_tokens": 55}}}  # fmt: skip


def test_a_generated_stream_with_a_failing_command_unicode_and_a_huge_output(
    tmp_path: Path,
) -> None:
    huge = "z" * 1_500_000
    events = [
        event(0, 1, "user", action="message", args={"content": "Lance les tests ✓"}),
        event(1, 2, action="run", args={"command": "pytest", "thought": "t"},
              tool_call_metadata=tool_call("a", "r1")),
        event(2, 3, cause=1, observation="run", content="2 failed",
              message="Command `pytest` executed with exit code 1.",
              extras={"metadata": {"exit_code": 1}}, success=False),
        event(3, 4, action="run", args={"command": "cat big.log"},
              tool_call_metadata=tool_call("b", "r2")),
        event(4, 5, cause=3, observation="run", content=huge,
              extras={"metadata": {"exit_code": 0}}, success=True),
        event(5, 6, action="teleport", args={}),
        event(6, 7, action="message", args={"content": "Fini: 2 échecs"}),
        event(7, 8, "environment", observation="agent_state_changed",
              extras={"agent_state": "awaiting_user_input"}),
        event(8, 9, "user", action="message", args={"content": "merci"}),
        event(9, 10, weird=True),
        "not an event",
    ]  # fmt: skip
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(events), encoding="utf-8")
    items = read(OpenHandsReader(), path)
    assert skipped(items) == {
        "observation/agent_state_changed": 1,
        "event/unknown": 1,
        "event/not-an-object": 1,
    }
    spans = spans_of(items)
    assert [(span.kind, span.name, span.status) for span in spans] == [
        ("LLM", "gpt-4.1", "OK"),
        ("TOOL", "execute_bash", "ERROR"),
        ("LLM", "gpt-4.1", "OK"),
        ("TOOL", "execute_bash", "OK"),
        ("LLM", "model call", "OK"),
        ("TOOL", "teleport", "OK"),  # an action no observation answered
        ("AGENT", "openhands turn", "OK"),
        ("AGENT", "openhands turn", "OK"),
    ]
    assert spans[1].status_message == "Command `pytest` executed with exit code 1."
    assert spans[1].attributes["output.value"] == "2 failed"
    assert spans[0].attributes["output.value"] == "Läuft 🏃"
    assert spans[3].attributes["output.value"] == huge
    assert len(spans[3].attributes[RAW]) == RAW_LIMIT
    assert spans[3].attributes[RAW_CLIPPED] > 1_500_000
    first, second = spans[6], spans[7]
    assert (first.attributes["input.value"], first.attributes["output.value"]) == (
        "Lance les tests ✓",
        "Fini: 2 échecs",
    )
    assert second.attributes["input.value"] == "merci"
    assert first.trace_id != second.trace_id
    assert [s.span_id for s in spans] == [
        s.span_id for s in spans_of(read(OpenHandsReader(), path))
    ]


def test_a_truncated_event_stream_or_evaluation_line_is_malformed(tmp_path: Path) -> None:
    stream = tmp_path / "cut.json"
    text = json.dumps([event(0, 1, "user", action="message", args={"content": "x"})], indent=1)
    stream.write_text(text[:-10], encoding="utf-8")
    (bad,) = malformed(read(OpenHandsReader(), stream))
    assert bad.line is not None
    line = {
        "instance_id": "a__b-1",
        "instruction": "fix it",
        "metadata": {"eval_output_dir": "out/run-7"},
        "history": [event(0, 1, "user", action="message", args={"content": "fix it"}),
                    event(1, 2, action="run", args={"command": "ls"},
                          tool_call_metadata=tool_call("c", "r9"))],
        "metrics": {"token_usages": [{"response_id": "r9", "prompt_tokens": 7}],
                    "response_latencies": [{"response_id": "r9", "latency": 0.5}]},
        "error": None,
        "test_result": {"git_patch": "", "report": {"resolved": True}},
    }  # fmt: skip
    output = tmp_path / "output.jsonl"
    output.write_bytes(jsonl(line, {"no": "history"}) + b'{"instance_id": "cut')
    items = read(OpenHandsReader(), output)
    assert [(bad.line, bad.reason[:8]) for bad in malformed(items)] == [(3, "not JSON")]
    assert skipped(items) == {"line without history": 1}
    spans = spans_of(items)
    assert [(span.kind, span.name) for span in spans] == [
        ("LLM", "gpt-4.1"),
        ("TOOL", "execute_bash"),
        ("AGENT", "openhands run"),
    ]
    assert spans[0].attributes["llm.token_count.prompt"] == 50  # the response's own usage wins
    assert spans[0].end_ns - spans[0].start_ns == 500_000_000  # the measured latency
    root = spans[-1]
    assert root.attributes["session.id"] == "a__b-1@run-7"
    assert root.attributes["openhands.resolved"] is True
    assert root.attributes["output.value"] == ""
    # a stream that only supports read() (a decompressor) reads the same
    plain = io.BytesIO(output.read_bytes())

    class ReadOnly:
        def read(self, size: int = -1) -> bytes:
            return plain.read(size)

    again = spans_of(list(OpenHandsReader().read(output, ReadOnly(), NoRedact())))  # type: ignore[arg-type]
    assert [s.span_id for s in again] == [s.span_id for s in spans]


def test_sniff_tells_openhands_from_other_json() -> None:
    reader = OpenHandsReader()
    assert reader.sniff(Path("x.json"), b'[{"id": 0, "timestamp": "2025", "source": "user", "a')
    assert reader.sniff(Path("o.jsonl"), b'{"instance_id": "a", "instruction": "x", "history": [')
    assert not reader.sniff(Path("x.json"), b'[{"name": "span", "context": {"trace_id": "1"}}]')
    assert not reader.sniff(Path("x.jsonl"), b'{"resourceSpans": []}')
