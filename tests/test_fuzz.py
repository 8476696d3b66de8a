"""Seeded fuzzing of the OTLP and Arrow decoders, and of a real server on loopback.

Real bodies (OTLP protobuf from the OpenTelemetry SDK's own encoder, OTLP/JSON, Arrow IPC span
streams) are mutated by a seeded random mutator: bit flips, truncation, splices of other
bodies, duplicated regions, corrupted length fields (protobuf varints, Arrow's 32-bit lengths
and offsets) and, for JSON, token edits and lone surrogates. Then:

- the decoders answer each body with spans or with their one "malformed" exception, never
  anything else;
- the server answers every body 200, 400, 413 or 415 (never 500, never a crash), stays up,
  and holds exactly the spans of the bodies it accepted, with trace rows that agree.

``TRACEPROOF_FUZZ_ITERATIONS`` (default 1,000 per body kind for the decoders, a quarter of it
over HTTP) makes a longer run; ``TRACEPROOF_FUZZ_SEED`` picks another seed. A failure names the
seed, the kind and the iteration, which reproduce it.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

import httpx2
import pyarrow as pa
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import LiveServer, encoded
from tests.test_receiver import agent_spans, rich_request
from traceproof.ingest.arrowcheck import InvalidSpanStream, read_span_stream
from traceproof.ingest.otlp import Decoded, MalformedRequest, decode_json, decode_protobuf
from traceproof.tools.stats import get_stats

ITERATIONS = int(os.environ.get("TRACEPROOF_FUZZ_ITERATIONS", "1000"))
SEED = int(os.environ.get("TRACEPROOF_FUZZ_SEED", "20261201"))
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ARROW = "application/vnd.apache.arrow.stream"
MAX_ARROW_BYTES = 64 * 1024 * 1024


# -- the corpus: real bodies --


def _hex_ids(node: Any) -> Any:
    import base64

    if isinstance(node, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId")
            else _hex_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def corpus() -> dict[str, list[bytes]]:
    requests = [
        ExportTraceServiceRequest.FromString(encoded(agent_spans(fail_tool=fail, turn=turn)))
        for turn, fail in ((0, False), (1, True), (2, False))
    ]
    requests.append(rich_request((77).to_bytes(16, "big")))
    protobuf = [r.SerializeToString() for r in requests]
    as_json = [json.dumps(_hex_ids(json_format.MessageToDict(r))).encode() for r in requests]
    arrow = [_ipc(decode_protobuf(body, default_project="fuzz").rows.table()) for body in protobuf]
    return {"protobuf": protobuf, "json": as_json, "arrow": arrow}


# -- the mutator --


def _flip(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)


def _truncate(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    del data[rng.randrange(len(data)) :]


def _splice(rng: random.Random, data: bytearray, others: list[bytes]) -> None:
    other = rng.choice(others)
    start = rng.randrange(len(other))
    piece = other[start : start + rng.randint(1, 256)]
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at : at + len(piece)] = piece  # overwrite
    else:
        data[at:at] = piece  # insert


def _duplicate(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    start = rng.randrange(len(data))
    piece = data[start : start + rng.randint(1, 512)]
    data[start:start] = piece * rng.randint(1, 4)


def _varint_length(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    """Corrupt the length of a protobuf length-delimited field (a byte after a wire-type-2 tag)."""
    tags = [i for i in range(len(data) - 1) if data[i] & 7 == 2 and data[i] >> 3 in (1, 2, 3, 5)]
    if not tags:
        return _flip(rng, data, _)
    at = rng.choice(tags) + 1
    data[at : at + 1] = rng.choice(
        [b"\x00", b"\x7f", b"\xff\xff\xff\xff\x0f", bytes([rng.randrange(256)])]
    )
    return None


def _int32(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    """Overwrite an aligned 32-bit word (Arrow metadata lengths, buffer offsets, string offsets)."""
    at = rng.randrange(0, max(1, len(data) - 4), 4)
    value = rng.choice([0, -1, 1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
    data[at : at + 4] = value.to_bytes(4, "little", signed=True)


_JSON_TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"null", b"1e999", b"-", b"\\ud800",
                b'"\\udfff"', b"\\", b"0", b'""', b"[]", b"{}", b"true"]  # fmt: skip


def _json_token(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    at = rng.randrange(len(data))
    data[at : at + rng.randint(0, 3)] = rng.choice(_JSON_TOKENS)


def _surrogate_string(rng: random.Random, data: bytearray, _: list[bytes]) -> None:
    """A lone surrogate inside an existing string value."""
    quotes = [i for i in range(len(data)) if data[i] == ord('"')]
    if quotes:
        at = rng.choice(quotes) + 1
        data[at:at] = rng.choice([b"\\ud800", b"\\udbff", b"\\udc00x"])


MUTATORS: dict[str, list[Callable[[random.Random, bytearray, list[bytes]], None]]] = {
    "protobuf": [_flip, _truncate, _splice, _duplicate, _varint_length, _varint_length],
    "json": [_flip, _truncate, _splice, _duplicate, _json_token, _json_token, _surrogate_string],
    "arrow": [_flip, _truncate, _splice, _duplicate, _int32, _int32, _int32],
}


def mutations(kind: str, bodies: list[bytes], count: int, seed: int) -> list[bytes]:
    rng = random.Random(f"{seed}:{kind}")
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(bodies))
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if not data:
                break
            rng.choice(MUTATORS[kind])(rng, data, bodies)
        out.append(bytes(data))
    return out


# -- decoding locally: what the server must store for a body it accepts --


def decode(kind: str, body: bytes) -> pa.Table | None:
    """The spans a body holds, or None when it is malformed (the one exception each decoder
    raises for that; anything else fails the test)."""
    try:
        if kind == "arrow":
            return read_span_stream(body, max_bytes=MAX_ARROW_BYTES)
        decoder = decode_protobuf if kind == "protobuf" else decode_json
        decoded: Decoded = decoder(body, default_project="fuzz")
        return decoded.rows.table()
    except (MalformedRequest, InvalidSpanStream):
        return None


def keys(table: pa.Table | None) -> set[tuple[str, str]]:
    if table is None or not table.num_rows:
        return set()
    return set(zip(table["trace_id"].to_pylist(), table["span_id"].to_pylist(), strict=True))


# -- the tests --


@pytest.fixture(scope="module")
def bodies() -> dict[str, list[bytes]]:
    return corpus()


@pytest.mark.parametrize("kind", ["protobuf", "json", "arrow"])
def test_decoders_answer_every_mutated_body_with_spans_or_malformed(
    bodies: dict[str, list[bytes]], kind: str
) -> None:
    outcomes = {"spans": 0, "malformed": 0}
    for index, body in enumerate(mutations(kind, bodies[kind], ITERATIONS, SEED)):
        try:
            table = decode(kind, body)
        except Exception as exc:
            pytest.fail(f"seed {SEED}, {kind} #{index}: {type(exc).__name__}: {exc}")
        outcomes["malformed" if table is None else "spans"] += 1
    # The mutator reaches both sides: some bodies stay decodable, some do not.
    assert outcomes["spans"] > 0 and outcomes["malformed"] > 0, outcomes


def test_a_live_server_answers_mutated_bodies_only_200_400_413_415_and_stays_consistent(
    live_server: LiveServer, bodies: dict[str, list[bytes]]
) -> None:
    count = max(1, ITERATIONS // 4)
    expected: set[tuple[str, str]] = set()
    statuses: dict[int, int] = {}
    content_types = {"protobuf": PROTOBUF, "json": JSON, "arrow": ARROW}
    paths = {"protobuf": "/v1/traces", "json": "/v1/traces", "arrow": "/api/v1/spans"}
    with httpx2.Client(base_url=live_server.url, timeout=60) as http:
        for kind in ("protobuf", "json", "arrow"):
            for index, body in enumerate(mutations(kind, bodies[kind], count, SEED + 1)):
                response = http.post(
                    paths[kind], content=body, headers={"content-type": content_types[kind]}
                )
                status = response.status_code
                statuses[status] = statuses.get(status, 0) + 1
                assert status in (200, 400, 413, 415), (
                    f"seed {SEED + 1}, {kind} #{index}: {status} {response.text[:300]}"
                )
                if status == 200:
                    expected |= keys(decode(kind, body))
    assert statuses.get(200) and statuses.get(400), statuses
    assert httpx2.get(live_server.url + "/healthz").status_code == 200
    store = live_server.store
    with store.reader() as reader:
        stored = set(reader.rows("SELECT trace_id, span_id FROM spans"))
        orphans = reader.scalar(
            "SELECT count(*) FROM spans s WHERE NOT EXISTS (SELECT 1 FROM traces t "
            "WHERE t.project = s.project AND t.trace_id = s.trace_id)"
        )
    assert stored == expected
    assert orphans == 0
    assert sum(p.spans for p in get_stats(store).projects) == len(stored)
