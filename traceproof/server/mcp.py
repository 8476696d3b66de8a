"""The MCP server: every registered tool, served to agents as is.

Each ``fn(store, **params)`` in :mod:`traceproof.tools.registry` becomes one MCP tool: its name,
its docstring as the description, its keyword parameters (``Annotated[T, Field(...)]``) as the
input schema and its return model as the output schema. Nothing here knows a tool's parameters,
so a tool changes in one place.

The tools run against a *backend*: the store itself, the HTTP API of the traceproof server that
holds the store, or nothing (the store is locked and no server says where it is: every call then
answers the lock error, so the agent learns what to do instead of seeing a dead server).

A result goes out twice, as the SDK and the spec ask: structured content (the model's JSON) and
one text block holding the same JSON, compact (the SDK's default text is indented, which nearly
doubles what an agent pays for).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Annotated, Any, Protocol, get_type_hints

import anyio.to_thread
import pydantic_core
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool as SDKTool
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from traceproof import __version__
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.jobs import reporting_progress
from traceproof.remote import RemoteStore
from traceproof.server.pools import pools_for
from traceproof.server.schemas import compact_input, compact_output, trimmed
from traceproof.storage import Store
from traceproof.tools import registry
from traceproof.tools.invoke import validate_arguments
from traceproof.tools.registry import ToolSpec

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "traceproof holds the OpenTelemetry traces of the AI application you are working on. "
    "Start with list_projects, then search_traces (filters, newest first) to find traces; "
    "get_trace_preview shows one trace as a compact tree, find_in_trace searches its text, "
    "get_span_data reads one span in full. search_spans, aggregate and sql answer questions "
    "across many traces (describe_schema first). Long values are clipped: follow the "
    "continuation call a result gives."
)

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


def annotations_of(spec: ToolSpec) -> ToolAnnotations:
    """The MCP annotations of ``spec``: read-only or a write, and open-world when it may call
    an LLM."""
    base = READ_ONLY if spec.read_only else WRITES
    return base.model_copy(update={"open_world_hint": True}) if spec.open_world else base


class Backend(Protocol):
    """Where the tools run. ``call`` is synchronous and may block: it runs in a worker thread."""

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel: ...


class LocalBackend:
    """The store, opened by this process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel:
        return registry.call(self.store, spec.name, arguments)


class RemoteBackend:
    """The HTTP API of the traceproof server that holds the store (``POST
    /api/v1/tools/{name}``): arguments as a JSON object in, the result model's JSON out."""

    def __init__(self, remote: RemoteStore) -> None:
        self.remote = remote

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel:
        found = self.remote.call_tool(spec.name, _given(spec, arguments))
        return return_model(spec).model_validate(found)


class UnavailableBackend:
    """No store to serve: every call answers ``error`` (say, ``[store_locked] ...``)."""

    def __init__(self, error: TraceproofError) -> None:
        self.error = error

    def call(self, spec: ToolSpec, arguments: dict[str, Any]) -> BaseModel:
        raise self.error


