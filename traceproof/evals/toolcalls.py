"""Tool-call evaluators: which tools a target called, in what order, with what arguments.

The calls of a target are its TOOL spans (``span_kind = 'TOOL'``, or any span with a
``tool_name``), in start order, among the spans it covers (a span and its descendants, a trace,
a session). A call's name is ``tool_name`` (else the ``tool.name`` attribute, else the span
name); its arguments are ``input_value`` parsed as a JSON object, as OpenInference records them
(else the ``tool.parameters`` attribute when it holds values rather than a JSON Schema). A
target with no TOOL span falls back to the calls its LLM spans requested
(``llm.output_messages.N.message.tool_calls.M.tool_call.function.name`` / ``.arguments``).

Expected arguments match when every key given is present with an equal value (extra actual
arguments are allowed); a step without ``arguments`` matches any call of that tool.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from traceproof.evals.checks import CannotEvaluate, Params, Verdict, register
from traceproof.evals.target import EvalTarget

__all__ = ["ToolCall", "ToolStep", "register_all", "tool_calls"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | None
    span_id: str | None
    failed: bool = False

    def key(self, with_arguments: bool = True) -> str:
        args = orjson.dumps(self.arguments, option=orjson.OPT_SORT_KEYS).decode()
        return f"{self.name}({args if with_arguments else ''})"


class ToolStep(BaseModel):
    """An expected call: a tool name and, optionally, arguments it must have been given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Tool name.")
    arguments: dict[str, Any] | None = Field(
        default=None, description="Arguments the call must include (others are allowed)."
    )

    def matches(self, call: ToolCall) -> bool:
        if call.name != self.name:
            return False
        if self.arguments is None:
            return True
        got = call.arguments or {}
        return all(k in got and _equal(got[k], v) for k, v in self.arguments.items())

    def shown(self) -> str:
        if self.arguments is None:
            return self.name
        return f"{self.name}({orjson.dumps(self.arguments, option=orjson.OPT_SORT_KEYS).decode()})"


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _arguments(span: dict[str, Any]) -> dict[str, Any] | None:
    raw = span.get("input_value")
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    attrs = span.get("attributes")
    tool = attrs.get("tool") if isinstance(attrs, dict) else None
    params = tool.get("parameters") if isinstance(tool, dict) else None
    if isinstance(params, str):
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            params = None
    if isinstance(params, dict) and not (
        isinstance(params.get("properties"), dict) or params.get("type") == "object"
    ):
        return params
    return None


def _requested(span: dict[str, Any]) -> list[ToolCall]:
    attrs = span.get("attributes")
    llm = attrs.get("llm") if isinstance(attrs, dict) else None
    messages = llm.get("output_messages") if isinstance(llm, dict) else None
    calls: list[ToolCall] = []
    for entry in messages if isinstance(messages, list) else []:
        message = entry.get("message") if isinstance(entry, dict) else None
        requested = message.get("tool_calls") if isinstance(message, dict) else None
        for item in requested if isinstance(requested, list) else []:
            tool_call = item.get("tool_call") if isinstance(item, dict) else None
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if not isinstance(function, dict) or not function.get("name"):
                continue
            args = function.get("arguments")
            if isinstance(args, str):
                try:
                    args = orjson.loads(args)
                except orjson.JSONDecodeError:
                    args = None
            args = args if isinstance(args, dict) else None
            calls.append(ToolCall(str(function["name"]), args, span.get("span_id")))
    return calls


def tool_calls(target: EvalTarget) -> list[ToolCall]:
    """The tool calls of ``target``, in order (see the module docstring)."""
    spans = target.covered_spans()
    calls = []
    for s in spans:
        if s.get("span_kind") != "TOOL" and not s.get("tool_name"):
            continue
        attrs = s.get("attributes")
        tool = attrs.get("tool") if isinstance(attrs, dict) else None
        name = s.get("tool_name") or (tool.get("name") if isinstance(tool, dict) else None)
        failed = s.get("status") == "ERROR"
        calls.append(ToolCall(str(name or s.get("name")), _arguments(s), s.get("span_id"), failed))
    if calls:
        return calls
    return [c for s in spans if s.get("span_kind") == "LLM" for c in _requested(s)]


def _listing(calls: list[ToolCall], limit: int = 8) -> str:
    if not calls:
        return "no tool calls"
    names = [c.name for c in calls[:limit]]
    return (
        "calls: "
        + ", ".join(names)
        + (f", … (+{len(calls) - limit})" if len(calls) > limit else "")
    )


# -- evaluators ---------------------------------------------------------------------------------


class ToolCalledParams(Params):
    name: str = Field(min_length=1, description="Tool name.")
    arguments: dict[str, Any] | None = Field(
        default=None, description="Arguments a call must include."
    )
    min_count: int = Field(default=1, ge=1, description="Fewest matching calls that pass.")


class ToolNotCalledParams(Params):
    name: str = Field(min_length=1, description="Tool name.")
    arguments: dict[str, Any] | None = Field(
        default=None, description="Only calls with these arguments count."
    )


def tool_called(target: EvalTarget, p: ToolCalledParams) -> Verdict:
    """The tool was called (at least ``min_count`` times; with these arguments when given)."""
    step = ToolStep(name=p.name, arguments=p.arguments)
    calls = tool_calls(target)
    hits = [c for c in calls if step.matches(c)]
    if len(hits) >= p.min_count:
        return Verdict(True, f"{step.shown()} called {len(hits)}× (first span {hits[0].span_id})")
    return Verdict(False, f"{step.shown()} called {len(hits)}× (need {p.min_count}); "
                          f"{_listing(calls)}")  # fmt: skip


