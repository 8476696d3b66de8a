"""OTLP/HTTP trace receiver (``POST /v1/traces``), as the OTLP specification describes it.

- ``application/x-protobuf`` and ``application/json`` bodies, optionally gzip- or
  deflate-encoded; the reply uses the request's encoding.
- 200 only after the spans are committed, with ``partial_success`` for spans that could not be
  kept; 400 with a ``google.rpc.Status`` for a malformed body; 413 past the size limit; 415 for
  other content types; 503 with ``Retry-After`` when the write queue or the receiver is full.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import pyarrow as pa
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from traceproof.ingest.normalize import SpanRows
from traceproof.ingest.otlp import (
    Decoded,
    MalformedRequest,
    decode_json,
    decode_protobuf,
    response_json,
    response_protobuf,
)
from traceproof.server.guard import reserve
from traceproof.server.pools import pools_for
from traceproof.server.redaction import ingest_redactor
from traceproof.server.rpcstatus import JSON, PROTOBUF, status_body
from traceproof.settings import Settings
from traceproof.storage import Busy, Store, StoreError

log = logging.getLogger(__name__)


class TooLarge(ValueError):
    pass


# google.rpc.Code values used in error bodies.
_INVALID_ARGUMENT = 3
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14


class OtlpReceiver:
    """The ``/v1/traces`` endpoint over one store (subclasses: other signals, through
    :meth:`_decode` and :meth:`_answer`)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._in_flight = 0
        # Decoding is CPU-bound Python: more than two at once only adds memory, not speed.
        self._decoders = asyncio.Semaphore(2)

    async def __call__(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return Response(
                f"Unsupported content type {content_type or '(none)'!r}: send "
                f"{PROTOBUF} or {JSON}.",
                status_code=415,
                media_type="text/plain",
            )
        if self._in_flight >= self.settings.max_requests_in_flight:
            return self._error(content_type, 503, _UNAVAILABLE, "receiver is busy; retry later")
        self._in_flight += 1
        try:
            return await self._receive(request, content_type)
        finally:
            self._in_flight -= 1

    async def _receive(self, request: Request, content_type: str) -> Response:
        limit = self.settings.max_request_bytes
        try:
            body = await _read_body(request, limit)
            wire_bytes = len(body)
            body = _decompress(body, request.headers.get("content-encoding", ""), limit)
        except TooLarge as exc:
            return self._error(content_type, 413, _RESOURCE_EXHAUSTED, str(exc))
        except MalformedRequest as exc:
            return self._error(content_type, 400, _INVALID_ARGUMENT, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        if not reserve(request.scope, len(body) - wire_bytes):
            return self._error(
                content_type, 503, _UNAVAILABLE, "receiver is busy decoding; retry later"
            )

        try:
            async with self._decoders:
                decoded, table = await pools_for(self.store).decode(
                    self._decode, content_type, body
                )
        except MalformedRequest as exc:
            return self._error(content_type, 400, _INVALID_ARGUMENT, str(exc))
        except StoreError as exc:  # a decoder that reads the store (/v1/logs) could not
            log.error("OTLP request not decoded: %s", exc)
            return self._error(
                content_type,
                503,
                _UNAVAILABLE,
                "the store could not be read; retry later",
                retry_after=self.settings.retry_after_seconds,
            )
        del body

        if table is not None:
            try:
                future = self.store.submit(table)
            except Busy as exc:
                return self._error(
                    content_type,
                    503,
                    _UNAVAILABLE,
                    exc.message,
                    retry_after=exc.retry_after,
                )
            try:
                await asyncio.wrap_future(future)
            except StoreError as exc:
                log.error("OTLP batch not stored: %s", exc)
                return self._error(
                    content_type,
                    503,
                    _UNAVAILABLE,
                    "the store could not write; retry later",
                    retry_after=self.settings.retry_after_seconds,
                )
        return self._answer(content_type, decoded)

    def _decode(self, content_type: str, body: bytes) -> tuple[Any, pa.Table | None]:
        """The decoded request (what :meth:`_answer` needs) and its spans (None: no span);
        on an ingest thread. Raises :class:`MalformedRequest`."""
        # Each request gets its own row builder, with the key limits of the settings.
        decode: Callable[..., Decoded] = partial(
            decode_protobuf if content_type == PROTOBUF else decode_json,
            rows=SpanRows.for_settings(self.settings, redact=ingest_redactor(self.settings)),
        )
        return _decode(decode, body, self.settings.default_project)

    def _answer(self, content_type: str, decoded: Any) -> Response:
        if content_type == PROTOBUF:
            return Response(response_protobuf(decoded), media_type=PROTOBUF)
        return Response(response_json(decoded), media_type=JSON)

    def _error(
        self,
        content_type: str,
        status: int,
        code: int,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> Response:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        if status == 503 and headers is None:
            headers = {"Retry-After": str(self.settings.retry_after_seconds)}
        body = status_body(content_type, code, message)
        return Response(body, status_code=status, media_type=content_type, headers=headers)


def _decode(
    decode: Callable[..., Decoded], body: bytes, default_project: str
) -> tuple[Decoded, pa.Table | None]:
    """Decode a body and build its Arrow batch (off the event loop: both are CPU-bound)."""
    try:
        decoded = decode(body, default_project=default_project)
        table = decoded.rows.table() if len(decoded.rows) else None
        # The reply needs only the counts and reasons: free the decoded Python values now, not
        # after the batch waited for its commit (they held about as much as the batch again).
        decoded.rows = decoded.rows.like()
        return decoded, table
    except MalformedRequest:
        raise
    except Exception as exc:
        # A shape the decoder did not foresee: the sender gets a 400 it can act on, not a 500.
        log.warning("could not decode an OTLP request", exc_info=True)
        raise MalformedRequest(
            f"body could not be decoded as an OTLP trace request ({type(exc).__name__}: {exc})"
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"body of {int(declared)} bytes is over the {limit}-byte limit")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise TooLarge(f"body is over the {limit}-byte limit")
    return bytes(chunks)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped, as HTTP's deflate means
        if body[:1] and (body[0] & 0x0F) != 8:
            wbits = -zlib.MAX_WBITS  # raw deflate, which some clients send
    else:
        raise MalformedRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    out = bytearray()
    rest = body
    while True:  # gzip allows a series of members (RFC 1952); read every one
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise MalformedRequest(f"body is not valid {encoding} data ({exc})") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"decompressed body is over the {limit}-byte limit")
        if not inflater.eof:
            raise MalformedRequest(f"{encoding} body is truncated")
        rest = inflater.unused_data
        if encoding != "gzip" or not rest.strip(b"\0"):
            return bytes(out)
