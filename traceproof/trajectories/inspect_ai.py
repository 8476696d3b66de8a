"""Inspect AI eval logs (``.eval`` and ``.json``) as spans: an eval is a session, each sample and
epoch a trace, the sample's scores annotations of it (see :mod:`.inspect_records`).

A ``.eval`` log is a zip archive: ``header.json`` (or, while the eval runs or after it
crashed, ``_journal/start.json``) and one member per sample, ``samples/<id>_epoch_<n>.json``,
most often zstd-compressed (zip method 93, which Python's ``zipfile`` reads only from 3.14 on:
members are decompressed here, with ``zstandard``). Samples are read one member at a time, so
memory holds one sample, whatever the log's size. A log cut short (no central directory at its
end) is read from its local headers: every complete member is kept, the rest rejected. A
sample in the chunked shape (a folder of sequences, what the hidden ``inspect log
convert-chunked`` writes) is rejected by name.

A ``.json`` log is one ``EvalLog`` object: it is read one sample at a time too
(:mod:`.inspect_json`), and one cut short keeps the samples before the cut.

Neither needs ``inspect_ai`` installed: the files are read as they are written.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import zstandard

from traceproof.trajectories.common import Item, Malformed, Redact, Skipped, StepSpan
from traceproof.trajectories.inspect_json import BadLog, top_level
from traceproof.trajectories.inspect_records import (
    SOURCE,
    EvalHeader,
    eval_header,
    prepared,
    sample_items,
    score_annotations,
)

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_STORED, _DEFLATED, _ZSTD = 0, 8, 93
_HEADERS = ("header.json", "_journal/start.json")
#: An ``EvalLog`` as Inspect writes it starts with its version and status.
_JSON_HEAD = re.compile(rb'^\s*\{\s*"version"\s*:\s*\d+\s*,\s*"status"\s*:')


class InspectReader:
    """Inspect AI eval logs: ``.eval`` (zip) and ``.json`` (one ``EvalLog`` object)."""

    name = SOURCE

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[:4] == ZIP_MAGIC:
            return path.name.endswith(".eval") or b"header.json" in head or b"_journal/" in head
        return bool(_JSON_HEAD.match(head)) and b'"eval_id"' in head

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        peek = getattr(stream, "peek", None)
        if peek is not None:
            zipped = bytes(peek(4)[:4]) == ZIP_MAGIC
        else:
            with path.open("rb") as probe:
                zipped = probe.read(4) == ZIP_MAGIC
        if zipped:
            yield from _read_zip(path, redact)
            return
        yield from _read_json(stream, redact)


def _read_json(stream: IO[bytes], redact: Redact) -> Iterator[Item]:
    """A ``.json`` log, one sample at a time (the members before ``samples``, the header among
    them, are small)."""
    log: dict[str, Any] = {}
    header: EvalHeader | None = None
    waiting: list[tuple[int, Any]] = []  # samples before the header (not Inspect's order)
    count = 0
    problem: str | None = None
    try:
        for key, value in top_level(stream):
            if key != "samples[]":
                log[key] = value
                continue
            count += 1
            if header is None and isinstance(log.get("eval"), dict):
                header = _json_header(log, redact)
            if header is None:
                waiting.append((count, value))
                continue
            yield from _json_sample(header, count, value, redact)
    except BadLog as exc:
        problem = str(exc)
    if header is None and isinstance(log.get("eval"), dict):
        header = _json_header(log, redact)
    if header is None:
        why = f" ({problem})" if problem else ""
        yield Malformed(None, f"an Inspect AI log is a JSON object with an eval header{why}")
        return
    for number, value in waiting:
        yield from _json_sample(header, number, value, redact)
    if problem:
        yield Malformed(None, f"the log stops being JSON after {count} sample(s): {problem}")


def _json_header(log: dict[str, Any], redact: Redact) -> EvalHeader:
    return eval_header(redact.value({"eval": log["eval"], "status": log.get("status")}))


def _json_sample(header: EvalHeader, number: int, sample: Any, redact: Redact) -> Iterator[Item]:
    if not isinstance(sample, dict):
        yield Malformed(None, f"sample {number} is not a JSON object")
        return
    yield from _sample(header, sample, redact)


def _sample(header: EvalHeader, sample: dict[str, Any], redact: Redact) -> Iterator[Item]:
    sample = prepared(sample, redact)
    items = sample_items(header, sample, redact)
    root = next(items)
    assert isinstance(root, StepSpan)
    root.annotations = score_annotations(header, sample)
    yield root
    yield from items


# -- .eval ----------------------------------------------------------------------------------


class _Member:
    __slots__ = ("compressed", "method", "name", "offset", "size")

    def __init__(self, name: str, offset: int, method: int, compressed: int, size: int) -> None:
        self.name, self.offset, self.method = name, offset, method
        self.compressed, self.size = compressed, size


class _Broken(Exception):
    """A member that cannot be read (its data cut short or not what its method says)."""


def _read_zip(path: Path, redact: Redact) -> Iterator[Item]:
    with path.open("rb") as handle:
        members, problem = _members(handle)
        if not members:
            yield Malformed(None, f"not a readable Inspect AI .eval log ({problem})")
            return
        by_name = {m.name: m for m in members}  # a member written again: the later one wins
        header: EvalHeader | None = None
        for name in _HEADERS:
            if name in by_name:
                try:
                    found = _member_json(handle, by_name[name])
                except _Broken as exc:
                    yield Malformed(None, f"{name}: {exc}")
                    continue
                if isinstance(found, dict):
                    header = eval_header(redact.value(found))
                    break
        if header is None:
            why = f" ({problem})" if problem else ""
            yield Malformed(
                None,
                "not a readable Inspect AI .eval log: it has no header.json or "
                f"_journal/start.json{why}",
            )
            return
        seen: set[str] = set()
        for member in members:
            if by_name[member.name] is not member or member.name in seen:
                continue
            seen.add(member.name)
            if not member.name.startswith("samples/"):
                if not _known(member.name):
                    yield Skipped("member/unknown")
                continue
            if member.name.count("/") > 1:
                # The chunked shape (a sample as a folder of sequences) is Inspect's internal
                # `inspect log convert-chunked` output: refused, by name, once per sample.
                folder = "/".join(member.name.split("/")[:2])
                if folder not in seen:
                    seen.add(folder)
                    yield Malformed(None, f"{folder}/: a chunked sample, not read (yet)")
                continue
            try:
                sample = _member_json(handle, member)
            except _Broken as exc:
                yield Malformed(None, f"{member.name}: {exc}")
                continue
            if not isinstance(sample, dict):
                yield Malformed(None, f"{member.name}: a sample is a JSON object")
                continue
            yield from _sample(header, sample, redact)
        if problem:
            yield Malformed(None, problem)


def _known(name: str) -> bool:
    return name in ("header.json", "summaries.json", "reductions.json") or name.startswith(
        "_journal/"
    )


def _members(handle: IO[bytes]) -> tuple[list[_Member], str | None]:
    """The archive's members from its central directory; from its local headers when the
    directory is missing (a log cut short), with what is wrong."""
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        problem = f"the zip archive is cut short or corrupt ({exc})"
        handle.seek(0)
        return _scan(handle), problem
    members = [
        _Member(i.filename, i.header_offset, i.compress_type, i.compress_size, i.file_size)
        for i in archive.infolist()
    ]
    return members, None


def _scan(handle: IO[bytes]) -> list[_Member]:
    """Members in order from their local headers, up to the first that is not whole."""
    found: list[_Member] = []
    offset = 0
    while True:
        handle.seek(offset)
        fixed = handle.read(_LOCAL.size)
        if len(fixed) < _LOCAL.size:
            break
        sig, _, flags, method, _, _, _, compressed, size, name_len, extra_len = _LOCAL.unpack(fixed)
        if sig != ZIP_MAGIC or flags & 0x08 or compressed == 0xFFFFFFFF or not name_len:
            break  # the central directory, or sizes only a data descriptor would give
        name = handle.read(name_len).decode("utf-8", errors="replace")
        data_at = offset + _LOCAL.size + name_len + extra_len
        handle.seek(0, io.SEEK_END)
        if handle.tell() < data_at + compressed:
            break
        found.append(_Member(name, offset, method, compressed, size))
        offset = data_at + compressed
    return found


def _member_json(handle: IO[bytes], member: _Member) -> Any:
    data = _member_bytes(handle, member)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _Broken(f"not JSON ({str(exc)[:200]})") from None


def _member_bytes(handle: IO[bytes], member: _Member) -> bytes:
    handle.seek(member.offset)
    fixed = handle.read(_LOCAL.size)
    if len(fixed) < _LOCAL.size or fixed[:4] != ZIP_MAGIC:
        raise _Broken("its local header is missing")
    name_len, extra_len = struct.unpack("<HH", fixed[26:30])
    handle.seek(member.offset + _LOCAL.size + name_len + extra_len)
    data = handle.read(member.compressed)
    if len(data) < member.compressed:
        raise _Broken("cut short")
    try:
        if member.method == _STORED:
            return data
        if member.method == _DEFLATED:
            return zlib.decompress(data, -15)
        if member.method == _ZSTD:
            reader = zstandard.ZstdDecompressor().stream_reader(
                io.BytesIO(data), read_across_frames=True
            )
            return reader.read()
    except (zlib.error, zstandard.ZstdError) as exc:
        raise _Broken(f"cannot decompress it ({exc})") from None
    raise _Broken(f"zip compression method {member.method} is not one Inspect AI writes")
