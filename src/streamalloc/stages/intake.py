"""Intake: order events -> one command per line keyed by SKU, plus `accepted` per placed order.

Stateless. Reads `orders` and every `orders.<channel>` topic (by pattern). A whole-order
cancellation (no lines listed) cannot be split here, since intake does not know the
order's lines: it becomes a `cancel_requested` event on `allocations`, keyed by order id,
and the order stage, which follows every line, sends the releases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from streamalloc.config import Settings
from streamalloc.errors import ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.serialization import topic_serde

LINE_COMMANDS = {
    "placed": "allocate",
    "cancelled": "release",
    "picked": "pick",
    "fulfilled": "fulfil",
    "returned": "return",
}
CANCEL_REQUESTED = "cancel_requested"


class IntakeStage(BaseStage):
    name = "intake"
    stores: Sequence[str] = ()

    def __init__(self, settings: Settings) -> None:
        self._orders = settings.topic("orders")
        self._pattern = re.compile(re.escape(settings.topic("orders.")) + r"[^.]+")
        self._requests_topic = settings.topic("allocation-requests")
        self._allocations_topic = settings.topic("allocations")
        self._order_serde = topic_serde(settings, self._orders)
        self._requests = topic_serde(settings, self._requests_topic)
        self._allocations = topic_serde(settings, self._allocations_topic)

    def topics(self) -> Sequence[str]:
        return [self._orders]

    def topic_pattern(self) -> re.Pattern[str] | None:
        return self._pattern

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise ValidationError("an order event needs a value")
        order = self._order_serde.decode(value, topic=topic)
        check_order(order)
        return order

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        emit, requests, allocations = ctx.emit, self._requests, self._allocations
        requests_topic, allocations_topic = self._requests_topic, self._allocations_topic
        for record in records:
            order = record.value
            kind, order_id, event_id = order["type"], order["order_id"], order["event_id"]
            key = order_id.encode()
            if kind == "placed":
                accepted = {
                    "event_id": f"{event_id}:accepted",
                    "cause_event_id": event_id,
                    "type": "accepted",
                    "order_id": order_id,
                    "line_id": None,
                    "sku": None,
                    "channel": order["channel"],
                    "qty": sum(line["qty"] for line in order["lines"]),
                    "location": None,
                    "lot": None,
                    "reason": None,
                    "line_count": len(order["lines"]),
                    "ship_complete": order["ship_complete"],
                    "occurred_at": order["occurred_at"],
                    "decided_at": order["occurred_at"],
                }
                emit(allocations_topic, key, allocations.encode(accepted))
            elif kind == "cancelled" and not order["lines"]:
                emit(allocations_topic, key, allocations.encode(_cancel_requested(order)))
                continue
            for request in line_requests(order):
                emit(requests_topic, request["sku"].encode(), requests.encode(request))


def check_order(order: Mapping[str, Any]) -> None:
    """Refuse (ValidationError) what the schema admits but intake cannot split into lines."""
    if order["type"] in ("placed", "picked", "fulfilled", "returned") and not order["lines"]:
        raise ValidationError(f"a {order['type']} order event needs at least one line")
    seen: set[str] = set()
    for line in order["lines"]:
        if line["line_id"] in seen:
            raise ValidationError(f"line_id {line['line_id']!r} appears twice in order {order['order_id']}")
        seen.add(line["line_id"])


def line_requests(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The allocation-request records of a decoded order event: one per line it lists.

    Pure, so the offline replay (`streamalloc replay`) turns orders into commands exactly
    as intake does. A whole-order cancellation lists no lines and so yields none: the
    order stage expands it.
    """
    kind, order_id, event_id = order["type"], order["order_id"], order["event_id"]
    command = LINE_COMMANDS[kind]
    count = len(order["lines"])
    return [
        {
            "event_id": f"{event_id}:{line['line_id']}",
            "cause_event_id": event_id,
            "command": command,
            "order_id": order_id,
            "line_id": line["line_id"],
            "sku": line["sku"],
            "qty": line["qty"],
            "channel": order["channel"],
            "location": line["location"],
            "lot": line["lot"],
            "priority": order["priority"],
            "ship_complete": order["ship_complete"],
            "region": order["region"],
            "reservation_ttl_s": order["reservation_ttl_s"],
            "line_count": count,
            "reason": "cancelled" if kind == "cancelled" else None,
            "occurred_at": order["occurred_at"],
        }
        for line in order["lines"]
    ]


def _cancel_requested(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": f"{order['event_id']}:{CANCEL_REQUESTED}",
        "cause_event_id": order["event_id"],
        "type": CANCEL_REQUESTED,
        "order_id": order["order_id"],
        "line_id": None,
        "sku": None,
        "channel": order["channel"],
        "qty": 0,
        "location": None,
        "lot": None,
        "reason": "cancelled",
        "line_count": None,
        "ship_complete": False,
        "occurred_at": order["occurred_at"],
        "decided_at": order["occurred_at"],
    }
