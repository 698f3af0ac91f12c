"""Typed records at the contract's edge: built once here, as the topics carry them.

`AllocationRequest` is one record of the internal `allocation-requests` topic
(schemas/allocation_request.avsc): intake makes one per order line, the order stage one
per release. `OrderStatusRecord` is one record of `order-status` (schemas/order_status.avsc),
its lines `OrderStatusLine`s. Each is immutable (a frozen dataclass, a named tuple for a
line) and its `as_record()` gives the contract's dict, as `domain.AllocationEvent.as_record()`
does; `order_event` reads an `allocations` record into the domain's order events.

Intake builds a request per order line, and the order stage a status per changed order
per batch, so `AllocationRequest.line` and `OrderStatusRecord.of` fill the instance in one
step (see domain/events.py: a frozen dataclass's own `__init__` sets each field
separately, several times slower); the result equals the constructor's (tests check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from streamalloc.domain import (
    ALLOCATION_EVENT_TYPES,
    AllocationEvent,
    AmendRequested,
    CancelRequested,
    OrderAccepted,
    OrderEvent,
    OrderState,
    OrderStatus,
    ReleaseLine,
    reasons,
)
from streamalloc.errors import ValidationError

#: Order event type -> the allocation request command of each line it lists.
LINE_COMMANDS: Final = {
    "placed": "allocate",
    "cancelled": "release",
    "picked": "pick",
    "fulfilled": "fulfil",
    "returned": "return",
    "held": "hold",
    "confirmed": "confirm",
    "extended": "extend",
    "amended": "amend",
}
ACCEPTED: Final = "accepted"
CANCEL_REQUESTED: Final = "cancel_requested"
AMEND_REQUESTED: Final = "amend_requested"

_T = TypeVar("_T")


def _build(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass `cls` with exactly `values` as its fields."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    return obj


@dataclass(frozen=True)
class AllocationRequest:
    """One per-line command for the allocator (topic allocation-requests, keyed by sku)."""

    event_id: str
    cause_event_id: str
    command: str  # allocate, release, pick, fulfil or return
    order_id: str
    line_id: str
    sku: str
    qty: int
    channel: str
    location: str | None = None
    lot: str | None = None
    priority: int = 0
    ship_complete: bool = False
    region: str | None = None
    reservation_ttl_s: int | None = None
    line_count: int = 1
    reason: str | None = None
    occurred_at: int = 0

    def as_record(self) -> dict[str, Any]:
        """The request as the contract's dict (schemas/allocation_request.avsc)."""
        return dict(self.__dict__)

    @classmethod
    def line(cls, order: Mapping[str, Any], line: Mapping[str, Any], command: str) -> AllocationRequest:
        """The request of one line of a decoded order event (intake's hot path)."""
        event_id = order["event_id"]
        return _build(
            cls,
            {
                "event_id": f"{event_id}:{line['line_id']}",
                "cause_event_id": event_id,
                "command": command,
                "order_id": order["order_id"],
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
                "line_count": len(order["lines"]),
                "reason": reasons.CANCELLED if command == "release" else None,
                "occurred_at": order["occurred_at"],
            },
        )

    @classmethod
    def release(cls, release: ReleaseLine, order: OrderState) -> AllocationRequest:
        """The request of a release the order's rules asked for; its cause is the event they
        reacted to, which the allocator takes as the release's cause."""
        line = order.lines[release.line_id]
        return cls(
            event_id=f"{release.event_id}:{release.line_id}:release",
            cause_event_id=release.event_id,
            command="release",
            order_id=release.order_id,
            line_id=release.line_id,
            sku=release.sku,
            qty=line.qty,
            channel=release.channel,
            ship_complete=order.ship_complete,
            line_count=order.line_count or 1,
            reason=release.reason,
            occurred_at=release.occurred_at,
        )


class OrderStatusLine(NamedTuple):
    """One line in an order status: units it holds now (soft and hard), its status and why."""

    line_id: str
    sku: str
    qty: int
    allocated: int
    status: str
    reason: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "sku": self.sku,
            "qty": self.qty,
            "allocated": self.allocated,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class OrderStatusRecord:
    """An order's status for its channel (topic order-status, keyed by order_id)."""

    event_id: str
    order_id: str
    status: OrderStatus
    lines: tuple[OrderStatusLine, ...]
    occurred_at: int  # of the latest decision about the order

    @classmethod
    def of(
        cls, order_id: str, order: OrderState, status: OrderStatus, cause_event_id: str
    ) -> OrderStatusRecord:
        """The status of `order` after the event `cause_event_id`, every line in line id order."""
        record = order_status_record(order_id, order, status, cause_event_id)
        lines = tuple(OrderStatusLine(**line) for line in record.pop("lines"))
        return _build(cls, {**record, "lines": lines})

    def as_record(self) -> dict[str, Any]:
        """The status as the contract's dict (schemas/order_status.avsc)."""
        return {
            "event_id": self.event_id,
            "order_id": self.order_id,
            "status": self.status,
            "lines": [line.as_record() for line in self.lines],
            "occurred_at": self.occurred_at,
        }


def order_status_record(
    order_id: str, order: OrderState, status: OrderStatus, cause_event_id: str
) -> dict[str, Any]:
    """The order-status record (the contract's dict) of `order` after the event
    `cause_event_id`, every line in line id order: `OrderStatusRecord.of(...).as_record()`,
    built in one step, since the order stage makes one per changed order per commit."""
    lines = order.lines
    return {
        "event_id": f"{cause_event_id}:status",
        "order_id": order_id,
        "status": status,
        "lines": [
            {
                "line_id": line_id,
                "sku": line.sku,
                "qty": line.qty,
                "allocated": line.held,
                "status": line.status,
                "reason": line.reason,
            }
            for line_id, line in (sorted(lines.items()) if len(lines) > 1 else lines.items())
        ],
        "occurred_at": order.decided_at,
    }


def order_event(record: Mapping[str, Any]) -> OrderEvent:
    """An `allocations` record as the domain's order event; ValidationError if it is none."""
    kind = record["type"]
    if kind in ALLOCATION_EVENT_TYPES:
        if not record["line_id"] or not record["sku"]:
            raise ValidationError(f"a {kind} allocation event needs a line_id and a sku")
        return AllocationEvent.from_record(record)
    if kind == ACCEPTED:
        if record["line_count"] is None:
            raise ValidationError("an accepted allocation event needs a line_count")
        return OrderAccepted.from_record(record)
    if kind == CANCEL_REQUESTED:
        return CancelRequested.from_record(record)
    if kind == AMEND_REQUESTED:
        if not record["line_id"] or not record["sku"] or record["line_count"] is None:
            raise ValidationError(
                "an amend_requested allocation event needs a line_id, a sku and a line_count"
            )
        return AmendRequested.from_record(record)
    raise ValidationError(f"unknown allocation event type {kind!r}")
