"""Commands: what the allocator is asked to do, one SKU at a time.

Each is a small frozen value. `event_id` is the id of the input event that caused it (the
order or inventory event) and becomes every output's `cause_event_id`; `occurred_at` is
that event's time (epoch ms). The decision time is not here: `apply` takes it as `now`.

Order-line commands mirror one line of an order event (intake splits an order into one
command per line, keyed by SKU). Inventory commands mirror one inventory event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

InspectResult = Literal["pass", "fail"]
PASS: Final = "pass"  # noqa: S105 - an inspection result, not a secret
FAIL: Final = "fail"


# ---------------------------------------------------------------- order lines


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocateLine:
    """Allocate an order line (`placed`): choose a location and promise it units."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    qty: int
    channel: str
    location: str | None = None  # the order asks for this location (e.g. store pickup)
    lot: str | None = None  # the order asks for this lot; recorded and echoed
    priority: int = 0
    region: str | None = None
    ship_complete: bool = False  # acted on by the order stage; carried for it
    reservation_ttl_s: int | None = None  # expiry is the runtime's timer; carried


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseLine:
    """Release (cancel) everything an order line still holds, soft and hard."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    channel: str = ""
    reason: str = "cancelled"  # why: cancelled, expired, ship_complete_failed, ...; echoed


@dataclass(frozen=True, slots=True, kw_only=True)
class PickLine:
    """Turn `qty` soft-allocated units of a line into hard ones (a pick task exists)."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    qty: int
    channel: str = ""
    location: str | None = None  # None: wherever the line holds soft units
    lot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FulfilLine:
    """Ship `qty` units of a line: they leave on_hand (picked units first, then soft)."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    qty: int
    channel: str = ""
    location: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReturnLine:
    """Units of a shipped line come back: into quality_control at a location."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    qty: int
    channel: str = ""
    location: str | None = None  # None: where the line shipped from
    lot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AmendLine:
    """An order edit (`amended`): the line is now for `qty` units, decided in one step.

    Fewer units release the difference; more allocate the extra or let it wait, never
    releasing what the line holds first. A line the SKU never saw is placed (amend.py).
    """

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    qty: int  # the line's new quantity, as ordered
    channel: str
    location: str | None = None
    lot: str | None = None
    priority: int = 0
    region: str | None = None
    ship_complete: bool = False
    reservation_ttl_s: int | None = None


# ---------------------------------------------------------------- checkout holds


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldLine:
    """Hold a cart line's units (`held`) until its time to live passes or it is confirmed.

    All or nothing and never waiting: a hold is for units there now (checkout.py).
    """

    event_id: str
    occurred_at: int
    order_id: str  # the cart's id; the order keeps it when confirmed
    line_id: str
    sku: str
    qty: int
    channel: str
    location: str | None = None
    lot: str | None = None
    priority: int = 0
    region: str | None = None
    ttl_s: int | None = None  # None: the channel's hold_ttl_s


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmLine:
    """The held line becomes an order line (`confirmed`), keeping its units; no expiry."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    channel: str = ""
    reservation_ttl_s: int | None = None  # the order line's own reservation, as for `placed`


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendHold:
    """The held line gets a new time to live from now (`extended`), e.g. while payment runs."""

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str
    channel: str = ""
    ttl_s: int | None = None  # None: the channel's hold_ttl_s


# ---------------------------------------------------------------- inventory


@dataclass(frozen=True, slots=True, kw_only=True)
class Receive:
    """`qty` units arrive on hand at a location."""

    event_id: str
    occurred_at: int
    sku: str
    location: str
    qty: int
    lot: str | None = None
    reason: str | None = None
    expires_at: int | None = None  # the lot's expiry, when it has one


@dataclass(frozen=True, slots=True, kw_only=True)
class Adjust:
    """A signed correction of on_hand; a reason is required."""

    event_id: str
    occurred_at: int
    sku: str
    location: str
    qty: int  # the signed delta
    reason: str | None = None
    lot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Count:
    """A cycle count: on_hand is now `qty`; the difference is reported."""

    event_id: str
    occurred_at: int
    sku: str
    location: str
    qty: int  # absolute on_hand after the count
    reason: str | None = None
    lot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """Incoming units (a purchase order) with an ETA: recorded, not yet sellable."""

    event_id: str
    occurred_at: int
    sku: str
    location: str
    qty: int
    eta: int | None = None
    lot: str | None = None
    po_id: str | None = None  # the purchase order (None: the event id names it); again: its new qty, eta

    @property
    def order(self) -> str:
        return self.po_id or self.event_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspect:
    """`qty` units leave quality_control: to on_hand on pass, to damaged on fail."""

    event_id: str
    occurred_at: int
    sku: str
    location: str
    qty: int
    result: InspectResult
    lot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShipTransfer:
    """`qty` free units leave `location` (the source) for `destination`, in transit until `eta`.

    `transfer_id` names the transfer (None: the event id names it); its receipt ends it.
    """

    event_id: str
    occurred_at: int
    sku: str
    location: str  # the source
    qty: int
    destination: str | None = None
    transfer_id: str | None = None
    eta: int | None = None
    lot: str | None = None  # refused: transfers move units outside lots

    @property
    def transfer(self) -> str:
        return self.transfer_id or self.event_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiveTransfer:
    """`qty` units of the transfer `transfer_id` arrive at `location` (its destination).

    Fewer than were shipped is a short receipt: the rest is lost in transit.
    """

    event_id: str
    occurred_at: int
    sku: str
    location: str  # the destination
    qty: int
    transfer_id: str | None = None
    lot: str | None = None  # refused, as for a shipment


# ---------------------------------------------------------------- the engine's own


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireLine:
    """A line's reservation timer fired: release its soft units if it still holds them.

    `occurred_at` is when it was due (the line's `expires_at`); a line whose expiry moved
    or that was picked or released meanwhile is left alone.
    """

    event_id: str
    occurred_at: int
    order_id: str
    line_id: str
    sku: str

    @classmethod
    def due(cls, sku: str, order_id: str, line_id: str, due: int) -> ExpireLine:
        """The timer of the line due at `due`; its id names the clock, the line and the time."""
        return cls(
            event_id=f"clock:expiry:{order_id}:{line_id}:{due}",
            occurred_at=due,
            order_id=order_id,
            line_id=line_id,
            sku=sku,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Sweep:
    """The locations table (or a location's freshness) changed: move soft allocations off
    locations that cannot be used now, then serve the waitlist with what came back."""

    event_id: str
    occurred_at: int
    sku: str


HoldCommand = HoldLine | ConfirmLine | ExtendHold
LineCommand = AllocateLine | ReleaseLine | PickLine | FulfilLine | ReturnLine | AmendLine | HoldCommand
TransferCommand = ShipTransfer | ReceiveTransfer
InventoryCommand = Receive | Adjust | Count | Expect | Inspect | TransferCommand
EngineCommand = ExpireLine | Sweep
Command = LineCommand | InventoryCommand | EngineCommand
