"""Deterministic demo project: a customer-support agent traced with the real OpenTelemetry SDK.

``demo_requests()`` runs a scripted support agent (25 sessions of 2-5 turns, one trace per turn)
through a private ``TracerProvider`` and encodes the finished spans with the SDK's own OTLP encoder.
Spans follow the OpenInference conventions (AGENT / CHAIN / LLM / TOOL / RETRIEVER); a few LLM spans
use the OpenTelemetry GenAI convention instead. About one tool call in ten fails, two turns fail
as a whole, a few turns contain a slow tool, and one LLM span carries a ~400 KB pasted order
history.

The demo is recent: its times are fixed offsets from a "now" anchor (the moment it is loaded, by
default), so that its last trace ends a couple of minutes before that moment and its 25 sessions
spread over the 5 hours and 40 minutes before it; ``--since 2h`` finds its latest failures. Ids
and content do not depend on the anchor (dates written inside the texts, such as delivery
estimates, stay those of the original script). Loading the demo again into a store that holds it
adds nothing: spans are deduplicated by id, so the store keeps the times of the first load.

For a given anchor the output is byte-for-byte deterministic: ids come from a seeded generator,
every timestamp is explicit, all choices come from one seeded ``random.Random``, and nothing is
read from the ``OTEL_*`` environment variables (span limits, sampler and resource are all passed
explicitly).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = ["DEMO_LENGTH", "DEMO_PROJECT", "DEMO_SERVICE", "REFERENCE_NOW", "demo_requests"]

DEMO_PROJECT = "demo"
DEMO_SERVICE = "support-agent"

Attrs = dict[str, AttributeValue]

_SEED = 20261101
_EPOCH = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # the script's own calendar (texts, ids)
#: From the demo's start to its anchor: the last span ends about two minutes before the anchor.
DEMO_LENGTH = timedelta(hours=5, minutes=40)
#: The anchor under which the demo has the times of its original script (2026-11-01 09:00 UTC
#: to 14:38): for tests that want fixed times.
REFERENCE_NOW = _EPOCH + DEMO_LENGTH
_MS = 1_000_000
_SESSIONS = 25
_MAX_SPANS_PER_REQUEST = 200
_FAIL_P = 0.09  # per tool call, before retries
_BIG_TURN = 9  # global turn index whose plan LLM gets the pasted order history
_BIG_CHARS = 400_000
_ABORT_TURNS = frozenset({17, 44})  # turns whose root AGENT span ends in ERROR
_GENAI_TURNS = frozenset({3, 28, 41})  # turns whose plan LLM span uses gen_ai.* attributes
_PLAN_MODEL = "gpt-4o-mini"
_MODELS = ("claude-sonnet-4-5", "gpt-4.1", "gpt-4o-mini")
_CARRIERS = ("UPS", "FedEx", "USPS", "DHL")
_SHIP_STATUS = ("in transit", "out for delivery", "delayed at the regional hub", "awaiting pickup")
_CHANNELS = ("web_chat", "email", "mobile_app")
_ADDRESS = "88 Harbor St, Portland, OR 97209"
_ITEMS = (("wireless earbuds", 89.0), ("trail running shoes", 139.5), ("espresso machine", 349.0),
          ("standing desk", 519.0), ("merino wool sweater", 74.99), ("4K monitor", 279.0),
          ("insulated winter jacket", 229.0), ("cast-iron skillet", 42.5))  # fmt: skip
_SYSTEM_PROMPT = (
    "You are Ava, the customer-support assistant for Northwind Outfitters. Be concise and "
    "friendly. Always verify order details with tools before answering. Never promise refunds "
    "above $200 without supervisor approval, and never reveal internal notes."
)

# Blocks of "intent | tools called, in order | P(also search the help center)", then customer
# questions (Q:) and answer templates (A:); {placeholders} come from the turn's facts.
_INTENT_SPEC = """
order_status | lookup_order get_shipping_status | 0.2
Q: Where is my order {order}? It was supposed to arrive yesterday.
Q: Hi, can you check on order {order}? I ordered the {item} last week.
Q: Any update on {order}? The tracking page hasn't changed in days.
A: Your order {order} ({item}) is {status} with {carrier}, tracking number {tracking}. The current delivery estimate is {eta}.
A: Good news: {order} is {status}. {carrier} expects to deliver it {eta}; you can follow it with tracking number {tracking}.

