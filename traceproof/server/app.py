"""The ASGI app: OTLP/HTTP, MCP (streamable HTTP at ``/mcp``) and the JSON API on one port.

MCP's session manager runs in the app's lifespan, so a server must run the lifespan (uvicorn
``lifespan="on"``). The SDK's DNS-rebinding protection stays on: ``/mcp`` answers only requests
whose Host names the address the server is bound to (or loopback), and the guard
(:mod:`traceproof.server.guard`) applies the same rule, content types and body limits to every
route. With ``settings.token`` set, ``/mcp``, OTLP and the API ask for the bearer token
(:mod:`traceproof.server.auth`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from traceproof import __version__
from traceproof.errors import ErrorCode
from traceproof.ingest.arrowcheck import InvalidSpanStream, read_span_stream
from traceproof.ingest.normalize import document_depth_limit
from traceproof.server.api import annotation_config_routes, report_routes, tool_routes
from traceproof.server.auth import BearerToken
from traceproof.server.guard import RequestGuard
from traceproof.server.mcp import create_mcp_server, toolset_names
from traceproof.server.otlp import OtlpReceiver
from traceproof.server.otlp_logs import LogsReceiver
from traceproof.server.phoenix import phoenix_routes
from traceproof.server.phoenix_spans import phoenix_span_routes
from traceproof.settings import Settings
from traceproof.storage import Busy, Store, StoreError
from traceproof.tools.stats import get_stats
from traceproof.trajectories.actions import ActionRules


def create_app(
    store: Store,
    settings: Settings,
    mcp_server: MCPServer | None = None,
    *,
    action_rules: ActionRules | None = None,
) -> Starlette:
    """The app serving ``store``; MCP at ``/mcp`` runs ``mcp_server`` (by default one over the
    store itself). ``action_rules`` (the project's ``[trajectories.actions]``) label the
    coding-agent steps that arrive over ``/v1/logs`` and Phoenix's span route."""
    mcp = mcp_server or create_mcp_server(store, toolsets=toolset_names(settings.toolsets))
    security = transport_security(settings.host, settings.port, settings.allowed_hosts)
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=security,
    )
    receiver = OtlpReceiver(store, settings)
    logs_receiver = LogsReceiver(store, settings, rules=action_rules)
    if settings.port:  # experiments' runs export their spans here
        from traceproof.experiments.runner import otlp_endpoint_for, set_otlp_endpoint

        set_otlp_endpoint(store, otlp_endpoint_for(settings.host, settings.port))

    async def traces(request: Request) -> Response:
        return await receiver(request)

    async def logs(request: Request) -> Response:
        return await logs_receiver(request)

    async def metrics(request: Request) -> Response:
        return Response(
            "traceproof receives traces and logs (Claude Code's events), not metrics; "
            "set OTEL_METRICS_EXPORTER=none or send metrics elsewhere.",
            status_code=404,
            media_type="text/plain",
        )

    async def health(request: Request) -> Response:
        """200 ``{"status": "ok"}`` while the store reads and writes; 503 with the state
        (``reopening``, ``failed``, ``closed``) and what happened otherwise. Never the path."""
        state = store.health()
        if state.ok:
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": state.state, "detail": state.detail},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )

    async def info(request: Request) -> Response:
        """Which store this server holds, for local traceproof processes (``traceproof mcp``
        names it when this server holds its OTLP port). Behind the guard and the token, unlike
        ``/healthz``, so a web page or a stranger does not learn the path."""
        return JSONResponse(
            {
                "service": "traceproof",
                "version": __version__,
                "store": str(store.path.resolve()),  # absolute: read from other directories
                "status": store.health().state,
            }
        )

    async def stats(request: Request) -> Response:
        return Response(get_stats(store).model_dump_json(), media_type="application/json")

    async def spans(request: Request) -> Response:
        """Normalised spans as an Arrow IPC stream (what ``traceproof ingest`` sends). The
        guard has checked its content type and size; every batch is validated in full here,
        before DuckDB sees it (:mod:`traceproof.ingest.arrowcheck`)."""
        body = await request.body()
        try:
            table = await asyncio.to_thread(
                read_span_stream,
                body,
                max_bytes=2 * settings.max_spans_request_bytes,
                max_batches=settings.max_spans_request_batches,
                max_depth=document_depth_limit(settings.max_attribute_key_depth),
            )
        except InvalidSpanStream as exc:
            return _error(
                400,
                f"[{ErrorCode.INVALID_INPUT}] Not an Arrow IPC stream of spans: {exc}. Send "
                "record batches with the span schema (traceproof ingest does).",
            )
        del body
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

    # The guard runs first, on every route: Host/Origin, content types, body limits, bytes in
    # flight (traceproof.server.guard); then the token, when one is set.
    middleware = [Middleware(RequestGuard, settings=settings, security=security)]
    if settings.token:
        middleware.append(Middleware(BearerToken, token=settings.token))
    return Starlette(
        lifespan=lifespan,
        middleware=middleware,
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
            Route("/v1/metrics", metrics, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/api/v1/info", info, methods=["GET"]),
            Route("/api/v1/stats", stats, methods=["GET"]),
            Route("/api/v1/spans", spans, methods=["POST"]),
            *tool_routes(store),
            *report_routes(store),
            *annotation_config_routes(store),
            *phoenix_span_routes(store, settings, action_rules),
            *phoenix_routes(store),
            *mcp_app.routes,
        ],
    )


def transport_security(
    host: str, port: int, extra: Sequence[str] = ()
) -> TransportSecuritySettings:
    """DNS-rebinding protection, for ``/mcp`` (the SDK's check) and every other route (the
    guard's): the Host header must name loopback, the bound address (any of this machine's
    names when bound to every interface) or a name of ``extra`` (``settings.allowed_hosts``),
    on the bound port unless the name gives its own."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    if host in ("0.0.0.0", "::", ""):
        names += _machine_names()
    elif host not in names:
        names.append(f"[{host}]" if ":" in host else host)
    ports = "*" if port == 0 else str(port)
    # Lowercase: the guard lowercases Host and Origin (names are case-insensitive).
    hosts = [f"{name.lower()}:{ports}" for name in dict.fromkeys(names)]
    for name in extra:
        if name != "*":
            hosts.append((name if _has_port(name) else f"{name}:{ports}").lower())
    return TransportSecuritySettings(
        # allowed_hosts '*' turns the Host check off (for a proxy that checks it itself).
        enable_dns_rebinding_protection="*" not in extra,
        allowed_hosts=hosts,
        allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")],
    )


def _has_port(name: str) -> bool:
    return name.rpartition(":")[2].isdigit() and not name.endswith("]")


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
