"""Location and lot choice: where an order line takes its units from, and what bounds it.

Among the usable locations (online, not stale) the channel may use, with units available:

1. locations that serve the order's region first,
2. then higher location priority,
3. then more available,
4. then location id (so equal candidates always resolve the same way).

A line goes to one location. Only a channel with `allow_split` may spread a line that no
single location can hold: over the fewest locations that can hold it, and among those the
best ranked, in the same order. A line gets all its units or none, unless its channel
has `allow_partial`: then a line the channel's stock cannot cover takes what it can
(`choose_partial`: at the best location alone, or over several with `allow_split`,
within the channel's ATS) and waits for the rest (waitlist.py).

Available at a location excludes the free units of expired lots. The channel's ATS
bounds every allocation: available at the locations it may use, less its safety stock,
less what other channels' pools ring-fence, and within its own pool where it has one.

Channel pools (push allocation). A channel with `pool_share` s owns floor(s x S) units of
the SKU, S being the sellable units (on_hand less safety stock and expired lots) at the
usable locations. Its open lines' units count against its pool; what the pool has not
used yet is fenced off from every other channel. A channel with a pool sells only from
it; a channel without one sells from what no pool fences. Shares are of the current
stock, so a receipt re-divides it.

Protection levels (nested, admission control by channel priority). A channel with
`protected_units` u keeps u units of every SKU for its demand against every channel of
lower priority that may use one of its locations. A channel of priority p must leave the
sum of the protection levels of the channels ranked above p (which use one of its
locations): its ATS is computed as above with max(its safety stock, that sum) held back
instead of its safety stock, so protection is a floor under what it leaves, at the
locations it may use (at the one a line names, as safety stock is). Both are limits on
the lower channel, so protection bites into its own pool too. A line that fits its ATS
without protection but not with it is refused `protected_for_priority` (lines.py: it waits
instead where its channel lets lines wait; a partial line takes the unprotected units).
Protection is a level on what is left, not an account: units the higher channels already
took do not lower it. The highest channel (and any channel when none protects) is not
bound.

Within the chosen location, lots are taken by the channel's lot policy: FIFO (oldest
receipt first), FEFO (earliest expiry first, lots without expiry last) or LIFO. Units
outside every lot count as the oldest receipt and never expire.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamalloc.domain import reasons
from streamalloc.domain.model import LocationBalance, SkuBook
from streamalloc.domain.tables import Channel, Location, LotPolicy, Tables

Choice = tuple[tuple[str, int], ...]
"""(location_id, qty) per part: one part unless the line was split."""

LotTake = tuple[tuple[str | None, int], ...]
"""(lot_id or None for units outside lots, qty) per lot taken at one location."""

# Shares are floats; a pool of 100 at 0.29 must give 29, not 28.999... floored to 28.
_SHARE_EPSILON = 1e-9
_NEVER = 1 << 62


class Bounds:
    """What pools and protection do to one channel's ATS: units fenced off for others' pools,
    its own pool's cap, and units it must leave for higher-priority channels."""

    __slots__ = ("fenced", "cap", "protected")

    def __init__(self, fenced: int = 0, cap: int | None = None, protected: int = 0) -> None:
        self.fenced = fenced
        self.cap = cap
        self.protected = protected

    def unprotected(self) -> Bounds:
        """The same bounds without protection: to tell a protected line from a short one."""
        return Bounds(self.fenced, self.cap)


NO_BOUNDS = Bounds()


