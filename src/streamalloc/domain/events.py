"""Events: what a decision emits, and the `Decision` that carries them.

`AllocationEvent` mirrors the contract's Allocation event field for field (topic
`allocations`), for the decisions about one order line; `OrderAccepted` and
`CancelRequested` are that topic's order-level events (intake's `accepted` and
`cancel_requested`), which the order stage follows too (domain/orders.py).
`StockChanged` gives every change of on_hand, quality_control, damaged or incoming a
cause (an inventory event, a shipment or a return); `InventoryRejected` says why an
inventory event changed nothing.

Output event ids are derived from the cause, never random, so a repeated input produces
the same ids (see docs/contract.md, Event ids):

    {cause}:{order_id}:{line_id}:{type}[:{location}[:{lot}]]   AllocationEvent
    {cause}:stock:{location}                   StockChanged of an inventory event (a transfer's
                                               shipment: one at its source, one at its destination)
    {cause}:lost:{location}                    StockChanged of the units a short transfer receipt lost
    {cause}:{line_id}:stock:{location}[:{lot}] StockChanged of a shipment or return
    {cause}:rejected                           InventoryRejected

An allocation event names its order: one cause (a receipt, a release) can fill or move
lines of many orders. One cause event yields at most one event per (line, type,
location, lot) (a line keeps one part per location and lot), so these are unique as long
as event ids upstream are; they are readable in a log and cost one f-string.

Construction speed: on CPython 3.11 a frozen dataclass's generated `__init__` sets each
field through `object.__setattr__` (about 5 us for the 14 fields of an allocation event on
the reference machine, half the budget of a decision). The decision code therefore builds
events with `_build`, which fills the instance `__dict__` in one step: the result is the
same frozen dataclass, equal to one built by its constructor (a test checks it). This is
also why these classes have no `__slots__`: `as_record()` is then one dict copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, get_args

from streamalloc.domain.reasons import CANCELLED

AllocationEventType = Literal[
    "allocated",
    "rejected",
    "backordered",  # waits on the waitlist: reason incoming or waitlisted
    "released",
    "reallocated",  # moved to another location (its location went offline, a count shrank)
    "picked",
    "fulfilled",
    "returned",
    "held",  # units held for a cart (a checkout hold), until its TTL passes or it is confirmed
    "confirmed",  # the hold became an order line: same units, no expiry
    "extended",  # the hold has a new TTL (qty: the units it holds)
    "amended",  # an order edit: the line is now for `qty` units (the units move in other events)
]

ALLOCATED: Final = "allocated"
REJECTED: Final = "rejected"
RELEASED: Final = "released"
PICKED: Final = "picked"
FULFILLED: Final = "fulfilled"
RETURNED: Final = "returned"
BACKORDERED: Final = "backordered"
REALLOCATED: Final = "reallocated"
HELD: Final = "held"
CONFIRMED: Final = "confirmed"
EXTENDED: Final = "extended"
AMENDED: Final = "amended"

InventoryEventType = Literal[
    "received", "adjusted", "counted", "expected", "inspected", "transfer_shipped", "transfer_received"
]

_T = TypeVar("_T")
_new = object.__new__
_set = object.__setattr__


def build_event(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass `cls` with exactly `values` as its fields."""
    obj = _new(cls)
    _set(obj, "__dict__", values)
    return obj


_build = build_event


@dataclass(frozen=True)
class AllocationEvent:
    """One decision about one order line (contract: Allocation event)."""

    event_id: str
    cause_event_id: str
    type: AllocationEventType
    order_id: str
    line_id: str
    sku: str
    channel: str
    qty: int
    location: str | None = None
    lot: str | None = None
    reason: str | None = None
    line_count: int | None = None
    occurred_at: int = 0
    decided_at: int = 0
    promised_at: int | None = None  # a backorder's promised date (promises.py)

    def as_record(self) -> dict[str, Any]:
        """The event as a plain dict (contract field names), e.g. for a serializer."""
        return dict(self.__dict__)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AllocationEvent:
        """The event a contract dict (as `as_record` gives it, every field present) holds.

        The contract's `ship_complete` (for `accepted` only) is left out. The caller checks
        the record first: its `type` is one of `ALLOCATION_EVENT_TYPES` and it names its
        line and SKU. One dict copy, not a field-by-field build: the order stage's hot path.
        """
        values = dict(record)
        values.pop("ship_complete", None)
        values.setdefault("promised_at", None)  # (written before schema 1023)
        return _build(cls, values)


