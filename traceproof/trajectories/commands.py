"""Shell commands: the action of one command line and the files it reads or edits.

A line is split into simple commands (on ``&&``, ``||``, ``;``, ``|``, ``&`` and newlines outside
quotes, heredoc bodies dropped), wrappers (``cd``, ``env``, ``timeout``, ``uv run``, ``npx``…)
are stripped, and each is matched: a test, lint or type-check run is ``verify``, git is ``vcs``,
``sed -i``, ``tee``, a write redirect or a patch is ``edit``, a reader (``cat``, ``rg``,
``sed -n``…) is ``localize``, anything else ``execute``; a compound line gets one action of them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from traceproof.trajectories.action_rules import EDITOR_READS, Action, ActionRules

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
    r"|mix\s+(?:test|dialyzer|credo|format\s+--check-formatted)\b|rspec\b|rake\s+test\b|phpunit\b|(?:\./)?gradlew?\s+test\b|mvn\s+test\b"
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


def shell_inner(words: list[str]) -> str | None:
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


#: Answers of :func:`classify_command` without project command rules (then a pure function of
#: the command: agents run the same commands again and again), up to this many commands of up
#: to this many characters; each caller gets its own copy of the file list.
_MEMO: dict[str, tuple[Action, tuple[str, ...]]] = {}
_MEMO_SIZE = 10_000
_MEMO_CHARS = 2_000


def classify_command(command: str, rules: ActionRules | None = None) -> _Shell:
    """The action of a shell command and the files it reads or edits (when it names them)."""
    if rules is not None and rules.commands:
        return _classify(command, rules)
    known = _MEMO.get(command)
    if known is not None:
        return _Shell(known[0], list(known[1]))
    shell = _classify(command, ActionRules())
    if len(command) <= _MEMO_CHARS and len(_MEMO) < _MEMO_SIZE:
        _MEMO[command] = (shell.action, tuple(shell.files))
    return shell


def _classify(command: str, rules: ActionRules) -> _Shell:
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
        inner = shell_inner(words)
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
            edited.extend(patch_files(segment))
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
            kinds.append("localize" if words[1] in EDITOR_READS else "edit")
            (read if words[1] in EDITOR_READS else edited).append(words[2])
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


def patch_files(text: str) -> list[str]:
    files = [next(g for g in m.groups() if g) for m in _PATCH_FILE.finditer(text)]
    return _unique(f for f in files if f != "/dev/null")


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of a shell line (split as :func:`classify_command`
    splits it, wrappers and ``cd`` dropped, ``bash -c SCRIPT`` opened), in order."""
    out: list[list[str]] = []
    for segment in _segments(command):
        words = _words(segment)
        if not words or words[0] in ("cd", "export"):
            continue
        inner = shell_inner(words)
        out.extend(simple_commands(inner) if inner is not None else [words])
    return out


def is_verification(words: list[str]) -> bool:
    """Whether one simple command (its words) is a test, lint or type-check run."""
    joined = " ".join(words)
    name = words[0].rsplit("/", 1)[-1] if words else ""
    return bool(_VERIFY.match(joined) or _VERIFY.match(" ".join([name, *words[1:]])))
