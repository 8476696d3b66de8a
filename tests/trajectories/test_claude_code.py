"""The Claude Code reader: turns, merged responses, tools, subagents, compaction, forks, growth."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.trajectories.claude_files import SESSION, Transcript, basic_session, text, tool_use
from traceproof.trajectories import claude_records
from traceproof.trajectories.claude_code import ClaudeCodeReader
from traceproof.trajectories.common import (
    DEAD_END,
    RAW,
    Item,
    Malformed,
    Resume,
    Skipped,
    StepSpan,
)
from traceproof.trajectories.readers import HEAD_BYTES, detect
from traceproof.trajectories.redact import Redactor

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "claude-code"


@pytest.fixture(autouse=True, params=["in memory", "spilled"])
def spill_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs twice: with the records' data in memory (a small file) and with
    every record's data in a spill from the first line on (what a large file does)."""
    if request.param == "spilled":
        monkeypatch.setattr(claude_records, "SPILL_BYTES", 0)


def read(path: Path, reader: ClaudeCodeReader | None = None) -> tuple[list[Item], Redactor]:
    redact = Redactor()
    with path.open("rb") as stream:
        return list((reader or ClaudeCodeReader()).read(path, stream, redact)), redact


def spans(items: list[Item]) -> list[StepSpan]:
    return [i for i in items if isinstance(i, StepSpan)]


def test_a_turn_becomes_a_trace_with_merged_responses_tools_and_errors(tmp_path: Path) -> None:
    path = basic_session().write(tmp_path / "s.jsonl")
    items, redact = read(path)
    *others, resume = [i for i in items if not isinstance(i, StepSpan)]
    assert others == [Skipped("file-history-snapshot", 1)]
    got = spans(items)
    # A grown file is read again from the last turn's prompt (the file is old: nothing open).
    last_root = [s for s in got if s.parent_span_id is None][-1]
    assert resume == Resume(last_root.line or 0, trace_id=last_root.trace_id)
    assert len({s.trace_id for s in got}) == 2
    root, *children = [s for s in got if s.trace_id == got[0].trace_id]
    assert (root.kind, root.name, root.parent_span_id) == ("AGENT", "claude-code turn", None)
    assert root.attributes["input.value"].endswith("my key is [REDACTED:anthropic_key]")
    assert root.attributes["output.value"] == "The total ignores the discount."
    assert root.attributes["claude_code.turn_duration_ms"] == 12000
    assert redact.count == 1  # once per record: the span's input and raw come from it
    assert (
        "sk-ant" not in root.attributes[RAW] and "[REDACTED:anthropic_key]" in root.attributes[RAW]
    )
    assert root.resource == {
        "service.name": "claude-code",
        "service.version": "2.1.39",
        "process.cwd": "/home/USER/projects/shop",
        "vcs.repository.ref.name": "main",
    }
    assert all(c.parent_span_id == root.span_id for c in children)
    llms = [c for c in children if c.kind == "LLM"]
    # Two lines of msg_1 are one span; tokens from its last line, prompt includes the cache.
    assert [c.attributes["llm.token_count.completion"] for c in llms] == [40, 10, 25]
    first = llms[0].attributes
    assert (first["llm.token_count.prompt"], first["llm.token_count.total"]) == (1103, 1143)
    assert first["llm.token_count.prompt_details.cache_read"] == 1000
    assert first["llm.token_count.prompt_details.cache_write"] == 100
    assert [c.attributes["llm.stop_reason"] for c in llms] == ["tool_use", "tool_use", "end_turn"]
    assert first["llm.stop_reason_inferred"] is True
    assert len(json.loads(first[RAW])) == 2
    tools = {c.name: c for c in children if c.kind == "TOOL"}
    assert (tools["Bash"].status, tools["Bash"].status_message) == ("ERROR", "Error: Exit code 1")
    assert tools["Bash"].attributes["input.value"] == '{"command":"pytest -q"}'
    assert tools["Bash"].attributes["output.value"] == "Exit code 1\n1 failed"
    assert (tools["Read"].status, tools["Read"].attributes["tool.name"]) == ("OK", "Read")
    assert [s.start_ns for s in children] == sorted(s.start_ns for s in children)


def test_ids_are_the_same_on_every_read(tmp_path: Path) -> None:
    path = basic_session().write(tmp_path / "s.jsonl")
    first = [(s.trace_id, s.span_id) for s in spans(read(path)[0])]
    assert first == [(s.trace_id, s.span_id) for s in spans(read(path)[0])]
    assert len(set(first)) == len(first) == 8


