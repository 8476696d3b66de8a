"""File import: detect the format from the content, stream it into a sink, summarise.

Formats (gzip- or zstd-compressed or not):

- coding-agent transcripts a reader in :data:`traceproof.trajectories.readers.READERS` claims
  (Claude Code session JSONL, ...): redacted by default, see :mod:`traceproof.trajectories`;
- OTLP/JSON: one ``ExportTraceServiceRequest`` per file, or JSON lines of requests;
- OTLP protobuf: one serialized ``ExportTraceServiceRequest`` per file;
- span JSON lines: one span per line in the shape Phoenix exports (see :mod:`.spanjson`);
- Inspect AI eval logs (``.eval`` zip archives and ``.json``): their samples' scores become
  annotations, written through ``annotate`` once the spans they annotate are stored.

JSON lines are streamed: memory stays bounded by the batch size and the two batches in flight,
whatever the file size. A bad line is counted and reported with its number; it never stops the
rest of the file. Re-importing a file adds nothing (the store ignores spans it has). When the
store or the server holding it fails mid-import, :class:`ImportInterrupted` says what was
acknowledged and from which file and line a re-run has work left.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import zstandard

from traceproof.errors import TraceproofError
from traceproof.evals.annotations import AnnotationInput
from traceproof.ingest.normalize import REJECTED, SpanRows, rejection_reason
from traceproof.ingest.otlp import Decoded, MalformedRequest, decode_json_object, decode_protobuf
from traceproof.ingest.spanjson import add_span_object, is_span_object
from traceproof.settings import Settings
from traceproof.storage import WriteResult

if TYPE_CHECKING:
    from traceproof.ingest.incremental import Book

    # The transcript readers are imported when a file starts like JSON (only then can one
    # claim it), so importing OTLP protobuf files does not pay for loading them.
    from traceproof.trajectories.actions import ActionRules

GZIP_MAGIC = b"\x1f\x8b"
#: A zip archive (an Inspect AI .eval log); the same as ``trajectories.inspect_ai.ZIP_MAGIC``.
ZIP_MAGIC = b"PK\x03\x04"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

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


class _Batcher:
    """Collects rows into batches for the sink, with at most two batches in flight."""

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
        if (
            len(self.rows) >= self.settings.import_batch_spans
            or self.rows.nbytes >= self.settings.import_batch_bytes
        ):
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
        while len(self.in_flight) >= 2:
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


def import_files(
    paths: Iterable[Path],
    sink: Sink,
    *,
    settings: Settings | None = None,
    project: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    redact: bool = True,
    rules: ActionRules | None = None,
    book: Book | None = None,
    annotate: Annotate | None = None,
) -> ImportSummary:
    """Import every file into ``sink`` (``Store.submit`` or a remote equivalent).

    ``project`` overrides the project named in the data. ``on_progress`` receives the number of
    bytes read since its last call. ``redact=False`` keeps secrets in transcripts; ``rules``
    label their steps (the project's ``[trajectories.actions]``; None: the built-in rules).
    ``book``: transcript import states (:mod:`.incremental`): an unchanged transcript is skipped,
    a grown one read from its resume point; the new states are saved once every span is stored.
    ``annotate`` writes the annotations transcripts give (Inspect AI scores; without it they
    are rejected).
    """
    settings = settings or Settings()
    summary = ImportSummary()
    batcher = _Batcher(sink, settings, summary)
    batcher.book = book
    batcher.annotate = annotate
    for path in paths:
        if book is not None and book.unchanged(Path(path)):
            summary.unchanged += 1
            continue
        summary.files += 1
        try:
            _import_file(Path(path), batcher, settings, project, on_progress, redact, rules)
        except OSError as exc:
            summary.reject(str(path), None, f"cannot read the file: {exc.strerror or exc}")
        except (EOFError, zlib.error, zstandard.ZstdError) as exc:
            # A truncated or corrupt gzip stream: what was read before it is kept.
            summary.reject(str(path), None, f"cannot decompress the rest of the file ({exc})")
        except ImportError_ as exc:
            summary.reject(str(path), None, str(exc))
    batcher.finish()
    if book is not None:
        book.commit()
    return summary


#: File names a directory walk imports (anything else in the directory is left alone).
_WALKED = (".jsonl", ".json", ".traj", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".pb", ".eval")


def walked(name: str) -> bool:
    """Whether a directory walk imports a file of this name."""
    return name.endswith(_WALKED)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories walked (sorted, hidden entries skipped) for the files they
    hold: a Claude Code project directory or ``~/.claude/projects``, a Codex ``sessions/``
    tree, a folder of exports. A Claude Code subagent transcript
    (``<session>/subagents/agent-*.jsonl``) is left out when ``<session>.jsonl`` is there too:
    the session's import reads it and nests it under the tool call that started it."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            relative = candidate.relative_to(path).parts
            if any(part.startswith(".") for part in relative) or not candidate.is_file():
                continue
            if not candidate.name.endswith(_WALKED):
                continue
            if _belongs_to_session(candidate):
                continue
            found.append(candidate)
    return list(dict.fromkeys(found))


def _belongs_to_session(path: Path) -> bool:
    folder = path.parent
    if folder.name != "subagents" or not path.name.startswith("agent-"):
        return False
    session = folder.parent
    return session.with_name(session.name + ".jsonl").is_file()


class _Reporting(io.RawIOBase):
    """A raw file that reports each read's size (bytes on disk, compressed or not)."""

    def __init__(self, path: Path, report: Callable[[int], None] | None) -> None:
        self.inner = path.open("rb")
        self.report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        if self.report is not None and data:
            self.report(len(data))
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def _import_file(
    path: Path,
    batcher: _Batcher,
    settings: Settings,
    project: str | None,
    on_progress: Callable[[int], None] | None,
    redact: bool = True,
    rules: ActionRules | None = None,
) -> None:
    label = str(path)
    with path.open("rb") as probe:
        magic = probe.read(4)
    stream: IO[bytes] = io.BufferedReader(_Reporting(path, on_progress), 1 << 20)
    if magic == ZIP_MAGIC:
        # A zip archive: an Inspect AI .eval log (its reader opens the archive itself).
        from traceproof.ingest.transcripts import _import_transcript
        from traceproof.trajectories.readers import detect

        with stream:
            zipped = detect(path, _head(stream))
            if zipped is None:
                raise ImportError_("a zip archive that is not an Inspect AI eval log (.eval)")
            batcher.summary.formats[zipped.name] = batcher.summary.formats.get(zipped.name, 0) + 1
            _import_transcript(zipped, path, stream, label, batcher, project, redact, rules)
        if on_progress is not None:
            on_progress(path.stat().st_size)  # the reader seeks in the archive on its own
        return
    if magic[:2] == GZIP_MAGIC:
        stream = io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), 1 << 20)
    elif magic == ZSTD_MAGIC:
        # zstd: Codex writes rollouts as .jsonl.zst; the stdlib has no zstd before 3.14.
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        stream = io.BufferedReader(reader, 1 << 20)
    with stream:
        try:
            first = _peek_nonspace(stream)
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise ImportError_(f"cannot decompress the file ({exc})") from None
        if first is None:
            raise ImportError_("the file is empty")
        if first in (b"{", b"["):
            from traceproof.trajectories.readers import detect

            reader_ = detect(path, _head(stream))
            if reader_ is not None:
                from traceproof.ingest.transcripts import _import_transcript

                batcher.summary.formats[reader_.name] = (
                    batcher.summary.formats.get(reader_.name, 0) + 1
                )
                _import_transcript(reader_, path, stream, label, batcher, project, redact, rules)
                return
            batcher.summary.formats["otlp_json"] = batcher.summary.formats.get("otlp_json", 0) + 1
            _import_json(stream, label, batcher, settings, project)
            return
        batcher.summary.formats["otlp_protobuf"] = (
            batcher.summary.formats.get("otlp_protobuf", 0) + 1
        )
        body = stream.read()
        batcher.note(label, None)
        try:
            decoded = decode_protobuf(
                body,
                default_project=settings.default_project,
                project=project,
                rows=batcher.rows,
            )
        except MalformedRequest as exc:
            raise ImportError_(f"not OTLP/JSON, OTLP protobuf or span JSON lines ({exc})") from None
        _take_decoded(decoded, label, None, batcher)


