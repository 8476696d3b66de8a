"""Where a coding trajectory first went wrong: candidate steps by four deterministic rules.

The rules read the labelled steps (:class:`~traceproof.trajectories.analysis.Step`) and, for
tool steps, their arguments and output (:class:`StepText`):

- ``ignored_error``: a tool step that failed (outcome ``error``, not a verification) and was
  ignored: retried unchanged and never succeeded (:func:`analysis.errors_without_change`), a
  failed edit whose file was never edited successfully afterwards, or the run ended on it.
- ``reverted_edit``: an edit later undone: ``git checkout``/``git restore`` of its file (or
  ``git checkout .``, ``git reset --hard``, ``git stash``) with no commit between, an Edit (or
  a patch's hunks) whose old and new text invert it, a Write restoring the content an earlier
  Write gave the file or a whole-file read showed (``cat -n`` lines), or an editor's ``undo_edit``.
- ``unread_edit``: the first edit of a file that no earlier step read, found in its output (a
  grep or glob hit) or wrote. Writing a new file (Write, ``create``, a patch's ``Add File``,
  a shell redirect, an edit whose output is a diff from an empty file) is not one.
- ``unfixed_verification``: a failed verification (tests failed, or a lint or type-check
  error) that no later verification covering it passed: the same command, or the same runner
  over the same or wider selection (``pytest tests`` covers ``pytest tests/test_a.py::t``).

Steps are numbered from 1 over the whole trajectory (LLM steps included), as
``get_trajectory`` numbers them. The first wrong step is the earliest candidate; at one step,
the rule listed first in :data:`RULES` wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from traceproof.trajectories import analysis
from traceproof.trajectories.analysis import Step
from traceproof.trajectories.commands import is_verification, simple_commands

__all__ = ["RULES", "Candidate", "StepText", "candidates", "first_wrong_step"]

#: The rules, strongest evidence first (the tie-break at one step).
RULES = ("ignored_error", "reverted_edit", "unread_edit", "unfixed_verification")
_PASSED = frozenset({"ok", "tests_passed"})
#: Tools that write a whole file (creating it when it is new).
_WRITERS = frozenset({"write", "create", "create_file", "write_file", "write_to_file"})
_OVERWRITTEN = re.compile(r"has been (?:updated|overwritten)", re.IGNORECASE)
#: Output saying an edit created its file: Claude Code's Write, a diff from an empty file.
_CREATED = re.compile(r"File created successfully|^@@ -0,0 ", re.M)
_HIT = re.compile(r"^\s*((?:[\w.~-]*/)*[\w.-]+\.[A-Za-z0-9]+|/[^\s:]+)(?::\d+)?(?::|\s|$)")
_EXIT = re.compile(r"^(?:Exit code|exit status|exited with)\s*\d+\s*$", re.IGNORECASE)
_ADDED = re.compile(r"^\*\*\* Add File: (.+?)\s*$", re.M)
#: Characters of a command or file a reason shows.
NAME_CHARS = 120


@dataclass(frozen=True, slots=True)
class StepText:
    """What the rules read of a tool step beyond its labels."""

    arguments: Mapping[str, Any]
    output: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A step a rule flags, with the reason in words."""

    step: int
    span_id: str
    trace_id: str
    rule: str
    reason: str

    @property
    def order(self) -> tuple[int, int]:
        return self.step, RULES.index(self.rule)


def candidates(steps: Sequence[Step], texts: Mapping[str, StepText]) -> list[Candidate]:
    """Every candidate of every rule, earliest first (ties: :data:`RULES` order)."""
    tools = [(n, s) for n, s in enumerate(steps, 1) if s.is_tool]
    found = [
        *_ignored_errors(steps, tools, texts),
        *_reverted_edits(tools, texts),
        *_unread_edits(tools, texts),
        *_unfixed_verifications(tools),
    ]
    return sorted(found, key=lambda c: c.order)


