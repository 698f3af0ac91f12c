"""Intake: order events -> one command per line keyed by SKU, plus `accepted` per placed order.

A `held` order event (a cart's checkout hold) is accepted as a placement is: the order stage
then knows the cart's lines and reports its status (`held`).

An `amended` order event (an order edit, listing the order's lines as they are now) becomes
an `amend` request per line for the allocator, which changes the line's units in one
decision (domain/amend.py), and an `amend_requested` per line on `allocations`, from which
the order stage learns the order's new lines and releases those the edit left out.

A line whose SKU is a kit (the `kits` global table, stages/tables.py) is expanded before
anything else into one line per component: line id `<line_id>/<component sku>`, units
the line's times the component's per kit, no lot (a kit's lot names no component's). Its
components live on other partitions, so the order is made ship-complete: the order stage
then releases every other line when one is rejected. The order stage only knows whole
orders, so this binds every line of an order that has a kit line, not only the kit's
components (docs/contract.md, Kits). Every later event naming the kit line (a cancel, a
pick, a fulfilment, a return, an edit) is expanded the same way, with the kits table as
it is then. An order without a kit line costs one dict lookup per line.

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
from streamalloc.domain import AmendRequested, CancelRequested, OrderAccepted
from streamalloc.domain.kits import Kit
from streamalloc.errors import ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.serialization import topic_serde
from streamalloc.stages.records import LINE_COMMANDS, AllocationRequest
from streamalloc.stages.tables import KitsProvider


def _no_kits() -> Mapping[str, Kit]:
    return {}


class IntakeStage(BaseStage):
    name = "intake"
    stores: Sequence[str] = ()

    def __init__(self, settings: Settings, kits: KitsProvider = _no_kits) -> None:
        self._kits = kits
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
        kits = self._kits()
        for record in records:
            order = record.value
            if kits:
                order = expand_kits(order, kits)
            kind = order["type"]
            key = order["order_id"].encode()
            if kind == "placed" or kind == "held":  # a cart's hold is seen as its order is
                emit(allocations_topic, key, allocations.encode(accepted(order).as_record()))
            elif kind == "cancelled" and not order["lines"]:
                emit(allocations_topic, key, allocations.encode(cancel_requested(order).as_record()))
                continue
            elif kind == "amended":  # the order stage learns the order's lines as they are now
                for amend in amend_requested(order):
                    emit(allocations_topic, key, allocations.encode(amend.as_record()))
            for request in line_requests(order):
                emit(requests_topic, request.sku.encode(), requests.encode(request.as_record()))


def check_order(order: Mapping[str, Any]) -> None:
    """Refuse (ValidationError) what the schema admits but intake cannot split into lines.

    An empty id is refused like a missing one (the JSON path refuses both already; an Avro
    record reaches this check with whatever strings it carries), naming the field.
    """
    for name in ("event_id", "order_id", "channel"):
        if not order[name]:
            raise ValidationError(f"order event: {name}: must not be empty")
    if order["type"] != "cancelled" and not order["lines"]:
        raise ValidationError(f"a {order['type']} order event needs at least one line")
    seen: set[str] = set()
    for i, line in enumerate(order["lines"]):
        for name in ("line_id", "sku"):
            if not line[name]:
                raise ValidationError(
                    f"order event {order['event_id']}: lines[{i}].{name}: must not be empty"
                )
        if line["line_id"] in seen:
            raise ValidationError(f"line_id {line['line_id']!r} appears twice in order {order['order_id']}")
        seen.add(line["line_id"])


def expand_kits(order: Mapping[str, Any], kits: Mapping[str, Kit]) -> Mapping[str, Any]:
    """The order event with each kit line replaced by its components' lines, ship-complete
    (see the module doc); the same event when it names no kit (one lookup per line)."""
    lines = order["lines"]
    expanded: list[Mapping[str, Any]] | None = None
    for i, line in enumerate(lines):
        kit = kits.get(line["sku"])
        if kit is None:
            if expanded is not None:
                expanded.append(line)
            continue
        if expanded is None:
            expanded = list(lines[:i])
        line_id, qty = line["line_id"], line["qty"]
        expanded.extend(
            {**line, "line_id": f"{line_id}/{sku}", "sku": sku, "qty": qty * per_kit, "lot": None}
            for sku, per_kit in kit.components
        )
    if expanded is None:
        return order
    return {**order, "lines": expanded, "ship_complete": True}


def line_requests(order: Mapping[str, Any]) -> list[AllocationRequest]:
    """The allocation requests of a decoded order event: one per line it lists.

    Pure, so the offline replay (`streamalloc replay`) turns orders into commands exactly
    as intake does. A whole-order cancellation lists no lines and so yields none: the
    order stage expands it.
    """
    command = LINE_COMMANDS[order["type"]]
    return [AllocationRequest.line(order, line, command) for line in order["lines"]]


def accepted(order: Mapping[str, Any]) -> OrderAccepted:
    """The `accepted` event of a decoded placed order event."""
    lines = order["lines"]
    return OrderAccepted.of(
        order["event_id"],
        order["order_id"],
        order["channel"],
        len(lines),
        sum(line["qty"] for line in lines),
        order["ship_complete"],
        order["occurred_at"],
    )


def cancel_requested(order: Mapping[str, Any]) -> CancelRequested:
    """The request of a decoded whole-order cancellation (a `cancelled` event listing no lines)."""
    return CancelRequested.of(order["event_id"], order["order_id"], order["channel"], order["occurred_at"])


def amend_requested(order: Mapping[str, Any]) -> list[AmendRequested]:
    """The `amend_requested` events of a decoded amended order event: one per line it lists."""
    lines = order["lines"]
    return [
        AmendRequested.of(
            order["event_id"],
            order["order_id"],
            order["channel"],
            line["line_id"],
            line["sku"],
            line["qty"],
            len(lines),
            order["occurred_at"],
        )  # fmt: skip
        for line in lines
    ]
