"""Codex CLI rollouts (``sessions/YYYY/MM/DD/rollout-*.jsonl``) as spans.

The two line formats (wrapped ``{"timestamp", "type", "payload"}`` lines, and the older
unwrapped response items with no timestamps and no events) are in ``codex_records``; this
module is the state machine over them.

- A turn (``event_msg/task_started`` to ``task_complete``, keyed by its ``turn_id``) is a trace
  under an ``AGENT`` root named ``codex turn``: input the user's prompt
  (``event_msg/user_message``), output the final answer. ``turn_aborted`` or an
  ``event_msg/error`` makes the root an error. Older files split turns at user messages that
  are not the injected ``<environment_context>`` / ``<user_instructions>`` / ``AGENTS.md``.
- A model call is the run of model output items (reasoning, assistant messages, tool calls)
  closed by the next ``event_msg/token_count``: an ``LLM`` span with the turn's model and the
  call's ``last_token_usage`` (OpenAI's ``input_tokens`` already include the cached ones).
  Older files have no token counts: a model call ends at the next tool output or user message.
- A tool call is a ``TOOL`` span under the turn's root, ended by its output and, for commands
  and patches, by ``exec_command_end`` / ``patch_apply_end`` (``codex_tools``).
- ``compacted`` is an ``LLM`` span named ``compaction`` (its ``replacement_history`` is not new
  activity and makes no spans).

Resource: ``service.name`` ``codex``, ``service.version`` (CLI version), ``process.cwd``,
``vcs.repository.ref.name`` (branch), ``vcs.repository.url.full``, ``vcs.ref.head.revision``.
Every span keeps the records it was made of in ``trajectory.raw``. A turn still open at the
end of the file (no ``task_complete``, last record younger than the idle time) gets no root
and keeps its unfinished calls for a later import of the grown file. A read of a wrapped rollout
ends with a :class:`~traceproof.trajectories.common.Resume` at the first line of the turn still
open (or after the last turn), keeping the ``session_meta`` line; older unwrapped rollouts, whose
times are counted from the first line, are read from the start each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from traceproof.trajectories.codex_records import (
    CWD,
    INJECTED,
    ITEM_TYPES,
    OUTPUT_TYPES,
    SESSION_IN_NAME,
    SOURCE,
    Call,
    Tool,
    Turn,
    content_text,
    looks_like_rollout,
    meta_resource,
    token_counts,
    unwrap,
)
from traceproof.trajectories.codex_tools import ToolSpans
from traceproof.trajectories.common import (
    STOP_REASON,
    Item,
    Malformed,
    Redact,
    Resume,
    Skipped,
    StepSpan,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.records import (
    TIME_ESTIMATED,
    Clock,
    json_lines,
    raw,
    text_of,
)


class CodexReader:
    """Codex rollouts, wrapped and unwrapped (``.jsonl.zst`` arrives decompressed)."""

    name = SOURCE

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_rollout(path, head)

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        return _Rollout(path, self.clock).read(stream, redact)


class _Rollout(ToolSpans):
    """One file's reading state."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.clock = clock
        found = SESSION_IN_NAME.search(path.name)
        self.session = found.group(1) if found else path.name.split(".")[0]
        self.resource: dict[str, Any] = {"service.name": SOURCE}
        self.provider: str | None = None
        self.model: str | None = None
        self.wrapped = False
        self.last_ns = 0
        self.turn: Turn | None = None
        self.call: Call | None = None
        self.tools: dict[str, Tool] = {}
        self.pending_search: tuple[str | None, str] | None = None
        self.prev_ns: int | None = None
        self.meta_seen = False
        self.meta_line: int | None = None
        self.last_line = 0

    # -- reading -------------------------------------------------------------------------

    def read(self, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        for entry in json_lines(stream, redact):
            if isinstance(entry, Malformed):
                yield entry
                continue
            line, record = entry
            self.last_line = line
            yield from self._record(line, record)
        turn = self.turn
        resume = turn.line if turn is not None and turn.line is not None else self.last_line + 1
        held = turn is not None and self.wrapped and not self.clock.is_idle(turn.last_ns)
        # Spans still to come start no earlier than the last record (a model call starts at the
        # record before its first output).
        pending = [t.start_ns for t in self.tools.values()] + [self.prev_ns or self.last_ns]
        if self.call is not None:
            pending.append(self.call.start_ns)
        if turn is not None and not held:
            yield from self._close_turn(turn.last_ns)
        if self.wrapped:
            keep = self.meta_line if self.meta_line is not None and self.meta_line < resume else 0
            yield Resume(
                resume,
                (keep,) if keep else (),
                open=held,
                trace_id=turn.trace_id if turn is not None else None,
                pending_ns=min(pending) if held and pending else None,
            )

    def _record(self, line: int, record: dict[str, Any]) -> Iterator[Item]:
        found = unwrap(record)
        if isinstance(found, str):
            yield Skipped(found, line)
            return
        kind, payload = found.kind, found.payload
        if found.wrapped:
            self.wrapped = True
        ts = self._tick() if found.ns is None else found.ns
        self.last_ns = max(self.last_ns, ts)
        if kind == "session_meta" and self.meta_seen:
            # a forked or resumed rollout repeats its parent's meta (and history) after its own
            yield Skipped("session_meta/repeated", line)
        elif kind == "session_meta":
            self.meta_seen = True
            self.meta_line = line
            self._meta(payload)  # folded into every span's resource
        elif kind == "turn_context":
            yield from self._turn_context(line, payload, ts, record)
        elif kind == "event_msg":
            yield from self._event(line, payload, ts, record)
        elif kind == "response_item":
            yield from self._item(line, payload, ts, record)
        elif kind == "compacted":
            yield from self._compacted(line, payload, ts, record)
        else:
            yield Skipped(str(kind), line)
        self.prev_ns = ts

    def _tick(self) -> int:
        self.last_ns += 1000
        return self.last_ns

    # -- meta and turns ------------------------------------------------------------------

    def _meta(self, payload: dict[str, Any]) -> None:
        session = payload.get("id") or payload.get("session_id")
        if isinstance(session, str) and session:
            self.session = session
        self.resource.update(meta_resource(payload))
        if isinstance(payload.get("model_provider"), str):
            self.provider = payload["model_provider"]

    def _open_turn(self, key: str, ts: int, line: int | None = None) -> Turn:
        turn = Turn(
            line=line,
            key=key,
            trace_id=trace_id_for(SOURCE, self.session, key),
            root_id=span_id_for(SOURCE, self.session, f"turn:{key}"),
            start_ns=ts,
            last_ns=ts,
            model=self.model,
        )
        self.turn = turn
        return turn

    def _unnamed(self, turn: Turn) -> bool:
        """An implicit turn (opened by a record before any turn id) that has no spans yet."""
        return (
            turn.key.startswith("line:")
            and not turn.calls
            and self.call is None
            and not self.tools
            and not turn.answer
        )

    def _rename(self, turn: Turn, key: str) -> None:
        turn.key = key
        turn.trace_id = trace_id_for(SOURCE, self.session, key)
        turn.root_id = span_id_for(SOURCE, self.session, f"turn:{key}")

    def _ensure_turn(self, line: int, ts: int) -> Turn:
        if self.turn is None:
            return self._open_turn(f"line:{line}", ts, line)
        return self.turn

    def _turn_context(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        turn_id = payload.get("turn_id")
        model = payload.get("model")
        if isinstance(model, str) and model:
            self.model = model
        cwd = payload.get("cwd")
        if isinstance(cwd, str) and cwd:
            self.resource["process.cwd"] = cwd
        turn = self.turn
        if turn is not None and isinstance(turn_id, str) and turn_id and turn.key != turn_id:
            if self._unnamed(turn):
                self._rename(turn, turn_id)  # an implicit turn with no spans yet: this names it
            else:
                yield from self._close_turn(ts)
                turn = None
        if turn is None:
            key = turn_id if isinstance(turn_id, str) and turn_id else f"line:{line}"
            turn = self._open_turn(key, ts, line)
        turn.model = self.model
        turn.records.append(record)
        turn.last_ns = max(turn.last_ns, ts)

    def _event(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        kind = payload.get("type")
        if kind == "task_started":
            turn_id = payload.get("turn_id")
            key = turn_id if isinstance(turn_id, str) and turn_id else f"line:{line}"
            current = self.turn
            if current is not None and (current.key == key or self._unnamed(current)):
                # its turn_context or prompt came first: that turn is this one
                self._rename(current, key)
                current.records.append(record)
                current.start_ns = min(current.start_ns, ts)
                return
            if current is not None:
                yield from self._close_turn(ts)
            self._open_turn(key, ts, line).records.append(record)
        elif kind == "user_message":
            turn = self.turn
            if turn is not None and turn.prompt_from_event:
                yield from self._close_turn(ts)
                turn = None
            if turn is None:
                turn = self._open_turn(f"line:{line}", ts, line)
            turn.prompt = text_of(payload.get("message"))
            turn.prompt_from_event = True
            turn.records.append(record)
            turn.last_ns = max(turn.last_ns, ts)
        elif kind == "token_count":
            info = payload.get("info")
            if self.call is None:
                yield Skipped("event_msg/token_count", line)
                return
            usage = info.get("last_token_usage") if isinstance(info, dict) else None
            self.call.records.append(record)
            yield from self._close_call(ts, usage if isinstance(usage, dict) else None)
        elif kind in ("exec_command_end", "patch_apply_end"):
            yield from self._tool_end(line, payload, ts, record)
        elif kind == "web_search_end":
            call_id = payload.get("call_id")
            self.pending_search = (
                call_id if isinstance(call_id, str) else None,
                text_of(payload.get("query")) or "",
            )
        elif kind == "task_complete":
            turn = self._ensure_turn(line, ts)
            answer = payload.get("last_agent_message")
            if isinstance(answer, str) and answer:
                turn.answer = answer
            turn.records.append(record)
            yield from self._close_turn(ts)
        elif kind in ("turn_aborted", "error"):
            turn = self._ensure_turn(line, ts)
            turn.status = "ERROR"
            reason = payload.get("reason") if kind == "turn_aborted" else payload.get("message")
            turn.message = (
                f"turn aborted: {text_of(reason) or 'no reason given'}"
                if kind == "turn_aborted"
                else text_of(reason) or "error"
            )
            turn.records.append(record)
            turn.last_ns = max(turn.last_ns, ts)
            if kind == "turn_aborted":
                yield from self._close_turn(ts)
        else:
            yield Skipped(f"event_msg/{kind}", line)

    # -- response items ------------------------------------------------------------------

    def _item(
        self,
        line: int,
        payload: dict[str, Any],
        ts: int,
        record: dict[str, Any],
    ) -> Iterator[Item]:
        kind = payload.get("type")
        if kind not in ITEM_TYPES:
            yield Skipped(f"response_item/{kind}", line)
            return
        role = payload.get("role")
        if kind == "message" and role != "assistant":
            yield from self._input_message(line, payload, ts, record)
            return
        if kind in OUTPUT_TYPES:
            if not self.wrapped and self.call is not None:
                yield from self._close_call(ts, None)
            yield from self._tool_output(line, payload, ts, record)
            return
        # a model output item: part of the model call in progress
        turn = self._ensure_turn(line, ts)
        turn.last_ns = max(turn.last_ns, ts)
        if self.call is None:
            self.call = Call(start_ns=self._call_start(ts), line=line)
        call = self.call
        call.records.append(record)
        call.end_ns = ts
        if kind == "message":
            text = content_text(payload.get("content"))
            if text:
                call.texts.append(text)
                if payload.get("phase") in (None, "final_answer"):
                    turn.answer = text
        elif kind == "reasoning":
            summary = payload.get("summary")
            if isinstance(summary, list):
                call.reasoning.extend(
                    part["text"]
                    for part in summary
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
        elif kind == "web_search_call":
            call.tools.append("web_search")
            yield from self._web_search(line, payload, ts, record)
        else:
            self._tool_call(line, payload, ts, record)

    def _call_start(self, ts: int) -> int:
        """A model call starts at the record before its first output (the prompt, the last tool
        result, the previous call's token count)."""
        previous = self.prev_ns
        return previous if previous is not None and previous <= ts else ts

    def _input_message(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        text = content_text(payload.get("content")) or ""
        if payload.get("role") != "user":
            yield Skipped(f"response_item/message/{payload.get('role')}", line)
            return
        if text.lstrip().startswith(INJECTED):
            cwd = CWD.search(text)
            if cwd and "process.cwd" not in self.resource:
                self.resource["process.cwd"] = cwd.group(1).strip()
            yield Skipped("response_item/message/context", line)
            return
        if self.wrapped:
            turn = self._ensure_turn(line, ts)
            if turn.prompt is None:
                turn.prompt = text
            turn.records.append(record)
            return
        # older files: a user message opens a turn
        if self.call is not None:
            yield from self._close_call(ts, None)
        if self.turn is not None and (self.turn.prompt is not None or self.turn.calls):
            yield from self._close_turn(ts)
        turn = self._ensure_turn(line, ts)
        turn.prompt = text
        turn.records.append(record)

    def _compacted(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        turn = self._ensure_turn(line, ts)
        kept = {key: value for key, value in payload.items() if key != "replacement_history"}
        attributes: dict[str, Any] = {
            "session.id": self.session,
            "output.value": text_of(payload.get("message")) or "",
            **raw({**record, "payload": kept}),
        }
        yield StepSpan(
            turn.trace_id,
            span_id_for(SOURCE, self.session, f"compacted:line:{line}"),
            turn.root_id,
            "compaction",
            "LLM",
            ts,
            ts,
            attributes=attributes,
            resource=dict(self.resource),
            line=line,
        )

    # -- closing spans -------------------------------------------------------------------

    def _close_call(self, end_ns: int, usage: dict[str, Any] | None) -> Iterator[Item]:
        call, turn = self.call, self.turn
        self.call = None
        if call is None or turn is None:
            return
        index = turn.calls
        turn.calls += 1
        attributes: dict[str, Any] = {"session.id": self.session}
        if turn.model:
            attributes["llm.model_name"] = turn.model
        if self.provider:
            attributes["llm.provider"] = self.provider
        if usage:
            attributes.update(token_counts(usage))
        attributes[STOP_REASON] = "tool_calls" if call.tools else "stop"
        output = "\n\n".join(call.texts)
        if call.tools:
            output = (output + "\n\n" if output else "") + "tool calls: " + ", ".join(call.tools)
        attributes["output.value"] = output
        if call.reasoning:
            attributes["llm.reasoning_summary"] = "\n".join(call.reasoning)
        if not self.wrapped:
            attributes[TIME_ESTIMATED] = True
        attributes.update(raw(call.records))
        yield StepSpan(
            turn.trace_id,
            span_id_for(SOURCE, self.session, f"{turn.key}:llm:{index}"),
            turn.root_id,
            turn.model or "model call",
            "LLM",
            call.start_ns,
            max(end_ns, call.end_ns),
            attributes=attributes,
            resource=dict(self.resource),
            line=call.line,
        )

    def _close_turn(self, end_ns: int) -> Iterator[Item]:
        turn = self.turn
        if turn is None:
            return
        if self.call is not None:
            yield from self._close_call(self.call.end_ns, None)
        for tool in list(self.tools.values()):
            del self.tools[tool.call_id]
            yield self._tool_span(tool)
        self.turn = None
        attributes: dict[str, Any] = {"session.id": self.session, "codex.turn_id": turn.key}
        if turn.prompt is not None:
            attributes["input.value"] = turn.prompt
        if turn.answer is not None:
            attributes["output.value"] = turn.answer
        if not self.wrapped:
            attributes[TIME_ESTIMATED] = True
        attributes.update(raw(turn.records))
        yield StepSpan(
            turn.trace_id,
            turn.root_id,
            None,
            "codex turn",
            "AGENT",
            turn.start_ns,
            max(end_ns, turn.last_ns),
            turn.status,
            turn.message,
            attributes=attributes,
            resource=dict(self.resource),
            line=turn.line,
        )
