"""The support agent: a model-and-tools loop, traced with OpenInference attributes.

One question is one trace::

    support_agent                AGENT  input.value / output.value (the app's JSON in and out)
    ├── llm                      LLM    llm.input_messages.* / llm.output_messages.* (tool calls)
    ├── lookup_order             TOOL   tool.name, input.value (arguments), output.value (result)
    ├── llm                      LLM
    └── ...

Every span carries ``session.id`` (and ``user.id`` when the input names a customer). A tool
that raises is an ERROR span with the exception recorded; the model sees the error as the tool's
result and carries on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from support_agent.model import SYSTEM_PROMPT, Completion, Message, ScriptedModel, count_tokens
from support_agent.tools import TOOLS

MAX_STEPS = 6
JSON = "application/json"


class BadInput(ValueError):
    """The input is not a question the agent can take."""


def question_of(data: Any) -> dict[str, Any]:
    """The input as ``{"question": ..., "session_id"?, "customer_id"?}``; a bare string is the
    question."""
    if isinstance(data, str):
        data = {"question": data}
    if not isinstance(data, dict) or not isinstance(data.get("question"), str):
        raise BadInput('expected {"question": "..."} (optional session_id, customer_id)')
    if not data["question"].strip():
        raise BadInput("the question is empty")
    return data


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class SupportAgent:
    def __init__(self, tracer: Tracer, model: ScriptedModel | None = None) -> None:
        self.tracer = tracer
        self.model = model or ScriptedModel()

    def answer(self, data: Any, parent: Context | None = None) -> dict[str, Any]:
        """The answer to one input, as ``{"answer": ...}``, traced under ``parent``."""
        item = question_of(data)
        question = item["question"]
        session = item.get("session_id") or (
            "sess-" + hashlib.sha256(question.encode()).hexdigest()[:10]
        )
        common = {"session.id": str(session)}
        if item.get("customer_id"):
            common["user.id"] = str(item["customer_id"])
        attributes = {
            "openinference.span.kind": "AGENT",
            "input.value": _dumps(item),
            "input.mime_type": JSON,
            **common,
        }
        with self.tracer.start_as_current_span(
            "support_agent", context=parent, attributes=attributes
        ) as span:
            messages: list[Message] = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question},
            ]
            answer = None
            for _ in range(MAX_STEPS):
                completion = self._complete(messages, common)
                messages.append(completion.message())
                if not completion.tool_calls:
                    answer = completion.content
                    break
                for call in completion.tool_calls:
                    messages.append(self._call_tool(call, common))
            if answer is None:
                answer = "Sorry, I could not finish that. A person will get back to you."
            output = {"answer": answer}
            span.set_attribute("output.value", _dumps(output))
            span.set_attribute("output.mime_type", JSON)
            span.set_status(Status(StatusCode.OK))
            return output

    def _complete(self, messages: list[Message], common: dict[str, str]) -> Completion:
        attributes: dict[str, Any] = {
            "openinference.span.kind": "LLM",
            "llm.model_name": self.model.name,
            "llm.provider": "local",
            "llm.system": "scripted",
            "llm.invocation_parameters": _dumps({"temperature": 0}),
            "input.value": _dumps({"messages": messages}),
            "input.mime_type": JSON,
            **common,
        }
        for i, (name, (_, description, schema)) in enumerate(TOOLS.items()):
            function = {"name": name, "description": description, "parameters": schema}
            attributes[f"llm.tools.{i}.tool.json_schema"] = _dumps(
                {"type": "function", "function": function}
            )
        for i, message in enumerate(messages):
            attributes.update(_message_attributes(f"llm.input_messages.{i}", message))
        with self.tracer.start_as_current_span("llm", attributes=attributes) as span:
            completion = self.model.complete(messages)
            reply = completion.message()
            prompt = sum(count_tokens(_dumps(m)) for m in messages) + 40 * len(TOOLS)
            done = count_tokens(_dumps(reply))
            span.set_attributes(_message_attributes("llm.output_messages.0", reply))
            span.set_attributes(
                {
                    "output.value": _dumps(reply),
                    "output.mime_type": JSON,
                    "llm.token_count.prompt": prompt,
                    "llm.token_count.completion": done,
                    "llm.token_count.total": prompt + done,
                }
            )
            span.set_status(Status(StatusCode.OK))
            return completion

    def _call_tool(self, call: dict[str, Any], common: dict[str, str]) -> Message:
        name, arguments = call["name"], call["arguments"]
        function, description, schema = TOOLS[name]
        attributes = {
            "openinference.span.kind": "TOOL",
            "tool.name": name,
            "tool.description": description,
            "tool.parameters": _dumps(schema),
            "tool_call.id": call["id"],
            "input.value": _dumps(arguments),
            "input.mime_type": JSON,
            **common,
        }
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            result = _run(span, function, arguments)
            span.set_attribute("output.value", _dumps(result))
            span.set_attribute("output.mime_type", JSON)
        return {"role": "tool", "tool_call_id": call["id"], "name": name, "content": _dumps(result)}


def _run(span: Span, function: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = function(**arguments)
    except Exception as exc:  # a tool's failure is the model's to handle, and the trace's
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        return {"error": f"{type(exc).__name__}: {exc}"}
    span.set_status(Status(StatusCode.OK))
    return result


def _message_attributes(prefix: str, message: Message) -> dict[str, Any]:
    """One chat message as OpenInference's flattened ``<prefix>.message.*`` attributes."""
    base = f"{prefix}.message"
    out: dict[str, Any] = {f"{base}.role": message["role"]}
    if message.get("content") is not None:
        out[f"{base}.content"] = message["content"]
    if message["role"] == "tool":
        out[f"{base}.tool_call_id"] = message["tool_call_id"]
        out[f"{base}.name"] = message["name"]
    for j, call in enumerate(message.get("tool_calls") or ()):
        tc = f"{base}.tool_calls.{j}.tool_call"
        out[f"{tc}.id"] = call["id"]
        out[f"{tc}.function.name"] = call["name"]
        out[f"{tc}.function.arguments"] = _dumps(call["arguments"])
    return out