def test_a_retried_call_that_forked_the_chain_is_kept_as_a_dead_end(tmp_path: Path) -> None:
    t = Transcript()
    prompt = t.prompt("u1", "add a test", parent=None)
    t.assistant("a1", "msg_dead", tool_use("toolu_d", "Bash", {"command": "ls"}))
    t.result("r1", "toolu_d", "x.py")
    # The API call failed; Claude Code retried it as a new branch off the prompt.
    t.assistant("a2", "msg_live", text("Writing the test."), parent=prompt)
    t.assistant("a3", "msg_live2", tool_use("toolu_l", "Write", {"file_path": "t.py"}))
    t.result("r2", "toolu_l", "ok")
    t.system("s1", "turn_duration", durationMs=1)
    got = spans(read(t.write(tmp_path / "f.jsonl"))[0])
    dead = {s.name for s in got if s.attributes.get(DEAD_END)}
    assert dead == {"claude.messages", "Bash"}
    assert [
        s.attributes["output.value"] for s in got if s.attributes.get(DEAD_END) and s.kind == "LLM"
    ] == ['tool_use Bash: {"command":"ls"}']
    live = [s for s in got if not s.attributes.get(DEAD_END)]
    assert {s.name for s in live} == {"claude-code turn", "claude.messages", "Write"}
    assert len({s.trace_id for s in got}) == 1


def test_parallel_tool_calls_are_not_dead_ends(tmp_path: Path) -> None:
    t = Transcript()
    t.prompt("u1", "look around", parent=None)
    la = t.assistant("a1", "msg_1", tool_use("toolu_a", "Glob", {"pattern": "*.py"}))
    t.assistant("a2", "msg_1", tool_use("toolu_b", "Grep", {"pattern": "def"}))
    t.result("r_b", "toolu_b", "x.py:def f")
    t.result("r_a", "toolu_a", "x.py", parent=la)
    t.assistant("a3", "msg_2", text("Found it."))
    got = spans(read(t.write(tmp_path / "p.jsonl"))[0])
    assert not [s for s in got if s.attributes.get(DEAD_END)]
    assert Counter(s.kind for s in got) == {"AGENT": 1, "LLM": 2, "TOOL": 2}


def test_a_subagent_is_nested_under_the_task_call_that_started_it(tmp_path: Path) -> None:
    t = Transcript()
    t.prompt("u1", "research hooks", parent=None)
    t.assistant("a1", "msg_1", tool_use("toolu_t", "Task", {
        "description": "Research hooks", "subagent_type": "claude-code-guide", "prompt": "Find it",
    }))  # fmt: skip
    t.result("r1", "toolu_t", "Hooks print JSON.\nagentId: a881341", detail={
        "status": "completed", "agentId": "a881341", "totalDurationMs": 3000,
    })  # fmt: skip
    t.assistant("a2", "msg_2", text("Hooks print JSON."))
    main = t.write(tmp_path / f"{SESSION}.jsonl")
    sub = Transcript(agent_id="a881341", seconds=2)
    sub.prompt("s-u1", "Find it", parent=None)
    sub.assistant("s-a1", "msg_s1", tool_use("toolu_s", "WebFetch", {"url": "https://x"}),
                  model="claude-sonnet-4-5-20250929")  # fmt: skip
    sub.result("s-r1", "toolu_s", "page")
    sub.assistant("s-a2", "msg_s2", text("Hooks print JSON."), model="claude-sonnet-4-5-20250929")
    sub.write(tmp_path / SESSION / "subagents" / "agent-a881341.jsonl")
    got = spans(read(main)[0])
    by_name = {s.name: s for s in got}
    task, agent = by_name["Task"], by_name["subagent:claude-code-guide"]
    assert agent.kind == "AGENT" and agent.parent_span_id == task.span_id
    assert (agent.attributes["agent.id"], agent.attributes["input.value"]) == ("a881341", "Find it")
    assert agent.attributes["output.value"] == "Hooks print JSON."
    inner = [s for s in got if s.parent_span_id == agent.span_id]
    assert sorted(s.name for s in inner) == ["WebFetch", "claude.messages", "claude.messages"]
    assert {s.attributes.get("llm.model_name") for s in inner if s.kind == "LLM"} == {
        "claude-sonnet-4-5-20250929"
    }
    assert len({s.trace_id for s in got}) == 1
    # Read alone (its main file gone), a subagent transcript is its own trace.
    alone = spans(read(tmp_path / SESSION / "subagents" / "agent-a881341.jsonl")[0])
    assert alone[0].kind == "AGENT" and alone[0].parent_span_id is None
    assert len(alone) == 4


