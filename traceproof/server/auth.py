"""The optional bearer token in front of MCP, OTLP and the JSON API.

When ``settings.token`` is set, ``/mcp``, OTLP (``/v1/...``) and the JSON API (``/api/...``)
answer 401 with ``WWW-Authenticate: Bearer`` unless the request carries ``Authorization: Bearer
<token>``. The comparison is constant-time. The health check stays open so that a supervisor can
probe the server without the secret, and other paths answer as they would (404): an MCP client
probing ``/.well-known/...`` for OAuth learns there is none, rather than being refused.
"""

from __future__ import annotations

import hmac
import json

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from traceproof.errors import ErrorCode

PROTECTED = ("/mcp", "/v1/", "/api/")


class BearerToken:
    """ASGI middleware: requests to protected paths must present the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _protected(scope["path"]) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _unauthorized(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given = Headers(scope=scope).get("authorization", "").encode("latin-1")
        return hmac.compare_digest(given, self.expected)


def _protected(path: str) -> bool:
    return path.startswith(PROTECTED)


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    code = ErrorCode.UNAUTHORIZED
    body = {
        "error": f"[{code}] This traceproof server requires a token. Send the header "
        "'Authorization: Bearer <token>' with the token it was started with (--token or "
        "TRACEPROOF_TOKEN).",
        "code": str(code),
    }
    response = Response(
        json.dumps(body),
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="traceproof"'},
    )
    await response(scope, receive, send)
