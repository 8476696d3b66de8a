"""What an evaluator sees (:class:`EvalTarget`) and what it answers (:class:`EvalResult`).

A target is one thing being judged: a span, a trace, a session (and, with experiments, one run of
a task). Every evaluator, built-in, custom or LLM judge, reads the same view:

- ``input`` / ``output``: the span's ``input_value`` / ``output_value`` text as stored (for a
  trace, its root span's; for a session, the first trace's input and the last trace's output);
- ``expected``: the reference answer when there is one (dataset examples), else ``None``;
- ``metadata``: the OpenInference ``metadata`` attribute of the span (or root) when it is an
  object, else ``{}``;
- ``span``: the span (or root span) as a dict: every column, JSON columns parsed (attributes
  nested as the store keeps them), times as RFC 3339 text;
- ``trace``: the spans the target covers, in start order (a span's trace, a trace's spans, a
  session's spans), for trajectory evaluators.

Targets are built from span rows as the store returns them (:func:`targets_from_rows`), so
nothing here touches storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from traceproof.storage.columns import SPAN_COLUMNS

__all__ = [
    "JSON_COLUMNS",
    "EvalResult",
    "EvalTarget",
    "TargetKind",
    "span_dict",
    "targets_from_rows",
]

TargetKind = Literal["span", "trace", "session", "experiment_run"]

#: Span columns stored as JSON text; parsed in :func:`span_dict`.
JSON_COLUMNS = ("attributes", "events", "links", "resource")


def _iso(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _parse_json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def span_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A span row (columns as in :data:`traceproof.storage.columns.SPAN_SCHEMA`) as a plain,
    JSON-ready dict: JSON columns parsed, times as RFC 3339 text."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if column in JSON_COLUMNS:
            parsed = _parse_json(value)
            out[column] = parsed if parsed is not None else ({} if column != "events" else [])
        elif isinstance(value, datetime):
            out[column] = _iso(value)
        else:
            out[column] = value
    return out


@dataclass(slots=True)
class EvalTarget:
    """One thing being judged, as every evaluator sees it (see the module docstring)."""

    kind: TargetKind
    id: str
    input: Any = None
    output: Any = None
    expected: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    span: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    project: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    session_id: str | None = None

    def covered_spans(self) -> list[dict[str, Any]]:
        """The spans this target is about, in start order: for a span, the span and its
        descendants in :attr:`trace`; for a trace or session, all of :attr:`trace`."""
        if self.kind != "span" or not self.span_id:
            return self.trace or ([self.span] if self.span else [])
        children: dict[str, list[str]] = {}
        for s in self.trace:
            parent = s.get("parent_span_id")
            if parent:
                children.setdefault(parent, []).append(s["span_id"])
        keep = {self.span_id}
        stack = [self.span_id]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in keep:
                    keep.add(child)
                    stack.append(child)
        covered = [s for s in self.trace if s.get("span_id") in keep]
        return covered or ([self.span] if self.span else [])

    def value_of(self, path: str) -> Any:
        """The value a ``field`` parameter names: ``input``, ``output``, ``expected``,
        ``metadata.<key>…``, a span column (``status_message``, ``model``…) or
        ``attributes.<dotted path>`` (``attributes.llm.model_name``). ``None`` when absent."""
        head, _, rest = path.partition(".")
        if head in ("input", "output", "expected") and not rest:
            return getattr(self, head)
        if head == "metadata":
            return _walk(self.metadata, rest) if rest else self.metadata
        if head in JSON_COLUMNS:
            value = self.span.get(head)
            return _walk(value, rest) if rest else value
        if head in ("input", "output", "expected"):
            return _walk(_parse_json(getattr(self, head)), rest)
        return self.span.get(path)

    def wire(self, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The target as JSON-ready data (what a custom evaluator's child process receives);
        ``fields`` limits it to the named arguments."""
        names = fields if fields is not None else ("input", "output", "expected", "metadata")
        data: dict[str, Any] = {"kind": self.kind, "id": self.id}
        for name in names:
            data[name] = getattr(self, name)
        return data


