"""The agent as a ``python`` task: ``support_agent.task:run``."""

from __future__ import annotations

from typing import Any

from support_agent.agent import SupportAgent
from support_agent.tracing import parent_context, tracing


def run(input: Any) -> dict[str, Any]:
    """Answer one input (``{"question": ...}`` or a string) as ``{"answer": ...}``; its spans
    are exported (and flushed) before this returns."""
    with tracing() as tracer:
        return SupportAgent(tracer).answer(input, parent_context())
