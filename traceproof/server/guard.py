"""The guard in front of every route: Host and Origin, content types, body sizes, bytes in flight.

A page in the user's browser can reach a loopback server: by DNS rebinding (its own name
resolving to 127.0.0.1) or by a cross-site POST. So, on every route (``/healthz`` included),
before any handler runs:

- ``Host`` must name loopback, the bound address (every name of this machine when bound to all
  interfaces) or a name in ``settings.allowed_hosts``, on the bound port: else 421
  (``forbidden_host``). An ``Origin``, when present, must name one of those too: else 403
  (``forbidden_origin``). These are the rules the MCP SDK applies to ``/mcp``
  (:func:`traceproof.server.app.transport_security`). Host names are case-insensitive: both
  headers are lowercased here, for these checks and the SDK's (``LOCALHOST:4318`` is loopback).
- A POST (PUT, PATCH) must carry its route's content type: ``application/json`` for
  ``/api/v1/tools/*`` and ``/mcp``, ``application/vnd.apache.arrow.stream`` for
  ``/api/v1/spans`` (else 415, ``unsupported_format``). ``/v1/traces`` answers its own 415 in
  the OTLP shape. ``GET`` and ``DELETE`` on ``/mcp`` (the SSE stream, ending a session) carry no
  body and are not checked.
- A body may not exceed its route's limit (``max_request_bytes`` for OTLP,
  ``max_spans_request_bytes`` for ``/api/v1/spans``, ``max_api_request_bytes`` for the rest):
  413 (``request_too_large``), from ``Content-Length`` before reading, or as soon as the
  streamed bytes pass it.
- All bodies being read or decoded at once hold at most ``max_body_bytes_in_flight`` bytes: a
  request whose declared length does not fit answers 503 with ``Retry-After``
  (``server_busy``) after its body is read and dropped chunk by chunk (so a sender that writes
  its whole body before reading gets the 503, not a reset connection, and no memory is held);
  streamed bytes beyond the declared length, and bytes a
  handler adds (a decompressed OTLP body, through :func:`reserve`), are counted as they come.
  A request is always admitted when nothing else is in flight, so no body within its route's
  limit is refused forever.

Errors on ``/v1/...`` are a ``google.rpc.Status`` in the request's encoding, as OTLP asks;
elsewhere they are the API's JSON shape ``{"error": "[code] ...", "code": "..."}``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from traceproof.errors import ErrorCode
from traceproof.server.rpcstatus import JSON, PROTOBUF, status_body
from traceproof.settings import Settings

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
SCOPE_KEY = "traceproof.body_reservation"

# google.rpc.Code values for the OTLP error bodies.
_RESOURCE_EXHAUSTED = 8
_UNAVAILABLE = 14
_CODES = {413: _RESOURCE_EXHAUSTED, 503: _UNAVAILABLE}


class BodyBudget:
    """Bytes of request bodies in flight, over every request of one app (event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.holders = 0

    def take(self, nbytes: int, *, first: bool = False) -> bool:
        """Reserve ``nbytes``; ``first`` (a request's opening reservation) succeeds whenever no
        other request holds bytes."""
        if self.used + nbytes > self.limit and not (first and self.holders == 0):
            return False
        self.used += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.used -= nbytes


class Reservation:
    """One request's share of the budget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0
        self.open = False

    def start(self, nbytes: int) -> bool:
        if not self.budget.take(nbytes, first=True):
            return False
        self.held, self.open = nbytes, True
        self.budget.holders += 1
        return True

    def grow(self, nbytes: int) -> bool:
        if nbytes <= 0:
            return True
        if not self.budget.take(nbytes):
            return False
        self.held += nbytes
        return True

    def close(self) -> None:
        if self.open:
            self.budget.give(self.held)
            self.budget.holders -= 1
            self.held, self.open = 0, False


def reserve(scope: Scope, nbytes: int) -> bool:
    """Count ``nbytes`` more against the request's share of the bytes in flight (a handler's
    decompressed body, say). False when the budget has no room: answer 503."""
    reservation = scope.get(SCOPE_KEY)
    return reservation is None or bool(reservation.grow(nbytes))


@dataclass(frozen=True)
class _Rule:
    limit: int
    content_types: tuple[str, ...] = ()  # empty: the route checks its own
    otlp: bool = False


class _Refused(Exception):
    """Raised from ``receive`` when a streamed body passes its limit or the budget."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RequestGuard:
    """ASGI middleware applying the rules of the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, security: TransportSecuritySettings):
        self.app = app
        self.settings = settings
        self.allowed_hosts = frozenset(h.lower() for h in security.allowed_hosts)
        self.allowed_origins = frozenset(o.lower() for o in security.allowed_origins)
        self.any_host = "*" in settings.allowed_hosts
        self.budget = BodyBudget(settings.max_body_bytes_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        _lowercase_names(scope)
        headers = Headers(scope=scope)
        path: str = scope["path"]
        rule = self._rule(path)
        if not self.any_host and not _matches(headers.get("host"), self.allowed_hosts):
            await self._refuse(
                scope, send, rule, headers, 421, ErrorCode.FORBIDDEN_HOST,
                f"The Host header {headers.get('host')!r} names neither this server nor "
                "loopback. Use http://127.0.0.1:<port>, or add the name to "
                "TRACEPROOF_ALLOWED_HOSTS.",
            )  # fmt: skip
            return
        origin = headers.get("origin")
        if origin and not _matches(origin, self.allowed_origins):
            await self._refuse(
                scope, send, rule, headers, 403, ErrorCode.FORBIDDEN_ORIGIN,
                f"Requests from the web origin {origin!r} are refused. Call this server from "
                "a local client, not a web page.",
            )  # fmt: skip
            return
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if rule.content_types and scope["method"] in _WITH_BODY and media not in rule.content_types:
            await self._refuse(
                scope, send, rule, headers, 415, ErrorCode.UNSUPPORTED_FORMAT,
                f"{path} takes {' or '.join(rule.content_types)}, not {media or '(none)'}. "
                "Send the body with that Content-Type.",
            )  # fmt: skip
            return
        declared = _content_length(headers)
        if declared is not None and declared > rule.limit:
            await self._refuse(scope, send, rule, headers, *_too_large(declared, rule.limit))
            return
        reservation = Reservation(self.budget)
        if not reservation.start(declared or 0):
            drained = await _drain(receive, rule.limit)
            await self._refuse(scope, send, rule, headers, *_busy(), drained=drained)
            return
        await self._guarded(scope, receive, send, rule, headers, reservation)

    async def _guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rule: _Rule,
        headers: Headers,
        reservation: Reservation,
    ) -> None:
        received = 0
        started = False
        finished = False  # the whole body was received

        async def counted_receive() -> Message:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > rule.limit:
                    raise _Refused(*_too_large(received, rule.limit))
                if not reservation.grow(received - reservation.held):
                    raise _Refused(*_busy())
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        scope[SCOPE_KEY] = reservation
        try:
            await self.app(scope, counted_receive, tracked_send)
        except _Refused as refused:
            if started:
                raise
            drained = finished or (
                refused.status == 503 and await _drain(receive, rule.limit - received)
            )
            await self._refuse(
                scope, send, rule, headers, refused.status, refused.code, refused.message,
                drained=drained,
            )  # fmt: skip
        finally:
            reservation.close()

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        rule: _Rule,
        headers: Headers,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        drained: bool = False,
    ) -> None:
        await _refuse(
            scope, send, rule, headers, status, code, message, self.settings.retry_after_seconds,
            drained=drained,
        )  # fmt: skip

    def _rule(self, path: str) -> _Rule:
        settings = self.settings
        if path.startswith("/v1/"):
            return _Rule(settings.max_request_bytes, otlp=True)
        if path == "/api/v1/spans":
            return _Rule(settings.max_spans_request_bytes, (ARROW_STREAM,))
        if path.startswith("/api/") or path == "/mcp" or path.startswith("/mcp/"):
            return _Rule(settings.max_api_request_bytes, ("application/json",))
        return _Rule(settings.max_api_request_bytes)


async def _drain(receive: Receive, limit: int) -> bool:
    """Read and drop the rest of a refused request's body, one chunk at a time (memory stays
    flat: the server hands over what it has buffered), up to ``limit`` bytes. True when the
    whole body was read, so the answer reaches a sender that writes its whole body before it
    reads (most exporters) and the connection stays usable; False when the body is longer or
    the client left (then the answer closes the connection)."""
    read = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        read += len(message.get("body", b""))
        if read > limit:
            return False
        if not message.get("more_body", False):
            return True


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_NAME_HEADERS = (b"host", b"origin")


def _lowercase_names(scope: Scope) -> None:
    """Lowercase the ``Host`` and ``Origin`` headers in ``scope``: host names (and schemes) are
    case-insensitive, and the MCP SDK compares them exactly."""
    headers = scope.get("headers") or []
    if any(k in _NAME_HEADERS and v != v.lower() for k, v in headers):
        scope["headers"] = [(k, v.lower() if k in _NAME_HEADERS else v) for k, v in headers]


def _matches(value: str | None, allowed: frozenset[str]) -> bool:
    """``value`` is allowed exactly or by a ``name:*`` pattern (as the MCP SDK matches)."""
    if not value:
        return False
    if value in allowed:
        return True
    base, sep, port = value.rpartition(":")
    return bool(sep) and port.isdigit() and f"{base}:*" in allowed


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _too_large(size: int, limit: int) -> tuple[int, ErrorCode, str]:
    return (
        413,
        ErrorCode.REQUEST_TOO_LARGE,
        f"The body of {size} bytes is over this route's {limit}-byte limit. Send smaller "
        "requests (or raise the limit in the server's settings).",
    )


def _busy() -> tuple[int, ErrorCode, str]:
    return (
        503,
        ErrorCode.SERVER_BUSY,
        "The server is reading as many request bytes as it allows at once. Retry after the "
        "Retry-After delay.",
    )


async def _refuse(
    scope: Scope,
    send: Send,
    rule: _Rule,
    headers: Headers,
    status: int,
    code: ErrorCode,
    message: str,
    retry_after: int,
    *,
    drained: bool = False,
) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    response_headers: list[tuple[bytes, bytes]] = []
    if rule.otlp:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        media = PROTOBUF if media == PROTOBUF else JSON
        body = status_body(media, _CODES.get(status, 3), f"[{code}] {message}")
    else:
        media = "application/json"
        body = json.dumps({"error": f"[{code}] {message}", "code": str(code)}).encode()
    if status == 503:
        response_headers.append((b"retry-after", str(max(1, retry_after)).encode()))
    response_headers += [
        (b"content-type", media.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if status in (413, 503) and not drained:
        # The body was not (fully) read: tell the client this connection is done with.
        response_headers.append((b"connection", b"close"))
    log.info("refused %s %s: %s %s", scope.get("method"), scope.get("path"), status, code)
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
