"""The agent's tools and the little world they see: an order service, refunds, a help center.

Everything is in memory and fixed (today is :data:`TODAY`), so every run answers the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

TODAY = date(2026, 11, 28)
REFUND_WINDOW_DAYS = 30


class OrderNotFound(LookupError):
    """The order service has no order under that key."""


class RefundRefused(ValueError):
    """The order cannot be refunded (not delivered, too old, already refunded)."""


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    item: str
    total_cents: int
    status: str  # processing | shipped | delivered | cancelled
    ships_by: str | None = None
    shipped_on: str | None = None
    carrier: str | None = None
    eta: str | None = None
    delivered_on: str | None = None
    cancelled_on: str | None = None


def _orders(*orders: Order) -> dict[str, Order]:
    return {o.id: o for o in orders}


def _shipped(id: str, item: str, cents: int, on: str, carrier: str, eta: str) -> Order:
    return Order(id, item, cents, "shipped", shipped_on=on, carrier=carrier, eta=eta)


#: The order service's orders, keyed by order id. Ids are five digits, zero-padded (``04127``);
#: orders from the old shop, before 2025, kept their four-digit ids (``4417``).
ORDERS = _orders(
    Order("10234", "blue kettle", 3900, "delivered", delivered_on="2026-11-20"),
    _shipped("20417", "running shoes", 8900, "2026-11-25", "ParcelCo", eta="2026-11-29"),
    Order("31552", "desk lamp", 4250, "processing", ships_by="2026-12-02"),
    Order("48820", "wool scarf", 2900, "delivered", delivered_on="2026-09-14"),
    Order("52009", "phone case", 1499, "cancelled", cancelled_on="2026-11-18"),
    Order("67310", "coffee grinder", 8950, "delivered", delivered_on="2026-11-26"),
    _shipped("73125", "yoga mat", 3500, "2026-11-24", "QuickShip", eta="2026-11-30"),
    Order("89004", "headphones", 12900, "delivered", delivered_on="2026-11-02"),
    Order("91877", "backpack", 6400, "processing", ships_by="2026-12-01"),
    Order("04127", "tea set", 4500, "delivered", delivered_on="2026-11-22"),
    _shipped("00981", "umbrella", 2400, "2026-11-26", "ParcelCo", eta="2026-12-01"),
    Order("07736", "cast iron pan", 5900, "delivered", delivered_on="2026-10-01"),
    Order("03350", "board game", 3999, "processing", ships_by="2026-12-03"),
    Order("05512", "water bottle", 2200, "delivered", delivered_on="2026-11-24"),
    Order("00406", "notebook set", 1250, "cancelled", cancelled_on="2026-11-21"),
    _shipped("06093", "bike light", 1900, "2026-11-27", "QuickShip", eta="2026-12-02"),
    Order("4417", "picture frame", 1800, "delivered", delivered_on="2026-11-10"),
    Order("7702", "garden hose", 3100, "delivered", delivered_on="2026-08-30"),
    _shipped("2290", "alarm clock", 2600, "2026-11-23", "ParcelCo", eta="2026-11-28"),
)


def order_key(order_id: str) -> str:
    """The key the order service files an order under, from the id the customer typed."""
    return str(int(order_id))


def lookup_order(order_id: str) -> dict[str, Any]:
    """The order's item, status, dates and total."""
    key = order_key(order_id)
    order = ORDERS.get(key)
    if order is None:
        raise OrderNotFound(f"no order {key!r} in the order service")
    return _public(order)


def _public(order: Order) -> dict[str, Any]:
    fields = {
        "order_id": order.id,
        "item": order.item,
        "total_cents": order.total_cents,
        "status": order.status,
        "ships_by": order.ships_by,
        "shipped_on": order.shipped_on,
        "carrier": order.carrier,
        "eta": order.eta,
        "delivered_on": order.delivered_on,
        "cancelled_on": order.cancelled_on,
    }
    return {k: v for k, v in fields.items() if v is not None}


def refund_refusal(order: dict[str, Any]) -> str | None:
    """Why ``order`` (as :func:`lookup_order` returns it) cannot be refunded, or None."""
    if order["status"] == "cancelled":
        return "already cancelled and refunded"
    if order["status"] != "delivered":
        return "not delivered yet"
    age = (TODAY - date.fromisoformat(order["delivered_on"])).days
    if age > REFUND_WINDOW_DAYS:
        return f"delivered {age} days ago, outside the {REFUND_WINDOW_DAYS}-day window"
    return None


def refund(order_id: str, reason: str) -> dict[str, Any]:
    """Refund a delivered order in full, within the refund window."""
    order = lookup_order(order_id)
    refusal = refund_refusal(order)
    if refusal is not None:
        raise RefundRefused(f"order {order['order_id']} cannot be refunded: {refusal}")
    return {
        "refund_id": f"RF-{order['order_id']}",
        "order_id": order["order_id"],
        "amount_cents": order["total_cents"],
        "reason": reason,
    }


@dataclass(frozen=True, slots=True)
class Doc:
    title: str
    text: str
    keywords: tuple[str, ...]


DOCS = (
    Doc(
        "Returns and refunds",
        "Items can be returned for a full refund within 30 days of delivery. Refunds go back to "
        "the original payment method within 5 business days.",
        ("return", "refund", "money back", "exchange"),
    ),
    Doc(
        "Shipping",
        "Orders ship within 2 business days. Standard delivery takes 3 to 5 business days, "
        "express delivery 1 to 2.",
        ("ship", "delivery time", "express", "how long", "arrive"),
    ),
    Doc(
        "Warranty",
        "Electronics carry a 1-year warranty. Write to support with your order number to make "
        "a claim.",
        ("warranty", "guarantee", "broke after", "stopped working"),
    ),
    Doc(
        "Payment",
        "We accept Visa, Mastercard, American Express and PayPal.",
        ("pay", "card", "paypal", "visa", "mastercard"),
    ),
    Doc(
        "Changing your address",
        "The delivery address can be changed until the order ships, under Account > Orders.",
        ("address", "move", "moved"),
    ),
    Doc(
        "Contact",
        "A person answers at support@example.com or +1 555 0100, 9:00 to 17:00 UTC on weekdays.",
        ("human", "person", "agent", "phone", "call", "email", "contact", "talk to"),
    ),
)


def search_docs(query: str) -> dict[str, Any]:
    """Help-center articles whose keywords the query mentions, best first (at most 2)."""
    text = query.lower()
    scored = []
    for rank, doc in enumerate(DOCS):
        hits = sum(1 for k in doc.keywords if re.search(rf"\b{re.escape(k)}", text))
        if hits:
            scored.append((-hits, rank, doc))
    scored.sort()
    return {
        "results": [{"title": d.title, "text": d.text, "score": -neg} for neg, _, d in scored[:2]]
    }


#: The tools the model may call: name → (function, description, JSON Schema of the arguments).
TOOLS: dict[str, tuple[Callable[..., dict[str, Any]], str, dict[str, Any]]] = {
    "lookup_order": (
        lookup_order,
        "Look an order up by its id: item, status, dates, total.",
        {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "as written"}},
            "required": ["order_id"],
        },
    ),
    "refund": (
        refund,
        "Refund a delivered order in full (within 30 days of delivery).",
        {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "reason": {
                    "type": "string",
                    "enum": ["damaged", "wrong_item", "late", "changed_mind"],
                },
            },
            "required": ["order_id", "reason"],
        },
    ),
    "search_docs": (
        search_docs,
        "Search the help center (returns, shipping, warranty, payment, address, contact).",
        {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    ),
}