def tool_not_called(target: EvalTarget, p: ToolNotCalledParams) -> Verdict:
    """The tool was never called (with these arguments, when given)."""
    step = ToolStep(name=p.name, arguments=p.arguments)
    calls = tool_calls(target)
    hits = [c for c in calls if step.matches(c)]
    if not hits:
        return Verdict(True, f"{step.shown()} not called; {_listing(calls)}")
    return Verdict(False, f"{step.shown()} called {len(hits)}× (first span {hits[0].span_id})")


class ToolSequenceParams(Params):
    tools: list[str | ToolStep] | None = Field(
        default=None,
        description="Expected calls: names or {name, arguments}; default: the target's "
        "expected value (such a list, or an object with `tool_calls`).",
    )
    mode: Literal["strict", "unordered", "subset", "superset"] = Field(
        default="strict",
        description="strict: exactly these calls in this order; unordered: exactly these, any "
        "order; subset: only calls from the list (each once); superset: at least the listed "
        "calls, extras allowed.",
    )

    def steps(self, target: EvalTarget) -> list[ToolStep]:
        raw: Any = self.tools
        if raw is None:
            raw = target.expected
            if isinstance(raw, dict):
                raw = raw.get("tool_calls", raw.get("tools"))
            if not isinstance(raw, list):
                raise CannotEvaluate("no expected tool calls: set `tools`, or evaluate targets "
                                     "whose expected value lists them")  # fmt: skip
        return [ToolStep(name=s) if isinstance(s, str) else ToolStep.model_validate(s) for s in raw]


def _matching(steps: list[ToolStep], calls: list[ToolCall]) -> int:
    """Size of a maximum matching between expected steps and actual calls (each used once)."""
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j, call in enumerate(calls):
            if j in seen or not steps[i].matches(call):
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(len(steps)))


def tool_sequence(target: EvalTarget, p: ToolSequenceParams) -> Verdict:
    """The calls follow the expected list, by ``mode``; subset and superset score the share of
    calls (subset) or of expected steps (superset) that match."""
    steps, calls = p.steps(target), tool_calls(target)
    want = ", ".join(s.shown() for s in steps) or "none"
    got = ", ".join(c.name for c in calls) or "none"
    if p.mode == "strict":
        for i, (step, call) in enumerate(zip(steps, calls, strict=False)):
            if not step.matches(call):
                return Verdict(False, f"call {i + 1} is {call.key()}, expected {step.shown()}")
        if len(steps) != len(calls):
            return Verdict(False, f"{len(calls)} calls ({got}), expected {len(steps)} ({want})")
        return Verdict(True, f"calls in order: {want}")
    matched = _matching(steps, calls)
    if p.mode == "unordered":
        ok = matched == len(steps) == len(calls)
        return Verdict(ok, f"{'' if ok else 'not '}the same calls: got {got}, expected {want}")
    if p.mode == "superset":
        share = matched / len(steps) if steps else 1.0
        ok = matched == len(steps)
        missing = "" if ok else f"; {len(steps) - matched} expected call(s) missing"
        return Verdict(ok, f"{matched}/{len(steps)} expected calls made ({got}){missing}", share)
    share = matched / len(calls) if calls else 1.0
    ok = matched == len(calls)
    return Verdict(ok, f"{matched}/{len(calls)} calls ({got}) within the expected {want}", share)


class MaxToolCallsParams(Params):
    max: int = Field(ge=0, description="Most calls that pass.")
    name: str | None = Field(default=None, description="Count only this tool.")


def max_tool_calls(target: EvalTarget, p: MaxToolCallsParams) -> Verdict:
    """At most ``max`` tool calls (of one tool when ``name`` is given)."""
    calls = [c for c in tool_calls(target) if p.name is None or c.name == p.name]
    what = f"{p.name!r} calls" if p.name else "tool calls"
    if len(calls) <= p.max:
        return Verdict(True, f"{len(calls)} {what} ≤ {p.max}")
    return Verdict(False, f"{len(calls)} {what} > {p.max}")


class NoRepeatedCallsParams(Params):
    max_repeats: int = Field(
        default=1, ge=1, description="Most times one call (same tool, same arguments) may occur."
    )
    ignore_arguments: bool = Field(default=False, description="Same tool is enough to repeat.")
    count_failed: bool = Field(
        default=True, description="Count calls whose span failed (false: retries are fine)."
    )


def no_repeated_calls(target: EvalTarget, p: NoRepeatedCallsParams) -> Verdict:
    """No call (same tool, same arguments) occurs more than ``max_repeats`` times."""
    calls = [c for c in tool_calls(target) if p.count_failed or not c.failed]
    counts = Counter(c.key(not p.ignore_arguments) for c in calls)
    repeated = [(k, n) for k, n in counts.items() if n > p.max_repeats]
    if not repeated:
        return Verdict(True, f"no call repeated in {len(calls)} call{'s' * (len(calls) != 1)}")
    shown = ", ".join(f"{k[:120]} ×{n}" for k, n in repeated[:3])
    return Verdict(False, f"repeated: {shown}")


def register_all() -> None:
    """Add the tool-call evaluators to the registry (in documentation order)."""
    register("tool_called", ToolCalledParams)(tool_called)
    register("tool_not_called", ToolNotCalledParams)(tool_not_called)
    register("tool_sequence", ToolSequenceParams)(tool_sequence)
    register("max_tool_calls", MaxToolCallsParams)(max_tool_calls)
    register("no_repeated_calls", NoRepeatedCallsParams)(no_repeated_calls)