refund | lookup_order issue_refund | 0.5
Q: I returned the {item} from order {order} two weeks ago and still have no refund.
Q: I'd like a refund for {order}, the {item} doesn't fit.
Q: Can I get my money back for the {item}? Order {order}.
A: I've issued a refund of ${amount} for the {item} on order {order}. It should reach your original payment method within 5-7 business days.
A: Done! ${amount} is on its way back to your card for order {order}; banks usually post it within a week.

shipping_delay | get_shipping_status | 0.4
Q: My package for {order} has been stuck in transit for six days. What's going on?
Q: The {carrier} tracking for {order} says delayed. Will it arrive before the weekend?
A: I checked with {carrier}: {order} is {status} and the new estimate is {eta}. If it hasn't arrived by then, reply here and I'll send a replacement.

address_change | lookup_order update_shipping_address | 0.3
Q: I moved last week. Can you change the shipping address on {order} to 88 Harbor St, Portland, OR 97209?
Q: Please update the delivery address for order {order}, I typed the wrong apartment number.
A: All set: order {order} will now ship to the new address. You'll get an updated confirmation email in a few minutes.

cancel | lookup_order cancel_order | 0.3
Q: Please cancel order {order}, I bought the {item} somewhere else.
Q: Is it too late to cancel {order}?
A: Order {order} is cancelled and ${amount} will be released back to your card within 3 business days.

damaged_item | lookup_order issue_refund | 0.8
Q: The {item} from {order} arrived with a cracked housing. What can I do?
Q: My {item} showed up damaged (order {order}). I'd like a refund please.
A: I'm sorry the {item} arrived damaged. I've refunded ${amount} for order {order}; no need to send it back.

