"""The first-wrong-step rules over hand-built step sequences: each rule firing and not."""

from __future__ import annotations

from typing import Any

from traceproof.trajectories.analysis import Step
from traceproof.trajectories.wrong_step import (
    Candidate,
    StepText,
    candidates,
    first_wrong_step,
)


class Run:
    """Steps in order (span ids s1, s2, …), with their arguments and output."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.texts: dict[str, StepText] = {}

    def llm(self) -> Run:
        self.steps.append(Step("t1", f"s{len(self.steps) + 1}", "LLM", model="m"))
        return self

    def tool(
        self,
        action: str,
        tool: str,
        target: str | None = None,
        outcome: str = "ok",
        *,
        files: tuple[str, ...] | None = None,
        args: dict[str, Any] | None = None,
        output: str = "",
        passed: int | None = None,
        failed: int | None = None,
    ) -> Run:
        span = f"s{len(self.steps) + 1}"
        if files is None:
            files = (
                (target,) if target and action in ("edit", "localize") and tool != "Bash" else ()
            )
        self.steps.append(Step("t1", span, "TOOL", action=action, tool=tool, target=target,
                               outcome=outcome, files=files, tests_passed=passed,
                               tests_failed=failed))  # fmt: skip
        self.texts[span] = StepText(args or {}, output)
        return self

    def read(self, path: str) -> Run:
        return self.tool("localize", "Read", path, output="1\tx = 1")

    def edit(self, path: str, old: str = "a", new: str = "b", outcome: str = "ok") -> Run:
        args = {"file_path": path, "old_string": old, "new_string": new}
        return self.tool("edit", "Edit", path, outcome, args=args, output="ok")

    def bash(self, action: str, command: str, outcome: str = "ok", **kw: Any) -> Run:
        return self.tool(action, "Bash", command, outcome, args={"command": command}, **kw)

    def found(self) -> list[tuple[int, str]]:
        return [(c.step, c.rule) for c in candidates(self.steps, self.texts)]

    def candidates(self) -> list[Candidate]:
        return candidates(self.steps, self.texts)


# --- ignored_error -----------------------------------------------------------------------------


def test_an_error_retried_unchanged_that_never_succeeds_is_ignored() -> None:
    run = Run().bash("execute", "npm install", "error", output="Exit code 1\nnpm ERR! ENOENT")
    run.bash("execute", "npm install", "error", output="Exit code 1\nnpm ERR! ENOENT")
    run.read("package.json")
    (found,) = run.candidates()
    assert (found.step, found.rule) == (1, "ignored_error")
    assert found.reason == (
        "Bash `npm install` failed (npm ERR! ENOENT); retried unchanged at step 2 and never "
        "succeeded"
    )
    again = Run().bash("execute", "npm install", "error").bash("execute", "npm install")
    assert again.read("x.py").found() == []  # the retry succeeded: flaky, not ignored


def test_a_failed_edit_never_redone_is_ignored_and_one_redone_is_not() -> None:
    run = Run().read("src/app.py").edit("src/app.py", outcome="error")
    run.bash("verify", "pytest -q", "tests_passed", passed=3)
    (found,) = run.candidates()
    assert (found.step, found.rule) == (2, "ignored_error")
    assert "`src/app.py` was never edited successfully afterwards" in found.reason
    redone = Run().read("src/app.py").edit("src/app.py", outcome="error").edit("src/app.py")
    assert redone.bash("verify", "pytest -q", "tests_passed").found() == []


def test_a_run_ending_on_an_error_ignored_it_and_a_changed_approach_did_not() -> None:
    ended = Run().read("Makefile").bash("execute", "make build", "error", output="no rule")
    assert ended.found() == [(2, "ignored_error")]
    assert "the run ended on it" in ended.candidates()[0].reason
    changed = (
        Run().tool("localize", "Read", "src/nope.py", "error").tool("localize", "Glob", "*.py")
    )
    assert changed.found() == []


# --- reverted_edit -----------------------------------------------------------------------------


def test_an_edit_undone_by_git_checkout_of_its_file_is_reverted() -> None:
    run = Run().read("src/app.py").edit("src/app.py")
    run.bash("vcs", "git checkout -- src/app.py")
    (found,) = run.candidates()
    assert (found.step, found.rule) == (2, "reverted_edit")
    assert (
        found.reason == "Edit of `src/app.py` was undone at step 3 by `git checkout -- src/app.py`"
    )
    everything = Run().read("a.py").edit("a.py").read("b.py").edit("b.py")
    assert everything.bash("vcs", "git reset --hard").found() == [
        (2, "reverted_edit"),
        (4, "reverted_edit"),
    ]


def test_a_checkout_after_a_commit_or_of_a_branch_reverts_nothing() -> None:
    committed = Run().read("src/app.py").edit("src/app.py").bash("vcs", "git commit -am fix")
    assert committed.bash("vcs", "git checkout -- src/app.py").found() == []
    branch = Run().read("src/app.py").edit("src/app.py").bash("vcs", "git checkout main")
    assert branch.found() == []
    other = Run().read("src/app.py").edit("src/app.py").bash("vcs", "git restore src/util.py")
    assert other.found() == []


def test_an_edit_inverted_by_a_later_edit_is_reverted_and_a_further_edit_is_not() -> None:
    run = Run().read("/repo/src/app.py").edit("/repo/src/app.py", "total = a", "total = b")
    run.edit("/repo/src/app.py", "total = b", "total = a")
    (found,) = run.candidates()
    assert (found.step, found.rule) == (2, "reverted_edit")
    assert found.reason.endswith("was undone at step 3 by Edit putting its old text back")
    onward = Run().read("src/app.py").edit("src/app.py", "a", "b").edit("src/app.py", "b", "c")
    assert onward.found() == []


def test_a_write_restoring_earlier_content_and_undo_edit_revert() -> None:
    write = {"file_path": "notes.md", "content": "v1\n"}
    run = Run().tool("edit", "Write", "notes.md", args=write, output="File created successfully")
    run.edit("notes.md", "v1", "v2")
    run.tool("edit", "Write", "notes.md", args=write, output="The file has been updated.")
    assert run.found() == [(2, "reverted_edit")]
    assert "by a Write restoring the content of step 1" in run.candidates()[0].reason
    undo = (
        Run()
        .read("a.py")
        .tool(
            "edit",
            "str_replace_editor",
            "a.py",
            args={"command": "str_replace", "old_str": "x", "new_str": "y"},
        )
    )
    undo.tool("edit", "str_replace_editor", "a.py", args={"command": "undo_edit", "path": "a.py"})
    assert undo.found() == [(2, "reverted_edit")]  # fmt: skip


def test_a_write_restoring_the_content_a_read_showed_reverts_the_edits_between() -> None:
    shown = "     1\u2192x = 1\n     2\u2192y = 2\n\n<system-reminder>ok</system-reminder>"
    run = Run().tool("localize", "Read", "a.py", args={"file_path": "a.py"}, output=shown)
    run.edit("a.py", "x = 1", "x = 3").edit("a.py", "y = 2", "y = 4")
    write = {"file_path": "a.py", "content": "x = 1\ny = 2\n"}
    run.tool("edit", "Write", "a.py", args=write, output="The file a.py has been updated.")
    assert run.found() == [(2, "reverted_edit"), (3, "reverted_edit")]
    assert "by a Write restoring the content of step 1" in run.candidates()[0].reason
    part = Run().tool("localize", "Read", "a.py", args={"file_path": "a.py", "offset": 1},
                      output=shown)  # fmt: skip
    part.edit("a.py", "x = 1", "x = 3")
    assert part.tool("edit", "Write", "a.py", args=write, output="updated").found() == []


def test_a_patch_undone_by_its_inverse_is_reverted() -> None:
    forward = "*** Begin Patch\n*** Update File: src/a.py\n@@\n-x = 1\n+x = 2\n*** End Patch"
    back = "*** Begin Patch\n*** Update File: src/a.py\n@@\n-x = 2\n+x = 1\n*** End Patch"
    onward = "*** Begin Patch\n*** Update File: src/a.py\n@@\n-x = 2\n+x = 3\n*** End Patch"
    run = Run().read("src/a.py").tool("edit", "apply_patch", "src/a.py", args={"input": forward})
    assert run.tool("edit", "apply_patch", "src/a.py", args={"input": back}).found() == [
        (2, "reverted_edit")
    ]
    kept = Run().read("src/a.py").tool("edit", "apply_patch", "src/a.py", args={"input": forward})
    assert kept.tool("edit", "apply_patch", "src/a.py", args={"input": onward}).found() == []


# --- unread_edit -------------------------------------------------------------------------------


def test_an_edit_of_a_file_never_read_is_flagged_once() -> None:
    run = Run().read("src/app.py").edit("src/util.py").edit("src/util.py", "b", "c")
    (found,) = run.candidates()
    assert (found.step, found.rule) == (2, "unread_edit")
    assert found.reason == "Edit of `src/util.py`, which no earlier step read, searched or wrote"


def test_reads_grep_hits_commands_and_earlier_writes_make_a_file_known() -> None:
    assert Run().read("src/app.py").edit("/repo/src/app.py").found() == []
    grep = Run().tool("localize", "Grep", "def total in src", files=(),
                      output="src/billing/total.py:3:def total():")  # fmt: skip
    assert grep.edit("/repo/src/billing/total.py").found() == []
    command = Run().bash("localize", "grep -n total src/app.py", output="3:def total():")
    assert command.edit("src/app.py").found() == []
    write = {"file_path": "new.py", "content": "x = 1\n"}
    created = Run().tool("edit", "Write", "new.py", args=write, output="File created successfully")
    assert created.edit("new.py", "x = 1", "x = 2").found() == []


def test_writing_a_new_file_is_not_wrong_but_overwriting_an_unread_one_is() -> None:
    write = {"file_path": "src/app.py", "content": "x = 1\n"}
    new = Run().tool("edit", "Write", "src/new.py", args=write, output="File created successfully")
    assert new.found() == []
    over = Run().tool("edit", "Write", "src/app.py", args=write,
                      output="The file src/app.py has been updated. Here's the result")  # fmt: skip
    assert over.found() == [(1, "unread_edit")]
    patch = "*** Begin Patch\n*** Add File: docs/a.md\n+hi\n*** End Patch"
    added = Run().tool("edit", "apply_patch", "docs/a.md", args={"input": patch})
    assert added.found() == []


# --- unfixed_verification ----------------------------------------------------------------------


def test_a_failed_run_no_later_run_passes_is_unfixed() -> None:
    run = Run().read("src/app.py").edit("src/app.py")
    run.bash("verify", "pytest -q tests", "tests_failed", passed=2, failed=1)
    run.edit("src/app.py", "b", "c")
    (found,) = run.candidates()
    assert (found.step, found.rule) == (3, "unfixed_verification")
    assert found.reason == (
        "`pytest -q tests` failed (1 failed, 2 passed) and no later run covering it passed "
        "(1 edit after it)"
    )


def test_the_same_run_or_a_wider_one_passing_fixes_it_and_a_narrower_one_does_not() -> None:
    def after(failed: str, passed: str) -> list[tuple[int, str]]:
        run = Run().read("src/app.py").bash("verify", failed, "tests_failed", failed=1)
        return run.edit("src/app.py").bash("verify", passed, "tests_passed").found()

    assert after("pytest -q tests", "pytest -q tests") == []
    assert after("pytest tests/test_a.py::test_t", "cd /repo && python -m pytest tests -q") == []
    assert after("pytest tests/test_a.py 2>&1 | tail -5", "pytest") == []
    assert after("pytest tests", "pytest tests/test_a.py") == [(2, "unfixed_verification")]
    assert after("pytest tests", "npm test") == [(2, "unfixed_verification")]
    lint = Run().bash("verify", "ruff check .", "error").read("a.py").edit("a.py")
    assert lint.bash("verify", "ruff check .", "ok").found() == []


# --- the first wrong step ----------------------------------------------------------------------


def test_the_first_wrong_step_is_the_earliest_and_steps_count_model_calls() -> None:
    run = Run().llm().read("src/app.py").llm().edit("src/app.py")
    run.bash("verify", "pytest", "tests_failed", failed=1).llm().edit("src/other.py")
    found = run.candidates()
    assert [(c.step, c.rule) for c in found] == [(5, "unfixed_verification"), (7, "unread_edit")]
    first = first_wrong_step(found)
    assert first is not None and (first.step, first.span_id) == (5, "s5")
    assert first_wrong_step([]) is None


def test_at_one_step_the_stronger_rule_wins() -> None:
    run = Run().edit("src/app.py").bash("vcs", "git checkout -- src/app.py")
    found = run.candidates()
    assert [(c.step, c.rule) for c in found] == [(1, "reverted_edit"), (1, "unread_edit")]
    first = first_wrong_step(list(reversed(found)))
    assert first is not None and first.rule == "reverted_edit"
