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
- An **unknown channel** gets `DEFAULT_CHANNEL`'s policy: every online location, no
  safety stock, no pool share, no split. A channel can start with a plain producer before
  operations write its record; restricting it is a matter of publishing one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

LocationStatus = Literal["online", "offline"]

ONLINE: Final = "online"
OFFLINE: Final = "offline"


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """One stock-holding location (warehouse, store, dark store)."""

    location_id: str
    status: LocationStatus = ONLINE
    priority: int = 0
    region: str | None = None
    regions_served: frozenset[str] = frozenset()
    safety_stock: int = 0
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    """One sales channel's allocation policy.

    `pool_share` is the fraction (0..1] of the channel's pool (available at the locations
    it may use, less its safety stock) it may take; `locations` is an allow-list (None:
    every location). `backorder_limit`, `waitlist` and `lot_policy` are carried for the
    policies that will use them; they change no decision yet.
    """

    channel_id: str
    priority: int = 0
    safety_stock: int = 0
    pool_share: float | None = None
    backorder_limit: int = 0
    locations: frozenset[str] | None = None
    allow_split: bool = False
    waitlist: bool = False
    lot_policy: str | None = None

    def allows(self, location_id: str) -> bool:
        return self.locations is None or location_id in self.locations


DEFAULT_CHANNEL: Final = Channel(channel_id="*")
"""The policy of a channel the channels table does not (yet) know."""


@dataclass(frozen=True, slots=True)
class Tables:
    """Both global tables, as the decision sees them at this moment.

    Build a new `Tables` when a table changes (rare); `online` is derived once here.
    """

    locations: Mapping[str, Location] = field(default_factory=dict)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    online: Mapping[str, Location] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        online = {lid: loc for lid, loc in self.locations.items() if loc.status == ONLINE}
        object.__setattr__(self, "online", online)

    def channel(self, channel_id: str) -> Channel:
        """The channel's policy; `DEFAULT_CHANNEL` for one the table does not know."""
        return self.channels.get(channel_id) or DEFAULT_CHANNEL

    @classmethod
    def of(cls, locations: Iterable[Location] = (), channels: Iterable[Channel] = ()) -> Tables:
        """Tables keyed by id from plain lists (tests, demos)."""
        return cls(
            locations={loc.location_id: loc for loc in locations},
            channels={ch.channel_id: ch for ch in channels},
        )