def _head(stream: IO[bytes]) -> bytes:
    """Up to :data:`~traceproof.trajectories.readers.HEAD_BYTES` of what comes next, without
    consuming it."""
    from traceproof.trajectories.readers import HEAD_BYTES

    peek = getattr(stream, "peek", None)
    return bytes(peek(HEAD_BYTES)[:HEAD_BYTES]) if peek is not None else b""


def _peek_nonspace(stream: IO[bytes]) -> bytes | None:
    peek = getattr(stream, "peek", None)
    if peek is not None and peek(3)[:3] == b"\xef\xbb\xbf":
        stream.read(3)  # the UTF-8 byte order mark some Windows tools write before JSON
    while True:
        data = peek(64) if peek is not None else b""
        if not data:
            return None
        stripped = data.lstrip()
        if stripped:
            return stripped[:1]
        stream.read(len(data))


def _import_json(
    stream: IO[bytes], label: str, batcher: _Batcher, settings: Settings, project: str | None
) -> None:
    lines: Iterator[tuple[int, bytes]] = enumerate(stream, start=1)
    first_number, first_line = next(lines, (0, b""))
    if not isinstance(_loads(first_line), Mapping):
        # Not one object per line: the whole file is one JSON document.
        body = first_line + b"".join(line for _, line in lines)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            _import_unparsed(body, exc, label, batcher, settings, project)
            return
        items = document if isinstance(document, list) else [document]
        for index, item in enumerate(items):
            _take_object(
                item, label, None if len(items) == 1 else index + 1, batcher, settings, project
            )
        return
    _take_lines(
        itertools.chain([(first_number, first_line)], lines), label, batcher, settings, project
    )