def test_a_compaction_is_an_llm_span_of_the_turn_with_its_summary(tmp_path: Path) -> None:
    t = Transcript()
    t.prompt("u1", "keep going", parent=None)
    before = t.assistant("a1", "msg_1", text("Working."))
    t.last = None
    t.system("c1", "compact_boundary", logicalParentUuid=before, content="Conversation compacted",
             compactMetadata={"trigger": "auto", "preTokens": 167094})  # fmt: skip
    summary = t.prompt("u-sum", "This session is being continued from a previous conversation.")
    t.records[-1]["isCompactSummary"] = True
    del summary
    t.assistant("a2", "msg_2", text("Continuing."))
    main = t.write(tmp_path / f"{SESSION}.jsonl")
    call = Transcript(agent_id="acompact-1", seconds=1)
    call.prompt("k1", "Your task is to create a detailed summary", parent=before)
    call.assistant("k2", "msg_k", text("<summary>…</summary>"), output_tokens=900)
    call.write(tmp_path / SESSION / "subagents" / "agent-acompact-1.jsonl")
    got = spans(read(main)[0])
    assert len({s.trace_id for s in got}) == 1  # the summary is not a new turn
    (compaction,) = [s for s in got if s.name == "compaction"]
    assert compaction.kind == "LLM"
    assert compaction.attributes["compaction.trigger"] == "auto"
    assert compaction.attributes["compaction.pre_tokens"] == 167094
    assert compaction.attributes["output.value"].startswith("This session is being continued")
    assert compaction.attributes["llm.token_count.completion"] == 900


def test_clear_and_local_commands_are_command_traces(tmp_path: Path) -> None:
    t = Transcript()
    t.prompt("u1", "<command-name>/clear</command-name>\n<command-message>clear</command-message>",
             parent=None)  # fmt: skip
    t.prompt("u2", "<local-command-stdout></local-command-stdout>")
    t.prompt("u3", "new task")
    t.assistant("a1", "msg_1", text("ok"))
    got = spans(read(t.write(tmp_path / "c.jsonl"))[0])
    roots = [s for s in got if s.parent_span_id is None]
    assert [(r.name, r.attributes.get("claude_code.command")) for r in roots] == [
        ("claude-code command", "/clear"),
        ("claude-code turn", None),
    ]


def test_bad_lines_are_rejected_with_their_numbers_and_unknown_types_skipped(
    tmp_path: Path,
) -> None:
    t = basic_session()
    t.records.insert(3, {"type": "brand-new-record", "uuid": "n1"})
    path = t.write(tmp_path / "s.jsonl", tail='{"parentUuid":"s2","type":"user","mess')
    items, _ = read(path)
    assert Skipped("brand-new-record", 4) in items
    (bad,) = [i for i in items if isinstance(i, Malformed)]
    assert bad.line == len(t.records) + 1 and bad.reason.startswith("not valid JSON")
    assert len(spans(items)) == 8


def test_bad_lines_and_skipped_records_come_first_in_line_order(tmp_path: Path) -> None:
    """The reader keeps skipped records apart from bad lines (compactly: a large session
    skips ~90k ``progress`` records); they are handed on together, in file order."""
    t = basic_session()
    t.records.insert(2, {"type": "progress", "uuid": "p1"})
    t.records.insert(4, {"type": "user", "uuid": "m1"})  # no message object: malformed
    t.records.insert(5, {"type": "queue-operation"})
    t.records.insert(6, {"type": "progress"})
    t.records.insert(7, {"type": ["user"], "uuid": "l1"})  # a type not a string: was TypeError
    items, _ = read(t.write(tmp_path / "s.jsonl"))
    first = [i for i in items if isinstance(i, Skipped | Malformed)]
    assert items[: len(first)] == first
    assert first == [
        Skipped("file-history-snapshot", 1),
        Skipped("progress", 3),
        Malformed(5, "a user record without a message object"),
        Skipped("queue-operation", 6),
        Skipped("progress", 7),
        Skipped("untyped", 8),
    ]


