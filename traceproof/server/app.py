"""The ASGI app: OTLP/HTTP and the JSON API on one port (MCP joins it at ``/mcp``)."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from traceproof.server.api import tool_routes
from traceproof.server.otlp import OtlpReceiver
from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Busy, Store, StoreError
from traceproof.tools.stats import get_stats


def create_app(store: Store, settings: Settings) -> Starlette:
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

    return Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
            Route("/v1/metrics", logs, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/api/v1/stats", stats, methods=["GET"]),
            Route("/api/v1/spans", spans, methods=["POST"]),
            *tool_routes(store),
        ]
    )


def _error(status: int, message: str, *, retry_after: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return Response(
        json.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
