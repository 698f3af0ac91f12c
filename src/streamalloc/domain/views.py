"""Read-side: one SKU's availability, per location and per channel (the `availability` topic).

Pure computation over the state and the tables; the stage decides when to publish it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamalloc.domain.allocate import channel_ats, pool_bounds
from streamalloc.domain.model import SkuState
from streamalloc.domain.tables import ONLINE, Channel, LocationStatus, Tables


@dataclass(frozen=True, slots=True)
class LocationAvailability:
    """One location's buckets; `available` is 0 when the location is offline, stale or unknown.

    `expired`: free units of expired lots (on hand, never sellable). `at_risk`: hard
    allocations at a location that cannot be used now. `allocation_age_s`: average age of
    the units open lines hold here. `in_transit`: units of open transfers on their way
    here; `oldest_transfer_age_s`: how long the oldest of them has travelled (a transfer
    that never arrives keeps growing it).
    """

    location_id: str
    status: LocationStatus
    on_hand: int
    allocated: int
    picked: int
    quality_control: int
    damaged: int
    safety_stock: int
    available: int
    incoming: int
    expired: int = 0
    at_risk: int = 0
    allocation_age_s: float = 0.0
    in_transit: int = 0
    oldest_transfer_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Availability:
    """A SKU's availability as of a time: per location, totals, and ATS per known channel."""

    sku: str
    as_of: int
    locations: tuple[LocationAvailability, ...]
    on_hand: int
    allocated: int
    picked: int
    quality_control: int
    damaged: int
    safety_stock: int
    available: int
    incoming: int
    ats: dict[str, int]
    expired: int = 0
    at_risk: int = 0
    allocation_age_s: float = 0.0  # over every unit open lines hold
    backordered: int = 0  # units waiting against incoming stock
    waiting_lines: int = 0  # lines on the waitlist (backordered or waitlisted)
    in_transit: int = 0  # units of open transfers, to any location
    oldest_transfer_age_s: float = 0.0  # age of the oldest open transfer
    #: per channel, available to promise by date: (ETA, units), cumulative (`atp`)
    atp: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)


def availability(state: SkuState, tables: Tables, as_of: int) -> Availability:
    """The SKU's availability; locations sorted by id, ATS for every channel in the tables."""
    rows: list[LocationAvailability] = []
    held_ms = held = 0
    book = state.book
    shipped_at: dict[str, int] = {}  # destination -> when its oldest open transfer left
    for transfer in book.transfers.values():
        first = shipped_at.get(transfer.destination)
        if first is None or transfer.shipped_at < first:
            shipped_at[transfer.destination] = transfer.shipped_at
    for location_id in sorted(state.balances):
        balance = state.balances[location_id]
        status = tables.status(location_id)
        usable = status == ONLINE
        loc = tables.locations.get(location_id)
        safety_stock = loc.safety_stock if loc is not None and usable else 0
        units = balance.allocated + balance.picked
        held_ms += balance.held_ms
        held += units
        rows.append(
            LocationAvailability(
                location_id=location_id,
                status=status,
                on_hand=balance.on_hand,
                allocated=balance.allocated,
                picked=balance.picked,
                quality_control=balance.quality_control,
                damaged=balance.damaged,
                safety_stock=safety_stock,
                available=balance.sellable(safety_stock, as_of) if usable else 0,
                incoming=balance.incoming,
                expired=balance.expired_free(as_of),
                at_risk=0 if usable else balance.picked,
                allocation_age_s=balance.age_ms(as_of) / 1000,
                in_transit=book.in_transit(location_id) if location_id in shipped_at else 0,
                oldest_transfer_age_s=_age_s(as_of, shipped_at.get(location_id)),
            )
        )
    ats = {
        cid: channel_ats(
            state.balances, tables.online, ch, as_of, pool_bounds(state.balances, book, tables, ch, as_of)
        )
        for cid, ch in sorted(tables.channels.items())
    }
    return Availability(
        sku=state.sku,
        as_of=as_of,
        locations=tuple(rows),
        on_hand=sum(r.on_hand for r in rows),
        allocated=sum(r.allocated for r in rows),
        picked=sum(r.picked for r in rows),
        quality_control=sum(r.quality_control for r in rows),
        damaged=sum(r.damaged for r in rows),
        safety_stock=sum(r.safety_stock for r in rows),
        available=sum(r.available for r in rows),
        incoming=sum(r.incoming for r in rows),
        ats=ats,
        expired=sum(r.expired for r in rows),
        at_risk=sum(r.at_risk for r in rows),
        allocation_age_s=(as_of - held_ms // held) / 1000 if held > 0 else 0.0,
        backordered=book.backordered(),
        waiting_lines=len(book.waitlist),
        in_transit=book.in_transit(),
        oldest_transfer_age_s=_age_s(as_of, min(shipped_at.values(), default=None)),
        atp={cid: atp(state, ch, ats[cid]) for cid, ch in tables.channels.items()}
        if book.expected or book.transfers
        else {},
    )


def atp(state: SkuState, channel: Channel, ats: int) -> tuple[tuple[int, int], ...]:
    """What `channel` may promise by each ETA of incoming units: (ETA, units), cumulative.

    Its ATS now, plus the units due by then at locations it may use, less the units of
    backordered lines promised by then (they are counted against those units first),
    floored at 0. Incoming units without an ETA are in no bucket.
    """
    book = state.book
    if not book.expected and not book.transfers:  # nothing incoming (the usual case): no dates
        return ()
    due = [(s.eta, s.qty, s.location) for s in book.expected.values() if s.eta is not None]
    due += [(t.eta, t.qty, t.destination) for t in book.transfers.values() if t.eta is not None]
    promised = [(e.promised_at, e.qty) for e in book.waitlist if e.promised_at is not None]
    buckets: list[tuple[int, int]] = []
    for until in sorted({eta for eta, _, _ in due}):
        coming = sum(qty for eta, qty, loc in due if eta <= until and channel.allows(loc))
        taken = sum(qty for at, qty in promised if at <= until)
        buckets.append((until, max(0, ats + coming - taken)))
    return tuple(buckets)


def _age_s(as_of: int, since: int | None) -> float:
    """Seconds from `since` to `as_of` (0 for none, and never negative)."""
    return max(0, as_of - since) / 1000 if since is not None else 0.0
