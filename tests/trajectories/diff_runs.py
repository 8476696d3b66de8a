"""Two Claude Code runs of one task, in different working directories, imported into a store:
run A fails its tests, fixes a second file and passes; run B passes at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.trajectories.claude_files import Transcript, text, tool_use
from traceproof.ingest.files import import_files
from traceproof.storage import Store

SESSION_A = "d1ff0000-0000-4000-8000-00000000000a"
SESSION_B = "d1ff0000-0000-4000-8000-00000000000b"
ROOT_A = "/home/ann/work/shop"
ROOT_B = "/tmp/agent-wt-2/shop"
FAILED = "Exit code 1\nF..\n==== 1 failed, 2 passed in 0.10s ===="
PASSED = "...\n==== 3 passed in 0.10s ===="

#: A tool call: (tool, its input with {root} for the working directory, output, is_error).
Call = tuple[str, dict[str, Any], str, bool]

EDIT_UTIL = {"file_path": "{root}/src/util.py", "old_string": "x", "new_string": "y"}
COMMON: list[Call] = [
    ("Read", {"file_path": "{root}/src/app.py"}, "1\tdef total(): ...", False),
    ("Grep", {"pattern": "def total", "path": "{root}/src"}, "src/app.py:1", False),
    ("Edit", {"file_path": "{root}/src/app.py", "old_string": "a", "new_string": "b"}, "ok", False),
]
RUN_A: list[Call] = [
    *COMMON,
    ("Bash", {"command": "cd {root} && pytest -q tests 2>&1 | tail -20"}, FAILED, True),
    ("Bash", {"command": "cd {root} && pytest -q tests 2>&1 | tail -20"}, FAILED, True),
    ("Read", {"file_path": "{root}/src/util.py"}, "1\tdef rate(): ...", False),
    ("Edit", EDIT_UTIL, "ok", False),
    ("Bash", {"command": "pytest -q tests"}, PASSED, False),
]
RUN_B: list[Call] = [
    *COMMON,
    ("Bash", {"command": "pytest -q tests"}, PASSED, False),
    ("Bash", {"command": "git diff --stat"}, " src/app.py | 2 +-", False),
]


def _fill(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace("{root}", root)
    if isinstance(value, dict):
        return {k: _fill(v, root) for k, v in value.items()}
    return value


def transcript(session: str, root: str, calls: list[Call]) -> Transcript:
    """One turn of a session: a prompt, then each call (an assistant message and its result)."""
    t = Transcript(session=session)
    t.prompt("u1", "make the total apply the discount", parent=None)
    for i, (name, arguments, output, error) in enumerate(calls, 1):
        t.assistant(f"a{i}", f"msg_{i}", tool_use(f"toolu_{i}", name, _fill(arguments, root)))
        t.result(f"r{i}", f"toolu_{i}", output, error=error)
    t.assistant("a-end", "msg_end", text("Done."))
    t.system("s-end", "turn_duration", durationMs=1000)
    for record in t.records:
        record["cwd"] = root
    return t


@dataclass
class Runs:
    project: str
    a: str
    b: str


def import_runs(store: Store, folder: Path) -> Runs:
    """Write both transcripts under ``folder`` and import them into ``store``."""
    paths = [
        transcript(SESSION_A, ROOT_A, RUN_A).write(folder / "a" / f"{SESSION_A}.jsonl"),
        transcript(SESSION_B, ROOT_B, RUN_B).write(folder / "b" / f"{SESSION_B}.jsonl"),
    ]
    summary = import_files(paths, store.submit, settings=store.settings)
    assert summary.spans_read > 0 and not summary.rejected, summary
    return Runs("shop", SESSION_A, SESSION_B)
