"""File import: detect the format from the content, stream it into a sink, summarise.

Formats (gzip- or zstd-compressed or not):

- coding-agent transcripts a reader in :data:`traceproof.trajectories.readers.READERS` claims
  (Claude Code session JSONL, ...): redacted by default, see :mod:`traceproof.trajectories`;
- OTLP/JSON: one ``ExportTraceServiceRequest`` per file, or JSON lines of requests;
- OTLP protobuf: one serialized ``ExportTraceServiceRequest`` per file;
- span JSON lines: one span per line in the shape Phoenix exports (see :mod:`.spanjson`);
- Inspect AI eval logs (``.eval`` zip archives and ``.json``): their samples' scores become
  annotations, written through ``annotate`` once the spans they annotate are stored.

JSON lines are streamed: memory stays bounded by the batch size and the batch in flight,
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import zstandard

from traceproof.ingest.batcher import (
    ANNOTATION_BATCH,
    MAX_REJECTIONS,
    Annotate,
    ImportError_,
    ImportInterrupted,
    ImportSummary,
    Rejection,
    Sink,
    _Batcher,
)
from traceproof.ingest.normalize import REJECTED, rejection_reason
from traceproof.ingest.otlp import Decoded, MalformedRequest, decode_json_object, decode_protobuf
from traceproof.ingest.spanjson import add_span_object, is_span_object
from traceproof.settings import Settings

if TYPE_CHECKING:
    from traceproof.ingest.incremental import Book

    # The transcript readers are imported when a file starts like JSON (only then can one
    # claim it), so importing OTLP protobuf files does not pay for loading them.
    from traceproof.trajectories.actions import ActionRules

__all__ = [
    "ANNOTATION_BATCH",
    "MAX_REJECTIONS",
    "Annotate",
    "ImportError_",
    "ImportInterrupted",
    "ImportSummary",
    "Rejection",
    "Sink",
    "expand_paths",
    "import_files",
    "walked",
]

GZIP_MAGIC = b"\x1f\x8b"
#: A zip archive (an Inspect AI .eval log); the same as ``trajectories.inspect_ai.ZIP_MAGIC``.
ZIP_MAGIC = b"PK\x03\x04"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


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
