"""The HTTP API behind the CLI (and ``traceproof mcp``) when a server holds the store.

``POST /api/v1/tools/{name}`` runs a registered tool with a JSON object of arguments and answers
the result model's JSON. ``GET /api/v1/tools`` lists the tool names. Every failure answers one
JSON shape, ``{"error": "[code] message", "code": "code"}``:

- 400 bad arguments (``invalid_argument``) and every other error a caller can fix;
- 404 an unknown tool (``not_found``) or a thing a tool could not find (``unknown_*``);
- 503 the store or the query slots are busy (``busy``, with Retry-After) or the store is
  closed, 504 a query ran past its time limit;
- 500 anything else (``internal_error``), with a generic message; the traceback goes to
  the server log.

Tools run on the server's query pools (:mod:`traceproof.server.pools`), never on the event loop
nor on the threads that decode OTLP; with every heavy-query slot taken a call answers 503
``busy`` with Retry-After.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.server.pools import pools_for
from traceproof.storage import Store
from traceproof.tools.invoke import run_tool, tool_names

log = logging.getLogger(__name__)

_STATUS: dict[str, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNKNOWN_PROJECT: 404,
    ErrorCode.UNKNOWN_TRACE: 404,
    ErrorCode.UNKNOWN_SPAN: 404,
    ErrorCode.UNKNOWN_SESSION: 404,
    ErrorCode.QUERY_TIMEOUT: 504,
    ErrorCode.STORE_BUSY: 503,
    ErrorCode.BUSY: 503,
    ErrorCode.STORE_CLOSED: 503,
    ErrorCode.STORE_ERROR: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INTERNAL_ERROR: 500,
}


def status_for(code: ErrorCode | str) -> int:
    """The HTTP status of an error ``code``: 404 for things not found, 400 for what the caller
    can fix."""
    if str(code).startswith("unknown_"):
        return 404
    return _STATUS.get(str(code), 400)


def tool_routes(store: Store) -> list[Route]:
    """Routes that run the registered tools on ``store`` for remote callers."""

    async def list_tools(request: Request) -> Response:
        return JSONResponse({"tools": tool_names()})

    async def call_tool(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            arguments = json.loads(await request.body() or b"{}")
        except ValueError:
            return error_response(
                TraceproofError(
                    "The request body is not JSON. Send a JSON object of arguments ({} for none).",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            )
        try:
            result = await pools_for(store).run_tool(
                name, arguments, lambda: run_tool(store, name, arguments)
            )
        except TraceproofError as exc:
            if status_for(exc.code) >= 500:
                log.warning("tool %s failed: %s", name, exc)
            return error_response(exc)
        except Exception:
            log.exception("tool %s failed", name)
            return error_response(
                TraceproofError(
                    f"The tool {name} failed inside the server. The server log has the "
                    "details; try again, or report it if it persists.",
                    code=ErrorCode.INTERNAL_ERROR,
                )
            )
        return Response(result.model_dump_json(), media_type="application/json")

    return [
        Route("/api/v1/tools", list_tools, methods=["GET"]),
        Route("/api/v1/tools/{name}", call_tool, methods=["POST"]),
    ]


def report_routes(store: Store) -> list[Route]:
    """``POST /api/v1/report`` with ``{"candidate", "baseline", "gate"}`` (the arguments of
    ``compare_experiments``): the comparison's HTML report, made here because it reads the
    runs' traces from the store (``traceproof experiment run|compare --report-html`` while this
    server holds the store). Errors answer the one JSON shape."""

    async def report(request: Request) -> Response:
        try:
            given = json.loads(await request.body() or b"{}")
        except ValueError:
            given = None
        wanted = ("candidate", "baseline", "gate")
        if (
            not isinstance(given, dict)
            or not isinstance(given.get("candidate"), str)
            or set(given) - set(wanted)
            or not all(isinstance(given.get(k), str | None) for k in wanted)
        ):
            return error_response(
                TraceproofError(
                    'Send a JSON object {"candidate": ID, "baseline": ID or null, "gate": SPEC '
                    "or null}.",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            )

        def make() -> str:
            from traceproof.experiments.report import report_page
            from traceproof.tools.compare import comparison_for

            comparison = comparison_for(store, given["candidate"], given.get("baseline"),
                                        given.get("gate"))  # fmt: skip
            return report_page(store, comparison)

        try:
            page = await pools_for(store).run_tool("compare_experiments", given, make)
        except TraceproofError as exc:
            return error_response(exc)
        except Exception:
            log.exception("the report failed")
            return error_response(
                TraceproofError(
                    "The report failed inside the server. The server log has the details.",
                    code=ErrorCode.INTERNAL_ERROR,
                )
            )
        return Response(page, media_type="text/html; charset=utf-8")

    return [Route("/api/v1/report", report, methods=["POST"])]


def error_response(exc: TraceproofError) -> Response:
    """The one JSON error shape, with the status for the error's code."""
    headers = None
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        headers = {"Retry-After": str(max(1, round(retry_after)))}
    return JSONResponse(
        {"error": str(exc), "code": str(exc.code)},
        status_code=status_for(exc.code),
        headers=headers,
    )


def annotation_config_routes(store: Store) -> list[Route]:
    """``GET /api/v1/annotation-configs`` lists the stored configs (``{"configs": [...]}``, the
    shape of :meth:`AnnotationConfig.as_dict`); ``POST`` with ``{"set": [config, ...],
    "remove": [name, ...]}`` stores and deletes them in one transaction and answers
    ``{"changed": [...], "unchanged": [...], "removed": [...]}``. What ``traceproof
    annotation-config`` (and a CLI write applying traceproof.toml) uses when a server holds the
    store; not an MCP tool."""
    import asyncio

    from traceproof.evals.annotations import config_from_dict
    from traceproof.storage.annotations import get_configs, set_configs

    def listed() -> dict[str, object]:
        with store.reader() as reader:
            return {"configs": [c.as_dict() for c in get_configs(reader).values()]}

    async def list_configs(request: Request) -> Response:
        try:
            return JSONResponse(await asyncio.to_thread(listed))
        except TraceproofError as exc:
            return error_response(exc)

    async def change_configs(request: Request) -> Response:
        try:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                raise TraceproofError(
                    'The body is not JSON. Send {"set": [config, ...], "remove": [name, ...]}.',
                    code=ErrorCode.INVALID_ARGUMENT,
                ) from None
            given = body.get("set", []) if isinstance(body, dict) else None
            remove = body.get("remove", []) if isinstance(body, dict) else None
            if (
                not isinstance(given, list)
                or not isinstance(remove, list)
                or not all(isinstance(n, str) for n in remove)
            ):
                raise TraceproofError(
                    'Send {"set": [config, ...], "remove": [name, ...]} (both lists).',
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            configs = [config_from_dict(item) for item in given]
            done = await asyncio.to_thread(set_configs, store, configs, remove=remove)
        except TraceproofError as exc:
            return error_response(exc)
        return JSONResponse(
            {"changed": done.changed, "unchanged": done.unchanged, "removed": done.removed}
        )

    return [
        Route("/api/v1/annotation-configs", list_configs, methods=["GET"]),
        Route("/api/v1/annotation-configs", change_configs, methods=["POST"]),
    ]