def first_wrong_step(found: Sequence[Candidate]) -> Candidate | None:
    """The earliest candidate (ties: :data:`RULES` order), or None."""
    return min(found, key=lambda c: c.order, default=None)


def _make(n: int, step: Step, rule: str, reason: str) -> Candidate:
    return Candidate(n, step.span_id, step.trace_id, rule, reason)


def _name(text: str | None) -> str:
    text = " ".join((text or "").split())
    return "`" + (text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "…") + "`"


def _text(texts: Mapping[str, StepText], step: Step) -> StepText:
    return texts.get(step.span_id) or StepText({})


def _message(output: str) -> str:
    """The first telling line of a failed step's output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [line for line in lines if not _EXIT.match(line)] or lines
    return _name(telling[0])[1:-1] if telling else "no message"


def _same_file(a: str, b: str) -> bool:
    a, b = a.removeprefix("./").rstrip("/"), b.removeprefix("./").rstrip("/")
    return bool(a and b) and (a == b or a.endswith("/" + b) or b.endswith("/" + a))


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class _Paths:
    """Paths seen, looked up as :func:`_same_file` matches them (by their last part first)."""

    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._by_base: dict[str, set[str]] = {}

    def add(self, paths: Iterable[str]) -> None:
        for path in paths:
            if path not in self._exact:
                self._exact.add(path)
                self._by_base.setdefault(_base(path), set()).add(path)

    def has(self, path: str) -> bool:
        return path in self._exact or any(
            _same_file(path, seen) for seen in self._by_base.get(_base(path), ())
        )


def _under(path: str, directory: str) -> bool:
    directory = directory.removeprefix("./").rstrip("/")
    return (
        directory in ("", ".", ":/")
        or _same_file(path, directory)
        or ("/" + directory + "/" in "/" + path.removeprefix("./"))
    )


# --- ignored errors ----------------------------------------------------------------------------


def _ignored_errors(
    steps: Sequence[Step], tools: list[tuple[int, Step]], texts: Mapping[str, StepText]
) -> list[Candidate]:
    retried = set(analysis.errors_without_change(steps))
    last = tools[-1][0] if tools else None
    runs: dict[tuple[str | None, str | None], list[int]] = {}
    last_ok: dict[tuple[str | None, str | None], int] = {}
    edited: dict[str, dict[str, int]] = {}  # last part of a path -> path -> its last edit
    for n, s in tools:
        if s.action == "edit" and s.outcome in _PASSED:
            for f in s.files:
                edited.setdefault(_base(f), {})[f] = n
    for n, step in tools:
        runs.setdefault((step.tool, step.target), []).append(n)
        if step.outcome in _PASSED:
            last_ok[(step.tool, step.target)] = n
    out: list[Candidate] = []
    for n, step in tools:
        if step.outcome != "error" or step.action == "verify":
            continue
        call = (step.tool, step.target)
        message = _message(_text(texts, step).output)
        what = f"{step.tool or 'tool'} {_name(step.target)} failed ({message})"
        succeeded = last_ok.get(call, 0) > n
        if n in retried and not succeeded:
            again = next(m for m in runs[call] if m > n)
            reason = f"{what}; retried unchanged at step {again} and never succeeded"
            out.append(_make(n, step, "ignored_error", reason))
        elif (
            step.action == "edit"
            and step.files
            and not any(
                m > n and _same_file(f, g)
                for g in step.files
                for f, m in edited.get(_base(g), {}).items()
            )
        ):
            out.append(_make(n, step, "ignored_error",
                             f"{what}; {_name(step.files[0])} was never edited successfully "
                             "afterwards"))  # fmt: skip
        elif n == last and step.action not in ("localize", "web", "plan"):
            out.append(_make(n, step, "ignored_error", f"{what}; the run ended on it"))
    return out


# --- reverted edits ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Edit:
    n: int
    step: Step
    files: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]  # (old, new) replacements
    content: str | None  # a whole-file write
    reverted: bool = False
    committed: bool = False


def _pairs(args: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for old_key, new_key in (("old_string", "new_string"), ("old_str", "new_str")):
        old, new = args.get(old_key), args.get(new_key)
        if isinstance(old, str) and isinstance(new, str) and old != new:
            found.append((old, new))
    edits = args.get("edits")
    if isinstance(edits, list):
        for edit in edits:
            if isinstance(edit, dict):
                found.extend(_pairs(edit))
    for key in ("input", "patch", "command"):
        value = args.get(key)
        if not found and isinstance(value, str) and ("\n@@" in value or "\n-" in value):
            found.extend(_patch_pairs(value))
    return tuple(found)


def _patch_pairs(patch: str) -> list[tuple[str, str]]:
    """(removed, added) lines of each hunk of a patch (``apply_patch`` or unified diff)."""
    pairs: list[tuple[str, str]] = []
    removed: list[str] = []
    added: list[str] = []

    def close() -> None:
        if removed != added and (removed or added):
            pairs.append(("\n".join(removed), "\n".join(added)))
        removed.clear()
        added.clear()

    for line in patch.splitlines():
        if line.startswith(("@@", "*** ", "--- ", "+++ ", "diff ")):
            close()
        elif line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    close()
    return pairs


def _content(step: Step, args: Mapping[str, Any]) -> str | None:
    """What a whole-file write writes (trailing newlines dropped, as a read shows it)."""
    for key in ("content", "file_text", "contents"):
        value = args.get(key)
        if isinstance(value, str) and (
            (step.tool or "").lower() in _WRITERS or str(args.get("command")) == "create"
        ):
            return value.rstrip("\n")
    return None


_NUMBERED = re.compile(r"^ *\d+(?:→|\t)(.*)$")


def _file_shown(args: Mapping[str, Any], output: str) -> str | None:
    """A whole file's content as a read showed it (``cat -n`` lines: Claude Code's Read,
    OpenHands' view), None for part of a file or another output."""
    if any(args.get(k) is not None for k in ("offset", "limit", "view_range", "start_line")):
        return None
    lines = output.split("\n")
    if lines and lines[0].startswith("Here's the result of running `cat -n`"):
        lines = lines[1:]
    shown: list[str] = []
    for i, line in enumerate(lines):
        match = _NUMBERED.match(line)
        if match is None:
            rest = "\n".join(lines[i:]).strip()
            if rest and not rest.startswith("<system-reminder>"):
                return None
            break
        shown.append(match.group(1))
    return "\n".join(shown).rstrip("\n") if shown else None


