"""Claude Code's own telemetry (its OTLP log events) as step spans of the session they belong to.

With ``CLAUDE_CODE_ENABLE_TELEMETRY=1`` and ``OTEL_LOGS_EXPORTER=otlp``, Claude Code exports one
log record per event: the body (or the ``event.name`` attribute, or the record's
``event_name``) names it, ``claude_code.<name>``; attributes carry ``session.id``,
``prompt.id`` (newer versions), ``event.sequence`` and ``event.timestamp`` and the event's own
values. The mapping follows the transcript readers (:mod:`traceproof.trajectories.common`):

- one trace per user prompt (``prompt.id``; without it, the events after a ``user_prompt`` of
  the session until the next one, by time), under an ``AGENT`` root named ``claude-code turn``
  that holds the prompt (``prompt``, sent with ``OTEL_LOG_USER_PROMPTS=1``);
- ``api_request`` → ``LLM`` span ending at the event's time and starting ``duration_ms``
  before it: model, tokens (prompt tokens include cache reads and writes, as in transcripts),
  ``llm.cost.total`` from ``cost_usd``; ``api_error`` → ``LLM`` span with status ERROR and the
  error as its message;
- ``tool_result`` → ``TOOL`` span (``tool_input`` as ``input.value``, else ``tool_parameters``;
  ``success`` false → ERROR with ``error``); ``tool_decision`` with ``decision: reject`` →
  ``TOOL`` span with status ERROR (the tool never ran). Accepted decisions add nothing.

Other ``claude_code.*`` events (``hook_execution_complete``, ``mcp_server_connection``…) are
read and not stored. Ids are derived from the session and the event's sequence number and
time (a tool call's from its ``tool_use_id``), so an export sent again adds nothing. The root
is written with the first request that holds an event of its prompt and never rewritten (a
span already stored is skipped): its end is the last event of that request (the trace's own
end follows every span). The export carries no tool output, so a tool's outcome is ``ok`` or
``error``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from traceproof.trajectories.actions import ActionRules, label_trace
from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    RAW,
    STEP,
    StepSpan,
    span_id_for,
    trace_id_for,
)

#: ``trajectory.source`` of these spans.
SOURCE = "claude_telemetry"
#: The root's attribute naming its prompt (``prompt.id``, else the ``user_prompt`` event's
#: sequence number and time), by which a later request's events without ``prompt.id`` find
#: their prompt.
PROMPT_KEY = "claude_code.prompt_key"
#: The events that become spans (or roots).
MAPPED = frozenset({"user_prompt", "api_request", "api_error", "tool_result", "tool_decision"})
#: The prompt of events that precede every known prompt of their session.
UNPROMPTED = "unprompted"

#: ``(session, time_ns) -> prompt key``: the latest prompt of a session at or before a time,
#: from what is already stored (None when there is none).
PromptLookup = Callable[[str, int], str | None]


class NotStored(ValueError):
    """A Claude Code event that cannot be placed (no ``session.id``, no time): rejected."""


@dataclass(slots=True)
class TelemetryEvent:
    name: str
    session: str
    prompt_id: str | None
    sequence: int | None
    time_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """What names this event in its session, the same on every export: its sequence number
        and its time (a sequence may start again when a session is resumed)."""
        return f"{self.name}:{self.sequence if self.sequence is not None else '-'}:{self.time_ns}"


def event_name(body: Any, attributes: Mapping[str, Any], record_name: str | None) -> str | None:
    """The Claude Code event a log record is (``tool_result``…), or None when it is not one."""
    for candidate in (record_name, attributes.get("event.name"), body):
        if isinstance(candidate, str) and candidate.startswith("claude_code."):
            return candidate.removeprefix("claude_code.")
    return None


def parse_event(
    name: str,
    attributes: dict[str, Any],
    resource: dict[str, Any],
    time_ns: int,
    observed_ns: int,
) -> TelemetryEvent:
    """One event; raises :class:`NotStored` when it names no session or no time."""
    session = attributes.get("session.id") or resource.get("session.id")
    if not isinstance(session, str) or not session:
        raise NotStored(f"claude_code.{name} has no session.id attribute")
    when = _iso_ns(attributes.get("event.timestamp")) or time_ns or observed_ns
    if not when:
        raise NotStored(f"claude_code.{name} has no time (event.timestamp or timeUnixNano)")
    prompt = attributes.get("prompt.id")
    return TelemetryEvent(
        name=name,
        session=session,
        prompt_id=prompt if isinstance(prompt, str) and prompt else None,
        sequence=_int(attributes.get("event.sequence")),
        time_ns=when,
        attributes=attributes,
        resource=resource,
    )


def telemetry_spans(
    events: Iterable[TelemetryEvent],
    lookup: PromptLookup | None = None,
    rules: ActionRules | None = None,
) -> list[StepSpan]:
    """The spans of ``events`` (one request's), labelled like imported transcripts."""
    by_session: dict[str, list[TelemetryEvent]] = {}
    for event in events:
        if event.name in MAPPED:
            by_session.setdefault(event.session, []).append(event)
    spans: list[StepSpan] = []
    for session, session_events in by_session.items():
        session_events.sort(key=lambda e: (e.time_ns, e.sequence if e.sequence is not None else -1))
        prompts: dict[str, list[TelemetryEvent]] = {}
        current: str | None = None
        for event in session_events:
            if event.name == "user_prompt":
                current = event.prompt_id or event.ident
                key = current
            elif event.prompt_id:
                key = event.prompt_id
            else:
                if current is None:
                    current = (lookup(session, event.time_ns) if lookup else None) or UNPROMPTED
                key = current
            prompts.setdefault(key, []).append(event)
        for key, members in prompts.items():
            trace = _prompt_spans(session, key, members)
            label_trace(trace, rules)
            for span in trace:
                # Steps of one prompt may arrive in several requests: numbered per request they
                # would repeat, so these are ordered by time instead.
                span.attributes.pop(STEP, None)
            spans.extend(trace)
    return spans


def _prompt_spans(session: str, key: str, events: list[TelemetryEvent]) -> list[StepSpan]:
    trace_id = trace_id_for(SOURCE, session, key)
    root_id = span_id_for(SOURCE, session, f"prompt:{key}")
    steps: list[StepSpan] = []
    prompt: TelemetryEvent | None = None
    for event in events:
        if event.name == "user_prompt":
            prompt = prompt or event
            continue
        step = _step(event, trace_id, root_id)
        if step is not None:
            steps.append(step)
    first = prompt or events[0]
    start = min([first.time_ns] + [s.start_ns for s in steps])
    end = max([first.time_ns] + [s.end_ns for s in steps])
    attributes: dict[str, Any] = {"session.id": session, PROMPT_KEY: key}
    _common(attributes, first)
    if prompt is not None:
        text = prompt.attributes.get("prompt")
        if isinstance(text, str):
            attributes["input.value"] = text
        length = _int(prompt.attributes.get("prompt_length"))
        if length is not None:
            attributes["claude_code.prompt_length"] = length
        attributes[RAW] = _raw(prompt)
    if first.prompt_id:
        attributes["claude_code.prompt.id"] = first.prompt_id
    resource = _resource(first)
    root = StepSpan(
        trace_id, root_id, None, "claude-code turn", "AGENT", start, end,
        attributes=attributes, resource=resource,
    )  # fmt: skip
    for step in steps:
        step.resource = resource
    return [root, *steps]


def _step(event: TelemetryEvent, trace_id: str, parent: str) -> StepSpan | None:
    attrs = event.attributes
    if event.name in ("api_request", "api_error"):
        return _llm(event, trace_id, parent)
    if event.name == "tool_decision" and str(attrs.get("decision", "")).lower() != "reject":
        return None
    return _tool(event, trace_id, parent)


def _llm(event: TelemetryEvent, trace_id: str, parent: str) -> StepSpan:
    attrs = event.attributes
    attributes: dict[str, Any] = {"session.id": event.session, "llm.provider": "anthropic"}
    _common(attributes, event)
    if isinstance(attrs.get("model"), str):
        attributes["llm.model_name"] = attrs["model"]
    status: Any = "OK"
    message = None
    if event.name == "api_request":
        fresh = _int(attrs.get("input_tokens")) or 0
        read = _int(attrs.get("cache_read_tokens")) or 0
        write = _int(attrs.get("cache_creation_tokens")) or 0
        completion = _int(attrs.get("output_tokens")) or 0
        attributes.update({
            "llm.token_count.prompt": fresh + read + write,
            "llm.token_count.completion": completion,
            "llm.token_count.total": fresh + read + write + completion,
            CACHE_READ: read,
            CACHE_WRITE: write,
        })  # fmt: skip
        cost = _float(attrs.get("cost_usd"))
        if cost is not None:
            attributes["llm.cost.total"] = cost
    else:
        status = "ERROR"
        message = str(attrs.get("error") or "API error")
        code = _int(attrs.get("status_code"))
        if code is not None:
            attributes["http.response.status_code"] = code
    for name in ("request_id", "query_source", "speed", "attempt"):
        if attrs.get(name) is not None:
            attributes[f"llm.{name}" if name == "request_id" else f"claude_code.{name}"] = attrs[
                name
            ]
    attributes[RAW] = _raw(event)
    end = event.time_ns
    start = end - (_int(attrs.get("duration_ms")) or 0) * 1_000_000
    return StepSpan(
        trace_id,
        span_id_for(SOURCE, event.session, f"event:{event.ident}"),
        parent,
        "claude.messages" if event.name == "api_request" else "claude.messages error",
        "LLM",
        start,
        end,
        status,
        message,
        attributes,
    )


def _tool(event: TelemetryEvent, trace_id: str, parent: str) -> StepSpan:
    attrs = event.attributes
    name = str(attrs.get("tool_name") or "tool")
    call_id = attrs.get("tool_use_id") if isinstance(attrs.get("tool_use_id"), str) else None
    attributes: dict[str, Any] = {"session.id": event.session, "tool.name": name}
    _common(attributes, event)
    arguments = _arguments(name, attrs)
    if arguments is not None:
        attributes["input.value"] = arguments
        attributes["input.mime_type"] = "application/json"
    if call_id:
        attributes["tool.call_id"] = call_id
    for key in ("decision", "decision_type", "decision_source", "source", "mcp_server_scope"):
        if isinstance(attrs.get(key), str):
            attributes[f"claude_code.{key}"] = attrs[key]
    size = _int(attrs.get("tool_result_size_bytes"))
    if size is not None:
        attributes["claude_code.tool_result_size_bytes"] = size
    status: Any = "OK"
    message = None
    if event.name == "tool_decision":
        status = "ERROR"
        message = f"tool call rejected ({attrs.get('source') or 'user'})"
    elif _bool(attrs.get("success")) is False:
        status = "ERROR"
        message = str(attrs.get("error") or attrs.get("error_type") or "tool call failed")
    attributes[RAW] = _raw(event)
    end = event.time_ns
    start = end - (_int(attrs.get("duration_ms")) or 0) * 1_000_000
    key = f"tool:{call_id}" if call_id else f"event:{event.ident}"
    return StepSpan(
        trace_id, span_id_for(SOURCE, event.session, key), parent, name, "TOOL", start, end,
        status, message, attributes,
    )  # fmt: skip


def _arguments(tool: str, attrs: Mapping[str, Any]) -> str | None:
    """The call's arguments as JSON text: ``tool_input`` when sent (``OTEL_LOG_TOOL_DETAILS``),
    else ``tool_parameters`` (Bash's ``full_command`` as ``command``, so it is classified by
    its command like a transcript's)."""
    raw = attrs.get("tool_input")
    if isinstance(raw, str) and raw.strip():
        return raw
    if isinstance(raw, dict):
        return orjson.dumps(raw).decode()
    params = attrs.get("tool_parameters")
    if isinstance(params, str):
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            return params or None
    if not isinstance(params, dict):
        return None
    command = params.get("full_command") or params.get("bash_command")
    if isinstance(command, str) and "command" not in params:
        params = {"command": command, **params}
    return orjson.dumps(params).decode()


def _common(attributes: dict[str, Any], event: TelemetryEvent) -> None:
    attrs = event.attributes
    for key in ("user.id", "organization.id", "terminal.type"):
        if isinstance(attrs.get(key), str):
            attributes[key] = attrs[key]
    if event.sequence is not None:
        attributes["claude_code.event.sequence"] = event.sequence


def _resource(event: TelemetryEvent) -> dict[str, Any]:
    resource = dict(event.resource)
    version = event.attributes.get("app.version")
    if isinstance(version, str) and "service.version" not in resource:
        resource["service.version"] = version
    resource.setdefault("service.name", "claude-code")
    return resource


def _raw(event: TelemetryEvent) -> str:
    return orjson.dumps(
        {"event": f"claude_code.{event.name}", "attributes": event.attributes},
        default=str,
    ).decode()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value)) if value.strip() else None
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _iso_ns(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - datetime(1970, 1, 1, tzinfo=UTC)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000
