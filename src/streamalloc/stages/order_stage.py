"""Order stage: follows every line of an order (allocations, keyed by order_id).

It publishes `order-status` at most once per order per commit, once every line has a
decision, and enforces ship-complete: when a line of a ship-complete order is rejected,
it sends releases for the order's other lines, including lines decided later. A whole-
order cancellation (`cancel_requested`, from intake) releases every line it knows of, and
any line allocated afterwards.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamalloc.config import Settings
from streamalloc.errors import StateError, ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import PartitionTransaction
from streamalloc.serialization import topic_serde
from streamalloc.stages.intake import CANCEL_REQUESTED

STORE = "order-stage"
_V1 = 1
HOLDING = frozenset({"allocated", "picked", "backordered"})
FINAL_AFTER_RELEASE = frozenset({"released", "rejected", "fulfilled", "returned"})


@dataclass
class LineView:
    sku: str
    qty: int
    allocated: int = 0
    status: str = "pending"
    reason: str | None = None


@dataclass
class OrderView:
    channel: str = ""
    line_count: int | None = None
    ship_complete: bool = False
    cancelled: bool = False
    ship_failed: bool = False
    occurred_at: int = 0
    lines: dict[str, LineView] = field(default_factory=dict)

    def encode(self) -> bytes:
        lines = {k: (v.sku, v.qty, v.allocated, v.status, v.reason) for k, v in self.lines.items()}
        return marshal.dumps(
            (
                _V1,
                self.channel,
                self.line_count,
                self.ship_complete,
                self.cancelled,
                self.ship_failed,
                self.occurred_at,
                lines,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> OrderView:
        values = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
        if values[0] != _V1:
            raise StateError(f"unknown order record version {values[0]}")
        _, channel, line_count, ship_complete, cancelled, ship_failed, occurred_at, lines = values
        return cls(
            channel,
            line_count,
            ship_complete,
            cancelled,
            ship_failed,
            occurred_at,
            {k: LineView(*v) for k, v in lines.items()},
        )

    def status(self) -> str | None:
        """The order's status once every line has a decision, else None.

        While this stage's own releases (whole-order cancel, failed ship-complete) are in
        flight there is none either: a ship-complete order must never read as partially
        allocated, nor a cancelled one as allocated. A cancel that listed every line is a
        cancellation too, not a rejection.
        """
        if self.line_count is None or len(self.lines) < self.line_count:
            return None
        statuses = [line.status for line in self.lines.values()]
        if "pending" in statuses:
            return None
        if (self.cancelled or self.ship_failed) and any(s in HOLDING for s in statuses):
            return None
        if all(s == "fulfilled" or s == "returned" for s in statuses):
            return "fulfilled"
        if all(s in ("released", "rejected") for s in statuses) and (
            self.cancelled
            or any(line.status == "released" and line.reason == "cancelled" for line in self.lines.values())
        ):
            return "cancelled"
        if "backordered" in statuses:
            return "backordered"
        holding = sum(s in ("allocated", "picked", "fulfilled") for s in statuses)
        if holding == len(statuses):
            return "allocated"
        if holding == 0:
            return "rejected"
        return "partially_allocated"


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
        self._dirty: dict[int, tuple[PartitionTransaction, dict[str, str]]] = {}

    def topics(self) -> Sequence[str]:
        return [self._allocations_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise ValidationError("an allocation event needs a value")
        return self._allocations.decode(value, topic=topic)

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        txn = ctx.stores[STORE]
        entry = self._dirty.get(ctx.partition)
        if entry is None or entry[0] is not txn:
            entry = self._dirty[ctx.partition] = (txn, {})
        dirty = entry[1]
        orders: dict[str, OrderView] = {}
        for record in records:
            event = record.value
            order_id = event["order_id"]
            order = orders.get(order_id)
            if order is None:
                data = txn.get(order_id.encode())
                order = orders[order_id] = OrderView() if data is None else OrderView.decode(data)
            self._apply(ctx, order, event)
            dirty[order_id] = event["event_id"]
        for order_id, order in orders.items():
            txn.set(order_id.encode(), order.encode())

    def _apply(self, ctx: PartitionContext, order: OrderView, event: dict[str, Any]) -> None:
        kind = event["type"]
        order.channel = order.channel or event["channel"]
        order.occurred_at = max(order.occurred_at, event["decided_at"])
        if kind == "accepted":
            order.line_count = event["line_count"]
            order.ship_complete = event["ship_complete"]
            return
        if kind == CANCEL_REQUESTED:
            order.cancelled = True
            for line_id, line in order.lines.items():
                if line.status in HOLDING:
                    self._release(ctx, event, order, line_id, line, "cancelled")
            return
        line_id, sku = event["line_id"], event["sku"]
        if line_id is None or sku is None:
            return
        known = order.lines.get(line_id)
        line = known if known is not None else order.lines.setdefault(line_id, LineView(sku, event["qty"]))
        if kind == "allocated":
            line.allocated = line.allocated + event["qty"] if line.status == "allocated" else event["qty"]
            line.status, line.reason = "allocated", None
        elif kind in ("rejected", "released"):
            line.status, line.reason, line.allocated = kind, event["reason"], 0
        elif kind in ("backordered", "picked", "fulfilled", "returned"):
            line.status = kind
        if kind == "rejected" and order.ship_complete and not order.ship_failed:
            order.ship_failed = True
            for other_id, other in order.lines.items():
                if other_id != line_id and other.status in HOLDING:
                    self._release(ctx, event, order, other_id, other, "ship_complete_failed")
        elif kind in ("allocated", "backordered") and (order.cancelled or order.ship_failed):
            reason = "cancelled" if order.cancelled else "ship_complete_failed"
            self._release(ctx, event, order, line_id, line, reason)

    def _release(
        self,
        ctx: PartitionContext,
        cause: dict[str, Any],
        order: OrderView,
        line_id: str,
        line: LineView,
        reason: str,
    ) -> None:
        request = {
            "event_id": f"{cause['event_id']}:{line_id}:release",
            "cause_event_id": cause["event_id"],
            "command": "release",
            "order_id": cause["order_id"],
            "line_id": line_id,
            "sku": line.sku,
            "qty": line.qty,
            "channel": order.channel,
            "location": None,
            "lot": None,
            "priority": 0,
            "ship_complete": order.ship_complete,
            "region": None,
            "reservation_ttl_s": None,
            "line_count": order.line_count or 1,
            "reason": reason,
            "occurred_at": cause["occurred_at"],
        }
        ctx.emit(self._requests_topic, line.sku.encode(), self._requests.encode(request))

    def before_commit(self, ctx: PartitionContext) -> None:
        entry = self._dirty.pop(ctx.partition, None)
        txn = ctx.stores.get(STORE)
        if entry is None or txn is None or entry[0] is not txn:
            return
        for order_id, cause in entry[1].items():
            data = txn.get(order_id.encode())
            if data is None:
                continue
            order = OrderView.decode(data)
            status = order.status()
            if status is None:
                continue
            record = {
                "event_id": f"{cause}:status",
                "order_id": order_id,
                "status": status,
                "lines": [
                    {
                        "line_id": line_id,
                        "sku": line.sku,
                        "qty": line.qty,
                        "allocated": line.allocated,
                        "status": line.status,
                        "reason": line.reason,
                    }
                    for line_id, line in sorted(order.lines.items())
                ],
                "occurred_at": order.occurred_at,
            }
            ctx.emit(self._status_topic, order_id.encode(), self._status.encode(record))
