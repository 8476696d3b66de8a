"""One Inspect AI sample (an ``EvalSample`` as the log stores it) as spans and annotations.

A sample in one epoch is a trace under an ``AGENT`` root: the sample's input, target, output and
metadata; its error (``sample.error``) makes the root an error. Each ``model`` event is an
``LLM`` span (model, tokens with cache reads and writes, stop reason, the completion and the
tool calls it asked for), each ``tool`` event a ``TOOL`` span (function, arguments, result; its
``error`` or ``failed`` makes it an error). Every other event (spans of solvers, state changes,
scores, logging...) is skipped and counted by type. The sample's scores become annotations of
its trace: see :func:`score_annotations`.

Newer logs keep each model call's input messages once, in ``events_data.messages``, and refer
to them with ``input_refs`` (``[start, end)`` ranges); strings may be ``attachment://<hash>``
references to the sample's ``attachments``. Both are resolved where the reader uses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    REASONING,
    STOP_REASON,
    Item,
    Redact,
    Skipped,
    Status,
    StepSpan,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.records import (
    as_dict,
    as_int,
    clip,
    dumps,
    first_lines,
    iso_ns,
    raw,
    text_of,
)

SOURCE = "inspect"
#: Inspect's ``CORRECT``, ``INCORRECT``, ``PARTIAL`` and ``NOANSWER`` values: label, score.
LETTER_VALUES = {
    "C": ("correct", 1.0),
    "I": ("incorrect", 0.0),
    "P": ("partial", 0.5),
    "N": ("noanswer", 0.0),
}
#: Who wrote the annotations made from scores.
ANNOTATOR = "inspect_ai"
_ATTACHMENT = "attachment://"
_MS = 1_000_000


@dataclass(slots=True)
class EvalHeader:
    """What every sample's spans take from the log's ``eval`` header."""

    session: str
    task: str
    model: str | None
    created_ns: int
    resource: dict[str, Any]
    status: str | None = None


def eval_header(log: dict[str, Any]) -> EvalHeader:
    """The header of a log (its ``eval`` object; ``status`` beside it when the log has it)."""
    spec = as_dict(log.get("eval"))
    eval_id = text_of(spec.get("eval_id")) or text_of(spec.get("task_id")) or "unknown"
    task = text_of(spec.get("task")) or "task"
    packages = as_dict(spec.get("packages"))
    resource: dict[str, Any] = {"service.name": "inspect_ai", "inspect.task": task}
    if packages.get("inspect_ai"):
        resource["service.version"] = str(packages["inspect_ai"])
    for key, name in (("run_id", "inspect.run_id"), ("eval_id", "inspect.eval_id")):
        if spec.get(key):
            resource[name] = str(spec[key])
    revision = as_dict(spec.get("revision"))
    if revision.get("commit"):
        resource["vcs.ref.head.revision"] = str(revision["commit"])
    return EvalHeader(
        session=eval_id,
        task=task,
        model=text_of(spec.get("model")),
        created_ns=iso_ns(spec.get("created")) or 0,
        resource=resource,
        status=text_of(log.get("status")),
    )


#: Sample fields the spans do not read whole: read where used (the shared messages and
#: attachments, redacted then), or not at all (the final conversation, the store).
_HEAVY = ("events", "events_data", "messages", "store", "attachments")
#: Event fields no span keeps (tool definitions, the provider's raw request, nested events).
_UNUSED = ("tools", "call", "events")


def prepared(sample: dict[str, Any], redact: Redact) -> dict[str, Any]:
    """The sample, redacted where the spans and annotations read it: its own fields, its model
    and tool events (without what no span keeps, a model call's inline input cut to its last
    message). Other events are only counted, never stored, so they are left as they are."""
    light = {k: redact.value(v) for k, v in sample.items() if k not in _HEAVY}
    events = sample.get("events")
    if isinstance(events, list):
        light["events"] = [_prepared_event(event, redact) for event in events]
    for key in ("events_data", "attachments"):
        if key in sample:
            light[key] = sample[key]
    return light


def _prepared_event(event: Any, redact: Redact) -> Any:
    if not isinstance(event, dict) or event.get("event") not in ("model", "tool"):
        return event
    kept = {k: v for k, v in event.items() if k not in (*_UNUSED, "input")}
    if isinstance(event.get("input"), list) and event["input"]:
        kept["input"] = event["input"][-1:]
    found: dict[str, Any] = redact.value(kept)
    return found


def sample_items(header: EvalHeader, sample: dict[str, Any], redact: Redact) -> Iterator[Item]:
    """The spans of one sample (:func:`prepared` first), root first, then a :class:`Skipped`
    per event not read."""
    key = f"{text_of(sample.get('id'))}:{as_int(sample.get('epoch')) or 1}"
    trace = trace_id_for(SOURCE, header.session, key)
    root_id = span_id_for(SOURCE, header.session, f"{key}:root")
    refs = _Refs(sample, redact)
    # An event without a timestamp starts where the one before it ended.
    started = iso_ns(sample.get("started_at")) or header.created_ns
    steps: list[StepSpan] = []
    skipped: list[str] = []
    events: list[Any] = sample["events"] if isinstance(sample.get("events"), list) else []
    for index, event in enumerate(events):
        kind = event.get("event") if isinstance(event, dict) else None
        if kind not in ("model", "tool"):
            skipped.append(f"event/{kind if isinstance(kind, str) else 'not-an-event'}")
            continue
        span_id = span_id_for(SOURCE, header.session, f"{key}:{event.get('uuid') or index}")
        make = _llm if kind == "model" else _tool
        step = make(event, refs, steps[-1].end_ns if steps else started)
        step.trace_id, step.span_id, step.parent_span_id = trace, span_id, root_id
        step.attributes["session.id"] = header.session
        step.resource = header.resource
        steps.append(step)
    steps.sort(key=lambda s: s.start_ns)
    yield _root(header, sample, trace, root_id, steps, refs)
    yield from steps
    for kind in skipped:
        yield Skipped(kind)


def _root(
    header: EvalHeader,
    sample: dict[str, Any],
    trace: str,
    root_id: str,
    steps: list[StepSpan],
    refs: _Refs,
) -> StepSpan:
    start = iso_ns(sample.get("started_at"))
    end = iso_ns(sample.get("completed_at"))
    if start is None:
        start = min((s.start_ns for s in steps), default=header.created_ns)
    if end is None or end < start:
        end = max((s.end_ns for s in steps), default=start)
    output = as_dict(sample.get("output"))
    attributes: dict[str, Any] = {
        "session.id": header.session,
        "input.value": _text(refs.resolve(sample.get("input"))),
        "output.value": _text(refs.resolve(output.get("completion"))),
        "inspect.sample.id": text_of(sample.get("id")),
        "inspect.sample.epoch": as_int(sample.get("epoch")) or 1,
        "inspect.target": _text(sample.get("target")),
    }
    if isinstance(sample.get("metadata"), dict) and sample["metadata"]:
        attributes["metadata"] = dumps(sample["metadata"])
    if header.model:
        attributes["llm.model_name"] = header.model
    if header.status:
        attributes["inspect.eval.status"] = header.status
    for name in ("total_time", "working_time"):
        if isinstance(sample.get(name), int | float):
            attributes[f"inspect.{name}"] = float(sample[name])
    limit = sample.get("limit")
    if isinstance(limit, dict) and limit.get("type"):
        attributes["inspect.limit"] = str(limit["type"])
    kept = {k: v for k, v in sample.items() if k not in _BULKY}
    attributes |= raw(kept)
    error = sample.get("error")
    status: Status = "OK"
    message: str | None = None
    if isinstance(error, dict) or (isinstance(error, str) and error):
        status = "ERROR"
        text = error.get("message") if isinstance(error, dict) else error
        message = first_lines(text_of(text)) or "the sample failed"
    return StepSpan(
        trace_id=trace,
        span_id=root_id,
        parent_span_id=None,
        name=f"{header.task} sample {text_of(sample.get('id'))}",
        kind="AGENT",
        start_ns=start,
        end_ns=end,
        status=status,
        status_message=message,
        attributes={k: v for k, v in attributes.items() if v is not None},
        resource=header.resource,
    )


#: Sample fields left out of the root's raw record (the spans and annotations hold them).
_BULKY = ("events", "messages", "events_data", "attachments", "store", "scores", "output")


def _times(event: dict[str, Any], default_ns: int) -> tuple[int, int]:
    start = iso_ns(event.get("timestamp")) or default_ns
    end = iso_ns(event.get("completed"))
    if end is None:
        seconds = event.get("working_time")
        end = start + int(seconds * 1e9) if isinstance(seconds, int | float) else start + _MS
    return start, max(end, start)


def _llm(event: dict[str, Any], refs: _Refs, default_ns: int) -> StepSpan:
    start, end = _times(event, default_ns)
    output = as_dict(event.get("output"))
    choices = output.get("choices") if isinstance(output.get("choices"), list) else []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = as_dict(choice.get("message"))
    summary = _text(refs.resolve(message.get("content"))) or ""
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            arguments = dumps(refs.resolve(call.get("arguments")))
            summary += ("\n" if summary else "") + f"tool_call {call.get('function')}: "
            summary += arguments[:200]
    usage = as_dict(output.get("usage"))
    fresh = as_int(usage.get("input_tokens")) or 0
    cache_read = as_int(usage.get("input_tokens_cache_read")) or 0
    cache_write = as_int(usage.get("input_tokens_cache_write")) or 0
    completion = as_int(usage.get("output_tokens")) or 0
    prompt = fresh + cache_read + cache_write
    attributes: dict[str, Any] = {"output.value": summary}
    if usage:
        attributes |= {
            "llm.token_count.prompt": prompt,
            "llm.token_count.completion": completion,
            "llm.token_count.total": as_int(usage.get("total_tokens")) or prompt + completion,
            CACHE_READ: cache_read,
            CACHE_WRITE: cache_write,
        }
        if as_int(usage.get("reasoning_tokens")):
            attributes[REASONING] = as_int(usage.get("reasoning_tokens"))
    model = text_of(event.get("model")) or text_of(output.get("model"))
    if model:
        attributes["llm.model_name"] = model
        if "/" in model:
            attributes["llm.provider"] = model.split("/", 1)[0]
    if choice.get("stop_reason"):
        attributes[STOP_REASON] = str(choice["stop_reason"])
    last = refs.last_input(event)
    if last is not None:
        attributes["input.value"] = last
    attributes |= raw(_light(event))
    error = event.get("error")
    return StepSpan(
        trace_id="",
        span_id="",
        parent_span_id=None,
        name=f"model {model or ''}".strip(),
        kind="LLM",
        start_ns=start,
        end_ns=end,
        status="ERROR" if error else "OK",
        status_message=first_lines(text_of(error)) if error else None,
        attributes=attributes,
    )


def _tool(event: dict[str, Any], refs: _Refs, default_ns: int) -> StepSpan:
    start, end = _times(event, default_ns)
    function = text_of(event.get("function")) or "tool"
    arguments = refs.resolve(event.get("arguments"))
    attributes: dict[str, Any] = {
        "tool.name": function,
        "input.value": dumps(arguments if arguments is not None else {}),
        "output.value": _text(refs.resolve(event.get("result"))) or "",
    }
    if event.get("id"):
        attributes["tool_call.id"] = str(event["id"])
    attributes |= raw(_light(event))
    error = event.get("error")
    status: Status = "OK"
    message: str | None = None
    if isinstance(error, dict) or error:
        status = "ERROR"
        text = error.get("message") if isinstance(error, dict) else error
        message = first_lines(text_of(text)) or "the tool call failed"
    elif event.get("failed"):
        status, message = "ERROR", "the tool call failed"
    return StepSpan(
        trace_id="",
        span_id="",
        parent_span_id=None,
        name=function,
        kind="TOOL",
        start_ns=start,
        end_ns=end,
        status=status,
        status_message=message,
        attributes=attributes,
    )


def _light(event: dict[str, Any]) -> dict[str, Any]:
    """An event for ``trajectory.raw`` without what every call repeats (its tool
    definitions, the whole conversation so far)."""
    return {k: v for k, v in event.items() if k not in (*_UNUSED, "input")}


def _text(value: Any) -> str | None:
    """Text of a message content: a string, or the text parts of a content list."""
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("role"):
                parts.append(f"{part['role']}: {_text(part.get('content')) or ''}")
            elif isinstance(part, str):
                parts.append(part)
        if parts:
            return "\n".join(parts)
    return text_of(value)


class _Refs:
    """A sample's shared messages (``events_data``) and ``attachments``."""

    def __init__(self, sample: dict[str, Any], redact: Redact) -> None:
        self.redact = redact
        data = as_dict(sample.get("events_data"))
        messages = data.get("messages")
        self.messages: list[Any] = messages if isinstance(messages, list) else []
        found = sample.get("attachments")
        self.attachments: dict[str, Any] = found if isinstance(found, dict) else {}

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """``value`` with ``attachment://`` strings replaced by what they refer to (redacted)."""
        if isinstance(value, str):
            if value.startswith(_ATTACHMENT):
                return self.redact.value(self.attachments.get(value[len(_ATTACHMENT) :], value))
            return value
        if depth > 20 or not self.attachments:
            return value
        if isinstance(value, list):
            return [self.resolve(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v, depth + 1) for k, v in value.items()}
        return value

    def last_input(self, event: dict[str, Any]) -> str | None:
        """The last message a model call was given, as ``role: text`` (the whole input is
        every message before it, kept once in the log, not on every span)."""
        messages = event.get("input") if isinstance(event.get("input"), list) else []
        last: Any = messages[-1] if messages else None
        if last is None:
            ranges = event.get("input_refs")
            if isinstance(ranges, list) and ranges:
                end = ranges[-1][1] if isinstance(ranges[-1], list) and ranges[-1] else None
                if isinstance(end, int) and 0 < end <= len(self.messages):
                    last = self.redact.value(self.messages[end - 1])
        if not isinstance(last, dict):
            return None
        text = _text(self.resolve(last.get("content"))) or ""
        return clip(f"{last.get('role', 'user')}: {text}", 64 * 1024)


