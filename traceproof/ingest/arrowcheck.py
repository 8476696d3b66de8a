"""Arrow IPC streams of normalised spans, checked in full before they reach the store.

``POST /api/v1/spans`` (what ``traceproof ingest`` sends when a server holds the store) carries
an Arrow IPC stream. DuckDB trusts the Arrow memory it is handed: a string column whose offsets
point outside its data crashed the whole server. So a stream is accepted only when:

- every message is a schema or a record batch (no dictionary batches, no body compression: a
  compressed buffer declares its own decompressed size, which would let a small body allocate
  gigabytes before anything could be checked);
- its schema has exactly the span columns, in order, with exactly their types;
- every batch passes Arrow's full validation (offsets in bounds, UTF-8 valid, lengths
  consistent), has no nulls in a column the span schema declares not null, and holds values
  as the decoders make them (:mod:`traceproof.ingest.normalize`): ids non-empty, at most 128
  characters, without surrounding spaces, hex ids in lowercase without ``0x``; ``span_kind``
  one of :data:`~traceproof.storage.columns.SPAN_KINDS`, ``status`` OK/ERROR/UNSET,
  ``otel_kind`` an OTLP kind; times in range, the end not before the start, ``latency_ms``
  finite and not negative; JSON text in the JSON columns (``attributes``, ``events``,
  ``links``, ``resource``) nested no deeper than the decoders nest it
  (:func:`~traceproof.ingest.normalize.document_depth_limit`);
- the stream holds at most ``max_batches`` record batches, and the decoded batches, together,
  are no larger than the caller's byte limit. Empty batches cost one message read each: they
  are counted, not kept.

The id rule is the one span JSON lines follow (ids there may be any text; hex ids are
lowercased): OTLP ids, always hex, pass it as the decoders make them.

Anything else raises :class:`InvalidSpanStream` (answered 400).
"""

from __future__ import annotations

import re
import struct

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from traceproof.ingest.normalize import MAX_KEY_DEPTH, document_depth_limit
from traceproof.storage.columns import SPAN_KINDS, SPAN_SCHEMA

#: Defaults of the limits (settings ``max_spans_request_batches`` and
#: ``max_attribute_key_depth``).
MAX_BATCHES = 1024
MAX_DEPTH = document_depth_limit(MAX_KEY_DEPTH)

_NOT_NULL = tuple(f.name for f in SPAN_SCHEMA if not f.nullable)
_JSON_COLUMNS = ("attributes", "events", "links", "resource")
# The latest time ingest stores (nanoseconds up to 2**63 - 1), in microseconds.
_MAX_MICROS = (2**63 - 1) // 1000
# Message.header (field 2) and RecordBatch.compression (field 3) in Arrow's Message.fbs.
_MESSAGE_HEADER = 2
_RECORD_BATCH_COMPRESSION = 3

_ID_COLUMNS = ("trace_id", "span_id", "parent_span_id")
_MAX_ID_CHARS = 128
# Hex ids the decoders would have rewritten: with a 0x prefix, or with an uppercase digit.
_UNNORMALISED_HEX = r"^(0x[0-9a-fA-F]+|[0-9a-fA-F]*[A-F][0-9a-fA-F]*)$"
_ALLOWED = {
    "span_kind": pa.array(sorted(SPAN_KINDS)),
    "status": pa.array(["ERROR", "OK", "UNSET"]),
    "otel_kind": pa.array(["CLIENT", "CONSUMER", "INTERNAL", "PRODUCER", "SERVER"]),
}
# JSON strings (skipped when measuring nesting), and what is left that is not a bracket.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Opening brackets step one level in, closing ones one level out (as int8).
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class InvalidSpanStream(ValueError):
    """The body is not a valid Arrow IPC stream of spans; the message says why."""