return_policy |  | 1.0
Q: What's your return policy for opened items?
Q: How long do I have to return something?
Q: Do you offer free return shipping?
A: You can return most items within 30 days of delivery, opened or not, as long as they're in resaleable condition. Return labels are free for exchanges.
A: Our return window is 30 days from delivery. Start a return from your order page and we'll email a prepaid label; refunds post 5-7 business days after the carrier scan.
"""  # noqa: E501

# tool | parameters | error type | error message | apology used when the error is not recovered
_TOOL_SPEC = """
lookup_order | order_id | OrderNotFound | no order {order} found for {user} | I couldn't find an order matching {order} on your account. Could you double-check the number in your confirmation email?
get_shipping_status | order_id | TimeoutError | {carrier} tracking API did not respond within 5000 ms | Sorry, the {carrier} tracking system isn't responding right now, so I can't confirm the latest scan. I'll email you as soon as it updates.
update_shipping_address | order_id address | ValidationError | postal code 97290 does not match Portland, OR | I couldn't update the address because the postal code doesn't match the city. Could you confirm the full address?
cancel_order | order_id reason | OrderAlreadyShipped | order {order} left the warehouse and can no longer be cancelled | Unfortunately {order} has already left our warehouse, so I can't cancel it, but you can refuse the delivery or return it free within 30 days.
issue_refund | order_id amount reason | PermissionError | refund of ${amount} exceeds the agent approval limit of $200 | I'm sorry, this refund needs a supervisor's approval. I've escalated it and you'll hear back within one business day.
"""  # noqa: E501

# id | intent it answers | title | content
_KB_SPEC = """
kb-101 | refund | Refund policy | Refunds go to the original payment method 5-7 business days after the return is scanned. Support can refund up to $200 directly; larger amounts need supervisor approval.
kb-102 | return_policy | Return window | Most items can be returned within 30 days of delivery in resaleable condition. Opened electronics are accepted with all accessories.
kb-103 | order_status | Shipping times | Standard shipping takes 3-5 business days, express 1-2. Orders placed after 2pm ship the next business day.
kb-104 | shipping_delay | Lost or delayed packages | If tracking hasn't updated for 5 business days we open a carrier trace and can reship or refund the order.
kb-105 | address_change | Changing a shipping address | Addresses can be changed until the order is packed. After that, ask the carrier to redirect the package.
kb-106 | damaged_item | Damaged items | Send a photo within 14 days of delivery; we replace or refund damaged items without requiring a return.
kb-107 | cancel | Cancelling an order | Orders can be cancelled free of charge until they ship. Shipped orders can be refused at delivery.
kb-108 | refund | Duplicate charges | A pending authorization can look like a second charge; it drops off within 3 business days.
"""  # noqa: E501


def _rows(spec: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")] for line in spec.strip().splitlines()]


def _intents(spec: str) -> dict[str, tuple[list[str], list[str], list[str], float]]:
    out: dict[str, tuple[list[str], list[str], list[str], float]] = {}
    for block in spec.strip().split("\n\n"):
        head, *lines = block.splitlines()
        name, tools, kb_p = (c.strip() for c in head.split("|"))
        questions = [line[3:] for line in lines if line.startswith("Q: ")]
        answers = [line[3:] for line in lines if line.startswith("A: ")]
        out[name] = (questions, tools.split(), answers, float(kb_p))
    return out


_INTENTS = _intents(_INTENT_SPEC)
_TOOLS = {row[0]: row[1:] for row in _rows(_TOOL_SPEC)}
_APOLOGY = {row[2]: row[4] for row in _rows(_TOOL_SPEC)}
_KB = _rows(_KB_SPEC)
_DESCRIPTIONS = {
    "lookup_order": "Fetch an order and its line items by order id.",
    "get_shipping_status": "Get the latest carrier tracking status for an order.",
    "update_shipping_address": "Change the delivery address of an order that has not shipped.",
    "cancel_order": "Cancel an order that has not left the warehouse.",
    "issue_refund": "Refund part or all of an order to the original payment method.",
}


class _CollectingExporter(SpanExporter):
    """Keeps every finished span in memory, in the order the SDK hands them over."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _SeededIdGenerator(IdGenerator):
    """Trace and span ids drawn from a private seeded RNG."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True


@dataclass
class _Session:
    sid: str
    user: str
    model: str
    channel: str
    intent: str


@dataclass
class _Turn:
    base: Attrs  # session.id / user.id, set on every OpenInference span
    facts: dict[str, str]
    model: str
    question: str
    history: list[tuple[str, str]] = field(default_factory=list)  # recent tool results


def _finish(span: Span, end: int, error: tuple[str, str] | None = None, where: str = "") -> None:
    """Set the status (plus a fixed-text ``exception`` event on errors) and end the span."""
    if error is None:
        span.set_status(Status(StatusCode.OK))
    else:
        etype, message = error
        stacktrace = (
            "Traceback (most recent call last):\n"
            f'  File "/srv/support_agent/agent/tools.py", line 142, in {where}\n'
            "    result = await client.call(**arguments)\n"
            '  File "/srv/support_agent/clients/http.py", line 77, in call\n'
            f"    raise map_error(response)\n{etype}: {message}"
        )
        event: Attrs = {"exception.type": etype, "exception.message": message}
        event |= {"exception.stacktrace": stacktrace, "exception.escaped": "True"}
        span.add_event("exception", event, timestamp=end - _MS)
        span.set_status(Status(StatusCode.ERROR, f"{etype}: {message}"))
    span.end(end_time=end)


def _tool_args(name: str, facts: dict[str, str]) -> str:
    values = {"order_id": facts["order"], "amount": float(facts["amount"]), "address": _ADDRESS}
    return json.dumps({p: values.get(p, "customer_request") for p in _TOOLS[name][0].split()})


def _order_history(rng: random.Random, order: str) -> str:
    """About 400 KB of CSV order history containing one duplicated charge for ``order``."""
    lines = [
        "date,order_id,sku,description,qty,unit_price,currency,payment,status,carrier,tracking"
    ]
    size, day = len(lines[0]), datetime(2021, 1, 4, tzinfo=UTC)
    while size < _BIG_CHARS:
        day += timedelta(hours=rng.randint(1, 22), minutes=rng.randint(0, 59))
        name, price = rng.choice(_ITEMS)
        order_id = order if len(lines) == 2000 else f"NW-{rng.randint(100000, 999999)}"
        sku = f"SKU-{rng.randint(1000, 9999)}-{rng.choice('SMLX')}"
        card = f"card_{rng.choice(('visa', 'mc', 'amex'))}_{rng.randint(1000, 9999)}"
        status = rng.choice(("delivered", "delivered", "returned", "refunded"))
        line = (
            f"{day:%Y-%m-%dT%H:%M:%SZ},{order_id},{sku},{name},{rng.randint(1, 3)},{price:.2f},USD,"
            f"{card},{status},{rng.choice(_CARRIERS)},1Z{rng.getrandbits(60):015X}"
        )
        if len(lines) == 2001:  # the duplicated charge the customer is asking about
            line = lines[-1]
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


class _Demo:
    """Drives the scripted agent; one instance produces the whole demo project."""

    def __init__(self, tracer: trace.Tracer, base_ns: int) -> None:
        self.tracer = tracer
        self.base_ns = base_ns
        self.rng = random.Random(_SEED)
        self.turns = 0

    def ms(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi) * _MS

    def span(
        self,
        name: str,
        parent: Span | None,
        start: int,
        attrs: Attrs,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        # Explicit contexts: never pick up an ambient span from the caller.
        ctx = trace.set_span_in_context(parent, Context()) if parent is not None else Context()
        return self.tracer.start_span(name, ctx, kind, attrs, start_time=start)

    def chain(self, tn: _Turn, parent: Span, name: str, start: int, *, inp: str, out: str) -> int:
        attrs: Attrs = {"openinference.span.kind": "CHAIN", **tn.base, "input.value": inp}
        attrs |= {"input.mime_type": "application/json", "output.value": out}
        attrs["output.mime_type"] = "application/json"
        end = start + self.ms(3, 60)
        _finish(self.span(name, parent, start, attrs), end)
        return end + self.ms(1, 4)

    def text_chain(self, tn: _Turn, parent: Span, name: str, start: int, *, out: str) -> Span:
        """An open CHAIN span from the customer's question to ``out``; the caller ends it."""
        attrs: Attrs = {"openinference.span.kind": "CHAIN", **tn.base, "input.value": tn.question}
        attrs |= {"input.mime_type": "text/plain", "output.value": out}
        return self.span(name, parent, start, attrs | {"output.mime_type": "text/plain"})

    def llm(
        self,
        tn: _Turn,
        parent: Span,
        start: int,
        *,
        output: str = "",
        prompt: str | None = None,
        model: str | None = None,
        tool_call: str | None = None,
        genai: bool = False,
    ) -> int:
        rng, model = self.rng, model or tn.model
        msgs = [("system", _SYSTEM_PROMPT), ("user", prompt or tn.question), *tn.history[-2:]]
        out_value = output
        if tool_call is not None:
            args = json.dumps({"query": tn.question})
            if tool_call in _TOOLS:
                args = _tool_args(tool_call, tn.facts)
            out_value = json.dumps({"tool_calls": [{"name": tool_call, "arguments": args}]})
        n_in = sum(len(c) for _, c in msgs) // 4 + rng.randint(5, 40)
        n_out = max(len(out_value) // 4, 6) + rng.randint(0, 25)
        dur = 250 + n_out * rng.uniform(8, 20) + n_in * 0.03 + rng.randint(0, 300)
        end = start + int(dur if n_in > 50_000 else min(max(dur, 400), 4000)) * _MS
        provider = "anthropic" if model.startswith("claude") else "openai"
        params = {"temperature": 0.0 if tool_call else 0.2, "max_tokens": 1024}
        if genai:  # OpenTelemetry GenAI semantic conventions, no OpenInference keys
            attrs: Attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": provider}
            attrs |= {"gen_ai.provider.name": provider, "gen_ai.request.model": model}
            attrs |= {"gen_ai.response.model": f"{model}-2024-07-18"}
            attrs |= {"gen_ai.request.temperature": params["temperature"]}
            attrs |= {"gen_ai.usage.input_tokens": n_in, "gen_ai.usage.output_tokens": n_out}
            attrs["gen_ai.response.finish_reasons"] = ["stop"]
            parts = [{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in msgs]
            attrs["gen_ai.input.messages"] = json.dumps(parts)
            reply = [{"role": "assistant", "parts": [{"type": "text", "content": output}]}]
            attrs["gen_ai.output.messages"] = json.dumps(reply)
            _finish(self.span(f"chat {model}", parent, start, attrs, SpanKind.CLIENT), end)
            return end + self.ms(1, 5)
        attrs = {"openinference.span.kind": "LLM", **tn.base, "llm.model_name": model}
        attrs |= {"llm.provider": provider, "llm.system": provider}
        attrs["llm.invocation_parameters"] = json.dumps(params)
        request = {"model": model, "messages": [{"role": r, "content": c} for r, c in msgs]}
        attrs |= {"input.value": json.dumps(request), "input.mime_type": "application/json"}
        for i, (role, content) in enumerate(msgs):
            attrs[f"llm.input_messages.{i}.message.role"] = role
            attrs[f"llm.input_messages.{i}.message.content"] = content
        attrs["llm.output_messages.0.message.role"] = "assistant"
        if output:
            attrs["llm.output_messages.0.message.content"] = output
        if tool_call is not None:
            key = "llm.output_messages.0.message.tool_calls.0.tool_call.function"
            attrs |= {f"{key}.name": tool_call, f"{key}.arguments": args}
        mime = "application/json" if tool_call else "text/plain"
        attrs |= {"output.value": out_value, "output.mime_type": mime}
        attrs |= {"llm.token_count.prompt": n_in, "llm.token_count.completion": n_out}
        attrs["llm.token_count.total"] = n_in + n_out
        name = "Messages" if provider == "anthropic" else "ChatCompletion"
        _finish(self.span(name, parent, start, attrs), end)
        return end + self.ms(1, 5)

    def tool(
        self, tn: _Turn, parent: Span, start: int, name: str, *, slow: bool, fail: bool
    ) -> tuple[int, tuple[str, str] | None]:
        """An LLM span choosing the tool, then the TOOL span; returns (end, error)."""
        start = self.llm(tn, parent, start, tool_call=name)
        rng, facts = self.rng, tn.facts
        params, etype, emsg, _ = _TOOLS[name]
        props = {p: {"type": "number" if p == "amount" else "string"} for p in params.split()}
        schema = {"type": "object", "properties": props}
        attrs: Attrs = {"openinference.span.kind": "TOOL", **tn.base, "tool.name": name}
        attrs |= {"tool.description": _DESCRIPTIONS[name], "tool.parameters": json.dumps(schema)}
        attrs |= {"input.value": _tool_args(name, facts), "input.mime_type": "application/json"}
        end = start + (rng.randint(8_000, 12_000) if slow else rng.randint(20, 900)) * _MS
        amount = float(facts["amount"])
        result: dict[str, object] = {"order_id": facts["order"]}
        if fail:
            error = (etype, emsg.format(**facts))
            tn.history.append(("tool", json.dumps({"error": f"{etype}: {error[1]}"})))
            _finish(self.span(name, parent, start, attrs), end, error, where=name)
            return end + self.ms(1, 5), error
        if name == "lookup_order":
            result["status"] = rng.choice(("processing", "shipped", "delivered"))
            result["items"] = [{"sku": f"SKU-{rng.randint(1000, 9999)}", "name": facts["item"]}]
            result |= {"total": amount, "currency": "USD", "placed_at": facts["placed"]}
        elif name == "get_shipping_status":
            result |= {"carrier": facts["carrier"], "tracking_number": facts["tracking"]}
            result |= {"status": facts["status"], "estimated_delivery": facts["eta"]}
        elif name == "issue_refund":
            result |= {"refund_id": f"rf_{rng.getrandbits(40):010x}", "amount": amount}
        result["ok"] = True
        tn.history.append(("tool", out := json.dumps(result)))
        attrs |= {"output.value": out, "output.mime_type": "application/json"}
        _finish(self.span(name, parent, start, attrs), end)
        return end + self.ms(1, 5), None

    def retrieve(self, tn: _Turn, parent: Span, start: int, intent: str, *, slow: bool) -> int:
        """An LLM span asking for a help-center search, then the RETRIEVER span."""
        start, rng = self.llm(tn, parent, start, tool_call="search_kb"), self.rng
        attrs: Attrs = {"openinference.span.kind": "RETRIEVER", **tn.base}
        attrs |= {"input.value": tn.question, "input.mime_type": "text/plain"}
        docs = sorted(_KB, key=lambda d: (d[1] != intent, rng.random()))[:3]
        scores = sorted((round(rng.uniform(0.52, 0.93), 4) for _ in docs), reverse=True)
        for i, ((doc_id, _, title, content), score) in enumerate(zip(docs, scores, strict=True)):
            key = f"retrieval.documents.{i}.document"
            meta = {"title": title, "source": "help-center", "updated_at": "2026-09-14"}
            attrs |= {f"{key}.id": doc_id, f"{key}.content": content, f"{key}.score": score}
            attrs[f"{key}.metadata"] = json.dumps(meta)
        end = start + (rng.randint(8_000, 11_000) if slow else rng.randint(40, 380)) * _MS
        _finish(self.span("search_kb", parent, start, attrs), end)
        return end + self.ms(1, 5)

    def turn(self, s: _Session, k: int, start: int, *, slow: bool) -> int:
        """One trace: AGENT root -> memory, plan, tool calls, retrieval, answer, guardrail."""
        rng, n = self.rng, self.turns
        self.turns += 1
        intent = s.intent if k == 0 else rng.choice(list(_INTENTS))
        questions, plan_tools, answers, kb_p = _INTENTS[intent]
        item, price = rng.choice(_ITEMS)
        eta = _EPOCH + timedelta(days=rng.randint(1, 6))
        facts = {"order": f"NW-{rng.randint(100000, 999999)}", "user": s.user, "item": item}
        facts |= {"amount": f"{price:.2f}", "carrier": rng.choice(_CARRIERS)}
        facts |= {"tracking": f"1Z{rng.getrandbits(60):015X}", "status": rng.choice(_SHIP_STATUS)}
        facts |= {"eta": f"{eta:%A, %B} {eta.day}", "placed": f"{eta - timedelta(days=9):%Y-%m-%d}"}
        tn = _Turn({"session.id": s.sid, "user.id": s.user}, facts, s.model, "")
        tn.question = rng.choice(questions).format(**facts)
        extra = {t for t in ("lookup_order", "get_shipping_status") if rng.random() < 0.4}
        tools = [t for t in _TOOLS if t in extra or t in plan_tools]
        use_kb = rng.random() < kb_p or not tools
        abort, big, genai = n in _ABORT_TURNS, n == _BIG_TURN, n in _GENAI_TURNS
        if abort:
            tools, use_kb = tools or ["lookup_order"], False
        meta = {"channel": s.channel, "app_version": "3.8.2", "turn": k + 1, "intent": intent}
        attrs: Attrs = {"openinference.span.kind": "AGENT", **tn.base, "input.value": tn.question}
        attrs |= {"agent.name": "support_agent", "input.mime_type": "text/plain"}
        attrs |= {"metadata": json.dumps(meta), "tag.tags": [intent, s.channel]}
        root = self.span("support_agent", None, start, attrs)
        memory = json.dumps({"session_id": s.sid, "previous_turns": k, "last_intent": s.intent})
        t = self.chain(tn, root, "load_memory", start + self.ms(1, 6), inp="{}", out=memory)
        plan_text = "Plan: " + ", then ".join([*tools, *(["search_kb"] * use_kb), "answer."])
        plan = self.text_chain(tn, root, "plan", t, out=plan_text)
        prompt = tn.question
        if big:  # the one huge span: the customer pasted their whole order history
            history = _order_history(rng, facts["order"])
            prompt += f"\n\nAlso, I think I was charged twice. Here's my order history:\n{history}"
        t = self.ms(1, 3) + t
        t = self.llm(tn, plan, t, output=plan_text, prompt=prompt, model=_PLAN_MODEL, genai=genai)
        _finish(plan, t)
        t += self.ms(1, 4)
        failure: tuple[str, str] | None = None
        for i, name in enumerate(tools):
            forced = abort and i == len(tools) - 1
            fail = forced or rng.random() < _FAIL_P
            t, error = self.tool(tn, root, t, name, slow=slow and i == 0, fail=fail)
            if error and not forced and name == "get_shipping_status" and rng.random() < 0.7:
                t, error = self.tool(tn, root, t, name, slow=False, fail=False)  # retry works
            failure = failure or error
        if abort and failure is not None:  # the agent gives up: root span ends in ERROR
            sorry = "Sorry, something went wrong on our side. Please try again in a few minutes."
            root.set_attributes({"output.value": sorry, "output.mime_type": "text/plain"})
            error = ("AgentExecutionError", f"giving up after {failure[0]} from {tools[-1]}")
            _finish(root, end := t + self.ms(2, 9), error, where="run_turn")
            return end
        if use_kb:
            t = self.retrieve(tn, root, t, intent, slow=slow and not tools)
        answer = (rng.choice(answers) if failure is None else _APOLOGY[failure[0]]).format(**facts)
        respond = self.text_chain(tn, root, "respond", t, out=answer)
        t = self.llm(tn, respond, t + self.ms(1, 3), output=answer)
        _finish(respond, t)
        t += self.ms(1, 4)
        verdict = {"pii_leak": False, "toxicity": round(rng.uniform(0, 0.04), 3), "passed": True}
        answer_json, verdict_json = json.dumps({"text": answer}), json.dumps(verdict)
        t = self.chain(tn, root, "output_guardrail", t, inp=answer_json, out=verdict_json)
        root.set_attributes({"output.value": answer, "output.mime_type": "text/plain"})
        _finish(root, end := t + self.ms(2, 9))
        return end

    def run(self) -> None:
        rng, t = self.rng, self.base_ns
        for i in range(1, _SESSIONS + 1):
            t += rng.randint(6, 22) * 60_000 * _MS
            user, model = f"user-{rng.randint(1, 240):03d}", rng.choice(_MODELS)
            channel, intent = rng.choice(_CHANNELS), rng.choice(list(_INTENTS))
            s = _Session(f"sess-{i:04d}", user, model, channel, intent)
            n_turns = rng.choice((2, 3, 3, 4, 4, 5, 5))
            slow = rng.randrange(n_turns) if rng.random() < 0.35 else -1
            start = t
            for k in range(n_turns):
                start = self.turn(s, k, start, slow=k == slow) + rng.randint(25, 240) * 1000 * _MS


def demo_requests(now: datetime | None = None) -> list[bytes]:
    """Serialized OTLP ExportTraceServiceRequest protobufs (one per export batch) holding the demo
    project: whole traces per request, at most ~200 spans each. The demo ends just before ``now``
    (default: the current time, to the second); byte-identical on every call with the same
    ``now``."""
    anchor = (now or datetime.now(UTC)).replace(microsecond=0)
    anchor = anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC)
    base_ns = int((anchor - DEMO_LENGTH).timestamp()) * 1_000_000_000
    unset = SpanLimits.UNSET  # a ``None`` limit would mean "read the OTEL_* environment variable"
    limits = SpanLimits(
        max_attributes=10_000,
        max_events=1_000,
        max_links=128,
        max_span_attributes=10_000,
        max_event_attributes=1_000,
        max_link_attributes=128,
        max_attribute_length=unset,
        max_span_attribute_length=unset,
    )
    # Resource(...) rather than Resource.create(), which merges OTEL_RESOURCE_ATTRIBUTES and more.
    resource = Resource({"openinference.project.name": DEMO_PROJECT, "service.name": DEMO_SERVICE})
    provider = TracerProvider(
        sampler=ALWAYS_ON,
        resource=resource,
        shutdown_on_exit=False,
        id_generator=_SeededIdGenerator(_SEED),
        span_limits=limits,
    )
    provider._disabled = False  # OTEL_SDK_DISABLED=true would otherwise hand out no-op tracers
    exporter = _CollectingExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        _Demo(provider.get_tracer("support_agent", "1.0.0"), base_ns).run()
    finally:
        provider.shutdown()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in exporter.spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    batches: list[list[ReadableSpan]] = [[]]
    for spans in by_trace.values():  # whole traces per request, at most ~200 spans each
        if batches[-1] and len(batches[-1]) + len(spans) > _MAX_SPANS_PER_REQUEST:
            batches.append([])
        batches[-1].extend(spans)
    return [bytes(encode_spans(batch).SerializeToString(deterministic=True)) for batch in batches]
