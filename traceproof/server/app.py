"""The ASGI app: OTLP/HTTP, MCP (streamable HTTP at ``/mcp``) and the JSON API on one port.

MCP's session manager runs in the app's lifespan, so a server must run the lifespan (uvicorn
``lifespan="on"``). The SDK's DNS-rebinding protection stays on: ``/mcp`` answers only requests
whose Host names the address the server is bound to (or loopback). With ``settings.token`` set,
``/mcp``, OTLP and the API ask for the bearer token (:mod:`traceproof.server.auth`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pyarrow as pa
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from traceproof.server.api import tool_routes
from traceproof.server.auth import BearerToken
from traceproof.server.mcp import create_mcp_server, toolset_names
from traceproof.server.otlp import OtlpReceiver
from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Busy, Store, StoreError
from traceproof.tools.stats import get_stats


def create_app(store: Store, settings: Settings, mcp_server: MCPServer | None = None) -> Starlette:
    """The app serving ``store``; MCP at ``/mcp`` runs ``mcp_server`` (by default one over the
    store itself)."""
    mcp = mcp_server or create_mcp_server(store, toolsets=toolset_names(settings.toolsets))
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=transport_security(settings.host, settings.port),
    )
    receiver = OtlpReceiver(store, settings)

    async def traces(request: Request) -> Response:
        return await receiver(request)

    async def logs(request: Request) -> Response:
        return Response(
            "traceproof receives traces only; send logs elsewhere.",
            status_code=404,
            media_type="text/plain",
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "store": str(store.path)})

    async def stats(request: Request) -> Response:
        return Response(get_stats(store).model_dump_json(), media_type="application/json")

    async def spans(request: Request) -> Response:
        """Normalised spans as an Arrow IPC stream (what ``traceproof ingest`` sends)."""
        body = await request.body()
        try:
            table = pa.ipc.open_stream(body).read_all()
            if table.schema.names != SPAN_SCHEMA.names:
                raise ValueError("columns differ from the span schema")
            table = table.cast(SPAN_SCHEMA)
        except (pa.ArrowException, ValueError) as exc:
            return _error(400, f"[invalid_input] Not an Arrow stream of spans ({exc}).")
        try:
            result = await asyncio.wrap_future(store.submit(table))
        except Busy as exc:
            return _error(503, str(exc), retry_after=exc.retry_after)
        except StoreError as exc:
            return _error(500, str(exc))
        return JSONResponse({"received": result.received, "added": result.added})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    middleware = [Middleware(BearerToken, token=settings.token)] if settings.token else []
    return Starlette(
        lifespan=lifespan,
        middleware=middleware,
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
            Route("/v1/metrics", logs, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/api/v1/stats", stats, methods=["GET"]),
            Route("/api/v1/spans", spans, methods=["POST"]),
            *tool_routes(store),
            *mcp_app.routes,
        ],
    )


def transport_security(host: str, port: int) -> TransportSecuritySettings:
    """DNS-rebinding protection for ``/mcp``: the Host header must name loopback or the bound
    address (any of this machine's names when bound to every interface), on the bound port."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    if host in ("0.0.0.0", "::", ""):
        names += _machine_names()
    elif host not in names:
        names.append(f"[{host}]" if ":" in host else host)
    ports = "*" if port == 0 else str(port)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{ports}" for name in dict.fromkeys(names)],
        allowed_origins=[
            f"{scheme}://{name}:{ports}" for name in names for scheme in ("http", "https")
        ],
    )


def _error(status: int, message: str, *, retry_after: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return Response(
        json.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _machine_names() -> list[str]:
    hostname = socket.gethostname()
    names = [hostname, socket.getfqdn()]
    with suppress(OSError):
        names += socket.gethostbyname_ex(hostname)[2]
    return names
