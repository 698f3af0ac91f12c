"""Channel ATS coalescing and stock thresholds: the pure part of channel-sync.

A channel's API must not see every availability change of a busy SKU, only where it
settles. So per (channel, SKU) the `Coalescer` pushes at most once per window: the first
change after a quiet window goes out at once (leading edge), later changes inside the
window wait and only the newest goes out when the window closes (trailing edge), so the
newest value is always the last one pushed. A change back to what was last pushed
cancels the wait: nothing changed for the channel.

No clock, no Kafka: callers pass `now` in epoch milliseconds and act on the `Push`es
returned. After a restart the last pushed values are unknown (`pushed` is None): the
first value of a key is then pushed even if equal, a harmless repeat of an absolute
quantity, never a lost one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

StockStatus = Literal["in_stock", "low_stock", "out_of_stock"]
StockEvent = Literal["out_of_stock", "back_in_stock", "low_stock"]

OUT_OF_STOCK: Final = "out_of_stock"
BACK_IN_STOCK: Final = "back_in_stock"
LOW_STOCK: Final = "low_stock"
IN_STOCK: Final = "in_stock"


@dataclass(frozen=True, slots=True)
class AtsValue:
    """The ATS of one (channel, SKU) as one availability record gave it."""

    channel: str
    sku: str
    ats: int
    as_of: int
    cause_event_id: str
    availability_event_id: str
    #: A kit's ATS, computed from a component's availability record (services/channel_sync.py).
    kit: bool = False

    @property
    def key(self) -> str:
        """The feed's record key, `channel:sku` (a channel id has no colon; a SKU may)."""
        return feed_key(self.channel, self.sku)


@dataclass(frozen=True, slots=True)
class Push:
    """One ATS to publish for a channel, with what it folded and the threshold it crossed."""

    value: AtsValue
    previous_ats: int | None
    status: StockStatus
    stock_event: StockEvent | None
    #: Availability changes this push stands for (1 when nothing was coalesced).
    changes: int
    pushed_at: int

    @property
    def event_id(self) -> str:
        """Derived from the availability record it carries, so a repeated push keeps its id (a
        kit's names the kit too: one component's record moves several kits)."""
        value = self.value
        if value.kit:
            return f"{value.availability_event_id}:{value.channel}:{value.sku}:kit-ats"
        return f"{value.availability_event_id}:{value.channel}:ats"


def feed_key(channel: str, sku: str) -> str:
    return f"{channel}:{sku}"


def stock_status(ats: int, low_stock: int) -> StockStatus:
    """Absolute status a storefront shows: none left, at or below the threshold, or plenty."""
    if ats <= 0:
        return OUT_OF_STOCK
    if ats <= low_stock:
        return LOW_STOCK
    return IN_STOCK


def stock_event(previous: int | None, ats: int, low_stock: int) -> StockEvent | None:
    """The threshold a change crossed, if any (a first value counts as crossing from nothing).

    Out of stock when it reaches 0; back in stock when it leaves 0 (even into low stock,
    the storefront's first concern is that it can sell again); low stock when it falls
    to the threshold or below from above it.
    """
    now = stock_status(ats, low_stock)
    if previous is None:
        return None if now == IN_STOCK else now
    before = stock_status(previous, low_stock)
    if now == before:
        return None
    if now == OUT_OF_STOCK:
        return OUT_OF_STOCK
    if before == OUT_OF_STOCK:
        return BACK_IN_STOCK
    return LOW_STOCK if now == LOW_STOCK else None


@dataclass(slots=True)
class _KeyState:
    pushed: int | None = None  # ATS last pushed; None: unknown (never, or before a restart)
    pushed_at: int | None = None
    pending: AtsValue | None = None
    folded: int = 0  # changes seen since the last push


@dataclass(slots=True)
class Coalescer:
    """At most one push per key per `window_ms`, only on change, the newest value last."""

    window_ms: int
    low_stock: dict[str, int] = field(default_factory=dict)  # per channel
    default_low_stock: int = 0
    _keys: dict[str, _KeyState] = field(default_factory=dict)
    #: Keys with a value waiting for its window to close.
    _waiting: set[str] = field(default_factory=set)

    def threshold(self, channel: str) -> int:
        return self.low_stock.get(channel, self.default_low_stock)

    def known(self, key: str, pushed: int | None) -> None:
        """Seed what was last pushed for `key` (from the durable table after a restart)."""
        state = self._keys.setdefault(key, _KeyState())
        if state.pushed is None:
            state.pushed = pushed

    def offer(self, value: AtsValue, now: int) -> Push | None:
        """A new value for its key: the push to make now, or None (unchanged, or it waits)."""
        state = self._keys.setdefault(value.key, _KeyState())
        state.folded += 1
        if state.pushed is not None and value.ats == state.pushed and state.pushed_at is not None:
            # back where the channel already is: nothing to tell it
            state.pending = None
            state.folded = 0
            self._waiting.discard(value.key)
            return None
        if state.pushed_at is None or now - state.pushed_at >= self.window_ms:
            return self._push(value.key, state, value, now)
        state.pending = value
        self._waiting.add(value.key)
        return None

    def due(self, now: int) -> list[Push]:
        """The waiting values whose window has closed, pushed now (called on a timer)."""
        pushes = []
        for key in sorted(self._waiting):
            state = self._keys[key]
            if state.pending is not None and (
                state.pushed_at is None or now - state.pushed_at >= self.window_ms
            ):
                pushes.append(self._push(key, state, state.pending, now))
        return pushes

    def waiting(self) -> int:
        return len(self._waiting)

    def pushed(self, key: str) -> int | None:
        state = self._keys.get(key)
        return None if state is None else state.pushed

    def _push(self, key: str, state: _KeyState, value: AtsValue, now: int) -> Push:
        low = self.threshold(value.channel)
        push = Push(
            value=value,
            previous_ats=state.pushed,
            status=stock_status(value.ats, low),
            stock_event=stock_event(state.pushed, value.ats, low),
            changes=max(state.folded, 1),
            pushed_at=now,
        )
        state.pushed, state.pushed_at, state.pending, state.folded = value.ats, now, None, 0
        self._waiting.discard(key)
        return push


def ats_values(availability: Mapping[str, Any]) -> list[AtsValue]:
    """Every channel's ATS in one decoded availability record."""
    return [
        AtsValue(
            channel=str(row["channel"]),
            sku=str(availability["sku"]),
            ats=int(row["ats"]),
            as_of=int(availability["as_of"]),
            cause_event_id=str(availability["cause_event_id"]),
            availability_event_id=str(availability["event_id"]),
        )
        for row in availability.get("channels") or ()
    ]