def test_the_open_turn_keeps_its_root_until_it_closes(tmp_path: Path) -> None:
    now = time.time()
    from datetime import UTC, datetime

    t = Transcript(start=datetime.fromtimestamp(now - 60, UTC))
    t.prompt("u1", "run the tests", parent=None)
    t.assistant("a1", "msg_1", tool_use("toolu_1", "Bash", {"command": "pytest"}))
    t.result("r1", "toolu_1", "3 passed")
    t.assistant("a2", "msg_2", tool_use("toolu_2", "Bash", {"command": "ruff check"}))
    path = t.write(tmp_path / "live.jsonl")
    reader = ClaudeCodeReader(now=now)
    early = spans(read(path, reader)[0])
    # No root yet; the finished call and its tool are there; the last response and its
    # unanswered tool call wait.
    assert sorted((s.kind, s.name) for s in early) == [("LLM", "claude.messages"), ("TOOL", "Bash")]
    t.result("r2", "toolu_2", "All checks passed!")
    t.assistant("a3", "msg_3", text("All green."))
    t.prompt("u2", "thanks")
    later = spans(read(t.write(path), reader)[0])
    assert {(s.trace_id, s.span_id) for s in early} < {(s.trace_id, s.span_id) for s in later}
    first_turn = [s for s in later if s.trace_id == early[0].trace_id]
    assert Counter(s.kind for s in first_turn) == {"AGENT": 1, "LLM": 3, "TOOL": 2}
    # Idle long enough, the last turn closes too.
    closed = spans(read(path, ClaudeCodeReader(now=now + 3600))[0])
    assert sum(1 for s in closed if s.parent_span_id is None) == 2


def test_detect_knows_claude_code_by_its_records_and_not_span_json(tmp_path: Path) -> None:
    path = basic_session().write(tmp_path / "s.jsonl")
    head = path.read_bytes()[:HEAD_BYTES]
    reader = detect(path, head)
    assert reader is not None and reader.name == "claude_code"
    span = b'{"name":"x","context":{"trace_id":"ab","span_id":"cd"},"span_kind":"LLM"}\n'
    assert detect(tmp_path / "spans.jsonl", span) is None
    # Where Claude Code writes, the path alone tells (a head of large snapshot records, say).
    where = tmp_path / ".claude" / "projects" / "-home-me" / "s.jsonl"
    found = detect(where, b'{"type":"file-history-snapshot"')
    assert found is not None and found.name == "claude_code"


def distinct_calls(path: Path) -> tuple[int, int]:
    """(API responses, tool calls) a file holds, counted directly: distinct message ids and
    tool_use ids of its assistant lines."""
    messages: set[object] = set()
    tools: set[object] = set()
    for number, line in enumerate(path.open("rb")):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("type") != "assistant":
            continue
        message = record.get("message")
        if not isinstance(message, dict):
            continue
        messages.add(message.get("id") or record.get("uuid") or number)
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                tools.add(block["id"])
    return len(messages), len(tools)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/claude-code is not here")
def test_every_response_and_tool_call_of_the_shared_transcripts_is_a_span() -> None:
    from traceproof.ingest.files import expand_paths

    kinds: Counter[str] = Counter()
    bad: set[str] = set()
    rebuilt: list[StepSpan] = []
    for path in expand_paths([SHARED]):
        items, _ = read(path)
        got = spans(items)
        copied = {
            s.span_id
            for s in got
            if s.kind == "AGENT" and s.attributes.get("claude_code.subagent_from_progress")
        }
        rebuilt += [s for s in got if s.parent_span_id in copied]
        got = [s for s in got if s.parent_span_id not in copied]
        kinds.update("compaction" if s.name == "compaction" else s.kind for s in got)
        bad |= {path.name for i in items if isinstance(i, Malformed)}
    expected = [distinct_calls(p) for p in SHARED.rglob("*.jsonl") if "acompact" not in p.name]
    assert kinds["LLM"] == sum(m for m, _ in expected)
    assert kinds["TOOL"] == sum(t for _, t in expected)
    assert kinds["compaction"] == len(list(SHARED.rglob("agent-acompact-*.jsonl")))
    # The only bad lines are the ones edge_cases.jsonl holds on purpose.
    assert bad == {"edge_cases.jsonl"}
    # subagent.jsonl's subagent has no transcript: it is rebuilt from the copies of its records
    # that the progress records hold.
    copies = [
        json.loads(line)["data"]["message"]
        for line in (SHARED / "spotter" / "subagent.jsonl").open("rb")
        if b'"agent_progress"' in line
    ]
    messages = {c["message"]["id"] for c in copies if c["type"] == "assistant"}
    uses = {
        b["id"]
        for c in copies
        if c["type"] == "assistant"
        for b in c["message"]["content"]
        if b.get("type") == "tool_use"
    }
    assert Counter(s.kind for s in rebuilt) == {"LLM": len(messages), "TOOL": len(uses)}
    main = SHARED / "spotter" / "258c7280-ae70-4798-800f-63464d01a85d.jsonl"
    got = spans(read(main)[0])
    agents = [s for s in got if s.name.startswith("subagent:")]
    assert [a.attributes["agent.id"] for a in agents] == ["a881341"]
    (task,) = [s for s in got if s.span_id == agents[0].parent_span_id]
    assert task.name == "Task"
    assert [s.name for s in got].count("compaction") == 1


