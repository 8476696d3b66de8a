"""Transcript import: a coding-agent transcript through the reader that claimed it.

:func:`traceproof.ingest.files.import_files` detects the format; a file a transcript reader
(:data:`traceproof.trajectories.readers.READERS`) claims comes here: each trace's spans are
labelled by :func:`~traceproof.trajectories.actions.label_trace`, redacted, and added to the
batch. This module is imported only when a transcript is read.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING

from traceproof.ingest.normalize import REJECTED, rejection_reason
from traceproof.trajectories.actions import ActionRules, label_trace
from traceproof.trajectories.common import Reader, Resume, Skipped, StepSpan
from traceproof.trajectories.emit import add_step
from traceproof.trajectories.redact import Redactor

if TYPE_CHECKING:
    from traceproof.ingest.batcher import _Batcher


def _import_transcript(
    reader: Reader,
    path: Path,
    stream: IO[bytes],
    label: str,
    batcher: _Batcher,
    project: str | None,
    redact: bool,
    rules: ActionRules | None = None,
) -> None:
    """A coding-agent transcript through its reader: each trace's spans labelled, then added.

    The project is ``project``, else the last path component of the agent's working
    directory, else the agent's name. With the batcher's :class:`~traceproof.ingest.
    incremental.Book`, a file read before is read from its resume point and the new point noted
    (``stream`` is then left unread)."""
    redactor = Redactor(enabled=redact)
    summary = batcher.summary
    pending: list[StepSpan] = []
    book = batcher.book
    plan = book.plan(path) if book is not None else None
    if book is not None and plan is not None and not plan.compressed:
        stream = book.open(plan)
        if plan.resumed:
            summary.incremental += 1
    resume: Resume | None = None

    def add(spans: list[StepSpan]) -> None:
        label_trace(spans, rules)
        for span in spans:
            batcher.note(label, span.line)
            name = project or _project_of(span, reader.name)
            try:
                warnings = add_step(batcher.rows, span, project=name, source=reader.name)
            except REJECTED as exc:
                summary.reject(label, span.line, rejection_reason(exc))
                continue
            summary.warnings += len(warnings)
            batcher.flush_if_full()
            if span.annotations:
                batcher.add_annotations(
                    label, [replace(item, project=name) for item in span.annotations]
                )

    try:
        for item in reader.read(path, stream, redactor):
            if isinstance(item, StepSpan):
                if pending and pending[-1].trace_id != item.trace_id:
                    add(pending)
                    pending = []
                pending.append(item)
            elif isinstance(item, Skipped):
                summary.records_skipped += 1
                summary.skipped_by_kind[item.kind] = summary.skipped_by_kind.get(item.kind, 0) + 1
            elif isinstance(item, Resume):
                resume = item
            else:
                summary.reject(label, item.line, item.reason)
        cut = resume.pending_ns if resume is not None else None
        if pending and cut is not None and resume and pending[-1].trace_id == resume.trace_id:
            # The turn in progress: its spans from the earliest one still to come are left for
            # a later read (see Resume.pending_ns).
            pending = [s for s in pending if s.start_ns < cut]
        if pending:
            add(pending)
    finally:
        summary.redactions += redactor.count
        if plan is not None and not plan.compressed:
            stream.close()
    if book is not None and plan is not None:
        book.done(plan, reader.name, resume)


def _project_of(span: StepSpan, agent: str) -> str:
    cwd = span.resource.get("process.cwd")
    if isinstance(cwd, str) and cwd.strip("/\\"):
        return _dir_name(cwd) or agent
    return agent.replace("_", "-")


@lru_cache(maxsize=1024)
def _dir_name(cwd: str) -> str:
    """The last component of a working directory (remembered: every span of a trace asks)."""
    return PurePath(cwd.rstrip("/\\")).name