ALLOCATION_EVENT_TYPES: Final[frozenset[str]] = frozenset(get_args(AllocationEventType))


@dataclass(frozen=True)
class StockChanged:
    """Units changed bucket at one location, with the cause; `*_delta` are signed."""

    event_id: str
    cause_event_id: str
    sku: str
    location: str
    reason: str
    on_hand_delta: int = 0
    quality_control_delta: int = 0
    damaged_delta: int = 0
    incoming_delta: int = 0
    in_transit_delta: int = 0  # transfers on their way to the location
    on_hand: int = 0  # after the change
    quality_control: int = 0
    damaged: int = 0
    incoming: int = 0
    in_transit: int = 0
    lot: str | None = None
    order_id: str | None = None  # set for a shipment or a return
    line_id: str | None = None
    transfer_id: str | None = None  # set for a leg of a transfer
    occurred_at: int = 0
    decided_at: int = 0

    def as_record(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class InventoryRejected:
    """An inventory event that changed nothing, and why."""

    event_id: str
    cause_event_id: str
    type: InventoryEventType
    sku: str
    location: str
    qty: int
    reason: str
    occurred_at: int = 0
    decided_at: int = 0

    def as_record(self) -> dict[str, Any]:
        return dict(self.__dict__)


# Order-level events on `allocations`, the order stage's besides the allocation events.
# Built in one step on intake's and the order stage's hot paths, as the allocation events
# are (see the module docstring).


@dataclass(frozen=True, kw_only=True)
class OrderAccepted:
    """Intake saw a placed order (contract: an allocation event of type `accepted`)."""

    event_id: str
    cause_event_id: str  # the placed order event: the cause of its lines' allocation decisions
    order_id: str
    channel: str
    line_count: int
    qty: int  # units over all lines
    ship_complete: bool
    occurred_at: int

    @classmethod
    def of(
        cls,
        cause_event_id: str,
        order_id: str,
        channel: str,
        line_count: int,
        qty: int,
        ship_complete: bool,
        occurred_at: int,
    ) -> OrderAccepted:
        """The `accepted` event of the placed order event `cause_event_id`, with its derived id."""
        return _build(
            cls,
            {
                "event_id": f"{cause_event_id}:accepted",
                "cause_event_id": cause_event_id,
                "order_id": order_id,
                "channel": channel,
                "line_count": line_count,
                "qty": qty,
                "ship_complete": ship_complete,
                "occurred_at": occurred_at,
            },
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OrderAccepted:
        """The event a contract allocation record of type `accepted` holds (its line_count set)."""
        return _build(
            cls,
            {
                "event_id": record["event_id"],
                "cause_event_id": record["cause_event_id"],
                "order_id": record["order_id"],
                "channel": record["channel"],
                "line_count": record["line_count"],
                "qty": record["qty"],
                "ship_complete": record["ship_complete"],
                "occurred_at": record["occurred_at"],
            },
        )

    def as_record(self) -> dict[str, Any]:
        """The event as the contract's allocation record."""
        return {
            "event_id": self.event_id,
            "cause_event_id": self.cause_event_id,
            "type": "accepted",
            "order_id": self.order_id,
            "line_id": None,
            "sku": None,
            "channel": self.channel,
            "qty": self.qty,
            "location": None,
            "lot": None,
            "reason": None,
            "line_count": self.line_count,
            "ship_complete": self.ship_complete,
            "occurred_at": self.occurred_at,
            "decided_at": self.occurred_at,
            "promised_at": None,
        }


@dataclass(frozen=True, kw_only=True)
class CancelRequested:
    """A whole-order cancellation (contract: an allocation event of type `cancel_requested`)."""

    event_id: str
    cause_event_id: str  # the cancelled order event
    order_id: str
    channel: str
    occurred_at: int

    @classmethod
    def of(cls, cause_event_id: str, order_id: str, channel: str, occurred_at: int) -> CancelRequested:
        """The request of the cancelled order event `cause_event_id`, with its derived id."""
        return _build(
            cls,
            {
                "event_id": f"{cause_event_id}:cancel_requested",
                "cause_event_id": cause_event_id,
                "order_id": order_id,
                "channel": channel,
                "occurred_at": occurred_at,
            },
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CancelRequested:
        """The request a contract allocation record of type `cancel_requested` holds."""
        return _build(
            cls,
            {
                "event_id": record["event_id"],
                "cause_event_id": record["cause_event_id"],
                "order_id": record["order_id"],
                "channel": record["channel"],
                "occurred_at": record["occurred_at"],
            },
        )

    def as_record(self) -> dict[str, Any]:
        """The request as the contract's allocation record."""
        return {
            "event_id": self.event_id,
            "cause_event_id": self.cause_event_id,
            "type": "cancel_requested",
            "order_id": self.order_id,
            "line_id": None,
            "sku": None,
            "channel": self.channel,
            "qty": 0,
            "location": None,
            "lot": None,
            "reason": CANCELLED,
            "line_count": None,
            "ship_complete": False,
            "occurred_at": self.occurred_at,
            "decided_at": self.occurred_at,
            "promised_at": None,
        }


@dataclass(frozen=True, kw_only=True)
class AmendRequested:
    """One line of an amended order (contract: an allocation event of type `amend_requested`).

    Intake sends one per line the edit lists, all with the order's new line count: the
    order stage learns from them which lines the order has now, and releases the others
    (domain/orders.py). The line's units are the allocator's to change (`AmendLine`).
    """

    event_id: str
    cause_event_id: str  # the amended order event
    order_id: str
    channel: str
    line_id: str
    sku: str
    qty: int
    line_count: int  # lines of the amended order
    occurred_at: int

    @classmethod
    def of(
        cls,
        cause_event_id: str,
        order_id: str,
        channel: str,
        line_id: str,
        sku: str,
        qty: int,
        line_count: int,
        occurred_at: int,
    ) -> AmendRequested:
        """The request for line `line_id` of the amended order event `cause_event_id`."""
        return _build(
            cls,
            {
                "event_id": f"{cause_event_id}:{line_id}:amend_requested",
                "cause_event_id": cause_event_id,
                "order_id": order_id,
                "channel": channel,
                "line_id": line_id,
                "sku": sku,
                "qty": qty,
                "line_count": line_count,
                "occurred_at": occurred_at,
            },
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AmendRequested:
        """The request a contract allocation record of type `amend_requested` holds."""
        return _build(
            cls,
            {
                "event_id": record["event_id"],
                "cause_event_id": record["cause_event_id"],
                "order_id": record["order_id"],
                "channel": record["channel"],
                "line_id": record["line_id"],
                "sku": record["sku"],
                "qty": record["qty"],
                "line_count": record["line_count"],
                "occurred_at": record["occurred_at"],
            },
        )

    def as_record(self) -> dict[str, Any]:
        """The request as the contract's allocation record."""
        return {
            "event_id": self.event_id,
            "cause_event_id": self.cause_event_id,
            "type": "amend_requested",
            "order_id": self.order_id,
            "line_id": self.line_id,
            "sku": self.sku,
            "channel": self.channel,
            "qty": self.qty,
            "location": None,
            "lot": None,
            "reason": None,
            "line_count": self.line_count,
            "ship_complete": False,
            "occurred_at": self.occurred_at,
            "decided_at": self.occurred_at,
            "promised_at": None,
        }


Event = AllocationEvent | StockChanged | InventoryRejected


class Decision(tuple[Event, ...]):
    """The events one command emitted, in order: a tuple, with names for what it says.

    Empty exactly when the command was a duplicate, one already applied (the same
    inventory event id, the same line command id, an order line already decided, a line
    already released): then nothing changed. Every other decision emits at least one
    event, a rejection included. A tuple subclass so a decision costs one allocation.
    """

    __slots__ = ()

    @property
    def events(self) -> tuple[Event, ...]:
        return self

    @property
    def duplicate(self) -> bool:
        return not self

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons of the rejections among the events (empty when none was rejected)."""
        return tuple(
            e.reason
            for e in self
            if (isinstance(e, AllocationEvent) and e.type == REJECTED) or isinstance(e, InventoryRejected)
            if e.reason is not None
        )


DUPLICATE: Final = Decision()


def allocation_event(
    cause_event_id: str,
    type: AllocationEventType,
    order_id: str,
    line_id: str,
    sku: str,
    channel: str,
    qty: int,
    location: str | None,
    lot: str | None,
    reason: str | None,
    occurred_at: int,
    decided_at: int,
) -> AllocationEvent:
    """An `AllocationEvent` with its derived id (see the module docstring)."""
    if location is None:
        event_id = f"{cause_event_id}:{order_id}:{line_id}:{type}"
    elif lot is None:
        event_id = f"{cause_event_id}:{order_id}:{line_id}:{type}:{location}"
    else:
        event_id = f"{cause_event_id}:{order_id}:{line_id}:{type}:{location}:{lot}"
    event = _new(AllocationEvent)
    _set(
        event,
        "__dict__",
        {
            "event_id": event_id,
            "cause_event_id": cause_event_id,
            "type": type,
            "order_id": order_id,
            "line_id": line_id,
            "sku": sku,
            "channel": channel,
            "qty": qty,
            "location": location,
            "lot": lot,
            "reason": reason,
            "line_count": None,
            "occurred_at": occurred_at,
            "decided_at": decided_at,
            "promised_at": None,
        },
    )
    return event


def stock_changed(
    cause_event_id: str,
    sku: str,
    location: str,
    reason: str,
    on_hand_delta: int,
    quality_control_delta: int,
    damaged_delta: int,
    incoming_delta: int,
    after: tuple[int, int, int, int],
    lot: str | None,
    order_id: str | None,
    line_id: str | None,
    occurred_at: int,
    decided_at: int,
    *,
    in_transit_delta: int = 0,
    in_transit: int = 0,
    transfer_id: str | None = None,
    leg: str = "stock",
) -> StockChanged:
    """A `StockChanged` with its derived id; `after` is (on_hand, qc, damaged, incoming).

    A transfer's legs pass `in_transit` (after) and its delta, and its id; `leg` names a
    second change of one cause at one location (`lost`: a short transfer receipt).
    """
    if leg != "stock":
        event_id = f"{cause_event_id}:{leg}:{location}"
    elif line_id is None:
        event_id = f"{cause_event_id}:stock:{location}"
    elif lot is None:
        event_id = f"{cause_event_id}:{line_id}:stock:{location}"
    else:  # a line held in two lots at one location ships from each
        event_id = f"{cause_event_id}:{line_id}:stock:{location}:{lot}"
    on_hand, quality_control, damaged, incoming = after
    return _build(
        StockChanged,
        {
            "event_id": event_id,
            "cause_event_id": cause_event_id,
            "sku": sku,
            "location": location,
            "reason": reason,
            "on_hand_delta": on_hand_delta,
            "quality_control_delta": quality_control_delta,
            "damaged_delta": damaged_delta,
            "incoming_delta": incoming_delta,
            "in_transit_delta": in_transit_delta,
            "on_hand": on_hand,
            "quality_control": quality_control,
            "damaged": damaged,
            "incoming": incoming,
            "in_transit": in_transit,
            "lot": lot,
            "order_id": order_id,
            "line_id": line_id,
            "transfer_id": transfer_id,
            "occurred_at": occurred_at,
            "decided_at": decided_at,
        },
    )


def inventory_rejected(
    cause_event_id: str,
    type: InventoryEventType,
    sku: str,
    location: str,
    qty: int,
    reason: str,
    occurred_at: int,
    decided_at: int,
) -> InventoryRejected:
    return InventoryRejected(
        event_id=f"{cause_event_id}:rejected",
        cause_event_id=cause_event_id,
        type=type,
        sku=sku,
        location=location,
        qty=qty,
        reason=reason,
        occurred_at=occurred_at,
        decided_at=decided_at,
    )