def _live_on(edit: _Edit, files: Sequence[str]) -> bool:
    """Whether ``edit``, not yet reverted, is of one of ``files``."""
    return not edit.reverted and any(_same_file(f, g) for f in edit.files for g in files)


def _git_restores(command: str) -> list[str] | None:
    """The paths a git command restores (``["."]``: everything), None when it restores none;
    ``[]`` for a commit (what was edited before it is no longer reverted by a checkout)."""
    restored: list[str] | None = None
    for words in simple_commands(command):
        if words[0] != "git" or len(words) < 2:
            continue
        sub, rest = words[1], [w for w in words[2:] if not w.startswith("-")]
        if sub == "commit":
            return []
        stash = sub == "stash" and not (rest and rest[0] in ("pop", "apply", "list", "show"))
        if stash or (sub == "reset" and "--hard" in words):
            restored = ["."]
        elif sub == "restore" and "--staged" not in words:
            restored = [w for w in rest if w] or None
        elif sub == "checkout" and "--" in words:
            restored = [w for w in words[words.index("--") + 1 :] if w] or None
        elif sub == "checkout" and rest and all(w == "." or "/" in w or "." in w for w in rest):
            restored = rest
    return restored


def _reverted_edits(
    tools: list[tuple[int, Step]], texts: Mapping[str, StepText]
) -> list[Candidate]:
    edits: list[_Edit] = []
    # By the last part of their path: the edits, by their replacements, by the content written.
    by_base: dict[str, list[_Edit]] = {}
    by_pairs: dict[tuple[str, frozenset[tuple[str, str]]], list[_Edit]] = {}
    by_content: dict[tuple[str, str], _Edit] = {}
    out: list[Candidate] = []

    def revert(edit: _Edit, n: int, how: str) -> None:
        edit.reverted = True
        files = ", ".join(_name(f) for f in edit.files[:3])
        reason = f"{edit.step.tool or 'edit'} of {files} was undone at step {n} {how}"
        out.append(_make(edit.n, edit.step, "reverted_edit", reason))

    for n, step in tools:
        args = _text(texts, step).arguments
        if (
            step.action == "localize"
            and step.files
            and (shown := _file_shown(args, _text(texts, step).output))
        ):
            seen = _Edit(n, step, step.files, (), shown, reverted=True)  # a state, not an edit
            for base in {_base(f) for f in step.files}:
                by_content[(base, shown)] = seen
            continue
        if step.action == "vcs" and step.outcome in _PASSED and step.target:
            paths = _git_restores(step.target)
            if paths == []:
                for edit in edits:
                    edit.committed = True  # a later checkout no longer undoes it
            elif paths:
                for edit in edits:
                    if not (edit.reverted or edit.committed) and any(
                        _under(f, p) for f in edit.files for p in paths
                    ):
                        revert(edit, n, f"by {_name(step.target)}")
            continue
        if step.action != "edit" or step.outcome not in _PASSED or not step.files:
            continue
        pairs, content = _pairs(args), _content(step, args)
        bases = {_base(f) for f in step.files}
        if str(args.get("command")) == "undo_edit":
            latest = [next((e for e in reversed(by_base.get(b, [])) if _live_on(e, step.files)),
                           None) for b in bases]  # fmt: skip
            if live := [e for e in latest if e is not None]:
                revert(max(live, key=lambda e: e.n), n, "by undo_edit")
            continue
        inverse = frozenset((new, old) for old, new in pairs)
        for edit in [e for b in bases for e in by_pairs.get((b, inverse), ())] if pairs else ():
            if _live_on(edit, step.files):
                revert(edit, n, f"by {step.tool or 'an edit'} putting its old text back")
        restored = [] if content is None else [
            by_content[(b, content)] for b in bases if (b, content) in by_content
        ]  # fmt: skip
        if restored:
            since = max(e.n for e in restored)  # the latest step that wrote or showed it
            for edit in [e for b in bases for e in by_base.get(b, ()) if e.n > since]:
                if _live_on(edit, step.files):
                    revert(edit, n, f"by a Write restoring the content of step {since}")
        made = _Edit(n, step, step.files, pairs, content)
        edits.append(made)
        for base in bases:
            by_base.setdefault(base, []).append(made)
            if pairs:
                by_pairs.setdefault((base, frozenset(pairs)), []).append(made)
            if content is not None:
                by_content[(base, content)] = made
    return out


