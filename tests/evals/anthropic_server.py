"""A fake Anthropic Messages API on a loopback port: the real SDK reaches it over real HTTP when
``ANTHROPIC_BASE_URL`` points at it (in this process or in a server started as a child)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.evals.anthropic_mock import message

#: ``reply(request body)`` -> the tool input the judge answers with, or an HTTP error status.
Reply = Callable[[dict[str, Any]], dict[str, Any] | int]


class FakeAnthropicServer:
    """``POST /v1/messages`` answered with ``reply(body)`` as the forced tool call's input (an
    int: that HTTP status with an authentication error)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                answer = owner.reply(body)
                status, payload = (
                    (answer, {"type": "error", "error": {"type": "authentication_error",
                                                         "message": "invalid x-api-key"}})
                    if isinstance(answer, int)
                    else (200, message(answer))
                )  # fmt: skip
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> FakeAnthropicServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


def prompt_of(body: dict[str, Any]) -> str:
    """The user message the judge sent."""
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
