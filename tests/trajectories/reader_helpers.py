"""What the reader tests share: a redaction that changes nothing, reading a file, storing it."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from traceproof.ingest.normalize import SpanRows
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.trajectories.common import Item, Malformed, Reader, Skipped, StepSpan
from traceproof.trajectories.emit import add_steps


class NoRedact:
    """Identity redaction (T1's redact.py is tested on its own)."""

    count = 0

    def __call__(self, text: str) -> str:
        return text

    def value(self, value: Any) -> Any:
        return value

    def value_of(self, text: bytes, value: Any) -> Any:
        return value


def read(reader: Reader, path: Path, content: bytes | None = None) -> list[Item]:
    data = path.read_bytes() if content is None else content
    return list(reader.read(path, io.BytesIO(data), NoRedact()))


def spans_of(items: list[Item]) -> list[StepSpan]:
    return [item for item in items if isinstance(item, StepSpan)]


def kinds(items: list[Item]) -> Counter[str]:
    return Counter(span.kind for span in spans_of(items))


def skipped(items: list[Item]) -> Counter[str]:
    return Counter(item.kind for item in items if isinstance(item, Skipped))


def malformed(items: list[Item]) -> list[Malformed]:
    return [item for item in items if isinstance(item, Malformed)]


def jsonl(*records: Any) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def store_spans(tmp_path: Path, spans: list[StepSpan], source: str) -> list[tuple[Any, ...]]:
    """Store ``spans`` twice in a real store; answers its rows (kind, name, session, tool,
    model, prompt tokens, status, parent present) in start order."""
    db = tmp_path / "s.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        for _ in range(2):
            rows = SpanRows()
            assert add_steps(rows, spans, project="agents", source=source) == []
            store.write(rows.table())
        with store.reader() as reader:
            return reader.rows(
                "SELECT span_kind, name, session_id, tool_name, model, prompt_tokens, status, "
                "parent_span_id IS NOT NULL FROM spans ORDER BY start_time, span_kind, span_id"
            )
