"""OpenHands event streams (a JSON list of events) and evaluation output (JSONL, one instance a
line) as spans.

Events are actions (``action``, ``args``) and observations (``observation``, ``content``,
``extras``, and ``cause``: the id of the action they answer).

- Event stream: each user message (``source: user``, ``action: message``) opens a trace under
  an ``AGENT`` root named ``openhands turn`` (input the message, output the agent's last word:
  ``finish`` or its last message); the session is the file's name.
- Evaluation output: one line is one instance and one trace (``openhands run``: input the
  instruction, output the ``git_patch`` of ``test_result``, an ``error`` makes it an error);
  the session is the instance id at the evaluation's output folder.
- A model response (``tool_call_metadata.model_response.id``; one response can make several
  actions) is an ``LLM`` span: model, tokens (``usage``, or the evaluation's ``token_usages``
  for that response: LiteLLM's ``prompt_tokens`` already include cached ones), cache reads and
  writes, ``finish_reason``, and the latency the evaluation recorded. An agent message without
  a tool call is an ``LLM`` span too.
- An action with a tool call is a ``TOOL`` span (``tool.name`` the function called, input its
  ``args``), ended by its observation: a ``run`` with a non-zero exit code or
  ``success: false``, or an ``error`` observation, is an ``ERROR``. An ``error`` observation
  that answers no action (a malformed tool call) is a ``TOOL`` span named ``error``.
- State changes, recalls, the system prompt and empty observations are skipped (counted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    REASONING,
    STOP_REASON,
    Item,
    Malformed,
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
    dumps,
    first_lines,
    iso_ns,
    json_lines,
    load_json,
    raw,
    text_of,
)

SOURCE = "openhands"
_STREAM_HEAD = re.compile(
    rb'^\s*\[\s*\{\s*"id"\s*:\s*\d+\s*,\s*"timestamp"\s*:\s*"[^"]*"\s*,\s*"source"\s*:\s*"'
    rb"(user|agent|environment)\""
)
_EVAL_HEAD = re.compile(rb'^\s*\{\s*"instance_id"\s*:')
_QUIET_ACTIONS = frozenset({"system", "recall", "change_agent_state"})
_QUIET_OBSERVATIONS = frozenset({"agent_state_changed", "null", "recall"})


class OpenHandsReader:
    """OpenHands event streams (``*.json``) and evaluation output (``output.jsonl``)."""

    name = SOURCE

    def sniff(self, path: Path, head: bytes) -> bool:
        if _STREAM_HEAD.match(head):
            return True
        if _EVAL_HEAD.match(head):
            return b'"history"' in head or b'"instruction"' in head
        first = head.lstrip()[:1]
        if first == b"[":
            return _events_like(head)
        return False

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        prefix = stream.read(4096)
        while prefix and not prefix.strip():
            more = stream.read(4096)
            if not more:
                break
            prefix += more
        stream = cast(IO[bytes], _Prefixed(prefix, stream))
        if prefix.lstrip()[:1] == b"[":
            data = load_json(stream, redact)
            if isinstance(data, Malformed):
                yield data
                return
            if not isinstance(data, list):
                yield Malformed(None, "an OpenHands event stream is a JSON list")
                return
            yield from _Stream(path.name.removesuffix(".json"), {}).events(data)
            return
        for entry in json_lines(stream, redact):
            if isinstance(entry, Malformed):
                yield entry
                continue
            line, record = entry
            history = record.get("history")
            if not isinstance(history, list):
                yield Skipped("line without history", line)
                continue
            yield from _instance(path, line, record, history)


class _Prefixed:
    """A stream with its first bytes read already (to see what it holds) put back."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self.prefix = prefix
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        if self.prefix:
            head, self.prefix = self.prefix, b""
            if size < 0:
                return head + self.stream.read()
            return head
        return self.stream.read(size)


def _events_like(head: bytes) -> bool:
    try:
        start = head.index(b"{")
    except ValueError:
        return False
    window = head[start : start + 400]
    return all(key in window for key in (b'"id"', b'"timestamp"', b'"source"')) and (
        b'"action"' in head[start : start + 4096] or b'"observation"' in head[start : start + 4096]
    )


@dataclass(slots=True)
class _Turn:
    trace_id: str
    root_id: str
    start_ns: int
    last_ns: int
    prompt: str | None
    answer: str | None = None
    records: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class _Action:
    event: dict[str, Any]
    start_ns: int
    turn: _Turn


