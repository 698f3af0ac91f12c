"""Protection levels (channel `protected_units`, allocate.py): units kept for higher priority.

A channel of priority p leaves the sum of the protection levels of the channels above it;
a line that would take them is refused `protected_for_priority`, or waits where its channel
lets lines wait, and a partial line takes only the units not protected.
"""

from __future__ import annotations

from streamalloc.domain import (
    Channel,
    Decision,
    HoldLine,
    SkuState,
    Tables,
    apply,
    availability,
    reasons,
)
from streamalloc.domain.allocate import NO_BOUNDS, pool_bounds

from ._builders import NOW, SKU, allocate, allocation_events, online, receive, release, stocked, tables

WEB = Channel(channel_id="web", priority=10, protected_units=5)
STORE = Channel(channel_id="store", priority=1)
T = tables(online("A"), channels=(WEB, STORE))


def kinds(decision: Decision) -> list[tuple[str, int, str | None, str | None]]:
    return [(e.type, e.qty, e.location, e.reason) for e in allocation_events(decision)]


def test_a_lower_priority_channel_leaves_the_protected_units() -> None:
    state = stocked(A=8)
    assert kinds(apply(state, allocate("o1", qty=3, channel="store"), T, NOW)) == [
        ("allocated", 3, "A", None)
    ]
    refused = apply(state, allocate("o2", qty=1, channel="store"), T, NOW)
    assert kinds(refused) == [("rejected", 1, None, reasons.PROTECTED_FOR_PRIORITY)]
    # The protected units are web's to take.
    assert kinds(apply(state, allocate("o3", qty=5, channel="web"), T, NOW)) == [("allocated", 5, "A", None)]


def test_the_higher_priority_channel_is_not_bound_by_its_own_protection() -> None:
    state = stocked(A=8)
    assert kinds(apply(state, allocate("o1", qty=8, channel="web"), T, NOW)) == [("allocated", 8, "A", None)]


def test_a_line_the_stock_cannot_cover_anyway_is_short_of_stock_not_protected() -> None:
    state = stocked(A=8)
    refused = apply(state, allocate("o1", qty=9, channel="store"), T, NOW)
    assert kinds(refused) == [("rejected", 9, None, reasons.INSUFFICIENT_STOCK)]


def test_levels_nest_each_rank_leaves_the_levels_of_every_rank_above() -> None:
    t = tables(
        online("A"),
        channels=(
            Channel(channel_id="web", priority=10, protected_units=3),
            Channel(channel_id="store", priority=5, protected_units=2),
            Channel(channel_id="market", priority=1),
        ),
    )
    assert [t.protected_from(t.channel(c)) for c in ("web", "store", "market")] == [0, 3, 5]
    state = stocked(A=10)
    assert kinds(apply(state, allocate("m1", qty=6, channel="market"), t, NOW))[0][3] == (
        reasons.PROTECTED_FOR_PRIORITY
    )
    assert kinds(apply(state, allocate("m2", qty=5, channel="market"), t, NOW))[0][0] == "allocated"
    assert kinds(apply(state, allocate("s1", qty=3, channel="store"), t, NOW))[0][3] == (
        reasons.PROTECTED_FOR_PRIORITY
    )
    assert kinds(apply(state, allocate("s2", qty=2, channel="store"), t, NOW))[0][0] == "allocated"
    assert kinds(apply(state, allocate("w1", qty=3, channel="web"), t, NOW))[0][0] == "allocated"


def test_protection_is_a_floor_under_safety_stock_not_added_to_it() -> None:
    t = tables(online("A"), channels=(WEB, Channel(channel_id="store", priority=1, safety_stock=2)))
    state = stocked(A=8)
    assert kinds(apply(state, allocate("o1", qty=3, channel="store"), t, NOW))[0][0] == "allocated"
    assert availability(state, t, NOW).ats == {"store": 0, "web": 5}


def test_a_channel_on_other_locations_is_not_bound() -> None:
    t = tables(
        online("A"),
        online("B"),
        channels=(
            Channel(channel_id="web", priority=10, protected_units=5, locations=frozenset({"A"})),
            Channel(channel_id="store", priority=1, locations=frozenset({"B"})),
        ),
    )
    state = stocked(A=5, B=3)
    assert kinds(apply(state, allocate("o1", qty=3, channel="store"), t, NOW)) == [
        ("allocated", 3, "B", None)
    ]