def pool_bounds(
    balances: Mapping[str, LocationBalance], book: SkuBook, tables: Tables, channel: Channel, now: int
) -> Bounds:
    """The pools' and protection's effect on `channel` for this SKU (`NO_BOUNDS` when no
    channel has a pool and nothing is protected from it)."""
    protected = tables.protected_from(channel)
    pooled = tables.pooled
    if not pooled:
        return Bounds(protected=protected) if protected else NO_BOUNDS
    sellable = 0
    for location_id, balance in balances.items():
        loc = tables.online.get(location_id)
        if loc is not None:
            units = balance.on_hand - loc.safety_stock
            if balance.lots:
                units -= balance.expired_free(now)
            sellable += max(0, units)
    held = book.channel_held
    fenced = 0
    cap: int | None = None
    for other in pooled:
        share = other.pool_share or 0.0
        pool = int(sellable * min(share, 1.0) + _SHARE_EPSILON)
        unused = max(0, pool - held.get(other.channel_id, 0))
        if other.channel_id == channel.channel_id:
            cap = unused
        else:
            fenced += unused
    return Bounds(fenced, cap, protected)


def ats_of(pool: int, channel: Channel, bounds: Bounds = NO_BOUNDS) -> int:
    """A channel's ATS from its pool (available at the locations it may use)."""
    kept = channel.safety_stock if channel.safety_stock >= bounds.protected else bounds.protected
    ats = pool - kept - bounds.fenced
    if bounds.cap is not None and bounds.cap < ats:
        ats = bounds.cap
    return max(0, ats)


def channel_ats(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    now: int = 0,
    bounds: Bounds = NO_BOUNDS,
) -> int:
    """What `channel` may still sell of this SKU (`online`: the usable locations)."""
    pool = 0
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is not None and channel.allows(location_id):
            pool += balance.sellable(loc.safety_stock, now)
    return ats_of(pool, channel, bounds)


def choose_locations(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    region: str | None,
    location: str | None,
    now: int = 0,
    bounds: Bounds = NO_BOUNDS,
) -> Choice | str:
    """Where `qty` (> 0) units come from, or the reason why nowhere.

    `online` is the usable locations (`Tables.online`); `location` is the one the order
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
        pool = 0 if balance is None else balance.sellable(loc.safety_stock, now)
        if qty > ats_of(pool, channel, bounds):
            return _short(pool, channel, qty, bounds)
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
        if balance.lots:
            available -= balance.expired_free(now)
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
    if qty > ats_of(pool, channel, bounds):
        return _short(pool, channel, qty, bounds)
    if best_id is not None:
        return ((best_id, qty),)
    if not channel.allow_split:
        return reasons.INSUFFICIENT_STOCK
    return _split(balances, online, channel, qty, region, now)


def _short(pool: int, channel: Channel, qty: int, bounds: Bounds) -> str:
    """Why a line of `qty` does not fit the channel's ATS: protection, if it would fit without."""
    if bounds.protected > channel.safety_stock and qty <= ats_of(pool, channel, bounds.unprotected()):
        return reasons.PROTECTED_FOR_PRIORITY
    return reasons.INSUFFICIENT_STOCK


def fillable(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    location: str | None,
    now: int = 0,
    bounds: Bounds = NO_BOUNDS,
) -> int:
    """How many of `qty` units `channel` could allocate now to one line (0..qty).

    Within the channel's ATS, at the location the line names, else at the one best
    stocked usable location it may use, or over all of them with `allow_split`: exactly
    what `choose_locations` can then place.
    """
    if location is not None:
        loc = online.get(location)
        if loc is None or not channel.allows(location):
            return 0
        balance = balances.get(location)
        pool = 0 if balance is None else balance.sellable(loc.safety_stock, now)
        return max(0, min(qty, ats_of(pool, channel, bounds)))
    pool = best = 0
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is None or not channel.allows(location_id):
            continue
        available = balance.sellable(loc.safety_stock, now)
        pool += available
        best = max(best, available)
    return max(0, min(qty, ats_of(pool, channel, bounds), pool if channel.allow_split else best))


def choose_partial(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    region: str | None,
    location: str | None,
    now: int = 0,
    bounds: Bounds = NO_BOUNDS,
) -> Choice | None:
    """Where the units of a partial fill of a line of `qty` come from (fewer than qty), or
    None when the channel can have none of them now. For a line `choose_locations` found
    short (`insufficient_stock`, `protected_for_priority`: reasons.SHORT), on a channel with
    `allow_partial`; a protected line takes only the units not protected."""
    fill = fillable(balances, online, channel, qty, location, now, bounds)
    if fill <= 0:
        return None
    choice = choose_locations(balances, online, channel, fill, region, location, now, bounds)
    return None if isinstance(choice, str) else choice


