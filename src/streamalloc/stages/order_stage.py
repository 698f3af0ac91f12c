"""Order stage: follows every order (allocations, keyed by order_id) with the domain's rules.

Each record is decoded into the domain's order event, applied to the order's state
(`domain.orders.apply`: ship-complete and whole-order cancel, and each line's status and
units), and the releases the rules ask for go out as allocation requests. `order-status`
goes out at most once per order per commit, from `before_commit`, once the order has one
(`domain.orders.status`).

Store: one record per order (key: order id), marshal of a versioned tuple. Version 2
keeps each line's units per location and lot, the order's placement ids and the ids of
the events applied (a handful per order); a version 1 record (before them) still decodes
(see `_decode_v1`).
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from typing import Any

from streamalloc.config import Settings
from streamalloc.domain import OrderEvent, OrderLine, OrderState, orders
from streamalloc.domain.orders import Units
from streamalloc.errors import StateError, ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import PartitionTransaction
from streamalloc.serialization import topic_serde
from streamalloc.stages.records import AllocationRequest, OrderStatusRecord, order_event

STORE = "order-stage"
_V1 = 1
_V2 = 2


class OrderStage(BaseStage):
    name = "order-stage"
    stores: Sequence[str] = (STORE,)

    def __init__(self, settings: Settings) -> None:
        self._allocations_topic = settings.topic("allocations")
        self._requests_topic = settings.topic("allocation-requests")
        self._status_topic = settings.topic("order-status")
        self._allocations = topic_serde(settings, self._allocations_topic)
        self._requests = topic_serde(settings, self._requests_topic)
        self._status = topic_serde(settings, self._status_topic)
        # partition -> (the transaction they belong to, order id -> its order-status record as
        # of the latest batch, encoded, or None while it has none): bytes, not the orders
        # themselves, so a large transaction keeps no object graph alive for the collector
        self._dirty: dict[int, tuple[PartitionTransaction, dict[str, bytes | None]]] = {}

    def topics(self) -> Sequence[str]:
        return [self._allocations_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> OrderEvent:
        if value is None:
            raise ValidationError("an allocation event needs a value")
        return order_event(self._allocations.decode(value, topic=topic))

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        txn = ctx.stores[STORE]
        entry = self._dirty.get(ctx.partition)
        if entry is None or entry[0] is not txn:  # an aborted batch's orders go with its txn
            entry = self._dirty[ctx.partition] = (txn, {})
        dirty = entry[1]
        emit, encode, topic = ctx.emit, self._requests.encode, self._requests_topic
        changed: dict[str, tuple[str, OrderState]] = {}  # order id -> (its latest event id, state)
        for record in records:
            event: OrderEvent = record.value
            order_id = event.order_id
            seen = changed.get(order_id)
            if seen is None:
                data = txn.get(order_id.encode())
                order = OrderState() if data is None else decode_order(data)
            else:
                order = seen[1]
            changed[order_id] = (event.event_id, order)
            _, releases = orders.apply(order, event)
            for release in releases:
                request = AllocationRequest.release(release, order)
                emit(topic, release.sku.encode(), encode(request.as_record()))
        for order_id, (cause, order) in changed.items():
            txn.set(order_id.encode(), encode_order(order))
            status = orders.status(order)
            dirty[order_id] = (
                None
                if status is None
                else self._status.encode(OrderStatusRecord.of(order_id, order, status, cause).as_record())
            )

    def before_commit(self, ctx: PartitionContext) -> None:
        entry = self._dirty.pop(ctx.partition, None)
        txn = ctx.stores.get(STORE)
        if entry is None or txn is None or entry[0] is not txn:
            return
        for order_id, status in entry[1].items():
            if status is not None:  # its status after the last batch of the commit that changed it
                ctx.emit(self._status_topic, order_id.encode(), status)


# ---------------------------------------------------------------- store record


def encode_order(order: OrderState) -> bytes:
    """The store record of an order (version 2)."""
    lines = {
        line_id: (
            line.sku,
            line.qty,
            line.status,
            line.reason,
            line.returned,
            tuple(key + units for key, units in line.units.items()),  # (location, lot, soft, hard, shipped)
        )
        for line_id, line in order.lines.items()
    }
    return marshal.dumps(
        (
            _V2,
            order.channel,
            order.line_count,
            order.ship_complete,
            order.placements,
            order.cancelled,
            order.ship_failed,
            order.decided_at,
            lines,
            order.applied,
        )
    )


def decode_order(data: bytes) -> OrderState:
    values: tuple[Any, ...] = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
    if values[0] == _V1:
        return _decode_v1(values)
    if values[0] != _V2:
        raise StateError(f"unknown order record version {values[0]}")
    _, channel, line_count, ship_complete, placements, cancelled, ship_failed, decided_at, lines, applied = (
        values
    )
    return OrderState(
        channel,
        line_count,
        ship_complete,
        placements,
        cancelled,
        ship_failed,
        decided_at,
        {
            line_id: OrderLine(sku, qty, status, reason, {u[:2]: Units._make(u[2:]) for u in units}, returned)
            for line_id, (sku, qty, status, reason, returned, units) in lines.items()
        },
        applied,
    )


def _decode_v1(values: tuple[Any, ...]) -> OrderState:
    """A record from before units were kept per location (version 1).

    Its flags, line statuses and reasons carry over. It knew how many units a line held,
    not where, so its lines start with none: the events that follow move them from what
    they say (a release or shipment where nothing is known takes nothing), so the statuses
    stay right and the units the order status reports are those seen since the upgrade.
    Its placement ids are unknown: a rejection then decides as `domain.orders` says.
    """
    _, channel, line_count, ship_complete, cancelled, ship_failed, occurred_at, lines = values
    return OrderState(
        channel,
        line_count,
        ship_complete,
        (),
        cancelled,
        ship_failed,
        occurred_at,
        {
            line_id: OrderLine(sku, qty, status, reason)
            for line_id, (sku, qty, _, status, reason) in lines.items()
        },
    )
