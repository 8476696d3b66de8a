"""The HTTP API behind the CLI when a server holds the store: every tool at
``POST /api/v1/tools/{name}`` (being written: see issue #3)."""

from __future__ import annotations

from starlette.routing import Route

from traceproof.storage import Store


def tool_routes(store: Store) -> list[Route]:
    """Routes that run the registered tools on ``store`` for remote callers."""
    return []
