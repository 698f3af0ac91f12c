"""Partial allocation (channel `allow_partial`): what is there now, the rest waits.

Decided in the SKU (lines.py, waitlist.py, relocate.py) and followed in the order
(orders.py): the line holds what it got, waits for what it lacks, is filled by later
units (from several fills if need be), and a cancel or an expiry ends both.
"""

from __future__ import annotations

from streamalloc.domain import (
    AllocationEvent,
    Channel,
    Command,
    Decision,
    ExpireLine,
    LineState,
    OrderAccepted,
    OrderState,
    ReleaseLine,
    SkuState,
    Sweep,
    Tables,
    apply,
    orders,
    reasons,
)

from ._builders import (
    NOW,
    SKU,
    allocate,
    allocation_events,
    expect,
    fulfil,
    online,
    pick,
    receive,
    release,
    stocked,
    tables,
)

PARTIAL = Channel(channel_id="web", allow_partial=True)
T = tables(online("A", priority=2), online("B"), channels=(PARTIAL,))
SPLIT = tables(
    online("A", priority=2),
    online("B"),
    channels=(Channel(channel_id="web", allow_partial=True, allow_split=True),),
)
ALL_OR_NOTHING = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True),))


def kinds(decision: Decision) -> list[tuple[str, int, str | None, str | None]]:
    return [(e.type, e.qty, e.location, e.reason) for e in allocation_events(decision)]


class Followed:
    """One SKU and the orders its events are followed in, as the order stage does."""

    def __init__(self, state: SkuState, *, ship_complete: bool = False, lines: int = 1) -> None:
        self.state = state
        self.order = orders.apply(
            OrderState(), OrderAccepted.of("placed", "o1", "web", lines, 1, ship_complete, NOW)
        )[0]
        self.releases: list[ReleaseLine] = []

    def __call__(self, cmd: Command, t: Tables = T) -> Decision:
        decision = apply(self.state, cmd, t, NOW)
        for event in decision:
            if isinstance(event, AllocationEvent):
                self.releases += orders.apply(self.order, event)[1]
        return decision


def held(state: SkuState, order: str = "o1") -> LineState:
    got = state.get_line((order, "1"))
    assert got is not None
    return got


def test_a_line_short_of_stock_takes_what_is_there_and_the_rest_is_waitlisted() -> None:
    state = stocked(A=3)
    decision = apply(state, allocate(qty=5, event_id="placed"), T, NOW)
    assert kinds(decision) == [("allocated", 3, "A", None), ("backordered", 2, None, reasons.WAITLISTED)]
    got = held(state)
    assert got is not None and (got.status, got.held, got.qty) == ("partially_allocated", 3, 5)
    assert [(e.order_id, e.qty) for e in state.book.waitlist] == [("o1", 2)]
    assert state.balances["A"].allocated == 3


def test_without_allow_partial_the_line_still_gets_all_or_nothing() -> None:
    state = stocked(A=3)
    decision = apply(state, allocate(qty=5), ALL_OR_NOTHING, NOW)
    assert kinds(decision) == [("backordered", 5, None, reasons.WAITLISTED)]
    assert state.balances["A"].allocated == 0


def test_the_rest_is_a_backorder_when_incoming_stock_covers_it_within_the_limit() -> None:
    t = tables(online("A"), channels=(Channel(channel_id="web", allow_partial=True, backorder_limit=5),))
    state = stocked(A=3)
    apply(state, expect("A", 4), t, NOW)
    decision = apply(state, allocate(qty=5), t, NOW)
    assert kinds(decision) == [("allocated", 3, "A", None), ("backordered", 2, None, reasons.INCOMING)]
    assert state.book.backordered() == 2