def _add_inline_sidechain(t: Transcript, answer: str) -> None:
    """Sidechain records (isSidechain, no agent id) written into ``t``'s own file: a prompt and
    the subagent's ``answer``."""
    side = Transcript(agent_id="old", seconds=t.seconds)
    side.prompt("x1", "Plan the work", parent=None)
    side.assistant("x2", "msg_x", text(answer))
    for record in side.records:
        del record["agentId"]
    t.records += side.records


def test_inline_sidechain_records_are_a_subagent_under_their_task_call(tmp_path: Path) -> None:
    t = Transcript()
    t.prompt("u1", "plan it", parent=None)
    call = t.assistant("a1", "msg_1", tool_use("toolu_t", "Task", {"prompt": "Plan the work"}))
    # Older Claude Code wrote the subagent's records into the main file, marked isSidechain.
    _add_inline_sidechain(t, "Step 1, step 2.")
    t.last = call
    t.result("r1", "toolu_t", "Step 1, step 2.")
    t.assistant("a2", "msg_2", text("Planned."))
    got = spans(read(t.write(tmp_path / "old.jsonl"))[0])
    by_name = {s.name: s for s in got}
    agent = by_name["subagent:agent"]
    assert agent.parent_span_id == by_name["Task"].span_id
    assert agent.attributes["input.value"] == "Plan the work"
    inner = [s for s in got if s.parent_span_id == agent.span_id]
    assert [(s.kind, s.attributes["output.value"]) for s in inner] == [("LLM", "Step 1, step 2.")]
    assert not [s for s in got if s.attributes.get(DEAD_END)]


def test_inline_sidechain_records_without_a_turn_give_no_spans(tmp_path: Path) -> None:
    """A file whose main chain opens no turn (a system record) but holds sidechain records
    without an agent id: nothing to nest them under, so no spans, and no failure."""
    t = Transcript()
    t.system("s1", "local_command")
    _add_inline_sidechain(t, "Step 1.")
    items = read(t.write(tmp_path / "no-turn.jsonl"))[0]
    assert spans(items) == []
    assert not [i for i in items if isinstance(i, Malformed)]


def test_a_huge_unicode_tool_output_is_kept_whole_and_its_raw_record_clipped(
    tmp_path: Path,
) -> None:
    t = Transcript()
    t.prompt("u1", "café ☕ — read the log", parent=None)
    t.assistant("a1", "msg_1", tool_use("toolu_1", "Read", {"file_path": "/var/log/big.log"}))
    huge = "ligne répétée ✓\n" * 10_000  # 160,000 characters
    t.result("r1", "toolu_1", huge)
    t.assistant("a2", "msg_2", text("It repeats."))
    got = spans(read(t.write(tmp_path / "big.jsonl"))[0])
    (tool,) = [s for s in got if s.kind == "TOOL"]
    assert tool.attributes["output.value"] == huge
    assert len(tool.attributes[RAW]) == 64 * 1024
    assert tool.attributes["trajectory.raw_clipped"] > 160_000
    root = next(s for s in got if s.parent_span_id is None)
    assert root.attributes["input.value"] == "café ☕ — read the log"
    assert "trajectory.raw_clipped" not in root.attributes


def test_directories_are_walked_and_subagents_stay_with_their_session(tmp_path: Path) -> None:
    from traceproof.ingest.files import expand_paths

    claude = tmp_path / "projects" / "-home-me-shop"
    files = [
        claude / "s1.jsonl",
        claude / "s1" / "subagents" / "agent-a1.jsonl",  # read with s1.jsonl
        claude / "gone" / "subagents" / "agent-a2.jsonl",  # its session file is missing
        tmp_path / "sessions" / "2026" / "01" / "02" / "rollout-2026-01-02T10-00-00-x.jsonl.zst",
        tmp_path / ".hidden" / "x.jsonl",
        tmp_path / "notes.txt",
    ]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    assert expand_paths([tmp_path]) == [
        claude / "gone" / "subagents" / "agent-a2.jsonl",
        claude / "s1.jsonl",
        files[3],
    ]
    # A file named on the command line is imported as given.
    assert expand_paths([files[1]]) == [files[1]]
