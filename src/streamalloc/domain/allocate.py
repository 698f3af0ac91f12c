"""Location choice: which online location(s) an order line takes its units from.

Among the online locations the channel may use, with units available:

1. locations that serve the order's region first,
2. then higher location priority,
3. then more available,
4. then location id (so equal candidates always resolve the same way).

A line goes to one location. Only a channel with `allow_split` may spread a line that no
single location can hold, taking the candidates in the same order. A line is never
partly allocated: it gets all its units or is rejected.

The channel's ATS bounds every allocation: the available units at the locations it may
use, less its safety stock, times its pool share where one is set.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamalloc.domain import reasons
from streamalloc.domain.model import LocationBalance
from streamalloc.domain.tables import Channel, Location

Choice = tuple[tuple[str, int], ...]
"""(location_id, qty) per part: one part unless the line was split."""

# Shares are floats; a pool of 100 at 0.29 must give 29, not 28.999... floored to 28.
_SHARE_EPSILON = 1e-9


def ats_of(pool: int, channel: Channel) -> int:
    """A channel's ATS from its pool (available at the locations it may use)."""
    ats = pool - channel.safety_stock
    if ats <= 0:
        return 0
    share = channel.pool_share
    if share is not None and share < 1.0:  # a share above 1 is a full share, never more than the pool
        ats = max(0, int(ats * share + _SHARE_EPSILON))
    return ats


def channel_ats(
    balances: Mapping[str, LocationBalance], online: Mapping[str, Location], channel: Channel
) -> int:
    """What `channel` may still sell of this SKU (`online`: the online locations)."""
    pool = 0
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is not None and channel.allows(location_id):
            pool += balance.available(loc.safety_stock)
    return ats_of(pool, channel)


def choose_locations(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    region: str | None,
    location: str | None,
) -> Choice | str:
    """Where `qty` (> 0) units come from, or the reason why nowhere.

    `online` is the online locations (`Tables.online`); `location` is the one the order
    line names, if any: then only it is considered. `channel_not_allowed` means the
    allow-list excludes every location that has stock; when an allowed location has
    some, too little is `insufficient_stock`.
    """
    allowed = channel.locations
    if location is not None:
        loc = online.get(location)
        if loc is None:
            return reasons.LOCATION_UNAVAILABLE
        if allowed is not None and location not in allowed:
            return reasons.CHANNEL_NOT_ALLOWED
        balance = balances.get(location)
        pool = 0 if balance is None else balance.available(loc.safety_stock)
        if qty > ats_of(pool, channel):
            return reasons.INSUFFICIENT_STOCK
        return ((location, qty),)

    # One pass: the pool for the channel's ATS, and the best location holding the whole
    # line. The rank key grows with preference: (serves region, priority, available),
    # then the smaller location id wins a tie.
    pool = 0
    excluded_with_stock = False
    best_id: str | None = None
    best_key = (False, 0, 0)
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is None:
            continue
        available = balance.on_hand - balance.allocated - balance.picked - loc.safety_stock
        if available <= 0:
            continue
        if allowed is not None and location_id not in allowed:
            excluded_with_stock = True
            continue
        pool += available
        if available >= qty:
            key = (region in loc.served, loc.priority, available)
            if best_id is None or key > best_key or (key == best_key and location_id < best_id):
                best_id, best_key = location_id, key

    if pool == 0:
        return reasons.CHANNEL_NOT_ALLOWED if excluded_with_stock else reasons.INSUFFICIENT_STOCK
    if qty > ats_of(pool, channel):
        return reasons.INSUFFICIENT_STOCK
    if best_id is not None:
        return ((best_id, qty),)
    if not channel.allow_split:
        return reasons.INSUFFICIENT_STOCK
    return _split(balances, online, channel, qty, region)


def _split(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    region: str | None,
) -> Choice:
    """No single location holds the line: take from the best candidates first.

    The caller checked that the pool covers qty, so the line is always completed.
    """
    ranked: list[tuple[bool, int, int, str]] = []
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is None or not channel.allows(location_id):
            continue
        available = balance.available(loc.safety_stock)
        if available > 0:
            # Negated so an ascending sort puts the preferred first, ids ascending on ties.
            ranked.append((region not in loc.served, -loc.priority, -available, location_id))
    ranked.sort()
    parts: list[tuple[str, int]] = []
    remaining = qty
    for _, _, negative_available, location_id in ranked:
        take = min(-negative_available, remaining)
        parts.append((location_id, take))
        remaining -= take
        if remaining == 0:
            break
    return tuple(parts)
