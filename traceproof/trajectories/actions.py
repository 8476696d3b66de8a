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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

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

__all__ = [
    "ACTIONS",
    "FILES",
    "Action",
    "ActionRules",
    "InvalidRules",
    "classify",
    "label_trace",
]

Action = Literal["localize", "edit", "execute", "verify", "vcs", "plan", "delegate", "web", "other"]
ACTIONS: tuple[Action, ...] = get_args(Action)
Outcome = Literal["ok", "error", "tests_passed", "tests_failed"]
#: The files a step reads or edits (a list of paths), when its arguments name them.
FILES = "trajectory.files"
#: Targets longer than this are clipped (a heredoc can be a whole file).
TARGET_MAX_CHARS = 500


class InvalidRules(ValueError):
    """A ``[trajectories.actions]`` table that cannot be used; the message says where."""


@dataclass(frozen=True, slots=True)
class ActionRules:
    """Project rules, tried before the built-in ones: tool names (lowercase) to actions, and
    command regexes per action."""

    tools: Mapping[str, Action] = field(default_factory=dict)
    commands: tuple[tuple[Action, re.Pattern[str]], ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ActionRules:
        """Rules from ``[trajectories.actions]``: ``{action: {"tools": [...], "commands":
        [...]}}``. Raises :class:`InvalidRules`."""
        tools: dict[str, Action] = {}
        commands: list[tuple[Action, re.Pattern[str]]] = []
        for action, rules in table.items():
            where = f"trajectories.actions.{action}"
            if action not in ACTIONS:
                raise InvalidRules(f"{where}: unknown action; known: {', '.join(ACTIONS)}")
            if not isinstance(rules, dict):
                raise InvalidRules(f"{where}: must be a table with tools and commands")
            for key in rules:
                if key not in ("tools", "commands"):
                    raise InvalidRules(f"{where}.{key}: unknown key; known: tools, commands")
            for name in _strings(rules.get("tools", []), f"{where}.tools"):
                tools[name.lower()] = action
            for pattern in _strings(rules.get("commands", []), f"{where}.commands"):
                try:
                    commands.append((action, re.compile(pattern)))
                except re.error as exc:
                    raise InvalidRules(
                        f"{where}.commands: {pattern!r} is not a regex ({exc})"
                    ) from None
        return cls(tools=tools, commands=tuple(commands))


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRules(f"{where}: must be a list of strings")
    return value


# --- tool names --------------------------------------------------------------------------------

_TOOLS: dict[str, Action] = {
    **dict.fromkeys(
        (
            "read", "read_file", "view", "view_file", "notebookread", "grep", "grep_search",
            "glob", "find", "ls", "list_dir", "list_directory", "list_files", "search",
            "file_search", "codebase_search", "find_file", "search_dir", "search_file", "open",
            "goto", "scroll_up", "scroll_down", "read_many_files", "search_file_content",
        ),
        "localize",
    ),
    **dict.fromkeys(
        (
            "edit", "write", "multiedit", "notebookedit", "apply_patch", "str_replace",
            "create", "edit_file", "write_file", "create_file", "insert", "replace",
            "write_to_file", "replace_in_file",
        ),
        "edit",
    ),
    **dict.fromkeys(
        ("todowrite", "todoread", "update_plan", "exitplanmode", "enterplanmode", "think"),
        "plan",
    ),
    **dict.fromkeys(
        ("task", "agent", "dispatch_agent", "spawn_agent", "delegate", "subagent"), "delegate"
    ),
    **dict.fromkeys(
        (
            "webfetch", "websearch", "web_fetch", "web_search", "fetch", "browser", "browse",
            "browse_interactive", "web_read", "google_web_search",
        ),
        "web",
    ),
    **dict.fromkeys(
        ("execute_ipython_cell", "run_ipython", "ipython", "killshell", "write_stdin"), "execute"
    ),
}  # fmt: skip
#: Tools whose argument is a shell command, classified by the command.
_SHELLS = frozenset(
    {
        "bash", "shell", "exec_command", "execute_bash", "run_shell_command", "terminal",
        "run", "local_shell", "container.exec", "run_command", "cmd", "bashoutput",
        "execute_command", "run_terminal_cmd",
    }
)  # fmt: skip
#: Editor tools with a sub-command (SWE-agent's and OpenHands' ``str_replace_editor``).
_EDITORS = frozenset({"str_replace_editor", "str_replace_based_edit_tool", "text_editor"})
_EDITOR_READS = frozenset({"view"})

# --- shell commands ----------------------------------------------------------------------------

_PY = r"(?:python[0-9.]*|py)\s+-m\s+"
_RUNNER = r"(?:npm|pnpm|yarn|bun)\s+(?:run\s+)?"
#: Checked on each simple command (wrappers like ``cd``, ``env``, ``timeout``, ``uv run``
#: stripped).
_VERIFY = re.compile(
    r"^(?:"
    rf"(?:{_PY})?(?:pytest|py\.test|unittest|tox|nox|mypy|ruff\s+(?:check|format\s+--check)|"
    r"ruff$|ruff\s+-|flake8|pylint|pyright|black\s+--check|isort\s+--check)\b"
    r"|go\s+(?:test|vet)\b|golangci-lint\b|staticcheck\b"
    r"|cargo\s+(?:test|nextest|clippy|check)\b"
    rf"|{_RUNNER}(?:test|lint|typecheck|type-check|check|tsc|jest|vitest)\b"
    r"|(?:jest|vitest|mocha|ava|tsc|eslint|biome|prettier\s+--check|playwright\s+test)\b"
    r"|make\s+(?:test|tests|check|lint|typecheck)\b|just\s+(?:test|check|lint)\b"
    r"|mix\s+test\b|rspec\b|rake\s+test\b|phpunit\b|(?:\./)?gradlew?\s+test\b|mvn\s+test\b"
    r"|dotnet\s+test\b|ctest\b|swift\s+test\b|pre-commit\s+run\b|\.ci/\S+"
    r")"
)
_READERS = frozenset(
    {
        "cat", "rg", "grep", "egrep", "fgrep", "ag", "ack", "find", "fd", "ls", "tree",
        "head", "tail", "wc", "less", "more", "nl", "file", "stat", "pwd", "du", "which",
        "type", "realpath", "readlink", "basename", "dirname", "sort", "uniq", "cut", "tr",
        "diff", "cmp", "column", "jq", "echo", "printf", "true", "date", "whoami", "env",
        "printenv", "sed", "awk", "xxd", "od", "strings", "bat", "exa", "eza",
    }
)  # fmt: skip
#: SWE-agent's own commands (they run in its shell).
_SWE_COMMANDS: dict[str, Action] = {
    **dict.fromkeys(
        ("open", "goto", "scroll_up", "scroll_down", "search_dir", "search_file", "find_file"),
        "localize",
    ),
    **dict.fromkeys(("edit", "create", "insert", "append", "apply_patch"), "edit"),
    "submit": "other",
}
_WRAPPERS = frozenset({"sudo", "time", "nice", "nohup", "command", "exec", "xargs", "then"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC = re.compile(
    r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1[^\n]*\n(.*?)(?:\n\s*\2\s*(?:\n|$)|$)", re.S
)
_SEPARATORS = re.compile(r"&&|\|\||[;|\n&]")
_WRITE_REDIRECT = re.compile(r"(?:^|[^0-9&<>])>>?\s*(?!&)([^\s;|&>]+)")


def _strip_heredocs(command: str) -> str:
    return _HEREDOC.sub(lambda m: f"<<{m.group(2)}\n", command)


def _segments(command: str) -> list[str]:
    """Simple commands of a shell line, split on ``&&``, ``||``, ``;``, ``|``, ``&`` and
    newlines outside quotes (heredoc bodies dropped)."""
    text = _strip_heredocs(command)
    out: list[str] = []
    start = 0
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            i += 2
            continue
        else:
            m = _SEPARATORS.match(text, i)
            if m and not (
                ch == "&" and (text[i - 1 : i] in (">", "<") or text[i + 1 : i + 2] == ">")
            ):
                out.append(text[start:i])
                start = m.end()
                i = m.end()
                continue
        i += 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip() and s.strip() not in ("(", ")", "{", "}")]


def _words(segment: str) -> list[str]:
    try:
        words = shlex.split(segment)
    except ValueError:
        words = segment.split()
    # Drop wrappers and environment assignments: `cd x`, `FOO=1 pytest`, `timeout 60 pytest`,
    # `uv run pytest`, `poetry run`, `npx jest`.
    while words:
        head = words[0]
        if _ASSIGNMENT.match(head) or head in _WRAPPERS or head in ("(", "{", "env"):
            words = words[1:]
        elif head in ("timeout", "gtimeout") and len(words) > 1:
            words = words[2:] if not words[1].startswith("-") else words[3:]
        elif head in ("uv", "poetry", "pdm", "hatch", "rye", "pipenv") and words[1:2] == ["run"]:
            words = words[2:]
        elif head in ("npx", "pnpx", "bunx"):
            words = words[1:]
        elif head in ("pnpm", "yarn", "bundle") and words[1:2] == ["exec"]:
            words = words[2:]
        else:
            break
    return words


def _shell_inner(words: list[str]) -> str | None:
    """The script of ``bash -lc SCRIPT`` (and sh, zsh), else None."""
    if len(words) >= 3 and words[0].rsplit("/", 1)[-1] in ("bash", "sh", "zsh", "dash"):
        for i, word in enumerate(words[1:-1], 1):
            if word.startswith("-") and "c" in word:
                return words[i + 1]
    return None


@dataclass(slots=True)
class _Shell:
    action: Action
    files: list[str]


def _is_reader(words: list[str]) -> bool:
    name = words[0].rsplit("/", 1)[-1]
    if name not in _READERS:
        return False
    if name == "sed":
        return (
            "-n" in words
            or any(w.startswith("-n") for w in words[1:])
            or not any(w.startswith("-i") or w == "--in-place" for w in words[1:])
        )
    if name == "find":
        return not any(w in ("-delete", "-exec", "-execdir", "-ok") for w in words)
    if name == "awk":
        return not any("system(" in w or "> " in w for w in words)
    return True


def _operands(words: list[str]) -> list[str]:
    """Arguments that look like paths (``sed``: only the last, after its script)."""
    found = [w for w in words[1:] if not w.startswith("-") and ("/" in w or "." in w[1:])]
    if words[0].rsplit("/", 1)[-1] == "sed":
        rest = [w for w in words[1:] if not w.startswith("-")]
        return rest[-1:] if len(rest) >= 2 else []
    return found[:20]


def classify_command(command: str, rules: ActionRules | None = None) -> _Shell:
    """The action of a shell command and the files it reads or edits (when it names them)."""
    rules = rules or ActionRules()
    for action, pattern in rules.commands:
        if pattern.search(command):
            return _Shell(action, [])
    kinds: list[Action] = []
    read: list[str] = []
    edited: list[str] = []
    for segment in _segments(command):
        words = _words(segment)
        if not words or words[0] == "cd" or words[0] == "export":
            continue
        inner = _shell_inner(words)
        if inner is not None:
            sub = classify_command(inner, rules)
            kinds.append(sub.action)
            (edited if sub.action == "edit" else read).extend(sub.files)
            continue
        joined = " ".join(words)
        name = words[0].rsplit("/", 1)[-1]
        redirects = [
            t for t in _WRITE_REDIRECT.findall(segment) if t not in ("/dev/null", "&1", "&2")
        ]
        if _VERIFY.match(joined) or _VERIFY.match(" ".join([name, *words[1:]])):
            kinds.append("verify")
        elif name in ("git", "gh"):
            kinds.append("vcs")
        elif name in ("apply_patch", "applypatch", "patch"):
            kinds.append("edit")
            edited.extend(_patch_files(segment))
        elif name == "sed" and any(w.startswith("-i") or w == "--in-place" for w in words[1:]):
            kinds.append("edit")
            edited.extend(_operands(words)[-1:])
        elif redirects and name in _READERS | {"tee"}:
            kinds.append("edit")
            edited.extend(redirects)
        elif name == "tee":
            kinds.append("edit")
            edited.extend(w for w in words[1:] if not w.startswith("-"))
        elif name in _SWE_COMMANDS and (name not in _READERS):
            kinds.append(_SWE_COMMANDS[name])
            if name in ("open", "create") and len(words) > 1:
                (edited if name == "create" else read).append(words[1])
        elif name == "str_replace_editor" and len(words) >= 3:
            kinds.append("localize" if words[1] in _EDITOR_READS else "edit")
            (read if words[1] in _EDITOR_READS else edited).append(words[2])
        elif _is_reader(words) and not redirects:
            kinds.append("localize")
            if name in ("cat", "head", "tail", "sed", "nl", "less", "more", "bat", "wc"):
                read.extend(_operands(words))
        else:
            kinds.append("execute")
    action = _combine(kinds)
    return _Shell(action, _unique(edited if action == "edit" else read))


def _combine(kinds: list[Action]) -> Action:
    """One action for a compound command: a verification anywhere makes it ``verify``; an
    edit makes it ``edit``; all reads are ``localize``; reads and git are ``vcs``."""
    if not kinds:
        return "execute"
    for action in ("verify", "edit"):
        if action in kinds:
            return action
    if all(k == "localize" for k in kinds):
        return "localize"
    if kinds[0] == "vcs" and all(k in ("vcs", "localize") for k in kinds):
        return "vcs"
    others = [k for k in kinds if k not in ("localize",)]
    return others[0] if len(set(others)) == 1 and others[0] != "vcs" else "execute"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


_PATCH_FILE = re.compile(
    r"^\*\*\* (?:Update|Add|Delete) File: (.+?)\s*$|^\+\+\+ (?:b/)?(\S+)"
    r"|^\*\*\* Move to: (.+?)\s*$",
    re.M,
)


def _patch_files(text: str) -> list[str]:
    files = [next(g for g in m.groups() if g) for m in _PATCH_FILE.finditer(text)]
    return _unique(f for f in files if f != "/dev/null")


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
        inner = _shell_inner(value)
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
    if short in _EDITORS:
        sub = str(args.get("command", "")).lower()
        return Classified(
            "localize" if sub in _EDITOR_READS else "edit", _clip(path), [path] if path else []
        )
    if short == "apply_patch" or (
        short in _SHELLS and command and command.lstrip().startswith(("apply_patch", "applypatch"))
    ):
        patch = text or str(args.get("input", args.get("patch", command or "")))
        files = _patch_files(patch)
        return Classified("edit", _clip(" ".join(files) or path), files or ([path] if path else []))
    if short in _SHELLS or (short not in _TOOLS and command is not None and short != "task"):
        if command is None:
            return Classified("execute", _clip(_first_text(args, text)), [], shell=True)
        shell = classify_command(command, rules)
        return Classified(shell.action, _clip(command), shell.files, shell=True)
    action = _TOOLS.get(short) or _prefix_action(short)
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
        files = [path] if path else _patch_files(text or "")
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


# --- outcomes ----------------------------------------------------------------------------------

_EXIT = re.compile(
    r"(?:exit(?:ed)? (?:with )?code:?\s*|\"exit_code\":\s*|exit status\s+|"
    r"Process exited with code\s+|\[Command finished with exit code\s+)(-?\d+)",
    re.I,
)
_PYTEST = re.compile(
    r"(?:^|[=\s])(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b"
)
_PYTEST_LINE = re.compile(
    r"^[=\s]*(?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)"
    r"(?:, )?)+.*(?:in [\d.]+s|=)",
    re.M,
)
_CARGO = re.compile(r"test result: (ok|FAILED)\. (\d+) passed; (\d+) failed")
_JEST = re.compile(r"^\s*Tests:?\s+(.*)$", re.M)
_COUNT = re.compile(r"(\d+) (passed|failed|failing|passing|todo|skipped|total)")
_MOCHA = re.compile(r"^\s*(\d+) (passing|failing)\b", re.M)
_UNITTEST = re.compile(r"^Ran (\d+) tests? in [\d.]+s\s*\n+\s*(OK|FAILED)(?: \(([^)]*)\))?", re.M)
_GO_OK = re.compile(r"^ok\s+\S+", re.M)
_GO_FAIL = re.compile(r"^(?:FAIL\s+\S+|FAIL$|--- FAIL:)", re.M)
_GO_CASE = re.compile(r"^\s*--- (PASS|FAIL):", re.M)
_LINT_FAIL = re.compile(
    r"Found \d+ errors?|error TS\d+|✖ \d+ problems?|\d+ errors? found|would reformat|"
    r"^[^\s:]+:\d+:\d+: [A-Z]+\d+ ",
    re.M,
)


@dataclass(slots=True)
class RunSummary:
    """What a test run's output says: counts when it gives them, and whether it failed."""

    passed: int | None
    failed: int | None
    verdict_failed: bool


def exit_code(output: str) -> int | None:
    """The exit code the output reports (Claude Code, Codex, OpenHands forms), else None."""
    for part in (output[:400], output[-400:]):
        m = _EXIT.search(part)
        if m:
            return int(m.group(1))
    return None


def run_summary(output: str) -> RunSummary | None:
    """Passed and failed counts from a test runner's summary (pytest, go test, cargo, jest,
    vitest, mocha, unittest); None when the output has none."""
    m_cargo = _CARGO.findall(output)
    if m_cargo:
        failed = sum(int(f) for _, _, f in m_cargo)
        verdict = failed > 0 or any(v == "FAILED" for v, _, _ in m_cargo)
        return RunSummary(sum(int(p) for _, p, _ in m_cargo), failed, verdict)
    lines = _PYTEST_LINE.findall(output)
    if lines:
        counts = dict.fromkeys(("passed", "failed", "error"), 0)
        for n, word in _PYTEST.findall(lines[-1]):
            key = "error" if word.startswith("error") else word
            if key in counts:
                counts[key] += int(n)
        failed = counts["failed"] + counts["error"]
        return RunSummary(counts["passed"], failed, failed > 0)
    jest = _JEST.findall(output)
    if jest:
        counts = {word: int(n) for n, word in _COUNT.findall(jest[-1])}
        if counts:
            failed = counts.get("failed", 0)
            return RunSummary(counts.get("passed", 0), failed, failed > 0)
    mocha = {word: int(n) for n, word in _MOCHA.findall(output)}
    if mocha:
        failed = mocha.get("failing", 0)
        return RunSummary(mocha.get("passing", 0), failed, failed > 0)
    unit = _UNITTEST.findall(output)
    if unit:
        ran, verdict, detail = unit[-1]
        failed = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", detail))
        return RunSummary(int(ran) - failed, failed, verdict == "FAILED")
    cases = _GO_CASE.findall(output)
    if cases:
        failed = cases.count("FAIL")
        return RunSummary(cases.count("PASS"), failed, failed > 0 or bool(_GO_FAIL.search(output)))
    if _GO_FAIL.search(output):
        return RunSummary(None, None, True)
    if _GO_OK.search(output):
        return RunSummary(None, None, False)
    return None


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
        if failed or (code is None and _LINT_FAIL.search(output)):
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
        if previous in ("error", "tests_failed"):
            attrs[RECOVER] = True
        if not attrs.get(DEAD_END):
            previous = outcome
