"""Eval-result files: annotations in the shape evaluation libraries write them.

A file is one if it is JSON lines, CSV or Parquet (gzip-compressed JSON lines too) whose rows
have a target column (``span_id``, ``context.span_id``, ``trace_id`` or ``session_id``; the
first present wins, in that order) and at least one of ``label``, ``score``, ``explanation``
(a row of a span export has start and end times, and is not one). The annotation's name is the
``name`` (or ``annotation_name``) column, else the file's stem (``correctness.jsonl``: one file
per name, as Phoenix's evaluation helpers write). Optional columns: ``annotator_kind``
(default ``LLM``), ``annotator``, ``identifier``, ``metadata`` (a JSON object, or its text),
``trace_id`` beside ``span_id`` (narrows an ambiguous span id).

Rows that cannot be written (unknown target, invalid value, label outside its config) are
rejected with their line number; the rest are written, in batches, through the store's writer.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.ingest.spanjson import is_span_object

if TYPE_CHECKING:
    from traceproof.remote import RemoteStore
    from traceproof.settings import Settings
    from traceproof.storage import Store
    from traceproof.storage.annotations import AnnotationWrite

#: Columns naming the target, in the order they are looked for.
TARGET_COLUMNS: tuple[tuple[str, TargetKind], ...] = (
    ("span_id", TargetKind.SPAN),
    ("context.span_id", TargetKind.SPAN),
    ("trace_id", TargetKind.TRACE),
    ("session_id", TargetKind.SESSION),
)
RESULT_COLUMNS = ("label", "score", "explanation")
#: Rows per write.
BATCH_ROWS = 1000

#: A writer of annotations (``write_annotations(store, items, partial=True)``) returning, per
#: item, its status and the rejections.
Writer = Callable[[Sequence[AnnotationInput]], Any]


@dataclass
class EvalImportSummary:
    files: int = 0
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, int | None, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "eval_files": self.files,
            "annotations_read": self.rows,
            "annotations_created": self.created,
            "annotations_updated": self.updated,
            "annotations_unchanged": self.unchanged,
            "annotations_rejected": len(self.rejected),
            "annotation_rejections": [
                {"path": p, "line": n, "reason": r} for p, n, r in self.rejected[:10_000]
            ],
        }


def _flat_keys(row: dict[str, Any]) -> dict[str, Any]:
    context = row.get("context")
    if isinstance(context, dict) and "span_id" in context and "context.span_id" not in row:
        row = {**row, "context.span_id": context["span_id"]}
    return row


def _is_eval_row(row: Any) -> bool:
    if not isinstance(row, dict):
        return False
    row = _flat_keys(row)
    if not any(key in row for key, _ in TARGET_COLUMNS):
        return False
    if not any(key in row for key in RESULT_COLUMNS):
        return False
    return not (is_span_object(row) and ("start_time" in row or "end_time" in row))


def _open(path: Path) -> Any:
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else path.open("rb")


def is_eval_file(path: Path) -> bool:
    """Whether ``path`` holds eval results (see the module docstring); False when unreadable."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
            return _is_eval_row(dict.fromkeys(names))
        if suffix == ".csv":
            with path.open("rb") as handle:
                header = handle.readline().decode("utf-8-sig", errors="replace")
            names = {h.strip().strip('"') for h in header.split(",")}
            return _is_eval_row(dict.fromkeys(names))
        with _open(path) as handle:
            for raw in handle:
                if raw.strip():
                    return _is_eval_row(orjson.loads(raw))
    except (OSError, ValueError, EOFError):
        return False
    except Exception:  # a Parquet file pyarrow cannot read
        return False
    return False


def _rows(path: Path) -> Iterator[tuple[int | None, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        table = pq.read_table(path) if suffix == ".parquet" else pacsv.read_csv(path)
        offset = 2 if suffix == ".csv" else 1  # CSV line numbers count the header
        for index, row in enumerate(table.to_pylist()):
            yield index + offset, row
        return
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, ValueError(f"not JSON ({exc})")


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _annotation(row: dict[str, Any], stem: str) -> AnnotationInput:
    row = _flat_keys(row)
    key, kind = next((k, kind) for k, kind in TARGET_COLUMNS if _text(row.get(k)))
    score = row.get("score")
    if isinstance(score, str):
        score = float(score) if score.strip() else None
    if isinstance(score, float) and math.isnan(score):
        score = None
    metadata = row.get("metadata")
    if isinstance(metadata, str):
        metadata = orjson.loads(metadata) if metadata.strip() else None
    kind_text = (_text(row.get("annotator_kind")) or "LLM").upper()
    return AnnotationInput(
        target_kind=kind,
        target_id=str(row[key]),
        name=_text(row.get("name")) or _text(row.get("annotation_name")) or stem,
        label=_text(row.get("label")),
        score=score,
        explanation=_text(row.get("explanation")),
        metadata=metadata,
        annotator_kind=AnnotatorKind(kind_text),
        annotator=_text(row.get("annotator")),
        identifier=_text(row.get("identifier")) or "",
        trace_id=_text(row.get("trace_id")) if kind is TargetKind.SPAN else None,
    )


def _flush(
    write: Writer,
    label: str,
    batch: list[AnnotationInput],
    lines: list[int | None],
    summary: EvalImportSummary,
) -> None:
    if not batch:
        return
    result = write(batch)
    summary.created += result.created
    summary.updated += result.updated
    summary.unchanged += result.unchanged
    for rejected in result.rejected:
        summary.rejected.append((label, lines[rejected.index], rejected.message))
    batch.clear()
    lines.clear()


def import_eval_files(paths: Sequence[Path], write: Writer) -> EvalImportSummary:
    """Import every eval-result file through ``write``; rows that fail are rejected."""
    summary = EvalImportSummary()
    for path in paths:
        summary.files += 1
        label = str(path)
        batch: list[AnnotationInput] = []
        lines: list[int | None] = []
        try:
            for line, row in _rows(path):
                summary.rows += 1
                try:
                    if isinstance(row, Exception):
                        raise row
                    batch.append(_annotation(row, path.stem.split(".")[0]))
                    lines.append(line)
                except (ValueError, TypeError, StopIteration, KeyError) as exc:
                    reason = "no target id" if isinstance(exc, StopIteration) else str(exc)
                    summary.rejected.append((label, line, reason))
                if len(batch) >= BATCH_ROWS:
                    _flush(write, label, batch, lines, summary)
            _flush(write, label, batch, lines, summary)
        except OSError as exc:
            summary.rejected.append((label, None, f"cannot read the file: {exc}"))
    return summary


def store_writer(store: Store | RemoteStore, settings: Settings) -> Writer:
    """Writes annotations into the store (``write_annotations(..., partial=True)``), or through
    the server holding it (its Phoenix annotation routes, in chunks); the project's annotation
    configs (``traceproof.toml``) are stored before the first write."""
    from traceproof.projectconfig import apply_annotation_configs, project_config
    from traceproof.remote import RemoteStore
    from traceproof.storage.annotations import write_annotations

    configured = False

    def write(items: Sequence[AnnotationInput]) -> AnnotationWrite:
        nonlocal configured
        if not configured:
            apply_annotation_configs(store, project_config(settings))
            configured = True
        if isinstance(store, RemoteStore):
            return store.write_annotations(items)
        return write_annotations(store, items, partial=True)

    return write