def test_one_location_unless_split_then_over_several() -> None:
    state = stocked(A=3, B=2)
    assert kinds(apply(state, allocate(qty=6), T, NOW))[:1] == [("allocated", 3, "A", None)]
    split = stocked(A=3, B=2)
    assert kinds(apply(split, allocate(qty=6), SPLIT, NOW)) == [
        ("allocated", 3, "A", None),
        ("allocated", 2, "B", None),
        ("backordered", 1, None, reasons.WAITLISTED),
    ]


def test_nothing_available_the_whole_line_waits() -> None:
    state = stocked(A=0)
    assert kinds(apply(state, allocate(qty=2), T, NOW)) == [("backordered", 2, None, reasons.WAITLISTED)]
    assert held(state).status == "backordered"


def test_other_refusals_are_not_made_partial() -> None:
    state = stocked(A=3)
    decision = apply(state, allocate(qty=5, location="nowhere"), T, NOW)
    assert kinds(decision) == [("rejected", 5, "nowhere", reasons.LOCATION_UNAVAILABLE)]


def test_receipts_fill_the_rest_over_several_fills_and_the_order_follows() -> None:
    f = Followed(stocked(A=3))
    f(allocate(qty=5, event_id="placed"))
    assert orders.status(f.order) == "partially_allocated"
    row = f.order.lines["1"]
    assert (row.status, row.qty, row.held) == ("partially_allocated", 5, 3)

    first = f(receive("B", 1))  # one more unit: a fill short of the rest
    assert kinds(first) == [("allocated", 1, "B", None), ("backordered", 1, None, reasons.WAITLISTED)]
    assert (row.status, row.qty, row.held) == ("partially_allocated", 5, 4)

    second = f(receive("A", 4))
    assert kinds(second) == [("allocated", 1, "A", None)]
    got = held(f.state)
    assert (got.status, got.held, sorted((p.location, p.allocated) for p in got.parts)) == (
        "allocated",
        5,
        [("A", 4), ("B", 1)],
    )
    assert (row.status, row.held) == ("allocated", 5) and orders.status(f.order) == "allocated"
    assert not f.state.book.waitlist
    assert f.state.balances["A"].allocated == 4 and f.state.balances["A"].on_hand == 7


def test_a_fill_keeps_the_units_the_line_already_holds_where_they_are() -> None:
    state = stocked(A=3)
    apply(state, allocate(qty=5), T, NOW)
    decided_at = held(state).decided_at
    held_ms = state.balances["A"].held_ms
    apply(state, receive("A", 2), T, NOW + 1000)
    got = held(state)
    assert got is not None and got.held == 5 and got.decided_at == decided_at  # its units' time
    assert state.balances["A"].held_ms == held_ms + 2 * decided_at
    apply(state, release(), T, NOW + 2000)
    assert state.balances["A"].held_ms == 0 and state.balances["A"].allocated == 0


def test_a_release_of_another_line_fills_the_rest_first() -> None:
    state = stocked(A=4)
    apply(state, allocate("o0", qty=2), T, NOW)
    apply(state, allocate(qty=5), T, NOW)
    assert held(state).held == 2
    decision = apply(state, release("o0"), T, NOW)
    assert [(e.type, e.order_id, e.qty) for e in allocation_events(decision)] == [
        ("released", "o0", 2),
        ("allocated", "o1", 2),
        ("backordered", "o1", 1),
    ]


def test_cancelling_a_partial_line_releases_what_it_holds_and_ends_its_wait() -> None:
    f = Followed(stocked(A=3))
    f(allocate(qty=5, event_id="placed"))
    decision = f(release(reason=reasons.CANCELLED))
    assert kinds(decision) == [("released", 3, "A", reasons.CANCELLED)]
    assert f.state.balances["A"].allocated == 0 and not f.state.book.waitlist
    assert f.order.lines["1"].status == "released" and orders.status(f.order) == "cancelled"
    assert kinds(f(receive("A", 5))) == []  # nothing waits any more


