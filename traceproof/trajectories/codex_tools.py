"""Codex tool calls as ``TOOL`` spans: a call (``function_call``, ``custom_tool_call`` such as
``apply_patch``, ``local_shell_call``, ``web_search_call``) keyed by its ``call_id``, ended by its
output and, for commands and patches, by ``exec_command_end`` / ``patch_apply_end`` (the
command's real output, exit code and duration; ``codex.process_id`` links a command to the
``write_stdin`` calls that poll it). A non-zero exit code, a ``failed`` status or a patch that
did not apply is an ``ERROR`` with the first lines of the output as its message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from traceproof.trajectories.codex_records import (
    EXEC_TOOLS,
    PATCH_TOOLS,
    SOURCE,
    Call,
    Tool,
    Turn,
)
from traceproof.trajectories.common import Item, Skipped, StepSpan, span_id_for
from traceproof.trajectories.records import (
    TIME_ESTIMATED,
    as_dict,
    as_int,
    first_lines,
    raw,
    text_of,
)

_EXITED = re.compile(r"Process exited with code (-?\d+)")
_RUNNING = re.compile(r"Process running with session ID (\d+)")


class ToolSpans:
    """The tool-call half of a rollout's reading state (``_Rollout`` in ``codex.py``)."""

    session: str
    resource: dict[str, Any]
    wrapped: bool
    turn: Turn | None
    call: Call | None
    tools: dict[str, Tool]
    pending_search: tuple[str | None, str] | None

    def _tool_call(
        self,
        line: int,
        payload: dict[str, Any],
        ts: int,
        record: dict[str, Any],
    ) -> None:
        kind = payload.get("type")
        call_id = payload.get("call_id") or payload.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"line:{line}"
        if kind == "local_shell_call":
            name = "local_shell"
            action = payload.get("action")
            arguments = text_of(action)
        else:
            name = str(payload.get("name") or kind)
            arguments = text_of(payload.get("input" if kind == "custom_tool_call" else "arguments"))
        assert self.call is not None
        self.call.tools.append(name)
        needs_end = self.wrapped and (name in EXEC_TOOLS or name in PATCH_TOOLS)
        self.tools[call_id] = Tool(call_id, name, arguments, ts, [record], needs_end, line)

    def _web_search(
        self,
        line: int,
        payload: dict[str, Any],
        ts: int,
        record: dict[str, Any],
    ) -> Iterator[Item]:
        action = as_dict(payload.get("action"))
        query = text_of(action.get("query")) or ""
        key = f"line:{line}"
        if self.pending_search is not None and self.pending_search[1] == query:
            key = self.pending_search[0] or key
        self.pending_search = None
        tool = Tool(key, "web_search", text_of(action), ts, [record], False, line)
        tool.output_seen = True
        tool.output_ns = ts
        status = payload.get("status")
        if isinstance(status, str) and status not in ("completed", "in_progress"):
            tool.status, tool.message = "ERROR", f"web search {status}"
        yield self._tool_span(tool)

    def _tool_output(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        call_id = payload.get("call_id")
        tool = self.tools.get(call_id) if isinstance(call_id, str) else None
        if tool is None:
            yield Skipped(f"response_item/{payload.get('type')}/unmatched", line)
            return
        tool.records.append(record)
        tool.output_seen = True
        tool.output_ns = ts
        output = payload.get("output")
        success: Any = None
        if isinstance(output, dict):  # older FunctionCallOutputPayload {content, success}
            success = output.get("success")
            output = output.get("content")
        text = text_of(output)
        inner = as_dict(text)
        if "output" in inner and isinstance(inner.get("metadata"), dict):
            # shell / apply_patch results: {"output": ..., "metadata": {"exit_code": ...}}
            code = as_int(inner["metadata"].get("exit_code"))
            text = text_of(inner.get("output"))
            if code not in (None, 0) and tool.status == "OK":
                tool.status = "ERROR"
                tool.message = _exit_message(code, text)
        elif text and tool.name in EXEC_TOOLS:
            exited = _EXITED.search(text[:400])
            code = as_int(exited.group(1)) if exited else None
            if code not in (None, 0) and tool.status == "OK":
                tool.status, tool.message = "ERROR", _exit_message(code, text)
        if success is False and tool.status == "OK":
            tool.status, tool.message = "ERROR", first_lines(text) or "tool call failed"
        if tool.output is None or tool.end is None:
            tool.output = text
        yield from self._maybe_finish(tool)

    def _tool_end(
        self, line: int, payload: dict[str, Any], ts: int, record: dict[str, Any]
    ) -> Iterator[Item]:
        call_id = payload.get("call_id")
        tool = self.tools.get(call_id) if isinstance(call_id, str) else None
        if tool is None:
            yield Skipped(f"event_msg/{payload.get('type')}/unmatched", line)
            return
        tool.records.append(record)
        tool.end = payload
        tool.end_ns = ts
        if payload.get("type") == "exec_command_end":
            output = payload.get("aggregated_output")
            if not isinstance(output, str) or not output:
                output = "".join(
                    part for part in (payload.get("stdout"), payload.get("stderr"))
                    if isinstance(part, str)
                )  # fmt: skip
            code = as_int(payload.get("exit_code"))
            if output or tool.output is None:
                tool.output = output
            if code not in (None, 0) or payload.get("status") == "failed":
                tool.status, tool.message = "ERROR", _exit_message(code, output)
        else:  # patch_apply_end
            if payload.get("success") is False or payload.get("status") == "failed":
                stderr = text_of(payload.get("stderr"))
                tool.status = "ERROR"
                tool.message = first_lines(stderr) or "patch did not apply"
            if tool.output is None:
                tool.output = text_of(payload.get("stdout"))
        yield from self._maybe_finish(tool)

    def _maybe_finish(self, tool: Tool) -> Iterator[Item]:
        if tool.output_seen and (tool.end is not None or not tool.needs_end):
            del self.tools[tool.call_id]
            yield self._tool_span(tool)

    def _tool_span(self, tool: Tool) -> StepSpan:
        turn = self.turn
        assert turn is not None
        attributes: dict[str, Any] = {"session.id": self.session, "tool.name": tool.name}
        if tool.arguments is not None:
            attributes["input.value"] = tool.arguments
            attributes["input.mime_type"] = (
                "application/json" if tool.arguments.lstrip()[:1] in ("{", "[") else "text/plain"
            )
        if tool.output is not None:
            attributes["output.value"] = tool.output
        process = _process_id(tool)
        if process is not None:
            attributes["codex.process_id"] = process
        if tool.end is not None:
            code = as_int(tool.end.get("exit_code"))
            if code is not None:
                attributes["process.exit.code"] = code
            changes = tool.end.get("changes")
            if isinstance(changes, dict) and changes:
                attributes["codex.changed_files"] = sorted(changes)
        if not self.wrapped:
            attributes[TIME_ESTIMATED] = True
        attributes.update(raw(tool.records))
        end = max(ns for ns in (tool.start_ns, tool.output_ns, tool.end_ns) if ns is not None)
        return StepSpan(
            turn.trace_id,
            span_id_for(SOURCE, self.session, f"call:{tool.call_id}"),
            turn.root_id,
            tool.name,
            "TOOL",
            tool.start_ns,
            end,
            tool.status,
            tool.message,
            attributes=attributes,
            resource=dict(self.resource),
            line=tool.line,
        )


def _process_id(tool: Tool) -> str | None:
    """The unified-exec process a command started, or a ``write_stdin`` call polls."""
    if tool.name == "write_stdin":
        value = as_dict(tool.arguments).get("session_id")
        return None if value is None else str(value)
    if tool.end is not None and tool.end.get("process_id") is not None:
        return str(tool.end["process_id"])
    for record in tool.records:
        payload = as_dict(record.get("payload", record))
        if payload.get("type") == "function_call_output":
            found = _RUNNING.search(text_of(payload.get("output")) or "")
            if found:
                return found.group(1)
    return None


def _exit_message(code: int | None, output: str | None) -> str:
    head = first_lines(output)
    what = f"exit code {code}" if code is not None else "failed"
    return f"{what}: {head}" if head else what