# --- edits of files never read -----------------------------------------------------------------


def _hits(output: str) -> list[str]:
    """Paths a search's output names (``path:line:…``, one path a line)."""
    found: list[str] = []
    for line in output.splitlines()[:500]:
        match = _HIT.match(line)
        if match:
            found.append(match.group(1))
    return found


def _operands(command: str) -> list[str]:
    """Path-like words of a shell command (``grep -n x src/a.py`` reads ``src/a.py``)."""
    return [w for words in simple_commands(command) for w in words[1:]
            if not w.startswith("-") and _HIT.match(w)]  # fmt: skip


def _new_files(step: Step, text: StepText) -> set[str]:
    """Files this edit creates (or writes whole, so it needs no reading)."""
    args = text.arguments
    tool = (step.tool or "").lower()
    whole = tool in _WRITERS or str(args.get("command")) == "create"
    if (whole and not _OVERWRITTEN.search(text.output[:300])) or _CREATED.search(text.output[:500]):
        return set(step.files)
    patch = "\n".join(str(v) for v in args.values() if isinstance(v, str))
    added = set(_ADDED.findall(patch))
    command = step.target or ""
    if step.files and not patch.count("*** Update File") and (">" in command or "tee " in command):
        added |= set(step.files)  # a shell redirect or tee writes the file whole
    return added