def score_annotations(header: EvalHeader, sample: dict[str, Any]) -> list[AnnotationInput]:
    """The sample's scores as annotations of its trace, one per scorer (``name``: the
    scorer's), annotator ``inspect_ai`` (kind ``CODE``).

    A number is the score; a bool a ``true``/``false`` label with score 1/0; Inspect's ``C``,
    ``I``, ``P``, ``N`` the labels ``correct``, ``incorrect``, ``partial``, ``noanswer`` with
    scores 1, 0, 0.5, 0; another string the label. A dict value gives one annotation per key,
    named ``<scorer>/<key>``; a list one per index. The answer, the raw value and the score's
    metadata go in the annotation's metadata, its explanation in the explanation."""
    scores = sample.get("scores")
    if not isinstance(scores, dict):
        return []
    key = f"{text_of(sample.get('id'))}:{as_int(sample.get('epoch')) or 1}"
    trace = trace_id_for(SOURCE, header.session, key)
    found: list[AnnotationInput] = []
    for scorer, score in scores.items():
        if not isinstance(score, dict):
            continue
        value = score.get("value")
        parts: list[tuple[str, Any]]
        if isinstance(value, dict):
            parts = [(f"{scorer}/{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            parts = [(f"{scorer}/{i}", v) for i, v in enumerate(value)]
        else:
            parts = [(str(scorer), value)]
        for name, part in parts:
            label, number = _value(part)
            metadata: dict[str, Any] = {"value": part}
            if score.get("answer") is not None:
                metadata["answer"] = score["answer"]
            if isinstance(score.get("metadata"), dict) and score["metadata"]:
                metadata["metadata"] = score["metadata"]
            found.append(
                AnnotationInput(
                    target_kind=TargetKind.TRACE,
                    target_id=trace,
                    name=name,
                    label=label,
                    score=number,
                    explanation=text_of(score.get("explanation")),
                    metadata=metadata,
                    annotator_kind=AnnotatorKind.CODE,
                    annotator=ANNOTATOR,
                )
            )
    return found


def _value(value: Any) -> tuple[str | None, float | None]:
    if isinstance(value, bool):
        return ("true" if value else "false"), float(value)
    if isinstance(value, int | float):
        return None, float(value)
    if isinstance(value, str):
        if value in LETTER_VALUES:
            return LETTER_VALUES[value]
        return value or None, None
    if value is None:
        return None, None
    return text_of(value), None
