"""``traceproof mcp``: MCP over stdio for a client that launches the server itself.

stdout is the protocol: everything this process says goes to stderr. Unless told otherwise, the
same process also serves the HTTP app (OTLP at ``/v1/traces``, MCP at ``/mcp``, the JSON API) on
the OTLP port, on the same event loop, so one process launched by Claude Code does everything.
A taken port is not a failure: MCP keeps working on this process's store, and the agent is
told in the server's instructions and after every tool answer (hosts do not show stderr): who
holds the port (another traceproof, found by its ``/api/v1/info``, and the store it serves, or some
other program), that the application's spans go there rather than to this store, and the fix.
``mcp`` does not switch to the port holder's store: the store is what ``--db`` (or the project
directory) chose, and a traceproof on the same store is already used through its API (the lock
case below); a holder on another store is another project's, or a quickstart demo.

When another traceproof process holds the store, this one never dies on the lock: it serves MCP
through that server's API when the holder recorded a URL, and otherwise answers every tool call
with the lock error, which says what to do.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

from traceproof.errors import ErrorCode
from traceproof.memory import configure_server
from traceproof.remote import RemoteStore
from traceproof.server.app import create_app
from traceproof.server.mcp import (
    Backend,
    LocalBackend,
    RemoteBackend,
    UnavailableBackend,
    create_mcp_server,
    toolset_names,
)
from traceproof.server.stdiolines import run_stdio
from traceproof.settings import Settings
from traceproof.storage import Store, StoreLocked, owner

log = logging.getLogger(__name__)

#: Seconds uvicorn waits for open connections (an MCP client's event stream) when stopping.
GRACEFUL_SHUTDOWN_SECONDS = 5
#: Seconds to wait for whatever holds the OTLP port to answer ``/api/v1/info``.
HOLDER_PROBE_SECONDS = 1.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve_mcp(
    settings: Settings,
    *,
    otlp: bool = True,
    log_level: str = "warning",
    announce: Callable[[str], Any] = _stderr,
) -> None:
    """Serve MCP over stdio until the client closes stdin (or SIGTERM/SIGINT)."""
    configure_server(settings)  # before the store and the server start their threads
    try:
        store = Store.open(settings.db, settings)
    except StoreLocked as exc:
        backend = _borrowed(exc, settings, announce)
        if isinstance(backend, RemoteBackend):
            _apply_configs(backend.remote, settings, announce)
        anyio.run(
            _serve,
            create_mcp_server(backend, toolset_names(settings.toolsets)),
            None,
            functools.partial(_leave, None),
        )
        return

    def close() -> None:
        owner.clear(store.path)
        store.close()

    try:
        _apply_configs(store, settings, announce)
        http, notice = _http_server(store, settings, log_level, announce) if otlp else (None, None)
        url = http.url if http else None
        owner.write(store.path, "traceproof mcp", url)
        announce(f"traceproof mcp: serving {store.path} over stdio")
        if http:
            announce(f"  OTLP/HTTP  {url}/v1/traces")
            announce(f"  MCP        {url}/mcp")
        server = create_mcp_server(
            LocalBackend(store), toolset_names(settings.toolsets), notice=notice
        )
        anyio.run(_serve, server, http, functools.partial(_leave, close))
    finally:
        close()


def _borrowed(exc: StoreLocked, settings: Settings, announce: Callable[[str], Any]) -> Backend:
    """The backend when another process holds the store: its server, or the lock error."""
    if exc.url:
        announce(
            f"traceproof mcp: {exc.path} is held by the traceproof server at {exc.url}; serving "
            "MCP over stdio through it (it receives the traces)."
        )
        return RemoteBackend(RemoteStore(exc.url, token=settings.token, for_agent=True))
    announce(f"traceproof mcp: {exc.message} Every tool call will answer this error.")
    return UnavailableBackend(exc)


def _apply_configs(
    store: Store | RemoteStore, settings: Settings, announce: Callable[[str], Any]
) -> None:
    """Store the project's annotation configs. An MCP server never dies on them: a config file
    that does not load (or a holder that refuses them) is a warning, and the configs already
    stored keep applying."""
    from traceproof.errors import TraceproofError
    from traceproof.projectconfig import apply_annotation_configs, describe, project_config

    try:
        project = project_config(settings)
        changes = apply_annotation_configs(store, project)
    except TraceproofError as exc:
        announce(
            f"warning: annotation configs not applied: {exc} Writes are checked against the "
            "configs already stored."
        )
        return
    if changes is not None:
        announce(f"traceproof mcp: {describe(project, changes)}")


class EmbeddedHttp(uvicorn.Server):
    """uvicorn sharing this process's event loop: its socket is bound up front (a taken port is
    found before serving, not by uvicorn's ``sys.exit``) and the host handles signals."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, url: str) -> None:
        super().__init__(config)
        self.sock = sock
        self.url = url

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _http_server(
    store: Store, settings: Settings, log_level: str, announce: Callable[[str], Any]
) -> tuple[EmbeddedHttp | None, str | None]:
    """The HTTP app on the OTLP port; or, when the port is taken, None and the notice every
    answer carries."""
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        announce(
            f"warning: OTLP receiver not started: cannot listen on {settings.host}:"
            f"{settings.port} ({exc.strerror or exc}). MCP over stdio works; send traces to "
            "the process on that port, or pass --port (or --no-otlp)."
        )
        return None, port_taken_notice(store, settings)
    port = int(sock.getsockname()[1])
    bound = settings.model_copy(update={"port": port})
    config = uvicorn.Config(
        create_app(store, bound),
        log_level=log_level.lower(),
        log_config=None,  # our logging, on stderr: stdout is the MCP channel
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return EmbeddedHttp(config, sock, f"http://{url_host(settings.host)}:{port}"), None


def port_taken_notice(store: Store, settings: Settings) -> str:
    """What the agent must be told when the OTLP port is taken: by a traceproof (and which
    store it serves) or by another program, where the spans go, and the fix."""
    url = f"http://{url_host(settings.host)}:{settings.port}"
    holder = holder_store(url, settings.token)
    if holder is not None:
        # Absolute paths (the holder's /api/v1/info gives its own): both read from anywhere.
        who = (
            f"another traceproof (serving {holder}), so the application's spans go to that "
            "store, not to this one"
        )
        stop = "stop that traceproof"
    else:
        who = "a program that is not a traceproof, so spans sent there never reach this store"
        stop = "free the port"
    return (
        f"[{ErrorCode.OTLP_PORT_TAKEN.value}] This server reads {store.path.resolve()} but could "
        f"not receive traces: {url} is held by {who}; answers here may be empty or stale. Fix: "
        f"{stop} and restart this MCP server, or restart it with --port N (a free port) and "
        f"send the application's traces there (OTEL_EXPORTER_OTLP_ENDPOINT=http://"
        f"{url_host(settings.host)}:N)."
    )


def holder_store(url: str, token: str | None) -> str | None:
    """The store a traceproof at ``url`` serves (its ``/api/v1/info``), or None when what
    answers there is not a traceproof (or does not answer within a second)."""
    request = urllib.request.Request(url + "/api/v1/info")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HOLDER_PROBE_SECONDS) as response:
            found = json.loads(response.read())
    except (OSError, ValueError):
        return None
    store = found.get("store") if isinstance(found, dict) else None
    is_traceproof = isinstance(found, dict) and found.get("service") == "traceproof"
    return store if is_traceproof and isinstance(store, str) else None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (raises OSError when it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def _serve(
    server: MCPServer, http: EmbeddedHttp | None, leave: Callable[[int], None]
) -> None:
    """MCP over stdio, and ``http`` beside it, until the client closes stdin; on SIGTERM or
    SIGINT, ``http`` stops gracefully and ``leave`` ends the process."""
    async with anyio.create_task_group() as tg:
        http_done = anyio.Event()
        if http is not None:
            tg.start_soon(_run_http, http, http_done)
        watcher = anyio.CancelScope()
        tg.start_soon(_leave_on_signal, watcher, http, http_done, leave)
        await run_stdio(server)
        watcher.cancel()
        if http is not None:
            http.should_exit = True


async def _run_http(http: EmbeddedHttp, done: anyio.Event) -> None:
    try:
        await http.serve(sockets=[http.sock])
    finally:
        done.set()


async def _leave_on_signal(
    watcher: anyio.CancelScope,
    http: EmbeddedHttp | None,
    http_done: anyio.Event,
    leave: Callable[[int], None],
) -> None:
    with watcher, anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if http is not None:
                http.should_exit = True
                with anyio.move_on_after(GRACEFUL_SHUTDOWN_SECONDS + 1):
                    await http_done.wait()
            leave(int(signum))


def _leave(close: Callable[[], None] | None, signum: int) -> None:
    """End the process after a signal, the store closed and its owner file cleared.

    Not by unwinding: a worker thread is blocked reading stdin (the client has not closed it),
    nothing can interrupt that read, and the interpreter would wait for it forever on exit."""
    if close is not None:
        close()
    sys.stderr.flush()
    os._exit(128 + signum)


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
