"""A scripted chat model: rules over the conversation that pick tool calls and write answers.

It stands in for an LLM so the example runs without an API key and answers the same every time,
while the agent around it (the loop, the tools, the tracing) is what a real one would be. It
reads the conversation in the chat format (``role``, ``content``, ``tool_calls``,
``tool_call_id``) and answers one assistant message: tool calls, or a final answer.

Its habits, like a real model's: it looks an order up before answering about it, checks the
refund policy before refunding, and retries a tool call that failed once before giving up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from support_agent.tools import refund_refusal

MODEL_NAME = "scripted-support-1"

SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer questions about orders, refunds "
    "and the shop's policies. Look orders up before answering about them; refund only what the "
    "policy allows."
)

Message = dict[str, Any]

_ORDER_ID = re.compile(r"(?<![\w-])#?(\d{4,6})(?!\d)")
_REFUND = re.compile(r"\b(refund|money back|reimburse|return (it|this|them))\b", re.I)
_NEEDS_ORDER = re.compile(r"\bmy (order|package|parcel)\b|\b(want|like|need) a refund\b", re.I)
_REASONS = (
    ("damaged", re.compile(r"damaged|broken|cracked|defective|dented", re.I)),
    ("wrong_item", re.compile(r"wrong (item|size|colou?r|one)|not what i ordered", re.I)),
    ("late", re.compile(r"\blate\b|took too long|too slow", re.I)),
)


@dataclass(slots=True)
class Completion:
    """One assistant message: ``content`` (a final answer) or ``tool_calls``."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> Message:
        out: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


def money(cents: int) -> str:
    return f"${cents / 100:.2f}"


def refund_reason(question: str) -> str:
    for reason, pattern in _REASONS:
        if pattern.search(question):
            return reason
    return "changed_mind"


class ScriptedModel:
    """Deterministic rules in place of an LLM (see the module docstring)."""

    name = MODEL_NAME

    def complete(self, messages: list[Message]) -> Completion:
        question = next(m["content"] for m in messages if m["role"] == "user")
        calls = _calls(messages)
        step = sum(1 for m in messages if m["role"] == "assistant")
        match = _ORDER_ID.search(question)
        if match is None:
            if _NEEDS_ORDER.search(question):
                return Completion("I can look into that. What is your order number?")
            return self._docs(question, calls, step)
        order_id = match.group(1)
        wants_refund = bool(_REFUND.search(question))

        lookups = [c for c in calls if c["name"] == "lookup_order"]
        if not lookups:
            return _call(step, "lookup_order", {"order_id": order_id})
        last = lookups[-1]
        if "error" in last["result"]:
            if len(lookups) < 2:  # the order service can be flaky: try once more
                return _call(step, "lookup_order", {"order_id": order_id})
            return Completion(
                f"I could not find order {order_id}. Please check the order number and try again."
            )
        order = last["result"]
        shown = f"Order {order_id} ({order['item']})"
        if not wants_refund:
            return Completion(_status(shown, order))

        refusal = refund_refusal(order)
        if refusal == "already cancelled and refunded":
            return Completion(
                f"{shown} was already cancelled and refunded ({money(order['total_cents'])})."
            )
        if refusal == "not delivered yet":
            return Completion(
                f"{shown} has not been delivered yet (status: {order['status']}). A refund can "
                "be requested once it arrives."
            )
        if refusal is not None:
            return Completion(
                f"{shown} was delivered on {order['delivered_on']}, more than 30 days ago, so it "
                "is no longer eligible for a refund."
            )
        refunds = [c for c in calls if c["name"] == "refund"]
        if not refunds:
            reason = refund_reason(question)
            return _call(step, "refund", {"order_id": order_id, "reason": reason})
        result = refunds[-1]["result"]
        if "error" in result:
            return Completion(f"I could not refund order {order_id}: {result['error']}.")
        return Completion(
            f"I have refunded {money(result['amount_cents'])} for order {order_id} "
            f"({order['item']}). Refund {result['refund_id']} reaches your original payment "
            "method within 5 business days."
        )

    def _docs(self, question: str, calls: list[dict[str, Any]], step: int) -> Completion:
        searches = [c for c in calls if c["name"] == "search_docs"]
        if not searches:
            return _call(step, "search_docs", {"query": question})
        results = searches[-1]["result"].get("results") or []
        if not results:
            return Completion(
                "I could not find that in our help center. A person can help at "
                "support@example.com."
            )
        top = results[0]
        return Completion(f"{top['text']} (Help center: {top['title']}.)")


def _status(shown: str, order: dict[str, Any]) -> str:
    status = order["status"]
    if status == "processing":
        return f"{shown} is being prepared and will ship by {order['ships_by']}."
    if status == "shipped":
        return (
            f"{shown} shipped on {order['shipped_on']} with {order['carrier']} and should "
            f"arrive by {order['eta']}."
        )
    if status == "delivered":
        return f"{shown} was delivered on {order['delivered_on']}."
    return (
        f"{shown} was cancelled on {order['cancelled_on']}; {money(order['total_cents'])} was "
        "refunded to your original payment method."
    )


def _call(step: int, name: str, arguments: dict[str, Any]) -> Completion:
    return Completion(tool_calls=[{"id": f"call_{step}_0", "name": name, "arguments": arguments}])


def _calls(messages: list[Message]) -> list[dict[str, Any]]:
    """The tool calls so far, in order, each with its ``result`` (the tool message's JSON)."""
    results = {m["tool_call_id"]: json.loads(m["content"]) for m in messages if m["role"] == "tool"}
    out = []
    for m in messages:
        for call in m.get("tool_calls") or ():
            out.append({**call, "result": results.get(call["id"], {})})
    return out


def count_tokens(text: str) -> int:
    """A stand-in tokenizer: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))