def _split(
    balances: Mapping[str, LocationBalance],
    online: Mapping[str, Location],
    channel: Channel,
    qty: int,
    region: str | None,
    now: int,
) -> Choice:
    """No single location holds the line: the fewest locations that do, best ranked first.

    The number of parts k is the fewest whose largest availables cover qty. Candidates are
    then taken in rank order, each only if the line can still be completed with the parts
    left (what it gives plus the largest availables after it), and as much as it has. The
    caller checked that the pool covers qty, so the line is always completed.
    """
    ranked: list[tuple[bool, int, int, str]] = []
    for location_id, balance in balances.items():
        loc = online.get(location_id)
        if loc is None or not channel.allows(location_id):
            continue
        available = balance.sellable(loc.safety_stock, now)
        if available > 0:
            # Negated so an ascending sort puts the preferred first, ids ascending on ties.
            ranked.append((region not in loc.served, -loc.priority, -available, location_id))
    ranked.sort()
    availables = [-negative for _, _, negative, _ in ranked]
    slots, covered = 0, 0
    for available in sorted(availables, reverse=True):
        slots, covered = slots + 1, covered + available
        if covered >= qty:
            break
    parts: list[tuple[str, int]] = []
    remaining = qty
    for i, (_, _, _, location_id) in enumerate(ranked):
        take = min(availables[i], remaining)
        rest = sorted(availables[i + 1 :], reverse=True)[: slots - 1]
        if take + sum(rest) < remaining:
            continue  # with it, the line would need more locations than it must
        parts.append((location_id, take))
        remaining -= take
        slots -= 1
        if remaining == 0:
            break
    return tuple(parts)


def choose_lots(
    balance: LocationBalance, qty: int, policy: LotPolicy, now: int, wanted: str | None = None
) -> LotTake:
    """Which lots at this location `qty` units are counted against (None: outside lots).

    `wanted` is a lot the order names: taken first when it has free units and has not
    expired. The location was chosen with enough available units, so the lots cover qty.
    """
    lots = balance.lots
    if not lots:
        return ((wanted, qty),)
    # Free units outside lots: on hand outside lots, less what lines hold outside lots.
    in_lots = sum(lot.on_hand for lot in lots.values())
    held_in_lots = sum(lot.held for lot in lots.values())
    loose = (balance.on_hand - in_lots) - (balance.allocated + balance.picked - held_in_lots)
    candidates: list[tuple[tuple[int, int, str], str | None, int]] = []
    if loose > 0:
        candidates.append((_order(policy, 0 if policy != "LIFO" else -_NEVER, None, ""), None, loose))
    for lot_id, lot in lots.items():
        free = lot.free
        if free > 0 and not lot.expired(now):
            key = (-1, 0, "") if lot_id == wanted else _order(policy, lot.received_at, lot.expires_at, lot_id)
            candidates.append((key, lot_id, free))
    candidates.sort(key=lambda c: c[0])
    taken: list[tuple[str | None, int]] = []
    remaining = qty
    for _, chosen, free in candidates:
        take = min(free, remaining)
        taken.append((chosen, take))
        remaining -= take
        if remaining == 0:
            break
    if remaining:  # the books say the units are there but no lot holds them: outside lots
        taken.append((None, remaining))
    return tuple(taken)


def _order(policy: LotPolicy, received_at: int, expires_at: int | None, lot_id: str) -> tuple[int, int, str]:
    if policy == "FEFO":
        return (0, _NEVER if expires_at is None else expires_at, f"{received_at:020d}{lot_id}")
    if policy == "LIFO":
        return (0, -received_at, lot_id)
    return (0, received_at, lot_id)