class _Stream:
    """The spans of one list of events (a file, or an instance's history)."""

    def __init__(
        self,
        session: str,
        resource: dict[str, Any],
        *,
        one_trace: _Turn | None = None,
        usages: dict[str, dict[str, Any]] | None = None,
        latencies: dict[str, float] | None = None,
    ) -> None:
        self.session = session
        self.resource = {"service.name": SOURCE, **resource}
        self.one_trace = one_trace
        self.turn: _Turn | None = one_trace
        self.usages = usages or {}
        self.latencies = latencies or {}
        self.pending: dict[int, _Action] = {}
        self.responses: set[str] = set()
        self.previous_ns: int | None = None
        self.line: int | None = None

    def events(self, events: list[Any]) -> Iterator[Item]:
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                yield Skipped("event/not-an-object", self.line)
                continue
            ts = iso_ns(event.get("timestamp"))
            if ts is None:
                ts = self.previous_ns or 0
            yield from self._event(index, event, ts)
            self.previous_ns = ts
        yield from self.close()

    def _open(self, key: str, ts: int, prompt: str | None) -> _Turn:
        turn = _Turn(
            trace_id=trace_id_for(SOURCE, self.session, key),
            root_id=span_id_for(SOURCE, self.session, f"turn:{key}"),
            start_ns=ts,
            last_ns=ts,
            prompt=prompt,
        )
        self.turn = turn
        return turn

    def _current(self, event: dict[str, Any], ts: int) -> _Turn:
        if self.turn is None:
            return self._open(f"event:{event.get('id')}", ts, None)
        return self.turn

    def _event(self, index: int, event: dict[str, Any], ts: int) -> Iterator[Item]:
        action, observation = event.get("action"), event.get("observation")
        source = event.get("source")
        if action == "message" and source == "user":
            text = text_of(as_dict(event.get("args")).get("content")) or text_of(
                event.get("message")
            )
            if self.one_trace is not None:
                turn = self.one_trace
                if turn.prompt is None:
                    turn.prompt = text
            else:
                if self.turn is not None:
                    yield from self._close_turn()
                turn = self._open(f"event:{event.get('id')}", ts, text)
            turn.records.append(event)
            turn.last_ns = max(turn.last_ns, ts)
            return
        if action in _QUIET_ACTIONS or observation in _QUIET_OBSERVATIONS:
            kind = f"{'action' if action else 'observation'}/{action or observation}"
            yield Skipped(kind, self.line)
            return
        turn = self._current(event, ts)
        turn.last_ns = max(turn.last_ns, ts)
        if action is not None:
            yield from self._action(event, ts, turn)
        elif observation is not None:
            yield from self._observation(event, ts, turn)
        else:
            yield Skipped("event/unknown", self.line)

    def _action(self, event: dict[str, Any], ts: int, turn: _Turn) -> Iterator[Item]:
        metadata = as_dict(event.get("tool_call_metadata"))
        response = as_dict(metadata.get("model_response"))
        response_id = response.get("id")
        action = event.get("action")
        if isinstance(response_id, str) and response_id and response_id not in self.responses:
            self.responses.add(response_id)
            yield self._llm(response_id, response, event, ts, turn)
        if action == "message":
            text = text_of(as_dict(event.get("args")).get("content")) or text_of(
                event.get("message")
            )
            turn.answer = text
            if not metadata:
                yield self._message(event, ts, turn, text)
            return
        if action == "finish":
            args = as_dict(event.get("args"))
            turn.answer = (
                text_of(args.get("final_thought")) or text_of(event.get("message")) or turn.answer
            )
        if not metadata and action == "finish":
            return
        self.pending[as_int(event.get("id")) or -1] = _Action(event, ts, turn)
        if action == "finish":  # no observation answers it
            yield from self._tool(self.pending.pop(as_int(event.get("id")) or -1), None, ts)

    def _observation(self, event: dict[str, Any], ts: int, turn: _Turn) -> Iterator[Item]:
        cause = as_int(event.get("cause"))
        action = self.pending.pop(cause, None) if cause is not None else None
        if action is not None:
            yield from self._tool(action, event, ts)
            return
        if event.get("observation") == "error":
            key = f"error:{event.get('id')}"
            content = text_of(event.get("content")) or text_of(event.get("message"))
            attributes: dict[str, Any] = {
                "session.id": self.session,
                "tool.name": "error",
                "output.value": content or "",
                **raw(event),
            }
            yield StepSpan(
                turn.trace_id,
                span_id_for(SOURCE, self.session, key),
                turn.root_id,
                "error",
                "TOOL",
                self.previous_ns if self.previous_ns is not None else ts,
                ts,
                "ERROR",
                first_lines(content) or "error",
                attributes=attributes,
                resource=self.resource,
            )
            return
        yield Skipped(f"observation/{event.get('observation')}/unmatched", self.line)

    def _llm(
        self,
        response_id: str,
        response: dict[str, Any],
        event: dict[str, Any],
        ts: int,
        turn: _Turn,
    ) -> StepSpan:
        usage = as_dict(response.get("usage"))
        measured = self.usages.get(response_id, {})
        attributes: dict[str, Any] = {"session.id": self.session}
        model = response.get("model") or measured.get("model")
        if isinstance(model, str) and model:
            attributes["llm.model_name"] = model
        prompt = as_int(usage.get("prompt_tokens"))
        completion = as_int(usage.get("completion_tokens"))
        if prompt is None:
            prompt = as_int(measured.get("prompt_tokens"))
        if completion is None:
            completion = as_int(measured.get("completion_tokens"))
        cache_read = as_int(usage.get("cache_read_input_tokens"))
        if cache_read is None:
            cache_read = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
        if cache_read is None:
            cache_read = as_int(measured.get("cache_read_tokens"))
        cache_write = as_int(usage.get("cache_creation_input_tokens"))
        if cache_write is None:
            cache_write = as_int(measured.get("cache_write_tokens"))
        reasoning = as_int(as_dict(usage.get("completion_tokens_details")).get("reasoning_tokens"))
        for name, value in (
            ("llm.token_count.prompt", prompt),
            ("llm.token_count.completion", completion),
            ("llm.token_count.total", as_int(usage.get("total_tokens"))),
            (CACHE_READ, cache_read),
            (CACHE_WRITE, cache_write),
            (REASONING, reasoning),
        ):
            if value is not None:
                attributes[name] = value
        choices = response.get("choices")
        choice = as_dict(choices[0]) if isinstance(choices, list) and choices else {}
        if isinstance(choice.get("finish_reason"), str):
            attributes[STOP_REASON] = choice["finish_reason"]
        message = as_dict(choice.get("message"))
        output = text_of(message.get("content")) or ""
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            names = [
                as_dict(as_dict(call).get("function")).get("name") for call in calls
            ]  # fmt: skip
            summary = "tool calls: " + ", ".join(str(name) for name in names)
            output = f"{output}\n\n{summary}" if output else summary
        attributes["output.value"] = output
        start = self.previous_ns if self.previous_ns is not None else ts
        latency = self.latencies.get(response_id)
        if latency is not None:
            attributes["llm.latency_ms"] = round(latency * 1000, 3)
            start = max(ts - int(latency * 1e9), start)
        kept = {key: value for key, value in response.items() if key != "choices"}
        attributes.update(raw({"model_response": kept, "choices": choices}))
        return StepSpan(
            turn.trace_id,
            span_id_for(SOURCE, self.session, f"response:{response_id}"),
            turn.root_id,
            model if isinstance(model, str) and model else "model call",
            "LLM",
            start,
            ts,
            attributes=attributes,
            resource=self.resource,
            line=self.line,
        )

    def _message(self, event: dict[str, Any], ts: int, turn: _Turn, text: str | None) -> StepSpan:
        attributes = {"session.id": self.session, "output.value": text or "", **raw(event)}
        return StepSpan(
            turn.trace_id,
            span_id_for(SOURCE, self.session, f"message:{event.get('id')}"),
            turn.root_id,
            "model call",
            "LLM",
            self.previous_ns if self.previous_ns is not None else ts,
            ts,
            attributes=attributes,
            resource=self.resource,
            line=self.line,
        )

    def _tool(self, action: _Action, result: dict[str, Any] | None, ts: int) -> Iterator[Item]:
        event = action.event
        metadata = as_dict(event.get("tool_call_metadata"))
        name = metadata.get("function_name") or event.get("action") or "action"
        args = {
            key: value
            for key, value in as_dict(event.get("args")).items()
            if key not in ("thought", "translated_ipython_code") and value is not None
        }
        attributes: dict[str, Any] = {
            "session.id": self.session,
            "tool.name": str(name),
            "input.value": dumps(args),
            "input.mime_type": "application/json",
            "openhands.action": text_of(event.get("action")),
        }
        status: Status = "OK"
        message = None
        records: list[Any] = [_without_metadata(event)]
        if result is not None:
            records.append(_without_metadata(result))
            content = text_of(result.get("content"))
            attributes["output.value"] = content or text_of(result.get("message")) or ""
            extras = as_dict(result.get("extras"))
            code = as_int(as_dict(extras.get("metadata")).get("exit_code"))
            if code is not None:
                attributes["process.exit.code"] = code
            if result.get("observation") == "error":
                status, message = "ERROR", first_lines(content) or "error"
            elif (code is not None and code != 0) or result.get("success") is False:
                summary = text_of(result.get("message"))
                status = "ERROR"
                message = first_lines(summary) or (f"exit code {code}" if code else "failed")
        attributes.update(raw(records))
        yield StepSpan(
            action.turn.trace_id,
            span_id_for(SOURCE, self.session, f"action:{event.get('id')}"),
            action.turn.root_id,
            str(name),
            "TOOL",
            action.start_ns,
            ts,
            status,
            message,
            attributes=attributes,
            resource=self.resource,
            line=self.line,
        )

    def _close_turn(self) -> Iterator[Item]:
        for key in list(self.pending):
            action = self.pending.pop(key)
            if action.turn is self.turn:
                yield from self._tool(action, None, action.start_ns)
            else:
                self.pending[key] = action
        turn = self.turn
        self.turn = None
        if turn is None or turn is self.one_trace:
            return
        attributes: dict[str, Any] = {"session.id": self.session}
        if turn.prompt is not None:
            attributes["input.value"] = turn.prompt
        if turn.answer is not None:
            attributes["output.value"] = turn.answer
        attributes.update(raw(turn.records))
        yield StepSpan(
            turn.trace_id,
            turn.root_id,
            None,
            "openhands turn",
            "AGENT",
            turn.start_ns,
            turn.last_ns,
            attributes=attributes,
            resource=self.resource,
            line=self.line,
        )

    def close(self) -> Iterator[Item]:
        if self.turn is not None:
            yield from self._close_turn()
        for action in list(self.pending.values()):
            yield from self._tool(action, None, action.start_ns)
        self.pending.clear()


