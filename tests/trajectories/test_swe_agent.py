"""SWE-agent and mini-swe-agent trajectories read as spans: the shared real files and files
written here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import SHARED_DATA, needs_shared_data
from tests.trajectories.reader_helpers import (
    kinds,
    malformed,
    read,
    skipped,
    spans_of,
    store_spans,
)
from traceproof.trajectories.common import RAW, STOP_REASON, TARGET, span_id_for, trace_id_for
from traceproof.trajectories.records import RAW_CLIPPED, RAW_LIMIT, TIME_ESTIMATED
from traceproof.trajectories.swe_agent import MiniSweAgentReader, SweAgentReader

SWE = SHARED_DATA / "swe-agent"
MARSHMALLOW = (
    "trajectories__demonstrations__replay__marshmallow-code__marshmallow-1867__function_calling"
    "__install-1__marshmallow-code__marshmallow-1867"
)


@needs_shared_data
def test_every_shared_traj_is_one_task_with_a_model_step_and_an_action_per_step() -> None:
    files = sorted(SWE.glob("*.traj"))
    assert len(files) == 22
    totals = {"AGENT": 0, "LLM": 0, "TOOL": 0}
    errors = []
    for path in files:
        assert SweAgentReader().sniff(path, path.read_bytes()[:65536])
        assert not MiniSweAgentReader().sniff(path, path.read_bytes()[:65536])
        items = read(SweAgentReader(), path)
        assert malformed(items) == [] and skipped(items) == {}
        spans = spans_of(items)
        assert len({span.trace_id for span in spans}) == 1
        for kind, count in kinds(items).items():
            totals[kind] += count
        errors += [span.status_message for span in spans if span.status == "ERROR"]
    assert totals == {"AGENT": 22, "LLM": 232, "TOOL": 232}
    assert len(errors) == 17
    assert (
        sum(str(e).startswith("Your proposed edit has introduced new syntax") for e in errors) == 13
    )
    assert sum(str(e).startswith("Traceback (most recent call last)") for e in errors) == 3


@needs_shared_data
def test_a_shared_function_calling_traj_names_its_tools_and_keeps_its_run(tmp_path: Path) -> None:
    path = SWE / f"{MARSHMALLOW}.traj"
    spans = spans_of(read(SweAgentReader(), path))
    root = spans[-1]
    assert (root.kind, root.name, root.status) == ("AGENT", "swe-agent run", "OK")
    assert root.trace_id == trace_id_for("swe_agent", MARSHMALLOW, "task")
    assert root.span_id == span_id_for("swe_agent", MARSHMALLOW, "root")
    assert root.attributes["input.value"].startswith("We're currently solving the following issue")
    assert root.attributes["output.value"].startswith("\r\ndiff --git a/src/marshmallow/fields.py")
    assert root.attributes["swe_agent.exit_status"] == "submitted"
    assert root.attributes["swe_agent.api_calls"] == 11
    assert root.resource == {
        "service.name": "swe-agent",
        "swe_agent.working_dir": "/testbed",
        "vcs.ref.head.revision": "bfd2593d4b416122e30cdefe0c72d322ef471611",
    }
    llm, tool = spans[0], spans[1]
    assert (llm.kind, llm.name, llm.attributes["llm.model_name"]) == ("LLM", "gpt-4o", "gpt-4o")
    assert llm.attributes["output.value"].startswith("Let's first start by reproducing")
    assert llm.attributes[STOP_REASON] == "tool_calls"
    assert (tool.kind, tool.name, tool.attributes["tool.name"]) == ("TOOL", "create", "create")
    assert json.loads(tool.attributes["input.value"]) == {"command": "create reproduce.py"}
    assert tool.attributes[TARGET] == "create reproduce.py"
    assert json.loads(tool.attributes["tool.parameters"]) == {"filename": "reproduce.py"}
    assert tool.attributes["output.value"].startswith("[File: reproduce.py (1 lines total)]")
    # no times in a .traj: laid out from the file's time with each action's execution time
    assert tool.end_ns - tool.start_ns == int(0.2396368359986809 * 1e9)
    assert (llm.end_ns - llm.start_ns, llm.end_ns) == (1_000_000, tool.start_ns)
    assert all(span.attributes[TIME_ESTIMATED] is True for span in spans)
    assert root.end_ns == max(span.end_ns for span in spans) <= path.stat().st_mtime_ns
    assert all(span.parent_span_id == root.span_id for span in spans[:-1])
    rows = store_spans(tmp_path, spans, "swe_agent")
    assert len(rows) == 23
    assert rows[0][:3] == ("AGENT", "swe-agent run", MARSHMALLOW)
    assert rows[1][:5] == ("LLM", "gpt-4o", MARSHMALLOW, None, "gpt-4o")
    assert rows[2][:4] == ("TOOL", "create", MARSHMALLOW, "create")


@needs_shared_data
def test_a_traj_with_only_its_history_takes_its_steps_from_the_chat() -> None:
    path = SWE / "trajectories__demonstrations__function_calling_simple.traj"
    spans = spans_of(read(SweAgentReader(), path))
    assert [span.name for span in spans if span.kind == "TOOL"] == [
        "find_file",
        "open",
        "edit",
        "bash",
        "submit",
    ]
    bash = next(span for span in spans if span.name == "bash")
    assert json.loads(bash.attributes["input.value"]) == {
        "command": "python tests/missing_colon.py"
    }
    assert bash.attributes["output.value"].startswith("8.2\n")
    assert "swe_agent.exit_status" not in spans[-1].attributes  # no info in this file


def traj(**extra: Any) -> dict[str, Any]:
    return {
        "environment": "main",
        "trajectory": [
            {"action": "grep -rn 'größe' src", "observation": "src/a.py:3: größe = 1 ✓",
             "response": "Suchen wir 🔍", "thought": "Suchen wir 🔍", "execution_time": 0.5,
             "state": {"working_dir": "/repo"}},
            {"action": "nosuchtool --x", "observation": "bash: nosuchtool: command not found",
             "response": "", "thought": "try", "state": "{\"working_dir\": \"/repo\"}"},
        ],
        "history": [
            {"role": "system", "content": "You are..."},
            {"role": "user", "content": "Fix the größe bug", "is_demo": True},
            {"role": "user", "content": "Fix the size bug"},
            {"role": "assistant", "content": "x", "action": "grep -rn 'größe' src"},
        ],
        "info": {"exit_status": "exit_cost", "submission": None,
                 "model_stats": {"instance_cost": 1.5, "tokens_sent": 900,
                                 "tokens_received": 40, "api_calls": 2}},
        **extra,
    }  # fmt: skip


def test_a_run_that_did_not_submit_is_an_error_and_its_failed_command_too(
    tmp_path: Path,
) -> None:
    path = tmp_path / "django__django-1.traj"
    data = traj(replay_config=json.dumps({"agent": {"model": {"name": "claude-3-7"}}}))
    data["info"]["swe_agent_version"] = "1.1.0"
    path.write_text(json.dumps(data), encoding="utf-8")
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    spans = spans_of(read(SweAgentReader(), path))
    assert [(span.kind, span.name, span.status) for span in spans] == [
        ("LLM", "claude-3-7", "OK"),  # the model from replay_config (JSON text in 1.x)
        ("TOOL", "grep", "OK"),
        ("LLM", "claude-3-7", "OK"),
        ("TOOL", "nosuchtool", "ERROR"),
        ("AGENT", "swe-agent run", "ERROR"),
    ]
    root = spans[-1]
    assert root.resource["service.version"] == "1.1.0"
    assert root.status_message == "exit status exit_cost"
    assert root.attributes["input.value"] == "Fix the size bug"  # demonstrations are not the task
    assert root.attributes["llm.token_count.prompt"] == 900
    assert root.attributes["llm.token_count.completion"] == 40
    assert root.attributes["swe_agent.cost"] == 1.5
    assert root.attributes["session.id"] == "django__django-1"
    assert spans[1].attributes["output.value"] == "src/a.py:3: größe = 1 ✓"
    assert spans[0].attributes["output.value"] == "Suchen wir 🔍"
    assert spans[3].status_message == "bash: nosuchtool: command not found"
    assert root.end_ns == 1_700_000_000_000_000_000
    assert root.start_ns == spans[0].start_ns
    assert [s.span_id for s in spans] == [s.span_id for s in spans_of(read(SweAgentReader(), path))]


def test_a_truncated_traj_is_malformed_at_its_line_and_odd_steps_are_skipped(
    tmp_path: Path,
) -> None:
    text = json.dumps(traj(), indent=1)
    path = tmp_path / "cut.traj"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    (bad,) = malformed(read(SweAgentReader(), path))
    assert bad.line is not None and bad.line > 1
    odd = traj()
    odd["trajectory"].append("not a step")
    path.write_text(json.dumps(odd), encoding="utf-8")
    items = read(SweAgentReader(), path)
    assert skipped(items) == {"trajectory/not-an-object": 1}
    assert kinds(items) == {"AGENT": 1, "LLM": 2, "TOOL": 2}


def test_a_huge_observation_is_kept_and_the_raw_step_clipped(tmp_path: Path) -> None:
    data = traj()
    data["trajectory"][0]["observation"] = "y" * 2_000_000
    path = tmp_path / "big.traj"
    path.write_text(json.dumps(data), encoding="utf-8")
    tool = spans_of(read(SweAgentReader(), path))[1]
    assert tool.attributes["output.value"] == "y" * 2_000_000
    assert len(tool.attributes[RAW]) == RAW_LIMIT
    assert tool.attributes[RAW_CLIPPED] > 2_000_000


def mini(messages: list[dict[str, Any]], status: str = "Submitted") -> dict[str, Any]:
    return {
        "info": {"exit_status": status, "submission": "diff --git a/x b/x",
                 "model_stats": {"instance_cost": 0.02, "api_calls": 2},
                 "mini_version": "1.9.0",
                 "config": {"model": {"model_name": "claude-sonnet-4-5",
                                      "model_kwargs": {}},
                            "environment": {"cwd": "/testbed"}}},
        "messages": messages,
        "trajectory_format": "mini-swe-agent-1.1",
    }  # fmt: skip


def test_mini_swe_agent_commands_return_codes_timestamps_and_usage(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Please fix the parser"},
        {"role": "assistant", "content": "Look first.\n```bash\nls src\n```",
         "extra": {"timestamp": 1_750_000_000.0, "response": {
             "model": "claude-sonnet-4-5-20250929",
             "choices": [{"finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230}}}},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\nparser.py\n</output>",
         "extra": {"timestamp": 1_750_000_002.5}},
        {"role": "assistant", "content": "Run tests.\n```bash\npytest -q\n```",
         "extra": {"timestamp": 1_750_000_003.0}},
        {"role": "user", "content": "<returncode>1</returncode>\n<output>\n2 failed\n</output>",
         "extra": {"timestamp": 1_750_000_009.0}},
        {"role": "critic", "content": "?"},
    ]  # fmt: skip
    path = tmp_path / "astropy__astropy-12907.traj.json"
    path.write_text(json.dumps(mini(messages)), encoding="utf-8")
    head = path.read_bytes()[:65536]
    assert MiniSweAgentReader().sniff(path, head)
    assert MiniSweAgentReader().sniff(Path("x.json"), head)
    assert not SweAgentReader().sniff(path, head)
    items = read(MiniSweAgentReader(), path)
    assert skipped(items) == {"message/critic": 1}
    spans = spans_of(items)
    assert [(span.kind, span.name, span.status) for span in spans] == [
        ("LLM", "claude-sonnet-4-5-20250929", "OK"),
        ("TOOL", "bash", "OK"),
        ("LLM", "claude-sonnet-4-5", "OK"),
        ("TOOL", "bash", "ERROR"),
        ("AGENT", "mini-swe-agent run", "OK"),
    ]
    first = spans[0]
    assert first.attributes["llm.token_count.prompt"] == 1200
    assert first.attributes[STOP_REASON] == "stop"
    assert first.start_ns == 1_750_000_000_000_000_000
    assert json.loads(spans[1].attributes["input.value"]) == {"command": "ls src"}
    assert (spans[1].start_ns, spans[1].end_ns) == (first.start_ns, 1_750_000_002_500_000_000)
    assert spans[3].status_message == "exit code 1: 2 failed"
    root = spans[-1]
    assert root.attributes["input.value"] == "Please fix the parser"
    assert root.attributes["output.value"] == "diff --git a/x b/x"
    assert root.resource == {
        "service.name": "mini-swe-agent",
        "service.version": "1.9.0",
        "mini_swe_agent.working_dir": "/testbed",
    }
    assert TIME_ESTIMATED not in root.attributes
    assert root.trace_id == trace_id_for("mini_swe_agent", "astropy__astropy-12907", "task")


def test_mini_swe_agent_v1_without_extras_and_a_run_that_hit_its_limits(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Task: rename the flag"},
        {"role": "assistant", "content": "<mswea_bash_command>sed -i s/a/b/ f.py"
                                          "</mswea_bash_command>"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
        {"role": "assistant", "content": "I think it is done."},
    ]  # fmt: skip
    path = tmp_path / "run.traj.json"
    path.write_text(json.dumps(mini(messages, status="LimitsExceeded")), encoding="utf-8")
    spans = spans_of(read(MiniSweAgentReader(), path))
    assert [(span.kind, span.status) for span in spans] == [
        ("LLM", "OK"),
        ("TOOL", "OK"),
        ("LLM", "OK"),
        ("AGENT", "ERROR"),
    ]
    assert json.loads(spans[1].attributes["input.value"]) == {"command": "sed -i s/a/b/ f.py"}
    assert spans[-1].status_message == "exit status LimitsExceeded"
    assert all(span.attributes[TIME_ESTIMATED] is True for span in spans)


def test_mini_swe_agent_v2_fences_and_tool_calling_models(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Please solve this issue: typo"},
        {"role": "assistant", "content": "Check.\n\n```mswea_bash_command\nls -la\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\na.py\n</output>",
         "extra": {"returncode": 0}},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "bash", "arguments": json.dumps({"command": "grep -n teh a.py"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3: teh",
         "extra": {"returncode": 1}},
        {"role": "user", "content": "", "extra": {"exit_status": "Submitted", "submission": "d"}},
    ]  # fmt: skip
    path = tmp_path / "v2.traj.json"
    path.write_text(json.dumps(mini(messages)), encoding="utf-8")
    spans = spans_of(read(MiniSweAgentReader(), path))
    tools = [span for span in spans if span.kind == "TOOL"]
    assert [json.loads(span.attributes["input.value"])["command"] for span in tools] == [
        "ls -la",
        "grep -n teh a.py",
    ]
    assert [(span.name, span.status) for span in tools] == [("bash", "OK"), ("bash", "ERROR")]
    assert tools[1].attributes["output.value"] == "3: teh"
    assert tools[1].status_message == "exit code 1"