class TraceproofMCP(MCPServer):
    """The SDK's server, with traceproof's errors (its tools come from :func:`sdk_tool`)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        """The SDK's call, with traceproof's error shape: the model reads ``[code] message``
        (not the SDK's "Error executing tool ..." prefix or a pydantic dump), and an unknown
        argument is refused rather than ignored (a misspelt filter would silently match
        everything)."""
        if name in registry.TOOLS_BY_NAME and not set(arguments) <= parameter_names(name):
            raise ToolError(argument_error(name, arguments, None))
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_error(name, arguments, exc.__cause__)) from exc
            raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc


def create_mcp_server(
    backend: Backend | Store,
    toolsets: Iterable[str] | None = None,
    notice: str | None = None,
) -> MCPServer:
    """An MCP server offering the registered tools of ``toolsets`` (default: every family), run
    on ``backend`` (a store is served locally). An unknown family raises ``ValueError``.
    ``notice``, when given, is something the agent must know to trust the answers (say, that
    the application's spans go to another store): it ends the instructions and follows every
    tool's answer, success or error, as a text block of its own."""
    if isinstance(backend, Store):
        backend = LocalBackend(backend)
    tools = [sdk_tool(spec, backend, notice) for spec in registry.select(toolsets)]
    instructions = INSTRUCTIONS if notice is None else f"{INSTRUCTIONS}\n\n{notice}"
    return TraceproofMCP(
        name="traceproof", version=__version__, instructions=instructions, tools=tools
    )


def toolset_names(value: str | None) -> list[str] | None:
    """``"inspect,proof"`` (the setting, the CLI option) as names; None for every family."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    return names or None


def sdk_tool(spec: ToolSpec, backend: Backend, notice: str | None = None) -> SDKTool:
    """The SDK's tool for ``spec``, with ``tools/list`` kept small (every agent turn pays for
    it): schemas compacted as :mod:`traceproof.server.schemas` says. The compact output schema
    is published without the model (the SDK then validates nothing itself): answers leave out
    their null and empty fields, which the model would call missing; the schema allows it, and
    tests check every tool's answers against it."""
    tool = SDKTool.from_function(
        mcp_tool(spec, backend, notice),
        name=spec.name,
        description=description(spec),
        context_kwarg=CONTEXT_KWARG,
        annotations=annotations_of(spec),
    )
    tool.parameters = compact_input(tool.parameters)
    metadata = tool.fn_metadata
    metadata.output_schema = metadata.output_schema and compact_output(metadata.output_schema)
    metadata.output_model = None
    tool.__dict__.pop("output_schema", None)  # the SDK caches it on first read
    return tool


def mcp_tool(
    spec: ToolSpec, backend: Backend, notice: str | None = None
) -> Callable[..., Awaitable[CallToolResult]]:
    """An async function with ``spec.fn``'s keyword parameters (without the store) that runs the
    tool on ``backend`` in a worker thread, so the event loop (and the OTLP receiver sharing it)
    never waits on a query: a local store's calls go to its query pools (light or heavy, with
    the ``[busy]`` answer and the deadline of :mod:`traceproof.server.pools`)."""
    model = return_model(spec)

    async def run_tool(**arguments: Any) -> CallToolResult:
        relay = ProgressRelay(arguments.pop(CONTEXT_KWARG, None))
        try:
            if isinstance(backend, LocalBackend):  # the store's query pools, as over HTTP
                result = await pools_for(backend.store).run_tool(
                    spec.name, arguments, relay.bind(lambda: backend.call(spec, arguments))
                )
            else:
                result = await anyio.to_thread.run_sync(backend.call, spec, arguments)
        except TraceproofError as exc:
            raise ToolError(str(exc) + (f"\n\n{notice}" if notice else "")) from None
        except Exception:
            log.exception("tool %s failed", spec.name)
            raise ToolError(
                f"[internal_error] The tool {spec.name} failed inside traceproof. The server "
                "log (stderr) has the details; try other arguments or report it."
            ) from None
        finally:
            await relay.drain()
        answer = as_result(result)
        if notice:
            answer.content.append(TextContent(type="text", text=notice))
        return answer

    functools.update_wrapper(run_tool, spec.fn, assigned=("__module__", "__name__", "__doc__"))
    run_tool.__qualname__ = spec.name
    run_tool.__signature__ = signature(spec, model)  # type: ignore[attr-defined]
    return run_tool


#: The keyword the SDK passes a call's :class:`Context` under (not a tool parameter).
CONTEXT_KWARG = "_traceproof_context"


class ProgressRelay:
    """A tool's :func:`traceproof.jobs.report_progress` calls, from the thread it runs in, as
    MCP progress notifications of its request (the SDK sends them only when the client gave a
    progress token). Reports are handed to the event loop without waiting; progress that does
    not advance is dropped, as the spec asks; :meth:`drain` waits for those sent, so none
    follows the answer."""

    def __init__(self, context: Context[Any, Any] | None) -> None:
        self.context = context
        self.loop = asyncio.get_running_loop() if context is not None else None
        self.sent: list[Future[None]] = []
        self.last: float | None = None
        self.lock = threading.Lock()

    def __call__(self, done: float, total: float | None, message: str | None) -> None:
        if self.context is None or self.loop is None:
            return
        with self.lock:
            if self.last is not None and done <= self.last:
                return
            self.last = done
            report = self.context.report_progress(done, total, message)
            self.sent.append(asyncio.run_coroutine_threadsafe(report, self.loop))

    def bind(self, call: Callable[[], Any]) -> Callable[[], Any]:
        """``call`` with this relay listening to its progress, in whatever thread runs it."""
        if self.context is None:
            return call

        def listened() -> Any:
            with reporting_progress(self):
                return call()

        return listened

    async def drain(self) -> None:
        with self.lock:
            sent, self.sent = self.sent, []
        for future in sent:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)


def as_result(result: BaseModel) -> CallToolResult:
    """Structured content plus one compact-JSON text block of the same data, both without
    null and empty fields (:func:`~traceproof.server.schemas.trimmed`)."""
    data = trimmed(result)
    return CallToolResult(
        content=[TextContent(type="text", text=compact_json(data))],
        structured_content=data,
    )


def compact_json(data: Any) -> str:
    """JSON without spaces, non-ASCII as is: what an agent pays for, character by character."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def signature(spec: ToolSpec, model: type[BaseModel]) -> inspect.Signature:
    """``spec.fn``'s signature without the store, annotations resolved (the SDK reads them to
    build the input schema), returning ``CallToolResult`` validated against ``model`` (the
    output schema)."""
    hints = get_type_hints(spec.fn, include_extras=True)
    parameters = list(inspect.signature(spec.fn).parameters.values())[1:]
    return inspect.Signature(
        [p.replace(annotation=hints.get(p.name, Any)) for p in parameters],
        return_annotation=Annotated[CallToolResult, model],
    )


def return_model(spec: ToolSpec) -> type[BaseModel]:
    model = get_type_hints(spec.fn).get("return")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"tool {spec.name} must return a pydantic model, not {model!r}")
    return model


def description(spec: ToolSpec) -> str:
    """The docstring, dedented: what an agent reads in ``tools/list``."""
    return inspect.cleandoc(spec.fn.__doc__ or spec.name)


@functools.cache
def parameter_names(name: str) -> frozenset[str]:
    return frozenset(list(inspect.signature(registry.tool(name).fn).parameters)[1:])


def argument_error(name: str, arguments: dict[str, Any], error: ValidationError | None) -> str:
    """``[invalid_argument] ...`` naming each bad argument, as the HTTP API and CLI say it."""
    try:
        validate_arguments(name, arguments)
    except TraceproofError as exc:
        return str(exc)
    # Valid by the API's rules, refused by the SDK's (it should not happen): say what it said.
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
        for e in (error.errors(include_url=False)[:5] if error else [])
    )
    return f"[{ErrorCode.INVALID_ARGUMENT}] Invalid arguments for {name}: {problems}. Fix them."


def _given(spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments that differ from their defaults, as JSON values: the remote server applies
    its own defaults to the rest."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(spec.fn).parameters.items()
        if p.default is not p.empty
    }
    given = {k: v for k, v in arguments.items() if k not in defaults or v != defaults[k]}
    return dict(pydantic_core.to_jsonable_python(given))
