"""The global tables as plain values: locations and channels, passed into every decision.

The runtime reads the compacted `locations` and `channels` topics into these; the domain
only looks things up. Every policy field has a default so an older record still decodes.

Decisions taken here, and why:

- Location **priority**: a higher number is preferred, like order and channel priority.
- A location **serves** a region when it is its own `region` or listed in `regions_served`.
- **Safety stock** of a location is read from this table at decision time, not stored in
  each SKU's balance: a change of the table applies at once to every SKU, and no balance
  record can hold a stale copy.
- A location **missing from the table** is treated as offline: inventory events still
  apply to it, but nothing is allocated there until operations publish it online (an
  allocation at a location routing does not know could never ship).
- An order from an **unknown channel** is rejected (`unknown_channel`, lines.py): a
  channel sells once operations have published its record, never under rules nobody set.
  `DEFAULT_CHANNEL`'s policy (every online location, no safety stock, no pool share, no
  split) is only for lines already allocated whose channel's record has since gone, when
  they are moved or served from the waitlist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

LocationStatus = Literal["online", "offline", "stale"]

ONLINE: Final = "online"
OFFLINE: Final = "offline"
STALE: Final = "stale"  # online in the table, but its inventory feed went silent too long

LotPolicy = Literal["FIFO", "FEFO", "LIFO"]
LOT_POLICIES: Final = ("FIFO", "FEFO", "LIFO")


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """One stock-holding location (warehouse, store, dark store)."""

    location_id: str
    status: LocationStatus = ONLINE
    priority: int = 0
    region: str | None = None
    regions_served: frozenset[str] = frozenset()
    safety_stock: int = 0
    freshness_limit_s: int | None = None  # silent longer than this: stale, treated as offline
    # Its own region plus regions_served, so the hot path asks one `in`.
    served: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        own = frozenset() if self.region is None else frozenset((self.region,))
        object.__setattr__(self, "served", own | frozenset(self.regions_served))

    @property
    def online(self) -> bool:
        return self.status == ONLINE

    def serves(self, region: str | None) -> bool:
        """Whether an order shipping to `region` is local here (None serves no region)."""
        return region in self.served


#: A checkout hold's time to live when neither the event nor the channel names one: 15 min.
DEFAULT_HOLD_TTL_S: Final = 900


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """One sales channel's allocation policy.

    `pool_share` is the share (0..1] of a SKU's sellable units ring-fenced for this channel
    (see allocate.py); `locations` is an allow-list (None: every location);
    `backorder_limit` is the most units a line may be backordered against incoming stock;
    `waitlist` makes a line that cannot be allocated wait instead of being rejected;
    `allow_partial` lets a line short of stock take what is available and wait for the
    rest (waitlist.py);
    `lot_policy` (FIFO, FEFO, LIFO) decides which lot its allocations count against (None:
    the tables' default); `priority_window_ms` lets its lines yield to higher-ranked
    requests that arrive that soon after them (contention.py; 0: arrival order);
    `hold_ttl_s` is how long a checkout hold lives when its `held` or `extended` event
    names no TTL (checkout.py); `protected_units` is how many units of each SKU are kept
    for this channel's demand against every lower-priority channel (protection levels,
    allocate.py; 0: none).
    """

    channel_id: str
    priority: int = 0
    safety_stock: int = 0
    pool_share: float | None = None
    backorder_limit: int = 0
    locations: frozenset[str] | None = None
    allow_split: bool = False
    waitlist: bool = False
    allow_partial: bool = False
    lot_policy: LotPolicy | None = None
    priority_window_ms: int = 0
    hold_ttl_s: int = DEFAULT_HOLD_TTL_S
    protected_units: int = 0

    def allows(self, location_id: str) -> bool:
        return self.locations is None or location_id in self.locations


DEFAULT_CHANNEL: Final = Channel(channel_id="*")
"""The policy of an allocated line whose channel the channels table no longer knows."""


@dataclass(frozen=True, slots=True)
class Tables:
    """Both global tables, as the decision sees them at this moment.

    Build a new `Tables` when a table changes (rare); `online` is derived once here and
    holds only the locations allocation may use: online in the table and not `stale` (the
    runtime decides staleness from the inventory feed's clock and passes it in).
    """

    locations: Mapping[str, Location] = field(default_factory=dict)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    stale: frozenset[str] = frozenset()
    lot_policy: LotPolicy = "FEFO"  # for channels that set none
    online: Mapping[str, Location] = field(init=False, repr=False, compare=False)
    pooled: tuple[Channel, ...] = field(init=False, repr=False, compare=False)
    contending: bool = field(init=False, repr=False, compare=False)  # a channel has a priority window
    protecting: tuple[Channel, ...] = field(init=False, repr=False, compare=False)
    protection: Mapping[str, int] = field(init=False, repr=False, compare=False)
    bounded: bool = field(init=False, repr=False, compare=False)  # pools or protection bound an ATS

    def __post_init__(self) -> None:
        pooled = tuple(
            ch for _, ch in sorted(self.channels.items()) if ch.pool_share is not None and ch.pool_share > 0
        )
        object.__setattr__(self, "pooled", pooled)
        object.__setattr__(
            self, "contending", any(ch.priority_window_ms > 0 for ch in self.channels.values())
        )
        protecting = tuple(ch for _, ch in sorted(self.channels.items()) if ch.protected_units > 0)
        object.__setattr__(self, "protecting", protecting)
        object.__setattr__(
            self, "protection", {cid: _protected_from(protecting, ch) for cid, ch in self.channels.items()}
        )
        object.__setattr__(self, "bounded", bool(pooled or protecting))
        online = {
            lid: loc for lid, loc in self.locations.items() if loc.status == ONLINE and lid not in self.stale
        }
        object.__setattr__(self, "online", online)

    def status(self, location_id: str) -> LocationStatus:
        """online, offline (also: unknown to the table) or stale."""
        loc = self.locations.get(location_id)
        if loc is None or loc.status != ONLINE:
            return OFFLINE
        return STALE if location_id in self.stale else ONLINE

    def protected_from(self, channel: Channel) -> int:
        """Units `channel` must leave for higher-priority channels (protection levels)."""
        if not self.protecting:
            return 0
        if self.channels.get(channel.channel_id) is channel:
            return self.protection[channel.channel_id]
        return _protected_from(self.protecting, channel)

    def lot_policy_of(self, channel: Channel) -> LotPolicy:
        return channel.lot_policy or self.lot_policy

    def channel(self, channel_id: str) -> Channel:
        """The channel's policy; `DEFAULT_CHANNEL` for one the table does not know (see above)."""
        return self.channels.get(channel_id) or DEFAULT_CHANNEL

    @classmethod
    def of(
        cls,
        locations: Iterable[Location] = (),
        channels: Iterable[Channel] = (),
        stale: Iterable[str] = (),
    ) -> Tables:
        """Tables keyed by id from plain lists (tests, demos)."""
        return cls(
            locations={loc.location_id: loc for loc in locations},
            channels={ch.channel_id: ch for ch in channels},
            stale=frozenset(stale),
        )


def _protected_from(protecting: Iterable[Channel], channel: Channel) -> int:
    """The sum of the protection levels of the channels ranked above `channel` that may use
    one of its locations (nested protection: each lower rank leaves more units)."""
    total = 0
    for other in protecting:
        if other.priority > channel.priority and _overlap(other, channel):
            total += other.protected_units
    return total


def _overlap(a: Channel, b: Channel) -> bool:
    """Whether the two channels may use a location in common (None: every location)."""
    if a.locations is None or b.locations is None:
        return True
    return not a.locations.isdisjoint(b.locations)
