"""Provenance: what an experiment ran, so a person can audit "this change proved X".

:func:`provenance` records the git commit of the project root, whether the tree was dirty
(tracked changes or untracked files), a SHA-256 of ``git diff HEAD`` (the uncommitted change the
runs saw; with the untracked files' names), the dataset and its version, the task's definition
hash, each evaluator's definition hash with its calibration state, and the traceproof version.
Outside a git repository (or without git) the git fields are None.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

from traceproof import __version__

__all__ = ["git_state", "provenance"]

#: Seconds one git command may take.
GIT_TIMEOUT = 20


def _git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, timeout=GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path) -> dict[str, Any]:
    """``git_commit``, ``git_dirty``, ``diff_hash`` of the repository holding ``root`` (None
    each when there is none)."""
    empty = {"git_commit": None, "git_dirty": None, "diff_hash": None}
    if shutil.which("git") is None:
        return empty
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return empty
    diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff") or b""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard") or b""
    dirty = bool(diff.strip() or untracked.strip())
    digest = hashlib.sha256(diff + b"\0" + untracked).hexdigest() if dirty else None
    return {"git_commit": commit.decode().strip(), "git_dirty": dirty, "diff_hash": digest}


def provenance(
    root: Path,
    *,
    dataset_id: str,
    dataset_version: int,
    task: str,
    task_hash: str,
    evaluators: list[dict[str, Any]],
) -> dict[str, Any]:
    """The provenance object stored with an experiment (see the module docstring)."""
    return git_state(root) | {
        "dataset_id": dataset_id,
        "dataset_version": dataset_version,
        "task": task,
        "task_hash": task_hash,
        "evaluators": evaluators,
        "traceproof_version": __version__,
    }
