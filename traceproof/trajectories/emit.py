"""StepSpans into the store's span rows (the same normalisation every other ingest path uses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from traceproof.ingest.normalize import REJECTED, SpanRows, resource_json
from traceproof.trajectories.common import SOURCE, StepSpan


def add_step(rows: SpanRows, span: StepSpan, *, project: str, source: str) -> list[str]:
    """Add one span to ``rows``; returns the normaliser's warnings. Raises what
    :data:`~traceproof.ingest.normalize.REJECTED` names for a span that cannot be stored."""
    attributes = {"openinference.span.kind": span.kind, SOURCE: source, **span.attributes}
    return rows.add(
        project=project,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        status=span.status,
        status_message=span.status_message,
        attributes=attributes,
        resource_json=_resource_json(span.resource) if span.resource else None,
        scope_name=f"traceproof.trajectories.{source}",
    )


_SCALARS = (str, int, float, bool, type(None))
#: Resource JSON by the resource's (key, type, value) items: a trace's spans share one resource.
#: Only flat resources of scalars are remembered (1, 1.0 and True are equal keys: the types
#: tell them apart), up to this many.
_RESOURCES: dict[tuple[tuple[str, type, Any], ...], str] = {}
_RESOURCES_SIZE = 1_000


def _resource_json(resource: Mapping[str, Any]) -> str:
    if not all(type(v) in _SCALARS for v in resource.values()):
        return resource_json(resource)
    key = tuple((k, type(v), v) for k, v in resource.items())
    found = _RESOURCES.get(key)
    if found is None:
        found = resource_json(resource)
        if len(_RESOURCES) < _RESOURCES_SIZE:
            _RESOURCES[key] = found
    return found


def add_steps(
    rows: SpanRows, spans: Iterable[StepSpan], *, project: str, source: str
) -> list[tuple[StepSpan, str]]:
    """Add every span that can be stored; answers the ones rejected, with why."""
    rejected: list[tuple[StepSpan, str]] = []
    for span in spans:
        try:
            add_step(rows, span, project=project, source=source)
        except REJECTED as exc:
            rejected.append((span, str(exc) or type(exc).__name__))
    return rejected