def _without_metadata(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its copy of the model response (kept once, on the LLM span)."""
    return {key: value for key, value in event.items() if key not in ("tool_call_metadata",
                                                                      "llm_metrics")}  # fmt: skip


def _instance(path: Path, line: int, record: dict[str, Any], history: list[Any]) -> Iterator[Item]:
    instance = record.get("instance_id")
    metadata = as_dict(record.get("metadata"))
    run = metadata.get("eval_output_dir") or path.name.split(".")[0]
    session = f"{instance}@{str(run).rstrip('/').rsplit('/', 1)[-1]}"
    info = as_dict(record.get("instance"))
    resource: dict[str, Any] = {}
    if isinstance(info.get("base_commit"), str):
        resource["vcs.ref.head.revision"] = info["base_commit"]
    if isinstance(info.get("repo"), str):
        resource["vcs.repository.name"] = info["repo"]
    if isinstance(metadata.get("git_commit"), str):
        resource["openhands.git_commit"] = metadata["git_commit"]
    metrics = as_dict(record.get("metrics"))
    usages = {
        str(u.get("response_id")): u
        for u in metrics.get("token_usages") or []
        if isinstance(u, dict) and u.get("response_id")
    }
    latencies = {
        str(u.get("response_id")): float(u["latency"])
        for u in metrics.get("response_latencies") or []
        if isinstance(u, dict)
        and u.get("response_id")
        and isinstance(u.get("latency"), int | float)
    }
    times = [
        ns for e in history if isinstance(e, dict) for ns in [iso_ns(e.get("timestamp"))] if ns
    ]
    start = min(times) if times else 0
    end = max(times) if times else start
    key = "instance"
    turn = _Turn(
        trace_id=trace_id_for(SOURCE, session, key),
        root_id=span_id_for(SOURCE, session, f"turn:{key}"),
        start_ns=start,
        last_ns=end,
        prompt=text_of(record.get("instruction")),
    )
    stream = _Stream(session, resource, one_trace=turn, usages=usages, latencies=latencies)
    stream.line = line
    yield from stream.events(history)
    attributes: dict[str, Any] = {"session.id": session}
    if turn.prompt is not None:
        attributes["input.value"] = turn.prompt
    test_result = as_dict(record.get("test_result"))
    patch = text_of(test_result.get("git_patch"))
    if patch is not None:
        attributes["output.value"] = patch
    if turn.answer is not None:
        attributes["openhands.final_message"] = turn.answer
    attributes["openhands.instance_id"] = str(instance)
    cost = metrics.get("accumulated_cost")
    if isinstance(cost, int | float):
        attributes["openhands.cost"] = cost
    report = as_dict(test_result.get("report"))
    if isinstance(report.get("resolved"), bool):
        attributes["openhands.resolved"] = report["resolved"]
    for name in ("agent_class", "max_iterations"):
        if metadata.get(name) is not None:
            attributes[f"openhands.{name}"] = metadata[name]
    error = text_of(record.get("error"))
    status: Status = "ERROR" if error else "OK"
    kept = {k: v for k, v in record.items() if k not in ("history", "instance", "metrics")}
    attributes.update(raw(kept))
    yield StepSpan(
        turn.trace_id,
        turn.root_id,
        None,
        "openhands run",
        "AGENT",
        start,
        end,
        status,
        first_lines(error),
        attributes=attributes,
        resource=stream.resource,
        line=line,
    )
