"""Small builders for domain tests: commands with defaults and fresh event ids, and a world."""

from __future__ import annotations

import itertools
from typing import Any

from streamalloc.domain import (
    Adjust,
    AllocateLine,
    AllocationEvent,
    AmendLine,
    Channel,
    Count,
    Decision,
    Expect,
    FulfilLine,
    Inspect,
    Location,
    LocationBalance,
    PickLine,
    Receive,
    ReleaseLine,
    ReturnLine,
    SkuState,
    StockChanged,
    Tables,
)

SKU = "sku-1"
NOW = 1_700_000_000_000
_ids = itertools.count(1)


def eid() -> str:
    return f"ev-{next(_ids)}"


def allocate(
    order: str = "o1", line: str = "1", qty: int = 1, channel: str = "web", **kw: Any
) -> AllocateLine:
    kw.setdefault("event_id", eid())
    return AllocateLine(
        occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, qty=qty, channel=channel, **kw
    )


def amend(order: str = "o1", line: str = "1", qty: int = 1, channel: str = "web", **kw: Any) -> AmendLine:
    kw.setdefault("event_id", eid())
    return AmendLine(
        occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, qty=qty, channel=channel, **kw
    )


def release(order: str = "o1", line: str = "1", **kw: Any) -> ReleaseLine:
    kw.setdefault("event_id", eid())
    return ReleaseLine(occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, **kw)


def pick(order: str = "o1", line: str = "1", qty: int = 1, **kw: Any) -> PickLine:
    kw.setdefault("event_id", eid())
    return PickLine(occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, qty=qty, **kw)


def fulfil(order: str = "o1", line: str = "1", qty: int = 1, **kw: Any) -> FulfilLine:
    kw.setdefault("event_id", eid())
    return FulfilLine(occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, qty=qty, **kw)


def return_(order: str = "o1", line: str = "1", qty: int = 1, **kw: Any) -> ReturnLine:
    kw.setdefault("event_id", eid())
    return ReturnLine(occurred_at=NOW - 5, order_id=order, line_id=line, sku=SKU, qty=qty, **kw)


def receive(location: str = "A", qty: int = 10, **kw: Any) -> Receive:
    kw.setdefault("event_id", eid())
    return Receive(occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, **kw)


def adjust(location: str = "A", qty: int = -1, reason: str | None = "damaged_in_store", **kw: Any) -> Adjust:
    kw.setdefault("event_id", eid())
    return Adjust(occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, reason=reason, **kw)


def count(location: str = "A", qty: int = 0, **kw: Any) -> Count:
    kw.setdefault("event_id", eid())
    return Count(occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, **kw)


def expect(location: str = "A", qty: int = 5, **kw: Any) -> Expect:
    kw.setdefault("event_id", eid())
    return Expect(occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, **kw)


def inspect(location: str = "A", qty: int = 1, result: Any = "pass", **kw: Any) -> Inspect:
    kw.setdefault("event_id", eid())
    return Inspect(occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, result=result, **kw)


def stocked(**on_hand: int) -> SkuState:
    """A state with `on_hand` units at each named location."""
    return SkuState(SKU, balances={loc: LocationBalance(on_hand=n) for loc, n in on_hand.items()})


#: The channel orders come from unless a test says otherwise: in the table with default
#: rules, since an order from a channel the table does not know is rejected.
WEB = Channel(channel_id="web")


def tables(*locations: Location, channels: tuple[Channel, ...] | Any = ()) -> Tables:
    """Tables of `locations` and `channels`, plus `WEB` unless `channels` has its own web."""
    channels = tuple(channels)
    if not any(ch.channel_id == WEB.channel_id for ch in channels):
        channels = (WEB, *channels)
    return Tables.of(locations, channels)


def online(location_id: str, **kw: Any) -> Location:
    return Location(location_id=location_id, **kw)


def only(decision: Decision) -> AllocationEvent:
    """The single allocation event of a decision (fails otherwise)."""
    assert len(decision) == 1, decision
    event = decision[0]
    assert isinstance(event, AllocationEvent), event
    return event


def allocation_events(decision: Decision) -> list[AllocationEvent]:
    return [e for e in decision if isinstance(e, AllocationEvent)]


def stock_events(decision: Decision) -> list[StockChanged]:
    return [e for e in decision if isinstance(e, StockChanged)]
