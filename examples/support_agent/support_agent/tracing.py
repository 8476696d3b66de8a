"""OpenTelemetry for the agent: an OTLP/HTTP exporter, the resource, the parent context.

The standard OpenTelemetry environment is honoured as the SDK defines it:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): where spans go;
  default :data:`DEFAULT_ENDPOINT`, where ``traceproof serve`` listens. With neither set and
  nothing listening there (a first try, before any server), the spans are not exported and one
  line on stderr says so: the exporter would otherwise retry the closed port for seconds;
- ``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``: added to the resource, over the
  defaults (``service.name = support-agent``, so traceproof files the spans under the project
  ``support-agent``);
- ``TRACEPARENT`` (and ``TRACESTATE``): the W3C context the agent's root span continues, read
  with the configured propagator (``OTEL_PROPAGATORS``, W3C trace context by default). This is
  how traceproof's experiment runner links a run to its trace.

Attribute names follow the OpenInference semantic conventions; they are written as strings
here rather than imported from ``openinference-semantic-conventions``, to keep the example's
dependencies to the OpenTelemetry SDK and its OTLP exporter.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

SERVICE_NAME = "support-agent"
#: traceproof's default port (``TRACEPROOF_PORT``, 4318) on loopback.
DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
VERSION = "1.0.0"
#: Seconds to wait for a connection to the default endpoint before deciding nothing listens.
PROBE_SECONDS = 0.5


def resource() -> Resource:
    """The defaults, then what the environment says (the environment wins)."""
    defaults = Resource.create({"service.name": SERVICE_NAME, "service.version": VERSION})
    return defaults.merge(OTELResourceDetector().detect())


def configured() -> bool:
    """Whether the environment names the endpoint (as traceproof's experiment runner does)."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def exporter() -> OTLPSpanExporter:
    if configured():
        return OTLPSpanExporter()  # the SDK reads the variables (and adds /v1/traces)
    return OTLPSpanExporter(endpoint=f"{DEFAULT_ENDPOINT}/v1/traces")


def span_exporter() -> OTLPSpanExporter | None:
    """:func:`exporter`; or None, said on stderr, when no endpoint is configured and nothing
    listens at :data:`DEFAULT_ENDPOINT`."""
    if configured() or listening(DEFAULT_ENDPOINT):
        return exporter()
    print(
        f"support_agent: nothing listens at {DEFAULT_ENDPOINT}, so this run's spans are not "
        "exported. Start `traceproof serve` (or set OTEL_EXPORTER_OTLP_ENDPOINT) to trace it.",
        file=sys.stderr,
        flush=True,
    )
    return None


def listening(endpoint: str) -> bool:
    """Whether something accepts TCP connections at ``endpoint``'s host and port."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 80), timeout=PROBE_SECONDS
        ):
            return True
    except OSError:
        return False


def parent_context() -> Context | None:
    """The context ``TRACEPARENT`` / ``TRACESTATE`` carry, or None when they are not set."""
    carrier = {
        key: os.environ[var]
        for key, var in (("traceparent", "TRACEPARENT"), ("tracestate", "TRACESTATE"))
        if os.environ.get(var)
    }
    return propagate.extract(carrier) if "traceparent" in carrier else None


@contextmanager
def tracing() -> Iterator[Tracer]:
    """A tracer whose spans are exported to OTLP/HTTP; every span is flushed on exit.

    A provider of its own (not the global one), made from the environment as it is now, so a
    long-lived process that answers many inputs (``support_agent.task:run``) gives each one the
    resource and parent context of its own run."""
    provider = TracerProvider(resource=resource())
    spans_to = span_exporter()
    if spans_to is not None:
        provider.add_span_processor(BatchSpanProcessor(spans_to))
    try:
        yield provider.get_tracer("support_agent", VERSION)
    finally:
        provider.shutdown()  # flushes the batch processor, then shuts the exporter down
