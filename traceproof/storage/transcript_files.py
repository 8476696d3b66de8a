"""The ``transcript_files`` table: per imported transcript file, what was read and where a
re-import of the grown file resumes (:mod:`traceproof.ingest.incremental` decides; this module
reads and writes the rows, through the store's reader and writer)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from traceproof.storage.store import Store


@dataclass
class TranscriptFile:
    """One file's import state (see the table's comments in :mod:`.schema`)."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    head_bytes: int
    head_hash: str
    companions: str | None
    resume_offset: int
    resume_line: int
    #: ``(line, offset, length)`` of each line before ``resume_line`` a resumed read needs.
    keep: list[tuple[int, int, int]] = field(default_factory=list)
    #: A turn was held back as in progress when it was read.
    open: bool = False
    reader: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "device": self.device,
            "inode": self.inode,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "head_bytes": self.head_bytes,
            "head_hash": self.head_hash,
            "companions": self.companions,
            "resume_offset": self.resume_offset,
            "resume_line": self.resume_line,
            "keep": [list(k) for k in self.keep],
            "open": self.open,
            "reader": self.reader,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscriptFile:
        keep = data.get("keep") or []
        if isinstance(keep, str):
            keep = json.loads(keep)
        return cls(
            path=str(data["path"]),
            device=int(data["device"]),
            inode=int(data["inode"]),
            size=int(data["size"]),
            mtime_ns=int(data["mtime_ns"]),
            head_bytes=int(data["head_bytes"]),
            head_hash=str(data["head_hash"]),
            companions=data.get("companions"),
            resume_offset=int(data["resume_offset"]),
            resume_line=int(data["resume_line"]),
            keep=[(int(a), int(b), int(c)) for a, b, c in keep],
            open=bool(data.get("open")),
            reader=data.get("reader"),
        )


_COLUMNS = (
    "path, device, inode, size, mtime_ns, head_bytes, head_hash, companions, resume_offset, "
    "resume_line, keep, open, reader"
)


def load_transcript_files(store: Store) -> dict[str, TranscriptFile]:
    """Every stored file state, by path."""
    with store.reader() as reader:
        rows = reader.dicts(f"SELECT {_COLUMNS} FROM transcript_files")
    return {str(row["path"]): TranscriptFile.from_dict(row) for row in rows}


def save_transcript_files(store: Store, states: Iterable[TranscriptFile]) -> None:
    """Insert or replace the states of these files, in one transaction and one statement (an
    Arrow table of the rows: ``executemany`` of thousands of rows ran DuckDB out of memory at
    the import's memory limit after a 1 GB import)."""
    import pyarrow as pa

    latest = {state.path: state for state in states}  # one row a path: the last state
    if not latest:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    names = [*(name.strip() for name in _COLUMNS.split(",")), "updated_at"]
    # Column types are inferred; the INSERT casts them to the table's.
    table = pa.Table.from_pylist(
        [dict(zip(names, (*_values(state), now), strict=True)) for state in latest.values()]
    )

    def write(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.register("transcript_states", table)
        try:
            cursor.execute(
                f"INSERT OR REPLACE INTO transcript_files ({_COLUMNS}, updated_at) "
                f"SELECT {_COLUMNS}, updated_at FROM transcript_states"
            )
        finally:
            cursor.unregister("transcript_states")

    store.run_write(write)


def _values(state: TranscriptFile) -> tuple[Any, ...]:
    data = state.as_dict()
    data["keep"] = json.dumps(data["keep"])
    return tuple(data[name.strip()] for name in _COLUMNS.split(","))
