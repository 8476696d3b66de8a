"""Running the server process: open the store, record ownership, serve until stopped.

``serve`` is the long-running HTTP server (OTLP, MCP at ``/mcp``, the JSON API). ``serve_mcp``
is what an MCP client launches: MCP over stdio, plus the same HTTP app on the OTLP port in the
same event loop unless told otherwise. When another traceproof holds the store, ``serve_mcp``
works through that server's API, or answers every call with the lock error; it never dies on
the lock.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

import uvicorn

from traceproof.ingest.otlp import decode_protobuf
from traceproof.memory import configure_server
from traceproof.server.app import create_app
from traceproof.settings import Settings
from traceproof.storage import Store, owner

log = logging.getLogger(__name__)


def load_demo(store: Store, settings: Settings, now: datetime | None = None) -> int:
    """Write the demo project, ending just before ``now`` (default: the current time), through
    the OTLP protobuf ingest path, then its judgments (people's labels, a judge's recorded
    verdicts and its calibration: :mod:`traceproof.demo_judgments`); returns new spans (0 when
    the store already holds it)."""
    from traceproof.demo import demo_requests
    from traceproof.demo_judgments import load_demo_judgments

    added = 0
    for body in demo_requests(now):
        decoded = decode_protobuf(body, default_project=settings.default_project)
        added += store.write(decoded.rows.table()).added
    load_demo_judgments(store)
    return added


def serve(
    settings: Settings,
    *,
    demo: bool = False,
    log_level: str = "info",
    announce: Callable[[str], Any] = print,
) -> None:
    """Serve OTLP/HTTP on ``settings.host:settings.port`` until interrupted. The project's
    annotation configs (traceproof.toml) are stored first; a config file that does not load
    stops the start with its ``[invalid_config]`` error."""
    from traceproof.projectconfig import apply_annotation_configs, describe, project_config

    configure_server(settings)  # before the store and the server start their threads
    project = project_config(settings)
    store = Store.open(settings.db, settings)
    try:
        changes = apply_annotation_configs(store, project)
        if changes is not None:
            announce(describe(project, changes))
        if demo:
            added = load_demo(store, settings)
            announce(
                f"demo project loaded ({added:,} new spans; its judge verdicts are recorded "
                "answers replayed offline, no LLM is called)"
                if added
                else "demo project already in the store: it keeps the times of its first load "
                "(pass another --db for a fresh one)"
            )
        app = create_app(store, settings, action_rules=project.action_rules())
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level.lower(),
            access_log=False,
            lifespan="on",  # MCP's session manager runs in the app's lifespan
            # An MCP client's open event stream must not hold a stopping server forever.
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        url = f"http://{_url_host(settings.host)}:{settings.port}"
        owner.write(store.path, "traceproof serve", url)
        announce(f"traceproof serving {store.path}")
        announce(f"  OTLP/HTTP  {url}/v1/traces, {url}/v1/logs (Claude Code's telemetry)")
        announce(f"  MCP        {url}/mcp")
        if settings.token:
            announce("  (a bearer token is required: Authorization: Bearer <token>)")
        # After its graceful shutdown uvicorn re-raises the signal it caught, under the handler
        # it found. SIGTERM's default handler would kill the process before the store closes;
        # this one exits through `finally` instead.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_signal)
        threading.Thread(
            target=_stop_when_failed, args=(store, server), name="traceproof-health", daemon=True
        ).start()
        server.run()
    finally:
        owner.clear(store.path)
        store.close()
    health = store.health()
    if health.state == "failed":
        announce(f"traceproof serve stopped: {health.detail}")
        sys.exit(STORE_FAILED_EXIT)


#: Exit status of ``traceproof serve`` when the store failed and could not be reopened: a
#: supervisor (systemd ``Restart=on-failure``, Docker ``--restart``) starts it again.
STORE_FAILED_EXIT = 3


def _stop_when_failed(store: Store, server: uvicorn.Server) -> None:
    """Stop serving once the store has failed for good, so the process exits non-zero."""
    if store.wait_failed():
        log.critical("the store failed and could not be reopened; stopping the server")
        server.should_exit = True


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
