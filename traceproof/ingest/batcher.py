"""The import's bookkeeping: rejections, the summary, and the batcher that sends rows to the
sink, keeps at most :data:`IN_FLIGHT` batches in flight and knows which file and line a re-run
resumes from (:class:`ImportInterrupted`). Used by :mod:`.files` and :mod:`.transcripts`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from traceproof.errors import TraceproofError
from traceproof.evals.annotations import AnnotationInput
from traceproof.ingest.normalize import SpanRows
from traceproof.settings import Settings
from traceproof.storage import WriteResult

if TYPE_CHECKING:
    from traceproof.ingest.incremental import Book

    # The transcript readers are imported when a file starts like JSON (only then can one
    # claim it), so importing OTLP protobuf files does not pay for loading them.

#: The formats of trace files (everything else in ``ImportSummary.formats`` is a transcript).
_TRACE_FORMATS = ("otlp_json", "otlp_protobuf")

#: Rejected lines kept with their reasons; the count is always exact.
MAX_REJECTIONS = 10_000

Sink = Callable[[pa.Table], "Future[WriteResult]"]
#: Writes annotations (``write_annotations(store, items, partial=True)`` or
#: ``RemoteStore.write_annotations``): answers an ``AnnotationWrite``.
Annotate = Callable[[Sequence[AnnotationInput]], Any]
#: Annotations written per call of ``annotate``.
ANNOTATION_BATCH = 1000


@dataclass(frozen=True)
class Rejection:
    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class ImportSummary:
    """What an import read, added and rejected."""

    files: int = 0
    spans_read: int = 0
    spans_added: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    warnings: int = 0
    #: Transcript records read and not turned into spans (progress, snapshots, unknown types).
    records_skipped: int = 0
    skipped_by_kind: dict[str, int] = field(default_factory=dict)
    #: Secrets replaced in imported transcripts.
    redactions: int = 0
    #: Transcripts skipped as unchanged since the last import, and read from a resume point.
    unchanged: int = 0
    incremental: int = 0
    #: Files read per format (a transcript reader's name, ``otlp_json``, ``otlp_protobuf``).
    formats: dict[str, int] = field(default_factory=dict)
    projects: set[str] = field(default_factory=set)
    #: Annotations transcripts gave (Inspect AI scores), and what writing them did.
    annotations_read: int = 0
    annotations_created: int = 0
    annotations_updated: int = 0
    annotations_unchanged: int = 0
    _traces: set[tuple[str, str]] = field(default_factory=set)

    @property
    def traces(self) -> int:
        return len(self._traces)

    @property
    def duplicates(self) -> int:
        return self.spans_read - self.spans_added

    def reject(self, path: str, line: int | None, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REJECTIONS:
            self.rejections.append(Rejection(path, line, reason))

    @property
    def transcripts(self) -> int:
        """Files a transcript reader read."""
        return sum(n for name, n in self.formats.items() if name not in _TRACE_FORMATS)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "files": self.files,
            "spans_read": self.spans_read,
            "spans_added": self.spans_added,
            "duplicates": self.duplicates,
            "traces": self.traces,
            "projects": sorted(self.projects),
        }
        if self.transcripts or self.unchanged:
            # Only when transcripts were read: the summary of trace files stays as it was.
            found |= {
                "unchanged": self.unchanged,
                "incremental": self.incremental,
                "records_skipped": self.records_skipped,
                "skipped_by_kind": dict(sorted(self.skipped_by_kind.items())),
                "redactions": self.redactions,
                "formats": dict(sorted(self.formats.items())),
            }
        if self.annotations_read:
            found |= {
                "annotations_read": self.annotations_read,
                "annotations_created": self.annotations_created,
                "annotations_updated": self.annotations_updated,
                "annotations_unchanged": self.annotations_unchanged,
            }
        return found | {
            "rejected": self.rejected,
            "rejections": [
                {"path": r.path, "line": r.line, "reason": r.reason} for r in self.rejections
            ],
        }


class ImportError_(ValueError):
    """A whole file could not be read (missing, unreadable, not a trace format)."""


class ImportInterrupted(TraceproofError):
    """The store (or the server holding it) failed mid-import: what was committed, and where a
    re-run resumes. Re-running the same import is safe: stored spans are skipped."""

    def __init__(
        self,
        cause: TraceproofError,
        summary: ImportSummary,
        *,
        batches: int,
        spans: int,
        resume: tuple[str, int | None] | None,
    ) -> None:
        self.cause = cause
        self.summary = summary
        self.batches_acknowledged = batches
        self.spans_acknowledged = spans
        self.resume = resume
        if batches:
            done = (
                f"Acknowledged before it stopped: {batches} batch(es), {spans} span(s) "
                f"({summary.spans_added} new)."
            )
        else:
            done = "No batch was acknowledged."
        if resume is None:
            where = "Every span read was acknowledged."
        else:
            path, line = resume
            at = f"{path} line {line}" if line is not None else f"the start of {path}"
            where = f"Everything before {at} is stored; that and what follows may not be."
        super().__init__(
            f"The import stopped: {cause.message} {done} {where} Re-run the same command to "
            "import the rest: spans already stored are skipped, nothing is added twice.",
            code=cause.code,
        )


#: Batches sent and not yet stored, besides the one being read: the writer stores one while the
#: reader makes the next. A second one waiting (the earlier limit) gained no speed on a 1 GB
#: Claude Code history and held one more batch (~17 MB of Arrow) at the peak.
IN_FLIGHT = 1


class _Batcher:
    """Collects rows into batches for the sink, with at most :data:`IN_FLIGHT` in flight."""

    def __init__(self, sink: Sink, settings: Settings, summary: ImportSummary) -> None:
        self.sink = sink
        self.settings = settings
        self.summary = summary
        self.rows = SpanRows.for_settings(settings)
        # Each batch sent and not yet settled, with the (file, line) of its first span.
        self.in_flight: deque[tuple[Future[WriteResult], tuple[str, int | None], int]] = deque()
        self.position: tuple[str, int | None] = ("", None)
        self.batch_start: tuple[str, int | None] = ("", None)
        self.acked_batches = 0
        self.acked_spans = 0
        #: Transcript import states (incremental import); None: every file read whole.
        self.book: Book | None = None
        self.annotate: Annotate | None = None
        #: Annotations waiting for their spans to be stored, with the file they came from.
        self.annotations: list[tuple[str, AnnotationInput]] = []

    def note(self, path: str, line: int | None) -> None:
        """Where the next rows come from (for the resume point of an interrupted import)."""
        self.position = (path, line)
        if not len(self.rows):
            self.batch_start = self.position

    def flush_if_full(self) -> None:
        """Send the batch once it holds ``import_batch_spans`` (a whole row group, which DuckDB
        writes straight to the file), or once it is ``import_batch_bytes`` of spans too large
        for that many to fit ``import_full_batch_bytes`` (``import_full_batch_bytes`` at most)."""
        settings, rows = self.settings, self.rows
        count, nbytes = len(rows), rows.nbytes
        full = count >= settings.import_batch_spans or nbytes >= settings.import_full_batch_bytes
        # Spans too large for a whole row group within import_full_batch_bytes: end at the
        # smaller size (such a batch is held in DuckDB's pool several times over).
        too_large = nbytes >= settings.import_batch_bytes and (
            nbytes * settings.import_batch_spans > settings.import_full_batch_bytes * count
        )
        if full or too_large:
            self.flush()

    def flush(self) -> None:
        if not len(self.rows):
            return
        table = self.rows.table()
        self.rows = self.rows.like()
        summary = self.summary
        summary.spans_read += table.num_rows
        projects = table.column("project").to_pylist()
        summary.projects.update(projects)
        summary._traces.update(zip(projects, table.column("trace_id").to_pylist(), strict=True))
        start, self.batch_start = self.batch_start, self.position
        while len(self.in_flight) >= IN_FLIGHT:
            self._settle()
        try:
            future = self.sink(table)
        except TraceproofError as exc:
            raise self.interrupted(exc, start) from None
        self.in_flight.append((future, start, table.num_rows))

    def _settle(self) -> None:
        future, start, count = self.in_flight[0]
        try:
            added = future.result().added
        except TraceproofError as exc:
            raise self.interrupted(exc, start) from None
        self.in_flight.popleft()
        self.summary.spans_added += added
        self.acked_batches += 1
        self.acked_spans += count

    def finish(self) -> None:
        self.flush()
        while self.in_flight:
            self._settle()
        self.write_annotations()

    def add_annotations(self, label: str, items: list[AnnotationInput]) -> None:
        """Annotations to write once the spans sent so far are stored."""
        self.annotations += [(label, item) for item in items]
        self.summary.annotations_read += len(items)
        if len(self.annotations) >= ANNOTATION_BATCH:
            self.finish()

    def write_annotations(self) -> None:
        """The annotations collected so far, once every span sent is stored (their targets)."""
        pending, self.annotations = self.annotations, []
        if not pending:
            return
        if self.annotate is None:
            for label, _ in pending:
                self.summary.reject(label, None, "an annotation with no store to write it to")
            return
        try:
            result = self.annotate([item for _, item in pending])
        except TraceproofError as exc:
            # Every span sent is stored; these annotations (from this file on) may not be.
            raise self.interrupted(exc, (pending[0][0], None)) from None
        self.summary.annotations_created += result.created
        self.summary.annotations_updated += result.updated
        self.summary.annotations_unchanged += result.unchanged
        for rejected in result.rejected:
            label, item = pending[rejected.index]
            self.summary.reject(label, None, f"annotation {item.name!r}: {rejected.message}")

    def interrupted(
        self, cause: TraceproofError, failed: tuple[str, int | None]
    ) -> ImportInterrupted:
        """The error for a sink that failed on the batch starting at ``failed``: everything
        before the first batch not acknowledged is stored."""
        while self.in_flight and self.in_flight[0][0].done():
            future, _, count = self.in_flight[0]
            if future.exception() is not None:
                break
            self.in_flight.popleft()
            self.summary.spans_added += future.result().added
            self.acked_batches += 1
            self.acked_spans += count
        resume = self.in_flight[0][1] if self.in_flight else failed
        return ImportInterrupted(
            cause,
            self.summary,
            batches=self.acked_batches,
            spans=self.acked_spans,
            resume=resume,
        )
