"""Secret redaction of what arrives over the wire (setting ``otlp_redact``, off by default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from traceproof.settings import Settings
from traceproof.trajectories.redact import Redactor


def ingest_redactor(settings: Settings) -> Callable[[Any], Any] | None:
    """What :class:`~traceproof.ingest.normalize.SpanRows` applies to each attribute value of
    one request when ``settings.otlp_redact`` is on (a fresh :class:`Redactor`'s ``value``:
    strings redacted, JSON values keep their shape), else None."""
    return Redactor().value if settings.otlp_redact else None