def read_span_stream(
    body: bytes, *, max_bytes: int, max_batches: int = MAX_BATCHES, max_depth: int = MAX_DEPTH
) -> pa.Table:
    """The spans of an Arrow IPC stream ``body``, fully validated (see the module docstring):
    at most ``max_batches`` record batches, ``max_bytes`` bytes decoded, JSON nested at most
    ``max_depth`` levels."""
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
    total = count = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidSpanStream(f"a message cannot be read ({_short(exc)})") from None
        if message.type != "record batch":
            raise InvalidSpanStream(f"unexpected {message.type} message (send record batches)")
        count += 1
        if count > max_batches:
            raise InvalidSpanStream(
                f"the stream holds more than {max_batches} record batches; send fewer, larger "
                "batches"
            )
        if _compressed(message.metadata.to_pybytes()):
            raise InvalidSpanStream("compressed record batches are not accepted; send them plain")
        try:
            batch = pa.ipc.read_record_batch(message, SPAN_SCHEMA)
            batch.validate(full=True)
        except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
            raise InvalidSpanStream(f"a record batch is invalid ({_short(exc)})") from None
        if not batch.num_rows:
            continue  # nothing to check or keep
        total += batch.nbytes
        if total > max_bytes:
            raise InvalidSpanStream(f"the batches hold more than {max_bytes} bytes")
        _check_values(batch, max_depth)
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=SPAN_SCHEMA)


def _check_values(batch: pa.RecordBatch, max_depth: int) -> None:
    """What the store's columns demand beyond Arrow types (see the module docstring)."""
    for name in _NOT_NULL:
        if batch.column(name).null_count:
            raise InvalidSpanStream(f"column {name!r} has nulls; it must not")
    _check_ids(batch)
    for name, allowed in _ALLOWED.items():
        values = pc.drop_null(batch.column(name))
        if _any(pc.invert(pc.is_in(values, value_set=allowed))):
            raise InvalidSpanStream(
                f"column {name!r} holds a value other than {', '.join(allowed.to_pylist())}"
            )
    for name in ("start_time", "end_time"):
        micros = batch.column(name).cast(pa.int64())
        low, high = pc.min(micros).as_py(), pc.max(micros).as_py()
        if low is not None and (low < 0 or high > _MAX_MICROS):
            raise InvalidSpanStream(f"column {name!r} holds a time out of range")
    if _any(pc.less(batch.column("end_time"), batch.column("start_time"))):
        raise InvalidSpanStream("a span ends before it starts (end_time < start_time)")
    latency = batch.column("latency_ms")
    if not pc.all(pc.is_finite(latency)).as_py() or pc.min(latency).as_py() < 0:
        raise InvalidSpanStream("column 'latency_ms' holds a negative, NaN or infinite value")
    for name in _JSON_COLUMNS:
        for value in batch.column(name).to_pylist():
            if value is None:
                continue
            try:
                orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidSpanStream(f"column {name!r} holds text that is not JSON") from None
            if nesting_exceeds(value, max_depth):
                raise InvalidSpanStream(
                    f"column {name!r} holds JSON nested deeper than {max_depth} levels"
                )


def _check_ids(batch: pa.RecordBatch) -> None:
    for name in _ID_COLUMNS:
        column = batch.column(name)
        if column.null_count == len(column):
            continue
        lengths = pc.utf8_length(column)
        if pc.min(lengths).as_py() == 0:
            raise InvalidSpanStream(f"column {name!r} holds an empty id")
        if pc.max(lengths).as_py() > _MAX_ID_CHARS:
            raise InvalidSpanStream(f"column {name!r} holds an id over {_MAX_ID_CHARS} characters")
        if _any(pc.not_equal(column, pc.utf8_trim_whitespace(column))):
            raise InvalidSpanStream(f"column {name!r} holds an id with surrounding spaces")
        if _any(pc.match_substring_regex(column, _UNNORMALISED_HEX)):
            raise InvalidSpanStream(
                f"column {name!r} holds a hex id in uppercase or with 0x; send lowercase hex"
            )


def _any(mask: pa.Array) -> bool:
    """Whether a boolean array holds a true value (nulls are not)."""
    return bool(pc.any(mask).as_py())


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the valid JSON ``text`` nests lists and objects deeper than ``limit`` levels.

    Measured on the text, without parsing or recursion: strings are dropped, then the depth is
    the highest running sum of the brackets (+1 opening, -1 closing), in Arrow's C loops.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # not even that many brackets
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode().translate(_STEPS)
    steps = pa.Array.from_buffers(pa.int8(), len(brackets), [None, pa.py_buffer(brackets)])
    deepest = pc.max(pc.cumulative_sum(steps.cast(pa.int32()))).as_py()
    return deepest is not None and int(deepest) > limit


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