def test_a_waitlisting_channel_waits_and_is_filled_when_stock_arrives() -> None:
    t = tables(online("A"), channels=(WEB, Channel(channel_id="store", priority=1, waitlist=True)))
    state = stocked(A=6)
    waits = apply(state, allocate("o1", qty=3, channel="store"), t, NOW)
    assert kinds(waits) == [("backordered", 3, None, reasons.WAITLISTED)]
    # One more unit: the SKU still keeps 5 for web, so only two are free: it still waits.
    assert kinds(apply(state, receive("A", 1), t, NOW)) == []
    assert kinds(apply(state, receive("A", 1), t, NOW)) == [("allocated", 3, "A", None)]
    line = state.get_line(("o1", "1"))
    assert line is not None and line.status == "allocated"
    assert availability(state, t, NOW).ats == {"store": 0, "web": 5}


def test_a_waiting_line_is_filled_when_a_release_frees_units_above_the_protection() -> None:
    t = tables(online("A"), channels=(WEB, Channel(channel_id="store", priority=1, waitlist=True)))
    state = stocked(A=7)
    apply(state, allocate("w1", qty=3, channel="web"), t, NOW)
    assert kinds(apply(state, allocate("s1", qty=2, channel="store"), t, NOW))[0][:2] == ("backordered", 2)
    assert kinds(apply(state, release("w1"), t, NOW))[-1] == ("allocated", 2, "A", None)


def test_a_partial_line_takes_only_the_unprotected_units_and_waits_for_the_rest() -> None:
    t = tables(online("A"), channels=(WEB, Channel(channel_id="store", priority=1, allow_partial=True)))
    state = stocked(A=7)
    decision = apply(state, allocate("o1", qty=4, channel="store"), t, NOW)
    assert kinds(decision) == [("allocated", 2, "A", None), ("backordered", 2, None, reasons.WAITLISTED)]
    line = state.get_line(("o1", "1"))
    assert line is not None and (line.status, line.held) == ("partially_allocated", 2)
    # A partial line with nothing unprotected takes nothing and waits whole.
    assert kinds(apply(state, allocate("o2", qty=1, channel="store"), t, NOW)) == [
        ("backordered", 1, None, reasons.WAITLISTED)
    ]


def test_a_checkout_hold_never_waits_it_is_refused() -> None:
    t = tables(online("A"), channels=(WEB, Channel(channel_id="store", priority=1, waitlist=True)))
    state = stocked(A=6)
    cart = HoldLine(
        event_id="h1", occurred_at=NOW - 5, order_id="c1", line_id="1", sku=SKU, qty=2, channel="store"
    )
    assert kinds(apply(state, cart, t, NOW)) == [("rejected", 2, None, reasons.PROTECTED_FOR_PRIORITY)]


def test_a_line_naming_its_location_is_bound_there() -> None:
    state = stocked(A=8)
    named = apply(state, allocate("o1", qty=4, channel="store", location="A"), T, NOW)
    assert kinds(named) == [("rejected", 4, "A", reasons.PROTECTED_FOR_PRIORITY)]


def test_protection_off_decides_as_before() -> None:
    off = tables(online("A"), channels=(Channel(channel_id="web", priority=10), STORE))
    assert not off.bounded and off.protected_from(STORE) == 0
    state = stocked(A=8)
    assert pool_bounds(state.balances, state.book, off, STORE, NOW) is NO_BOUNDS
    assert kinds(apply(state, allocate("o1", qty=8, channel="store"), off, NOW)) == [
        ("allocated", 8, "A", None)
    ]


def test_a_channel_the_table_no_longer_knows_is_bound_as_the_lowest_rank() -> None:
    gone = Channel(channel_id="*")
    assert T.protected_from(gone) == 5
    assert Tables.of((), (WEB,)).protected_from(WEB) == 0


def test_ats_published_per_channel_leaves_the_protected_units() -> None:
    state: SkuState = stocked(A=8)
    assert availability(state, T, NOW).ats == {"store": 3, "web": 8}