def _unread_edits(tools: list[tuple[int, Step]], texts: Mapping[str, StepText]) -> list[Candidate]:
    known = _Paths()
    out: list[Candidate] = []
    for n, step in tools:
        text = _text(texts, step)
        if step.action == "localize":
            known.add(step.files)
            known.add(_hits(text.output))
            if " " in (step.target or ""):  # a command, not a path
                known.add(_operands(step.target or ""))
            continue
        if step.action != "edit" or step.outcome not in _PASSED:
            continue
        new = _new_files(step, text)
        for path in step.files:
            if path not in new and not known.has(path):
                out.append(_make(n, step, "unread_edit",
                                 f"{step.tool or 'edit'} of {_name(path)}, which no earlier "
                                 "step read, searched or wrote"))  # fmt: skip
                break
        known.add(step.files)
    return out


# --- unfixed verifications ---------------------------------------------------------------------

_Key = tuple[str, tuple[str, ...]]


@lru_cache(maxsize=4096)
def _keys(command: str) -> tuple[_Key, ...]:
    """(runner, selection) of each verification in a command: ``python -m pytest -q tests/a.py``
    is ``("pytest", ("tests/a.py",))``."""
    keys: list[_Key] = []
    for command_words in simple_commands(command):
        if not is_verification(command_words):
            continue
        words = [w for w in command_words if ">" not in w]
        if len(words) >= 3 and words[1] == "-m":
            words = words[2:]
        head = words[0].rsplit("/", 1)[-1]
        rest = words[1:]
        if head in ("npm", "pnpm", "yarn", "bun", "go", "cargo", "make", "just", "mix") and rest:
            head, rest = f"{head} {rest[0]}", rest[1:]
        keys.append((head, tuple(sorted(w for w in rest if not w.startswith("-")))))
    return tuple(keys)


def _covers(passed: _Key, failed: _Key) -> bool:
    if passed[0] != failed[0]:
        return False
    return not passed[1] or all(
        any(f == p or f.startswith(p.rstrip("/") + "/") or f.startswith(p + "::")
            for p in passed[1])
        for f in failed[1]
    )  # fmt: skip


def _unfixed_verifications(tools: list[tuple[int, Step]]) -> list[Candidate]:
    """Read backwards: what passed later (commands, their keys) and how many edits followed."""
    passed_targets: set[str | None] = set()
    passed_keys: set[_Key] = set()
    edits = 0
    out: list[Candidate] = []
    for n, step in reversed(tools):
        edits += step.action == "edit"
        if step.action != "verify":
            continue
        if step.outcome in _PASSED:
            passed_targets.add(step.target)
            passed_keys.update(_keys(step.target or ""))
            continue
        if step.outcome not in analysis.FAILED or step.target in passed_targets:
            continue
        failed_keys = _keys(step.target or "")
        if failed_keys and all(any(_covers(p, f) for p in passed_keys) for f in failed_keys):
            continue
        tests = ((step.tests_failed, "failed"), (step.tests_passed, "passed"))
        counts = [f"{v} {w}" for v, w in tests if v is not None]
        failed = ", ".join(counts) if counts else step.outcome.replace("_", " ")
        out.append(
            _make(
                n,
                step,
                "unfixed_verification",
                f"{_name(step.target)} failed ({failed}) and no later run covering it "
                f"passed ({edits} edit{'s' if edits != 1 else ''} after it)",
            )
        )
    return out[::-1]
