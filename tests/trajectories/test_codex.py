"""Codex rollouts read as spans: the shared real rollout and files written here."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

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
from traceproof.trajectories.codex import CodexReader
from traceproof.trajectories.common import (
    CACHE_READ,
    RAW,
    REASONING,
    STOP_REASON,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.records import RAW_CLIPPED, RAW_LIMIT, TIME_ESTIMATED, Clock, iso_ns

ROLLOUT = (
    SHARED_DATA / "codex" / "rollout-2026-05-11T11-26-55-019e1625-789d-76c0-80ab-3724b5ddb799.jsonl"
)
SESSION = "019e1625-789d-76c0-80ab-3724b5ddb799"
FAR_FUTURE = Clock(now=lambda: 4_000_000_000.0)


def line(ts: str, kind: str, **payload: Any) -> dict[str, Any]:
    return {"timestamp": f"2026-01-02T03:04:{ts}Z", "type": kind, "payload": payload}


def meta() -> dict[str, Any]:
    return line(
        "00.000",
        "session_meta",
        id="s-1",
        cwd="/home/ada/proj",
        cli_version="0.130.0",
        model_provider="openai",
        git={"branch": "main", "commit_hash": "abc", "repository_url": "git@x:y.git"},
    )


def turn(turn_id: str, prompt: str, t: int) -> list[dict[str, Any]]:
    """The records that open a turn at second ``t``."""
    return [
        line(f"{t:02d}.000", "event_msg", type="task_started", turn_id=turn_id),
        line(f"{t:02d}.001", "turn_context", turn_id=turn_id, model="gpt-5.5",
             cwd="/home/ada/proj"),
        line(f"{t:02d}.002", "response_item", type="message", role="user",
             content=[{"type": "input_text", "text": prompt}]),
        line(f"{t:02d}.003", "event_msg", type="user_message", message=prompt),
    ]  # fmt: skip


def exec_call(call_id: str, cmd: str, t: int, code: int, output: str) -> list[dict[str, Any]]:
    return [
        line(f"{t:02d}.100", "response_item", type="function_call", name="exec_command",
             arguments=json.dumps({"cmd": cmd}), call_id=call_id),
        line(f"{t:02d}.200", "event_msg", type="token_count",
             info={"last_token_usage": {"input_tokens": 100, "cached_input_tokens": 60,
                                        "output_tokens": 7, "reasoning_output_tokens": 3,
                                        "total_tokens": 107}}),
        line(f"{t:02d}.300", "response_item", type="function_call_output", call_id=call_id,
             output=f"Chunk ID: 1\nProcess exited with code {code}\nOutput:\n{output}"),
        line(f"{t:02d}.400", "event_msg", type="exec_command_end", call_id=call_id,
             command=["bash", "-lc", cmd], aggregated_output=output, exit_code=code,
             status="completed" if code == 0 else "failed"),
    ]  # fmt: skip


def answer(text: str, t: int, turn_id: str) -> list[dict[str, Any]]:
    return [
        line(f"{t:02d}.500", "response_item", type="message", role="assistant",
             content=[{"type": "output_text", "text": text}], phase="final_answer"),
        line(f"{t:02d}.600", "event_msg", type="token_count",
             info={"last_token_usage": {"input_tokens": 200, "output_tokens": 9}}),
        line(f"{t:02d}.700", "event_msg", type="task_complete", turn_id=turn_id,
             last_agent_message=text),
    ]  # fmt: skip


def rollout(tmp_path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> Path:
    path = tmp_path / "rollout-2026-01-02T03-04-00-s-1.jsonl"
    path.write_bytes(jsonl(*records) + tail)
    return path


@needs_shared_data
def test_the_shared_rollout_is_two_turns_of_model_calls_and_tool_calls() -> None:
    items = read(CodexReader(), ROLLOUT)
    spans = spans_of(items)
    assert kinds(items) == {"AGENT": 2, "LLM": 66, "TOOL": 105}
    assert malformed(items) == []
    # the UI copy of each assistant message, the developer prompt and AGENTS.md are not spans
    assert skipped(items) == {
        "event_msg/agent_message": 13,
        "response_item/message/developer": 1,
        "response_item/message/context": 1,
    }
    roots = [span for span in spans if span.kind == "AGENT"]
    assert [root.attributes["input.value"] for root in roots] == [
        "show tools",
        "let's update the defailt context compart to 90 in env var",
    ]
    assert roots[0].trace_id == trace_id_for(
        "codex", SESSION, "019e1625-d031-75e3-a85f-f143e43c0d84"
    )
    assert roots[0].attributes["output.value"].startswith("Available tool groups")
    assert roots[0].end_ns - roots[0].start_ns == 15_418_000_000  # task_started → task_complete
    assert {span.trace_id for span in spans} == {root.trace_id for root in roots}
    assert all(span.attributes["session.id"] == SESSION for span in spans)
    assert all(span.parent_span_id is None for span in roots)
    children = [span for span in spans if span.kind != "AGENT"]
    root_of = {root.trace_id: root.span_id for root in roots}
    assert all(span.parent_span_id == root_of[span.trace_id] for span in children)
    assert roots[0].resource == {
        "service.name": "codex",
        "service.version": "0.125.0",
        "process.cwd": "/Users/Sample_User/repos/codemie-ai/codemie-code",
        "vcs.repository.ref.name": "feat/codex-agent-plugin",
        "vcs.repository.url.full": "git@github.com:codemie-ai/codemie-code.git",
        "vcs.ref.head.revision": roots[0].resource["vcs.ref.head.revision"],
        "codex.originator": "codex-tui",
    }

    first_call = next(span for span in spans if span.kind == "LLM")
    assert first_call.attributes["llm.model_name"] == "gpt-5.5"
    assert first_call.attributes["llm.token_count.prompt"] == 18703
    assert first_call.attributes["llm.token_count.completion"] == 167
    assert first_call.attributes["llm.token_count.total"] == 18870
    assert first_call.attributes[CACHE_READ] == 0
    assert first_call.attributes[REASONING] == 62
    assert first_call.attributes[STOP_REASON] == "tool_calls"
    assert first_call.start_ns == iso_ns("2026-05-11T08:27:17.495Z")  # the user's prompt
    assert first_call.end_ns == iso_ns("2026-05-11T08:27:22.767Z")  # its token_count
    second = [span for span in spans if span.kind == "LLM"][1]
    assert second.attributes["llm.token_count.prompt"] == 18911  # input already counts cached
    assert second.attributes[CACHE_READ] == 18304

    tools = [span for span in spans if span.kind == "TOOL"]
    names = {name: sum(span.name == name for span in tools) for name in {s.name for s in tools}}
    assert names == {
        "write_stdin": 54,
        "exec_command": 43,
        "apply_patch": 3,
        "update_plan": 2,
        "web_search": 3,
    }
    errors = [span for span in tools if span.status == "ERROR"]
    assert [(span.name, span.attributes["process.exit.code"]) for span in errors] == [
        ("exec_command", 2),
        ("exec_command", 1),
        ("exec_command", 1),
        ("exec_command", 1),
    ]
    assert errors[0].status_message is not None
    assert errors[0].status_message.startswith("exit code 2: rg: node_modules/opencode-ai: No such")
    # the command's real output comes from exec_command_end, not the "Process running" poll
    sed = next(span for span in tools if span.name == "exec_command")
    assert sed.attributes["output.value"].startswith("---\nname: using-superpowers")
    assert sed.end_ns == iso_ns("2026-05-11T08:27:27.777Z")
    patch = next(span for span in tools if span.name == "apply_patch")
    assert patch.status == "OK"
    assert patch.attributes["input.value"].startswith("*** Begin Patch")
    assert patch.attributes["input.mime_type"] == "text/plain"
    assert patch.attributes["codex.changed_files"] == [
        "/Users/Sample_User/repos/codemie-ai/codemie-code/src/agents/plugins/__tests__/"
        "codemie-code-reasoning.test.ts"
    ]
    assert patch.span_id == span_id_for("codex", SESSION, "call:call_0gOiGGSkJEBvvlrXtBn0xzwL")
    search = next(span for span in tools if span.name == "web_search")
    assert search.span_id == span_id_for(
        "codex", SESSION, "call:ws_023bc037ca71df15016a0195bb758c819ba5b12d072d9bb0ae"
    )
    assert all(len(span.attributes[RAW]) <= RAW_LIMIT for span in spans)
    assert [record["payload"]["type"] for record in json.loads(sed.attributes[RAW])] == [
        "function_call",
        "function_call_output",
        "exec_command_end",
    ]

    again = spans_of(read(CodexReader(), ROLLOUT))
    assert [(s.trace_id, s.span_id) for s in again] == [(s.trace_id, s.span_id) for s in spans]


@needs_shared_data
def test_the_shared_rollout_is_stored_once_however_often_it_is_imported(tmp_path: Path) -> None:
    spans = spans_of(read(CodexReader(), ROLLOUT))
    rows = store_spans(tmp_path, spans, "codex")
    assert len(rows) == 173
    assert rows[0][:3] == ("AGENT", "codex turn", SESSION)
    errors = [row for row in rows if row[6] == "ERROR"]
    assert [(row[0], row[3]) for row in errors] == [("TOOL", "exec_command")] * 4
    # the model calls add up to the session's own running total (its last total_token_usage)
    assert sum(row[5] or 0 for row in rows if row[0] == "LLM") == 6_055_836
    assert sum(s.attributes.get("llm.token_count.completion", 0) for s in spans) == 9_118
    assert sum(s.attributes.get(CACHE_READ, 0) for s in spans) == 4_929_536


@needs_shared_data
def test_a_zstd_compressed_rollout_reads_like_the_plain_one() -> None:
    zstandard = pytest.importorskip("zstandard")
    packed = zstandard.ZstdCompressor().compress(ROLLOUT.read_bytes())
    stream = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed), read_across_frames=True)
    path = ROLLOUT.with_name(ROLLOUT.name + ".zst")
    assert CodexReader().sniff(path, b"")
    spans = spans_of(list(CodexReader().read(path, stream, NoRedact())))
    plain = spans_of(read(CodexReader(), ROLLOUT))
    assert [(s.span_id, s.attributes) for s in spans] == [(s.span_id, s.attributes) for s in plain]


def test_a_generated_rollout_with_a_failing_test_run_a_failed_patch_and_unicode(
    tmp_path: Path,
) -> None:
    records = [
        meta(),
        *turn("t1", "répare le test 🐍", 1),
        *exec_call("c1", "pytest -q", 2, 1, "1 failed, 3 passed — ошибка"),
        line("03.000", "response_item", type="custom_tool_call", call_id="c2",
             name="apply_patch", input="*** Begin Patch\n*** Update File: a.py\n"),
        line("03.100", "event_msg", type="token_count", info=None),
        line("03.200", "event_msg", type="patch_apply_end", call_id="c2", success=False,
             stderr="patch rejected: context mismatch\n", stdout=""),
        line("03.300", "response_item", type="custom_tool_call_output", call_id="c2",
             output=json.dumps({"output": "failed", "metadata": {"exit_code": 1}})),
        line("03.400", "event_msg", type="brand_new_event", x=1),
        line("03.500", "future_record", payload={"y": 2}),
        *answer("Fertig ✓", 4, "t1"),
    ]  # fmt: skip
    items = read(CodexReader(), rollout(tmp_path, records))
    spans = spans_of(items)
    assert kinds(items) == {"AGENT": 1, "LLM": 3, "TOOL": 2}
    assert skipped(items) == {"event_msg/brand_new_event": 1, "future_record": 1}
    root = next(span for span in spans if span.kind == "AGENT")
    assert (root.attributes["input.value"], root.attributes["output.value"]) == (
        "répare le test 🐍",
        "Fertig ✓",
    )
    assert root.resource["vcs.repository.ref.name"] == "main"
    assert root.resource["service.version"] == "0.130.0"
    pytest_run, patch = (span for span in spans if span.kind == "TOOL")
    assert pytest_run.status == "ERROR"
    assert pytest_run.status_message == "exit code 1: 1 failed, 3 passed — ошибка"
    assert json.loads(pytest_run.attributes["input.value"]) == {"cmd": "pytest -q"}
    assert patch.status == "ERROR"
    assert patch.status_message == "patch rejected: context mismatch"
    llm = [span for span in spans if span.kind == "LLM"]
    # the patch's model call closed on a token_count without usage: a call without tokens
    assert "llm.token_count.prompt" not in llm[1].attributes
    assert llm[2].attributes[STOP_REASON] == "stop"
    assert llm[2].attributes["output.value"] == "Fertig ✓"


def test_a_truncated_last_line_is_malformed_with_its_number_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    records = [meta(), *turn("t1", "hi", 1), *exec_call("c1", "ls", 2, 0, "a.py")]
    path = rollout(tmp_path, records, tail=b'{"timestamp":"2026-01-02T03:04:05Z","type":"resp')
    items = read(CodexReader(clock=FAR_FUTURE), path)
    assert [(bad.line, bad.reason[:8]) for bad in malformed(items)] == [
        (len(records) + 1, "not JSON")
    ]
    assert kinds(items) == {"AGENT": 1, "LLM": 1, "TOOL": 1}


def test_an_open_turn_keeps_its_root_and_unfinished_calls_until_it_ends(tmp_path: Path) -> None:
    records = [
        meta(),
        *turn("t1", "run it", 1),
        *exec_call("c1", "ls", 2, 0, "a.py"),
        line("03.000", "response_item", type="function_call", name="exec_command",
             arguments='{"cmd": "sleep 100"}', call_id="c2"),
        line("03.100", "event_msg", type="token_count", info={"last_token_usage": {}}),
    ]  # fmt: skip
    last = iso_ns("2026-01-02T03:04:03.100Z")
    assert last is not None
    live = Clock(now=lambda: last / 1e9 + 10, idle=300)
    path = rollout(tmp_path, records)
    first = spans_of(read(CodexReader(clock=live), path))
    assert [(span.kind, span.name) for span in first] == [
        ("LLM", "gpt-5.5"),
        ("TOOL", "exec_command"),
        ("LLM", "gpt-5.5"),
    ]
    assert all(span.parent_span_id == span_id_for("codex", "s-1", "turn:t1") for span in first)

    later = Clock(now=lambda: last / 1e9 + 301, idle=300)  # idle: the turn counts as over
    idle = spans_of(read(CodexReader(clock=later), path))
    assert [(span.kind, span.name) for span in idle[3:]] == [
        ("TOOL", "exec_command"),
        ("AGENT", "codex turn"),
    ]
    assert "output.value" not in idle[3].attributes

    grown = rollout(
        tmp_path,
        [
            *records,
            line("09.000", "response_item", type="function_call_output", call_id="c2", output="x"),
            line("09.100", "event_msg", type="exec_command_end", call_id="c2",
                 aggregated_output="done", exit_code=0),
            *answer("ok", 10, "t1"),
        ],
    )  # fmt: skip
    done = spans_of(read(CodexReader(clock=live), grown))
    assert [(s.span_id, s.kind) for s in done[:3]] == [(s.span_id, s.kind) for s in first]
    assert [(span.kind, span.attributes.get("output.value")) for span in done[3:]] == [
        ("TOOL", "done"),
        ("LLM", "ok"),
        ("AGENT", "ok"),
    ]


def test_a_huge_tool_output_is_kept_and_its_raw_record_clipped(tmp_path: Path) -> None:
    huge = "x" * 3_000_000
    records = [meta(), *turn("t1", "dump", 1), *exec_call("c1", "cat big", 2, 0, huge)]
    items = read(CodexReader(clock=FAR_FUTURE), rollout(tmp_path, records))
    tool = next(span for span in spans_of(items) if span.kind == "TOOL")
    assert tool.attributes["output.value"] == huge
    assert len(tool.attributes[RAW]) == RAW_LIMIT
    assert tool.attributes[RAW_CLIPPED] > 3_000_000


def test_the_older_unwrapped_format_splits_turns_at_user_messages(tmp_path: Path) -> None:
    records = [
        {"id": "old-1", "timestamp": "2025-08-18T01:16:13.522Z", "instructions": None,
         "git": {"commit_hash": "abc123", "branch": "main"}},
        {"record_type": "state"},
        {"type": "message", "id": None, "role": "user", "content": [{"type": "input_text",
         "text": "<environment_context>\n  <cwd>/Users/x/dev/legacy</cwd>\n"
                 "</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "look around"}]},
        {"type": "function_call", "name": "shell", "call_id": "k1",
         "arguments": json.dumps({"command": ["bash", "-lc", "ls nope"]})},
        {"type": "function_call_output", "call_id": "k1", "output": json.dumps(
            {"output": "ls: nope: No such file", "metadata": {"exit_code": 1}})},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "nothing there"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "welcome"}]},
    ]  # fmt: skip
    path = tmp_path / "rollout-2025-08-18T01-16-13-old-1.jsonl"
    path.write_bytes(jsonl(*records))
    assert CodexReader().sniff(Path("x.jsonl"), path.read_bytes()[:200])
    items = read(CodexReader(), path)
    spans = spans_of(items)
    assert skipped(items) == {"record_type/state": 1, "response_item/message/context": 1}
    assert [(span.kind, span.name, span.status) for span in spans] == [
        ("LLM", "model call", "OK"),
        ("TOOL", "shell", "ERROR"),
        ("LLM", "model call", "OK"),
        ("AGENT", "codex turn", "OK"),
        ("LLM", "model call", "OK"),
        ("AGENT", "codex turn", "OK"),
    ]
    assert spans[0].attributes["llm.reasoning_summary"] == "look around"
    assert spans[1].status_message == "exit code 1: ls: nope: No such file"
    assert spans[3].attributes["input.value"] == "list"
    assert spans[3].attributes["output.value"] == "nothing there"
    assert spans[5].attributes["input.value"] == "thanks"
    assert len({span.trace_id for span in spans}) == 2
    assert all(span.attributes[TIME_ESTIMATED] is True for span in spans)
    assert spans[0].resource == {
        "service.name": "codex",
        "process.cwd": "/Users/x/dev/legacy",
        "vcs.repository.ref.name": "main",
        "vcs.ref.head.revision": "abc123",
    }
    starts = [span.start_ns for span in spans if span.kind != "AGENT"]
    assert starts == sorted(starts)
    assert starts[0] > (iso_ns("2025-08-18T01:16:13.522Z") or 0)


def test_sniff_knows_rollouts_by_name_and_by_their_first_line() -> None:
    reader = CodexReader()
    assert reader.sniff(Path("rollout-2026-05-11T11-26-55-x.jsonl.zst"), b"")
    head = b'{"timestamp":"2026-05-11T08:27:17.490Z","type":"session_meta","payload":{"id":"x"'
    assert reader.sniff(Path("a.jsonl"), head)
    assert not reader.sniff(Path("a.jsonl"), b'{"type":"user","sessionId":"s","uuid":"u"}\n')
    assert not reader.sniff(Path("a.json"), b'[{"id": 0, "source": "user"}]')


def test_compaction_an_aborted_turn_a_local_shell_call_and_an_old_output_object(
    tmp_path: Path,
) -> None:
    records = [
        meta(),
        *turn("t1", "keep going", 1),
        line("02.000", "compacted", message="Summary: we fixed a.py",
             replacement_history=[{"type": "message", "role": "user", "content": []}]),
        line("03.000", "response_item", type="local_shell_call", call_id="L1", status="completed",
             action={"type": "exec", "command": ["bash", "-lc", "make"]}),
        line("03.100", "response_item", type="function_call", name="read_file", call_id="F1",
             arguments='{"path": "a.py"}'),
        line("03.200", "event_msg", type="token_count",
             info={"last_token_usage": {"input_tokens": 10, "output_tokens": 2}}),
        line("03.300", "response_item", type="function_call_output", call_id="F1",
             output={"content": "permission denied", "success": False}),
        line("03.400", "response_item", type="function_call_output", call_id="L1",
             output=json.dumps({"output": "ok", "metadata": {"exit_code": 0}})),
        line("03.500", "event_msg", type="exec_command_end", call_id="L1", exit_code=0,
             aggregated_output="built"),
        line("04.000", "event_msg", type="turn_aborted", reason="interrupted"),
    ]  # fmt: skip
    spans = spans_of(read(CodexReader(), rollout(tmp_path, records)))
    assert [(span.kind, span.name, span.status) for span in spans] == [
        ("LLM", "compaction", "OK"),
        ("LLM", "gpt-5.5", "OK"),
        ("TOOL", "read_file", "ERROR"),
        ("TOOL", "local_shell", "OK"),
        ("AGENT", "codex turn", "ERROR"),
    ]
    compaction = spans[0]
    assert compaction.attributes["output.value"] == "Summary: we fixed a.py"
    assert "replacement_history" not in compaction.attributes[RAW]
    assert spans[2].status_message == "permission denied"
    assert json.loads(spans[3].attributes["input.value"])["command"] == ["bash", "-lc", "make"]
    assert spans[3].attributes["output.value"] == "built"
    assert spans[4].status_message == "turn aborted: interrupted"


@needs_shared_data
def test_a_running_command_and_the_write_stdin_calls_that_poll_it_share_a_process_id() -> None:
    spans = spans_of(read(CodexReader(), ROLLOUT))
    tools = [span for span in spans if span.kind == "TOOL"]
    first = next(span for span in tools if span.name == "exec_command")
    polls = [span for span in tools if span.attributes.get("codex.process_id") == "48230"]
    assert [span.name for span in polls] == ["exec_command", "write_stdin"]
    assert polls[0] is first
    assert all(
        "codex.process_id" in span.attributes for span in tools if span.name == "write_stdin"
    )


def test_a_second_session_meta_keeps_the_first_session(tmp_path: Path) -> None:
    parent = meta()
    parent["payload"] = {**parent["payload"], "id": "parent-9", "cli_version": "0.1.0"}
    records = [meta(), parent, *turn("t1", "hi", 1), *answer("hello", 2, "t1")]
    items = read(CodexReader(), rollout(tmp_path, records))
    assert skipped(items) == {"session_meta/repeated": 1}
    spans = spans_of(items)
    assert {span.attributes["session.id"] for span in spans} == {"s-1"}
    assert {span.resource["service.version"] for span in spans} == {"0.130.0"}


def test_a_turn_context_before_its_task_started_opens_one_turn(tmp_path: Path) -> None:
    first, context, *rest = turn("t1", "hi", 1)
    records = [meta(), context, first, *rest, *answer("hello", 2, "t1")]
    spans = spans_of(read(CodexReader(), rollout(tmp_path, records)))
    assert [(span.kind, span.attributes.get("input.value")) for span in spans] == [
        ("LLM", None),
        ("AGENT", "hi"),
    ]


def test_a_prompt_before_its_task_started_is_that_turns_prompt(tmp_path: Path) -> None:
    first, context, _item, prompt = turn("t1", "hi", 1)
    records = [meta(), prompt, first, context, *answer("hello", 2, "t1")]
    spans = spans_of(read(CodexReader(), rollout(tmp_path, records)))
    assert [(span.kind, span.attributes.get("input.value")) for span in spans] == [
        ("LLM", None),
        ("AGENT", "hi"),
    ]
    assert spans[1].trace_id == trace_id_for("codex", "s-1", "t1")
