"""Action labels: what each step of a coding trajectory does, by deterministic rules.

:func:`label_trace` numbers the TOOL and LLM spans of one trace (``trajectory.step``, 1-based in
start order) and labels each TOOL span:

- ``trajectory.action``: ``localize`` (read, grep, glob, ls, and shell commands that only read:
  ``cat``, ``rg``, ``grep``, ``find``, ``ls``, ``head``, ``tail``, ``sed -n``…), ``edit`` (edit,
  write, patch tools, and shell commands that write a file: ``sed -i``, ``cat > f``,
  ``apply_patch``), ``verify`` (test, lint and type-check runs, recognised by their command),
  ``vcs`` (git), ``execute`` (any other shell command), ``plan`` (todo and plan tools),
  ``delegate`` (subagents), ``web`` (fetch, search, browser) or ``other``;
- ``trajectory.target``: the file path or the command;
- ``trajectory.files``: the files the step reads or edits, when known;
- ``trajectory.outcome``: ``ok``, ``error`` (the span's status is ERROR or the output reports a
  non-zero exit), ``tests_passed`` or ``tests_failed`` (from the runner's summary), with
  ``trajectory.tests.passed`` / ``.failed`` counts when the output says;
- ``trajectory.recover``: ``true`` on the step after an error or a failed verification.

Tool names are those of Claude Code (``Read``, ``Edit``, ``Bash``, ``TodoWrite``, ``Task``…),
Codex (``shell``, ``exec_command``, ``write_stdin``, ``apply_patch``, ``update_plan``),
SWE-agent and OpenHands (``bash``/``execute_bash`` commands, ``str_replace_editor`` with its
sub-command, SWE-agent's ``open``/``edit``/``search_dir`` commands). A project adds its own in
``traceproof.toml``::

    [trajectories.actions.verify]
    tools = ["run_checks"]                 # tool names (case-insensitive)
    commands = ['^\\./scripts/check\\b']   # regexes searched in a shell command

Project rules are tried before the built-in ones.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from traceproof.trajectories.action_rules import (
    ACTIONS,
    EDITOR_READS,
    EDITORS,
    SHELLS,
    TOOLS,
    Action,
    ActionRules,
    InvalidRules,
)
from traceproof.trajectories.commands import classify_command, patch_files, shell_inner
from traceproof.trajectories.common import (
    ACTION,
    DEAD_END,
    OUTCOME,
    RECOVER,
    STEP,
    TARGET,
    TESTS_FAILED,
    TESTS_PASSED,
    StepSpan,
)
from traceproof.trajectories.outcomes import LINT_FAIL, RunSummary, exit_code, run_summary

__all__ = [
    "ACTIONS",
    "FAILED",
    "FILES",
    "Action",
    "ActionRules",
    "InvalidRules",
    "classify",
    "classify_command",
    "label_trace",
]

Outcome = Literal["ok", "error", "tests_passed", "tests_failed"]
#: Outcomes that count as a failure (an error, or a verification whose tests failed): the step
#: after one is a recovery.
FAILED = frozenset({"error", "tests_failed"})
#: The files a step reads or edits (a list of paths), when its arguments name them.
FILES = "trajectory.files"
#: Targets longer than this are clipped (a heredoc can be a whole file).
TARGET_MAX_CHARS = 500

# --- arguments ---------------------------------------------------------------------------------


def _arguments(value: Any) -> tuple[dict[str, Any], str | None]:
    """The arguments as a dict, and the raw text when they are not a JSON object."""
    if isinstance(value, dict):
        return value, None
    if not isinstance(value, str):
        return {}, None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}, value
    if isinstance(parsed, dict):
        return parsed, None
    return {}, value


def _command_text(args: Mapping[str, Any]) -> str | None:
    value = args.get("command", args.get("cmd", args.get("script")))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        inner = shell_inner(value)
        if inner is not None:
            return inner
        return shlex.join(value)
    return value if isinstance(value, str) else None


def _path(args: Mapping[str, Any]) -> str | None:
    for key in ("file_path", "path", "notebook_path", "filename", "file", "target_file",
                "absolute_path", "dir_path", "directory"):  # fmt: skip
        value = args.get(key)
        if isinstance(value, str) and value:
            return value
    paths = args.get("paths", args.get("file_paths"))
    if isinstance(paths, list) and paths and isinstance(paths[0], str):
        return str(paths[0])
    return None


@dataclass(slots=True)
class Classified:
    """What :func:`classify` decided for one tool call."""

    action: Action
    target: str | None
    files: list[str]
    #: The call ran a shell command (its output may report an exit code).
    shell: bool = False


def classify(tool: str, arguments: Any, rules: ActionRules | None = None) -> Classified:
    """The action, target and files of one tool call (``arguments``: the ``input.value`` text
    or a dict)."""
    rules = rules or ActionRules()
    args, text = _arguments(arguments)
    name = tool.strip().lower()
    short = name.rsplit("__", 1)[-1] if name.startswith("mcp__") else name
    command = _command_text(args)
    path = _path(args)
    if name in rules.tools or short in rules.tools:
        action = rules.tools.get(name) or rules.tools[short]
        target = path or command or _first_text(args, text)
        return Classified(action, _clip(target), [path] if path else [])
    if short in EDITORS:
        sub = str(args.get("command", "")).lower()
        return Classified(
            "localize" if sub in EDITOR_READS else "edit", _clip(path), [path] if path else []
        )
    if short == "apply_patch" or (
        short in SHELLS and command and command.lstrip().startswith(("apply_patch", "applypatch"))
    ):
        patch = text or str(args.get("input", args.get("patch", command or "")))
        files = patch_files(patch)
        return Classified("edit", _clip(" ".join(files) or path), files or ([path] if path else []))
    if short in SHELLS or (short not in TOOLS and command is not None and short != "task"):
        if command is None:
            return Classified("execute", _clip(_first_text(args, text)), [], shell=True)
        shell = classify_command(command, rules)
        return Classified(shell.action, _clip(command), shell.files, shell=True)
    action = TOOLS.get(short) or _prefix_action(short)
    if action == "delegate":
        target = _text(args, "subagent_type", "description", "prompt")
        return Classified(action, _clip(target), [])
    if action == "web":
        return Classified(action, _clip(_text(args, "url", "query", "prompt")), [])
    if action == "plan":
        return Classified(action, None, [])
    if action == "localize":
        target = path or _text(args, "pattern", "query", "search_term", "file_name") or command
        if path and (pattern := _text(args, "pattern", "query", "search_term")):
            target = f"{pattern} in {path}"
        files = [path] if path and short in ("read", "read_file", "view", "view_file",
                                             "notebookread", "open") else []  # fmt: skip
        return Classified(action, _clip(target), files)
    if action == "edit":
        files = [path] if path else patch_files(text or "")
        return Classified(action, _clip(path or " ".join(files) or None), files)
    return Classified(action, _clip(path or command or _first_text(args, text)), [])


def _prefix_action(name: str) -> Action:
    if name.startswith(("browser", "web_", "playwright")):
        return "web"
    if name.startswith(("todo", "plan")):
        return "plan"
    return "other"


def _text(args: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = args.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _first_text(args: Mapping[str, Any], text: str | None) -> str | None:
    if text:
        return text
    for value in args.values():
        if isinstance(value, str) and value:
            return value
    return None


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > TARGET_MAX_CHARS:
        return value[: TARGET_MAX_CHARS - 1] + "…"
    return value or None


def _outcome(
    span: StepSpan, action: Action, shell: bool, output: str
) -> tuple[Outcome, RunSummary | None]:
    failed_status = span.status == "ERROR"
    code = exit_code(output) if shell else None
    failed = failed_status or (code is not None and code != 0)
    if action == "verify":
        tests = run_summary(output)
        if tests is not None:
            if tests.verdict_failed or (failed and not tests.passed):
                return "tests_failed", tests
            return "tests_passed", tests
        if failed or (code is None and LINT_FAIL.search(output)):
            return "error", None
        return "ok", None
    return ("error" if failed else "ok"), None


# --- labelling ---------------------------------------------------------------------------------

_SESSION_ID = re.compile(r"Process running with session ID (\d+)")


def label_trace(spans: list[StepSpan], rules: ActionRules | None = None) -> None:
    """Label the steps of one trace in place (spans in any order; numbered by start time)."""
    rules = rules or ActionRules()
    order = {"LLM": 0, "TOOL": 1}
    steps = sorted(
        (s for s in spans if s.kind in order),
        key=lambda s: (s.start_ns, order[s.kind], s.end_ns, s.span_id),
    )
    running: dict[str, Classified] = {}  # Codex exec_command sessions still running
    previous: Outcome | None = None
    for number, span in enumerate(steps, 1):
        span.attributes[STEP] = number
        if span.kind != "TOOL":
            continue
        attrs = span.attributes
        tool = str(attrs.get("tool.name") or span.name)
        found = classify(tool, attrs.get("input.value"), rules)
        args, _ = _arguments(attrs.get("input.value"))
        if tool.lower() == "write_stdin" and str(args.get("session_id")) in running:
            found = running[str(args.get("session_id"))]
        elif tool.lower() == "write_stdin":
            found = Classified("execute", None, [], shell=True)
        output = attrs.get("output.value")
        text = output if isinstance(output, str) else ("" if output is None else str(output))
        if span.status_message and span.status == "ERROR":
            text = f"{span.status_message}\n{text}" if span.status_message not in text else text
        if found.shell and (m := _SESSION_ID.search(text[:400])):
            running[m.group(1)] = found
        outcome, tests = _outcome(span, found.action, found.shell, text)
        attrs[ACTION] = found.action
        if found.target is not None:
            attrs[TARGET] = found.target
        if found.files:
            attrs[FILES] = found.files
        attrs[OUTCOME] = outcome
        if tests is not None and tests.passed is not None:
            attrs[TESTS_PASSED] = tests.passed
        if tests is not None and tests.failed is not None:
            attrs[TESTS_FAILED] = tests.failed
        if previous in FAILED:
            attrs[RECOVER] = True
        if not attrs.get(DEAD_END):
            previous = outcome
