"""Action labels: each agent's tool names, shell commands, test runners' outputs, recoveries."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from traceproof.trajectories.actions import (
    FILES,
    ActionRules,
    InvalidRules,
    classify,
    classify_command,
    label_trace,
)
from traceproof.trajectories.common import StepSpan
from traceproof.trajectories.outcomes import run_summary


def tool(
    name: str,
    args: Any,
    output: str = "",
    *,
    start: int,
    status: str = "OK",
    message: str | None = None,
) -> StepSpan:
    value = args if isinstance(args, str) else orjson.dumps(args).decode()
    return StepSpan(
        "t" * 32,
        f"{start:016x}",
        "r" * 16,
        name,
        "TOOL",
        start,
        start + 1,
        status,  # type: ignore[arg-type]
        message,
        attributes={"tool.name": name, "input.value": value, "output.value": output},
    )


def llm(start: int) -> StepSpan:
    return StepSpan("t" * 32, f"{start:016x}", "r" * 16, "claude", "LLM", start, start + 1)


@pytest.mark.parametrize(
    ("name", "args", "action", "target"),
    [
        # Claude Code
        ("Read", {"file_path": "/r/app.py"}, "localize", "/r/app.py"),
        ("Grep", {"pattern": "def main", "path": "src"}, "localize", "def main in src"),
        ("Glob", {"pattern": "**/*.py"}, "localize", "**/*.py"),
        ("LS", {"path": "/r"}, "localize", "/r"),
        ("Edit", {"file_path": "/r/app.py", "old_string": "a", "new_string": "b"}, "edit",
         "/r/app.py"),
        ("Write", {"file_path": "/r/new.py", "content": "x"}, "edit", "/r/new.py"),
        ("MultiEdit", {"file_path": "/r/app.py", "edits": []}, "edit", "/r/app.py"),
        ("NotebookEdit", {"notebook_path": "/r/n.ipynb"}, "edit", "/r/n.ipynb"),
        ("Bash", {"command": "pytest -x tests/test_app.py"}, "verify",
         "pytest -x tests/test_app.py"),
        ("TodoWrite", {"todos": [{"content": "fix"}]}, "plan", None),
        ("Task", {"description": "find callers", "prompt": "…", "subagent_type": "Explore"},
         "delegate", "Explore"),
        ("Agent", {"description": "review"}, "delegate", "review"),
        ("WebFetch", {"url": "https://docs.python.org", "prompt": "x"}, "web",
         "https://docs.python.org"),
        ("WebSearch", {"query": "duckdb json"}, "web", "duckdb json"),
        ("mcp__traceproof__search_traces", {"limit": 5}, "other", None),
        ("mcp__playwright__browser_click", {"element": "ok"}, "web", None),
        # Codex
        ("shell", {"command": ["bash", "-lc", "rg -n compact src"]}, "localize",
         "rg -n compact src"),
        ("shell", {"command": ["cargo", "test", "--all"]}, "verify", "cargo test --all"),
        ("exec_command", {"cmd": "sed -n '1,180p' src/a.ts", "workdir": "/r"}, "localize",
         "sed -n '1,180p' src/a.ts"),
        ("exec_command", {"cmd": "npm test -- --run"}, "verify", "npm test -- --run"),
        ("apply_patch", "*** Begin Patch\n*** Update File: src/a.ts\n@@\n-x\n+y\n*** End Patch",
         "edit", "src/a.ts"),
        ("shell", {"command": ["apply_patch", "*** Begin Patch\n*** Add File: b.py\n+x\n"]},
         "edit", "b.py"),
        ("update_plan", {"plan": [{"step": "a", "status": "pending"}]}, "plan", None),
        # SWE-agent / OpenHands
        ("bash", {"command": "find . -name '*.py' | head"}, "localize",
         "find . -name '*.py' | head"),
        ("execute_bash", {"command": "cd /testbed && python -m pytest tests -q"}, "verify",
         "cd /testbed && python -m pytest tests -q"),
        ("str_replace_editor", {"command": "view", "path": "/testbed/x.py"}, "localize",
         "/testbed/x.py"),
        ("str_replace_editor", {"command": "str_replace", "path": "/testbed/x.py"}, "edit",
         "/testbed/x.py"),
        ("str_replace_editor", {"command": "create", "path": "/testbed/y.py"}, "edit",
         "/testbed/y.py"),
        ("bash", {"command": "str_replace_editor view /testbed/x.py"}, "localize",
         "str_replace_editor view /testbed/x.py"),
        ("bash", {"command": "open src/x.py 30"}, "localize", "open src/x.py 30"),
        ("bash", {"command": "edit 10:12\nfoo\nend_of_edit"}, "edit",
         "edit 10:12\nfoo\nend_of_edit"),
        ("search_dir", {"command": "search_dir Dataset"}, "localize", "search_dir Dataset"),
        ("submit", {"command": "submit"}, "other", "submit"),
        ("execute_ipython_cell", {"code": "print(1)"}, "execute", "print(1)"),
        ("browser", {"code": "goto('http://x')"}, "web", None),
        ("think", {"thought": "hmm"}, "plan", None),
        ("finish", {"message": "done"}, "other", "done"),
        ("TaskOutput", {"task_id": "b7636e2"}, "execute", "b7636e2"),
        ("BashOutput", {"bash_id": "b1"}, "execute", "b1"),
    ],
)  # fmt: skip
def test_each_agents_tool_names_get_an_action_and_a_target(
    name: str, args: Any, action: str, target: str | None
) -> None:
    value = args if isinstance(args, str) else orjson.dumps(args).decode()
    got = classify(name, value)
    assert (got.action, got.target) == (action, target)


@pytest.mark.parametrize(
    ("command", "action"),
    [
        ("cat src/a.py", "localize"),
        ("rg -n foo | head -20", "localize"),
        ("grep -rn 'x' . && ls -la", "localize"),
        ("sed -n '10,40p' a.py", "localize"),
        ("tail -f log.txt", "localize"),
        ("find . -name '*.pyc' -delete", "execute"),
        ("sed -i 's/a/b/' a.py", "edit"),
        ("cat > a.py <<'EOF'\nimport os\npytest\nEOF", "edit"),
        ("echo hi > notes.txt", "edit"),
        ("echo hi 2>&1", "localize"),
        ("ls > /dev/null", "localize"),
        ("python script.py", "execute"),
        ("pip install -e .", "execute"),
        ("uv run pytest -q", "verify"),
        ("timeout 60 pytest tests", "verify"),
        ("PYTHONPATH=. python3 -m pytest", "verify"),
        ("python -m unittest discover", "verify"),
        ("go test ./...", "verify"),
        ("go build ./...", "execute"),
        ("cargo build", "execute"),
        ("cargo clippy", "verify"),
        ("pnpm test", "verify"),
        ("yarn test --watch=false", "verify"),
        ("npm run lint", "verify"),
        ("npx jest src", "verify"),
        ("npx vitest run", "verify"),
        ("npm install", "execute"),
        ("ruff check . && ruff format --check .", "verify"),
        ("ruff format .", "execute"),
        ("mypy traceproof", "verify"),
        ("npx tsc --noEmit", "verify"),
        ("eslint src", "verify"),
        ("flake8", "verify"),
        ("pyright", "verify"),
        ("make test", "verify"),
        ("mix test test/a_test.exs 2>&1 | tail -15", "verify"),
        ("mix dialyzer 2>&1 | grep -A2 x", "verify"),
        ("mix compile 2>&1 | tail -5", "execute"),
        ("make build", "execute"),
        ("git status", "vcs"),
        ("git diff | head -50", "vcs"),
        ("git add -A && git commit -m x", "vcs"),
        ("cd /repo && git log --oneline -5", "vcs"),
        ("bash -lc 'pytest -q'", "verify"),
        ("sleep 5 && pytest", "verify"),
    ],
)
def test_shell_commands_are_classified_by_what_they_run(command: str, action: str) -> None:
    assert classify_command(command).action == action


def test_files_read_and_edited_are_recorded() -> None:
    assert classify_command("cat a.py b/c.py").files == ["a.py", "b/c.py"]
    assert classify_command("sed -n 's/x/y/p' src/m.py").files == ["src/m.py"]
    assert classify_command("sed -i 's/x/y/' src/m.py").files == ["src/m.py"]
    assert classify_command("cat > out/new.py <<EOF\nx\nEOF").files == ["out/new.py"]
    patch = "*** Begin Patch\n*** Update File: a.py\n*** Add File: b.py\n*** End Patch"
    assert classify("apply_patch", patch).files == ["a.py", "b.py"]
    assert classify("Read", '{"file_path": "a.py"}').files == ["a.py"]
    assert classify("Grep", '{"pattern": "x"}').files == []


@pytest.mark.parametrize(
    ("output", "passed", "failed"),
    [
        ("....F\n=========== 1 failed, 4 passed in 0.12s ===========", 4, 1),
        ("===== 10 passed, 2 skipped in 1.01s =====", 10, 0),
        ("= 1 failed, 2 passed, 1 error in 3.2s =", 2, 2),
        ("2 passed, 1 warning in 0.5s", 2, 0),
        ("test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out", 5, 0),
        ("test result: ok. 3 passed; 0 failed;\ntest result: FAILED. 1 passed; 2 failed;", 4, 2),
        ("Test Suites: 1 failed, 1 total\nTests:       2 failed, 5 passed, 7 total", 5, 2),
        (" Test Files  1 passed (1)\n      Tests  3 passed (3)\n   Start at  10:00", 3, 0),
        (" Test Files  1 failed (1)\n      Tests  1 failed | 2 passed (3)", 2, 1),
        ("  4 passing (20ms)\n  1 failing", 4, 1),
        ("....\n---------\nRan 4 tests in 0.010s\n\nOK", 4, 0),
        ("Ran 4 tests in 0.010s\n\nFAILED (failures=1, errors=1)", 2, 2),
        ("=== RUN   TestA\n--- PASS: TestA (0.00s)\n--- FAIL: TestB (0.00s)\nFAIL", 1, 1),
        ("Finished in 0.2 seconds\n12 tests, 1 failure\n\nRandomized with seed 1", 11, 1),
        ("Finished in 0.01 seconds\n10 examples, 0 failures", 10, 0),
        ("Finished in 5.5 seconds (1.4s async)\n14 doctests, 397 tests, 2 failures", 409, 2),
    ],
)
def test_test_runner_summaries_give_counts(output: str, passed: int, failed: int) -> None:
    tests = run_summary(output)
    assert tests is not None
    assert (tests.passed, tests.failed) == (passed, failed)


def test_go_test_without_verbose_output_gives_a_verdict_without_counts() -> None:
    ok = run_summary("ok  \tgithub.com/x/y\t0.01s\nok  \tgithub.com/x/z\t0.02s")
    fail = run_summary("--- FAIL\nFAIL\tgithub.com/x/y\t0.01s")
    assert ok is not None and (ok.passed, ok.failed, ok.verdict_failed) == (None, None, False)
    assert fail is not None and fail.verdict_failed
    assert run_summary("hello") is None


def test_label_trace_numbers_steps_labels_outcomes_and_marks_recoveries() -> None:
    spans = [
        tool("Bash", {"command": "pytest -q"}, "==== 1 failed, 3 passed in 0.1s ====", start=40,
             status="ERROR", message="Exit code 1"),
        llm(10),
        tool("Read", {"file_path": "a.py"}, "1\timport os", start=20),
        llm(30),
        tool("Edit", {"file_path": "a.py"}, "ok", start=60),
        llm(50),
        tool("Bash", {"command": "pytest -q"}, "==== 4 passed in 0.1s ====", start=70),
        tool("Bash", {"command": "python run.py"}, "Traceback…", start=80, status="ERROR"),
        tool("Bash", {"command": "ls"}, "a.py", start=90),
        StepSpan("t" * 32, "r" * 16, None, "turn", "AGENT", 0, 100),
    ]  # fmt: skip
    label_trace(spans)
    by_start = {s.start_ns: s.attributes for s in spans}
    assert [by_start[t].get("trajectory.step") for t in sorted(by_start)] == [
        None, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ]  # fmt: skip
    rows = [
        (a.get("trajectory.action"), a.get("trajectory.outcome"), a.get("trajectory.recover"))
        for t, a in sorted(by_start.items())
        if "trajectory.action" in a
    ]
    assert rows == [
        ("localize", "ok", None),
        ("verify", "tests_failed", None),
        ("edit", "ok", True),
        ("verify", "tests_passed", None),
        ("execute", "error", None),
        ("localize", "ok", True),
    ]
    assert (by_start[40]["trajectory.tests.passed"], by_start[40]["trajectory.tests.failed"]) == (
        3,
        1,
    )
    assert by_start[70]["trajectory.tests.failed"] == 0
    assert by_start[20][FILES] == ["a.py"]
    assert "trajectory.action" not in by_start[10]


@pytest.mark.parametrize(
    "output",
    [
        "Exit code 2\nerror: no such file",  # Claude Code
        "Chunk ID: 1\nWall time: 0.1 seconds\nProcess exited with code 1\nOutput:\nboom",  # Codex
        '{"output": "boom", "metadata": {"exit_code": 127, "duration_seconds": 0.1}}',  # Codex
        "boom\n[Command finished with exit code 1]",  # OpenHands
    ],
)
def test_a_non_zero_exit_in_the_output_is_an_error(output: str) -> None:
    spans = [tool("shell", {"command": "make"}, output, start=1)]
    label_trace(spans)
    assert spans[0].attributes["trajectory.outcome"] == "error"


def test_a_zero_exit_is_ok_and_exit_text_in_a_file_read_is_not_an_error() -> None:
    spans = [
        tool("exec_command", {"cmd": "make"}, "Process exited with code 0\nOutput:\n", start=1),
        tool("Read", {"file_path": "log"}, "Exit code 1", start=2),
    ]
    label_trace(spans)
    assert [s.attributes["trajectory.outcome"] for s in spans] == ["ok", "ok"]


def test_a_lint_run_that_finds_problems_is_a_failed_verification() -> None:
    spans = [
        tool("Bash", {"command": "mypy src"}, "src/a.py:3: error: x\nFound 1 error in 1 file",
             start=1),
        tool("Bash", {"command": "ruff check ."}, "All checks passed!", start=2),
    ]  # fmt: skip
    label_trace(spans)
    assert [s.attributes["trajectory.outcome"] for s in spans] == ["error", "ok"]
    assert spans[1].attributes["trajectory.recover"] is True
    credo = [
        tool("Bash", {"command": "mix credo --strict | tail"}, "found 5 software design "
             "suggestions.", start=1),
        tool("Bash", {"command": "mix credo --strict"}, "found no issues.", start=2),
    ]  # fmt: skip
    label_trace(credo)
    assert [s.attributes["trajectory.outcome"] for s in credo] == ["error", "ok"]


def test_codex_write_stdin_continues_the_command_its_session_started() -> None:
    spans = [
        tool("exec_command", {"cmd": "npx vitest run"},
             "Chunk ID: a\nProcess running with session ID 48230\nOutput:\n", start=1),
        tool("write_stdin", {"session_id": 48230, "chars": ""},
             "Process exited with code 1\nOutput:\n      Tests  1 failed | 2 passed (3)", start=2),
        tool("write_stdin", {"session_id": 1, "chars": ""}, "", start=3),
    ]  # fmt: skip
    label_trace(spans)
    got = [(s.attributes["trajectory.action"], s.attributes["trajectory.outcome"]) for s in spans]
    assert got == [("verify", "ok"), ("verify", "tests_failed"), ("execute", "ok")]
    assert spans[1].attributes["trajectory.target"] == "npx vitest run"


def test_a_dead_end_error_does_not_make_the_next_step_a_recovery() -> None:
    dead = tool("Bash", {"command": "make"}, "", start=1, status="ERROR")
    dead.attributes["trajectory.dead_end"] = True
    spans = [dead, tool("Bash", {"command": "ls"}, "", start=2)]
    label_trace(spans)
    assert "trajectory.recover" not in spans[1].attributes


def test_labels_are_deterministic_whatever_the_input_order() -> None:
    def build() -> list[StepSpan]:
        spans = [
            tool("Bash", {"command": "pytest"}, "1 failed in 1s", start=5, status="ERROR"),
            tool("Edit", {"file_path": "a.py"}, "", start=5),
            llm(5),
        ]
        spans[1].span_id = "e" * 16
        return spans

    a, b = build(), build()[::-1]
    label_trace(a)
    label_trace(b)
    key = sorted((s.span_id, sorted(s.attributes.items(), key=str)) for s in a)
    assert key == sorted((s.span_id, sorted(s.attributes.items(), key=str)) for s in b)
    assert next(s for s in a if s.kind == "LLM").attributes["trajectory.step"] == 1


def test_project_rules_come_before_the_built_in_ones() -> None:
    rules = ActionRules.from_table(
        {
            "verify": {"tools": ["Run_Checks"], "commands": [r"^\./scripts/check\b"]},
            "localize": {"commands": [r"^python tools/where\.py"]},
        }
    )
    assert classify("run_checks", "{}", rules).action == "verify"
    assert classify("Bash", '{"command": "./scripts/check --all"}', rules).action == "verify"
    assert classify("Bash", '{"command": "python tools/where.py x"}', rules).action == "localize"
    assert classify("Bash", '{"command": "python tools/other.py"}', rules).action == "execute"


def test_remembered_command_answers_are_copies_and_project_rules_still_apply() -> None:
    command = "cat src/remembered.py docs/remembered.md"
    first = classify_command(command)
    first.files.append("changed-by-the-caller.py")
    again = classify_command(command)
    assert (again.action, again.files) == (
        "localize",
        ["src/remembered.py", "docs/remembered.md"],
    )
    rules = ActionRules.from_table({"verify": {"commands": [r"^cat src/remembered"]}})
    assert classify_command(command, rules).action == "verify"
    assert classify("Bash", orjson.dumps({"command": command}).decode(), rules).action == "verify"


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({"testing": {"tools": ["x"]}}, "trajectories.actions.testing"),
        ({"verify": {"tool": ["x"]}}, "trajectories.actions.verify.tool"),
        ({"verify": {"tools": "x"}}, "trajectories.actions.verify.tools"),
        ({"verify": {"commands": ["("]}}, "trajectories.actions.verify.commands"),
        ({"verify": ["x"]}, "trajectories.actions.verify"),
    ],
)
def test_bad_rules_say_where(table: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidRules, match=rf"^{where}:"):
        ActionRules.from_table(table)


def test_a_long_command_is_a_clipped_target() -> None:
    script = "cat > big.py <<'EOF'\n" + "x = 1\n" * 2000 + "EOF"
    found = classify("Bash", orjson.dumps({"command": script}).decode())
    assert found.action == "edit" and found.files == ["big.py"]
    assert found.target is not None and len(found.target) == 500 and found.target.endswith("…")
