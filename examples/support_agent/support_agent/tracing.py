"""OpenTelemetry for the agent: an OTLP/HTTP exporter, the resource, the parent context.

The standard OpenTelemetry environment is honoured as the SDK defines it:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): where spans go;
  default :data:`DEFAULT_ENDPOINT`, where ``traceproof serve`` listens;
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
from collections.abc import Iterator
from contextlib import contextmanager

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


def resource() -> Resource:
    """The defaults, then what the environment says (the environment wins)."""
    defaults = Resource.create({"service.name": SERVICE_NAME, "service.version": VERSION})
    return defaults.merge(OTELResourceDetector().detect())


def exporter() -> OTLPSpanExporter:
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        return OTLPSpanExporter()  # the SDK reads the variables (and adds /v1/traces)
    return OTLPSpanExporter(endpoint=f"{DEFAULT_ENDPOINT}/v1/traces")


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
    provider.add_span_processor(BatchSpanProcessor(exporter()))
    try:
        yield provider.get_tracer("support_agent", VERSION)
    finally:
        provider.shutdown()  # flushes the batch processor, then shuts the exporter down
