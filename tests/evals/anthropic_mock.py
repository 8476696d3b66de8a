"""The Anthropic Messages API as an httpx2 mock transport: the real SDK client, no network.

A :class:`FakeAnthropic` answers each request with the next scripted reply (a tool input dict,
a status code with headers, or a whole message body), records the request bodies, and hands the
SDK a sync or async ``httpx2`` client built on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from traceproof.evals.judge import TOOL_NAME
from traceproof.evals.llm import LLMClient
from traceproof.settings import Settings


@dataclass
class Status:
    """An error answer: HTTP ``code`` with ``headers``."""

    code: int
    headers: dict[str, str] = field(default_factory=dict)


def message(
    tool_input: dict[str, Any] | None,
    *,
    model: str = "claude-sonnet-5-5",
    input_tokens: int = 1200,
    output_tokens: int = 150,
    text: str = "",
) -> dict[str, Any]:
    """A Messages API answer calling the judge's tool with ``tool_input`` (None: text only)."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    if tool_input is not None:
        content.append(
            {"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": tool_input}
        )
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_input is not None else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


Reply = dict[str, Any] | Status | Callable[[dict[str, Any]], dict[str, Any] | Status]


class FakeAnthropic:
    """Scripted replies; when the script runs out, ``default`` answers (a callable of the
    request body, or a fixed reply)."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.replies = list(replies)
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        with self._lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            reply = self.replies.pop(0) if self.replies else self.default
        if callable(reply):
            reply = reply(body)
        if reply is None:
            raise AssertionError("the fake ran out of replies")
        if isinstance(reply, Status):
            error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
            return httpx2.Response(reply.code, json=error, headers=reply.headers)
        if "type" not in reply:  # a bare tool input
            reply = message(reply)
        return httpx2.Response(200, json=reply)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self._answer)

    def client(
        self, settings: Settings | None = None, **options: Any
    ) -> tuple[LLMClient, list[float]]:
        """An LLMClient over this fake, and the list its retries' waits are recorded in."""
        waits: list[float] = []
        client = LLMClient(
            settings or Settings(),
            api_key="sk-test",
            http_client=httpx2.Client(transport=self.transport()),
            sleep=waits.append,
            **options,
        )
        return client, waits