def test_a_partial_line_ships_what_it_holds_and_keeps_waiting_for_the_rest() -> None:
    f = Followed(stocked(A=3))
    f(allocate(qty=5, event_id="placed"))
    f(pick(qty=3))
    assert held(f.state).status == "partially_allocated"
    f(fulfil(qty=3))
    got = held(f.state)
    assert (got.status, got.held, got.fulfilled) == ("backordered", 0, 3)
    assert f.order.lines["1"].status == "backordered" and orders.status(f.order) == "backordered"
    f(receive("A", 2))
    assert held(f.state).status == "allocated"
    f(fulfil(qty=2))
    assert f.order.lines["1"].status == "fulfilled" and orders.status(f.order) == "fulfilled"
    # cancelling the rest after a shipment takes the line off the waitlist (not already_fulfilled)
    g = Followed(stocked(A=3))
    g(allocate(qty=5, event_id="placed"))
    g(fulfil(qty=3))
    assert kinds(g(release())) == [("released", 0, None, reasons.CANCELLED)]
    assert not g.state.book.waitlist and g.order.lines["1"].status == "released"


def test_an_expiry_releases_the_soft_units_and_ends_the_wait() -> None:
    state = stocked(A=3)
    apply(state, allocate(qty=5, reservation_ttl_s=1), T, NOW)
    due = held(state).expires_at
    assert due is not None
    decision = apply(state, ExpireLine.due(SKU, "o1", "1", due), T, due)
    assert kinds(decision) == [("released", 3, "A", reasons.EXPIRED)]
    assert held(state).status == "released" and not state.book.waitlist


def test_a_location_going_offline_moves_what_it_can_and_the_rest_joins_the_wait() -> None:
    a_down = tables(online("A", status="offline"), online("B"), channels=(PARTIAL,))
    f = Followed(stocked(A=3, B=1))
    f(allocate(qty=5, event_id="placed"))  # 3 at A (the better), 2 waiting
    decision = f(Sweep(event_id="locations:A:offline", occurred_at=NOW, sku=SKU), a_down)
    assert kinds(decision) == [
        ("released", 3, "A", reasons.REALLOCATED),
        ("reallocated", 1, "B", reasons.LOCATION_OFFLINE),
        ("backordered", 4, None, reasons.WAITLISTED),
    ]
    got = held(f.state)
    assert (got.status, got.held) == ("partially_allocated", 1)
    assert [e.qty for e in f.state.book.waitlist] == [4]
    row = f.order.lines["1"]
    assert (row.status, row.held, row.qty) == ("partially_allocated", 1, 5)


def test_a_ship_complete_order_with_a_partial_line_reads_backordered_and_keeps_its_units() -> None:
    f = Followed(stocked(A=3), ship_complete=True)
    f(allocate(qty=5, event_id="placed"))
    assert f.releases == []  # not a failure: the rest may come
    assert orders.status(f.order) == "backordered"
    f(receive("A", 2))
    assert orders.status(f.order) == "allocated"


def test_a_repeated_placement_of_a_partial_line_is_a_duplicate() -> None:
    state = stocked(A=3)
    cmd = allocate(qty=5)
    apply(state, cmd, T, NOW)
    assert apply(state, cmd, T, NOW).duplicate
    assert state.balances["A"].allocated == 3 and [e.qty for e in state.book.waitlist] == [2]


def test_a_waiting_line_missing_from_the_waitlist_gets_an_entry_instead_of_failing_the_decision() -> None:
    a_down = tables(online("A", status="offline"), online("B"), channels=(PARTIAL,))
    state = stocked(A=3)
    apply(state, allocate(qty=5), T, NOW)
    state.edit_book().waitlist.clear()  # books that lost the entry (never made by the domain)
    decision = apply(state, Sweep(event_id="locations:A:offline", occurred_at=NOW, sku=SKU), a_down, NOW)
    assert kinds(decision)[-1] == ("backordered", 3, None, reasons.WAITLISTED)
    assert [e.qty for e in state.book.waitlist] == [3] and held(state).status == "backordered"