def _walk(value: Any, path: str) -> Any:
    """``value`` down a dotted path (list indexes as numbers); a key holding the whole dotted
    rest is tried too (flat attribute keys)."""
    if not path:
        return value
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(value, dict):
            if part in value:
                value = value[part]
                continue
            flat = ".".join(parts[i:])
            return value.get(flat)
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
            continue
        return None
    return value


@dataclass(slots=True)
class EvalResult:
    """One evaluator's answer for one target.

    ``label``/``score``/``explanation`` are the verdict; an evaluator that raised (or timed
    out, or answered something that is not a verdict) has ``error`` set and no label or score.
    ``duration_ms`` is the time the evaluator took on this target (for a batch run in a child
    process, the child's own measure)."""

    target_kind: str
    target_id: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target_kind": self.target_kind,
            "target_id": self.target_id,
            "label": self.label,
            "score": self.score,
            "explanation": self.explanation,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "metadata": self.metadata,
        }


# -- from store rows ----------------------------------------------------------------------------


def _start_key(s: Mapping[str, Any]) -> tuple[str, str]:
    return (str(s.get("start_time") or ""), str(s.get("span_id") or ""))


def _root(spans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ids = {s.get("span_id") for s in spans}
    roots = [s for s in spans if not s.get("parent_span_id") or s["parent_span_id"] not in ids]
    return (roots or list(spans))[0]


def _metadata(span: Mapping[str, Any]) -> dict[str, Any]:
    attributes = span.get("attributes")
    meta = attributes.get("metadata") if isinstance(attributes, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def targets_from_rows(
    rows: Iterable[Mapping[str, Any]],
    kind: TargetKind = "span",
    *,
    span_ids: Iterable[str] | None = None,
    expected: Mapping[str, Any] | None = None,
) -> list[EvalTarget]:
    """Targets of ``kind`` from span rows as the store returns them (``SELECT *`` from
    ``spans``; attributes as JSON text).

    - ``span``: one target per row, or per row in ``span_ids`` when given (pass the rows of
      whole traces to give trajectory evaluators each span's trace);
    - ``trace``: one target per trace id (its root span's input and output);
    - ``session``: one target per session id (rows without one are left out).

    ``expected`` maps a target id to its reference value. Targets come in the order of their
    first row."""
    spans = [span_dict(r) for r in rows]
    unknown = [c for c in (spans[0] if spans else {}) if c not in SPAN_COLUMNS]
    if unknown:
        raise ValueError(f"not span columns: {unknown[:5]}")
    refs = expected or {}
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(str(s.get("trace_id")), []).append(s)
    for group in by_trace.values():
        group.sort(key=_start_key)
    if kind == "span":
        wanted = set(span_ids) if span_ids is not None else None
        out = []
        for s in spans:
            if wanted is not None and s.get("span_id") not in wanted:
                continue
            out.append(_target("span", str(s["span_id"]), s, by_trace[str(s["trace_id"])], refs))
        return out
    if kind == "trace":
        return [_target("trace", tid, _root(g), g, refs) for tid, g in by_trace.items()]
    if kind == "session":
        sessions: dict[str, list[dict[str, Any]]] = {}
        for s in spans:
            if s.get("session_id"):
                sessions.setdefault(str(s["session_id"]), []).append(s)
        out = []
        for sid, group in sessions.items():
            group.sort(key=_start_key)
            roots = [_root(by_trace[t]) for t in dict.fromkeys(str(s["trace_id"]) for s in group)]
            roots.sort(key=_start_key)
            target = _target("session", sid, roots[0], group, refs)
            target.output = roots[-1].get("output_value")
            target.trace_id = None
            out.append(target)
        return out
    raise ValueError(f"unknown target kind {kind!r}")


def _target(
    kind: TargetKind,
    target_id: str,
    span: dict[str, Any],
    trace: list[dict[str, Any]],
    refs: Mapping[str, Any],
) -> EvalTarget:
    return EvalTarget(
        kind=kind,
        id=target_id,
        input=span.get("input_value"),
        output=span.get("output_value"),
        expected=refs.get(target_id),
        metadata=_metadata(span),
        span=span,
        trace=trace,
        project=span.get("project"),
        trace_id=span.get("trace_id"),
        span_id=span.get("span_id") if kind == "span" else None,
        session_id=span.get("session_id"),
    )
