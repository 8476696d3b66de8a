"""Answers for stdio lines the MCP SDK cannot read.

The SDK's stdio transport parses each line strictly (pydantic's JSON parser, which refuses a lone
surrogate escape such as ``"\\ud800"``) and hands a line it cannot read to the server as an
exception, which the server drops: the client waits forever for that id. Over HTTP the same
message gets a 400 with ``-32700``. Here the read stream is wrapped: an unreadable line is read
again with Python's lenient parser and answered on the write stream with a JSON-RPC error for its
id (``-32602`` naming the argument that holds the bad text, ``-32600`` for a message that is not
JSON-RPC, ``-32700`` with a null id when not even the id can be read); the server keeps serving.
A notification (no id) cannot be answered: it is logged on stderr.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from traceproof.errors import TraceproofError
from traceproof.server.pools import check_text

log = logging.getLogger(__name__)


async def run_stdio(server: MCPServer) -> None:
    """``server.run_stdio_async()``, with an answer for every line the SDK cannot read."""
    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        await lowlevel.run(
            AnsweringReadStream(read_stream, write_stream),
            write_stream,
            lowlevel.create_initialization_options(),
        )


class AnsweringReadStream:
    """The transport's read stream, minus the lines it could not read: each of those is
    answered on ``write_stream`` (see :func:`answer_for`) instead of reaching the server."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner = inner
        self._write = write_stream

    @property
    def last_context(self) -> Any:
        # The dispatcher reads the sender's contextvars from here (duck-typed).
        return getattr(self._inner, "last_context", None)

    def __aiter__(self) -> AnsweringReadStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            item = await self._inner.__anext__()
            if not isinstance(item, Exception):
                return item
            answer = answer_for(item)
            if answer is not None:
                await self._write.send(SessionMessage(answer))

    async def receive(self) -> Any:
        return await self.__anext__()

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> AnsweringReadStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        result: bool | None = await self._inner.__aexit__(*exc_info)
        return result


def answer_for(exc: Exception) -> types.JSONRPCError | None:
    """The JSON-RPC error answering the line ``exc`` failed on, or None for a notification."""
    message, parsed = _read_again(exc)
    if not parsed:
        log.warning("stdio: answered a line that is not JSON with a parse error (-32700)")
        return _error(None, types.PARSE_ERROR, "Parse error: the line is not JSON.")
    request_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        if isinstance(message, dict) and "method" in message and "id" not in message:
            log.warning("stdio: dropped an unreadable notification: %s", _bad_text(message))
            return None
        return _error(None, types.PARSE_ERROR, "Parse error: the message's id cannot be read.")
    bad_text = _bad_text(message)
    if bad_text is not None:
        return _error(request_id, types.INVALID_PARAMS, bad_text)
    return _error(
        request_id,
        types.INVALID_REQUEST,
        "Invalid request: the message is not a JSON-RPC 2.0 request (jsonrpc, id, method, params).",
    )


def _read_again(exc: Exception) -> tuple[Any, bool]:
    """The message the SDK refused, read with Python's lenient JSON parser; ``(None, False)``
    when it is not JSON at all."""
    if not isinstance(exc, ValidationError):
        return None, False
    errors = exc.errors()
    raw = errors[0].get("input") if errors else None
    if not isinstance(raw, str | bytes):
        return raw, raw is not None  # the SDK parsed it; the shape is what failed
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


def _bad_text(message: dict[str, Any]) -> str | None:
    """The ``[invalid_argument]`` sentence naming where ``message`` holds text that is not
    valid Unicode (a lone surrogate), or None when it holds none."""
    params = message.get("params")
    arguments = params.get("arguments") if isinstance(params, dict) else None
    try:
        if isinstance(arguments, dict):
            check_text(arguments)
        check_text(message, "message")
    except TraceproofError as error:
        return str(error)
    return None


def _error(request_id: str | int | None, code: int, text: str) -> types.JSONRPCError:
    return types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=text)
    )
