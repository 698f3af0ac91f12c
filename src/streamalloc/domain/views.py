"""Read-side: one SKU's availability, per location and per channel (the `availability` topic).

Pure computation over the state and the tables; the stage decides when to publish it.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamalloc.domain.allocate import channel_ats
from streamalloc.domain.model import SkuState
from streamalloc.domain.tables import OFFLINE, ONLINE, LocationStatus, Tables


@dataclass(frozen=True, slots=True)
class LocationAvailability:
    """One location's buckets; `available` is 0 when the location is offline or unknown."""

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


def availability(state: SkuState, tables: Tables, as_of: int) -> Availability:
    """The SKU's availability; locations sorted by id, ATS for every channel in the tables."""
    rows: list[LocationAvailability] = []
    for location_id in sorted(state.balances):
        balance = state.balances[location_id]
        loc = tables.locations.get(location_id)
        online = loc is not None and loc.status == ONLINE
        safety_stock = loc.safety_stock if loc is not None and online else 0
        rows.append(
            LocationAvailability(
                location_id=location_id,
                status=ONLINE if online else OFFLINE,
                on_hand=balance.on_hand,
                allocated=balance.allocated,
                picked=balance.picked,
                quality_control=balance.quality_control,
                damaged=balance.damaged,
                safety_stock=safety_stock,
                available=balance.available(safety_stock) if online else 0,
                incoming=balance.incoming,
            )
        )
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
        ats={
            cid: channel_ats(state.balances, tables.online, ch) for cid, ch in sorted(tables.channels.items())
        },
    )