def _import_unparsed(
    body: bytes,
    error: Exception,
    label: str,
    batcher: _Batcher,
    settings: Settings,
    project: str | None,
) -> None:
    """A file that starts like JSON but is not one JSON document.

    It may be OTLP protobuf whose first length byte happens to be ``{`` or ``[`` (a request
    starts with 0x0a, which is also a newline), or JSON lines whose first line is blank or bad.
    """
    if body[:1] == b"\n":
        batcher.note(label, None)
        before = len(batcher.rows)
        try:
            decoded = decode_protobuf(
                body, default_project=settings.default_project, project=project, rows=batcher.rows
            )
        except MalformedRequest:
            pass
        else:
            if decoded.rejected or len(batcher.rows) > before:
                _take_decoded(decoded, label, None, batcher)
                return
    numbered = list(enumerate(body.split(b"\n"), start=1))
    if not any(_is_trace_object(_loads(line)) for _, line in numbered):
        raise ImportError_(f"not valid JSON or JSON lines ({_short(error)})")
    _take_lines(iter(numbered), label, batcher, settings, project)


def _loads(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _is_trace_object(obj: Any) -> bool:
    return isinstance(obj, Mapping) and (
        is_span_object(obj) or "resourceSpans" in obj or "resource_spans" in obj
    )


def _take_lines(
    lines: Iterator[tuple[int, bytes]],
    label: str,
    batcher: _Batcher,
    settings: Settings,
    project: str | None,
) -> None:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            batcher.summary.reject(label, number, f"not valid JSON ({_short(exc)})")
            continue
        _take_object(obj, label, number, batcher, settings, project)


def _take_object(
    obj: Any,
    label: str,
    line: int | None,
    batcher: _Batcher,
    settings: Settings,
    project: str | None,
) -> None:
    if not isinstance(obj, Mapping):
        batcher.summary.reject(label, line, "expected a JSON object")
        return
    batcher.note(label, line)
    if is_span_object(obj):
        try:
            warnings = add_span_object(
                batcher.rows, obj, project=project or settings.default_project
            )
        except REJECTED as exc:
            batcher.summary.reject(label, line, rejection_reason(exc))
            return
        batcher.summary.warnings += len(warnings)
        batcher.flush_if_full()
        return
    if "resourceSpans" in obj or "resource_spans" in obj:
        try:
            decoded = decode_json_object(
                obj, default_project=settings.default_project, project=project, rows=batcher.rows
            )
        except MalformedRequest as exc:
            batcher.summary.reject(label, line, str(exc))
            return
        _take_decoded(decoded, label, line, batcher)
        return
    batcher.summary.reject(
        label, line, "neither an OTLP trace request (resourceSpans) nor a span (context.span_id)"
    )


def _take_decoded(decoded: Decoded, label: str, line: int | None, batcher: _Batcher) -> None:
    for reason in decoded.reasons:
        batcher.summary.reject(label, line, reason)
    # Rejections past the kept reasons still count.
    batcher.summary.rejected += decoded.rejected - len(decoded.reasons)
    batcher.summary.warnings += len(decoded.warnings)
    batcher.flush_if_full()


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]
