"""Arrow IPC streams of normalised spans, checked in full before they reach the store.

``POST /api/v1/spans`` (what ``traceproof ingest`` sends when a server holds the store) carries
an Arrow IPC stream. DuckDB trusts the Arrow memory it is handed: a string column whose offsets
point outside its data crashed the whole server. So a stream is accepted only when:

- every message is a schema or a record batch (no dictionary batches, no body compression: a
  compressed buffer declares its own decompressed size, which would let a small body allocate
  gigabytes before anything could be checked);
- its schema has exactly the span columns, in order, with exactly their types;
- every batch passes Arrow's full validation (offsets in bounds, UTF-8 valid, lengths
  consistent), has no nulls in a column the span schema declares not null, JSON text in the
  JSON columns (``attributes``, ``events``, ``links``, ``resource``) and times in range;
- the decoded batches, together, are no larger than the caller's byte limit.

Anything else raises :class:`InvalidSpanStream` (answered 400).
"""

from __future__ import annotations

import struct

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from traceproof.storage.columns import SPAN_SCHEMA

_NOT_NULL = tuple(f.name for f in SPAN_SCHEMA if not f.nullable)
_JSON_COLUMNS = ("attributes", "events", "links", "resource")
# The latest time ingest stores (nanoseconds up to 2**63 - 1), in microseconds.
_MAX_MICROS = (2**63 - 1) // 1000
# Message.header (field 2) and RecordBatch.compression (field 3) in Arrow's Message.fbs.
_MESSAGE_HEADER = 2
_RECORD_BATCH_COMPRESSION = 3


class InvalidSpanStream(ValueError):
    """The body is not a valid Arrow IPC stream of spans; the message says why."""


def read_span_stream(body: bytes, *, max_bytes: int) -> pa.Table:
    """The spans of an Arrow IPC stream ``body``, fully validated (see the module docstring)."""
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(body))
        schema_message = reader.read_next_message()
    except (pa.ArrowException, OSError, ValueError, StopIteration) as exc:
        raise InvalidSpanStream(f"not an Arrow IPC stream ({_short(exc)})") from None
    if schema_message.type != "schema":
        raise InvalidSpanStream(f"the stream starts with a {schema_message.type}, not a schema")
    try:
        schema = pa.ipc.read_schema(schema_message)
        _check_schema(schema)
    except InvalidSpanStream:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: names not UTF-8
        raise InvalidSpanStream(f"its schema cannot be read ({_short(exc)})") from None
    batches: list[pa.RecordBatch] = []
    total = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidSpanStream(f"a message cannot be read ({_short(exc)})") from None
        if message.type != "record batch":
            raise InvalidSpanStream(f"unexpected {message.type} message (send record batches)")
        if _compressed(message.metadata.to_pybytes()):
            raise InvalidSpanStream("compressed record batches are not accepted; send them plain")
        try:
            batch = pa.ipc.read_record_batch(message, SPAN_SCHEMA)
            batch.validate(full=True)
        except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
            raise InvalidSpanStream(f"a record batch is invalid ({_short(exc)})") from None
        total += batch.nbytes
        if total > max_bytes:
            raise InvalidSpanStream(f"the batches hold more than {max_bytes} bytes")
        _check_values(batch)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=SPAN_SCHEMA)


def _check_values(batch: pa.RecordBatch) -> None:
    """What the store's columns demand beyond Arrow types: no nulls where the span schema says
    not null, JSON text in the JSON columns, times DuckDB's TIMESTAMP holds."""
    for name in _NOT_NULL:
        if batch.column(name).null_count:
            raise InvalidSpanStream(f"column {name!r} has nulls; it must not")
    for name in ("start_time", "end_time"):
        micros = batch.column(name).cast(pa.int64())
        low, high = pc.min(micros).as_py(), pc.max(micros).as_py()
        if low is not None and (low < 0 or high > _MAX_MICROS):
            raise InvalidSpanStream(f"column {name!r} holds a time out of range")
    for name in _JSON_COLUMNS:
        for value in batch.column(name).to_pylist():
            if value is None:
                continue
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidSpanStream(f"column {name!r} holds text that is not JSON") from None


def _check_schema(schema: pa.Schema) -> None:
    if schema.names != SPAN_SCHEMA.names:
        raise InvalidSpanStream("its columns differ from the span schema")
    for got, want in zip(schema, SPAN_SCHEMA, strict=True):
        if got.type != want.type:
            raise InvalidSpanStream(f"column {got.name!r} is {got.type}, expected {want.type}")


def _compressed(metadata: bytes) -> bool:
    """Whether a record batch's flatbuffer metadata declares body compression.

    Raises :class:`InvalidSpanStream` when the metadata is not a well-formed flatbuffer.
    """
    try:
        batch = _table_field(metadata, _root(metadata), _MESSAGE_HEADER, offset=True)
        if batch is None:
            raise InvalidSpanStream("a record batch message has no header")
        return _table_field(metadata, batch, _RECORD_BATCH_COMPRESSION, offset=False) is not None
    except struct.error:
        raise InvalidSpanStream("a record batch message has corrupt metadata") from None


def _root(buf: bytes) -> int:
    (pos,) = struct.unpack_from("<I", buf, 0)
    return int(pos)


def _table_field(buf: bytes, table: int, index: int, *, offset: bool) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table`` (None when absent);
    with ``offset``, the position the field's offset points to."""
    if not 0 <= table <= len(buf) - 4:
        raise struct.error("table out of bounds")
    soffset = int(struct.unpack_from("<i", buf, table)[0])
    vtable = table - soffset
    if not 0 <= vtable <= len(buf) - 4:
        raise struct.error("vtable out of bounds")
    vtable_size = int(struct.unpack_from("<H", buf, vtable)[0])
    slot = 4 + 2 * index
    if slot + 2 > vtable_size:
        return None
    field_offset = int(struct.unpack_from("<H", buf, vtable + slot)[0])
    if not field_offset:
        return None
    position = table + field_offset
    if not offset:
        return position
    (target,) = struct.unpack_from("<I", buf, position)
    return position + int(target)


def _short(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200] or type(exc).__name__
