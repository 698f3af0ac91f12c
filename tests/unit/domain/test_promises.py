"""Promise dates (domain/promises.py): a backorder is promised the ETA of the incoming units
it is counted against, earliest first, and is told again when an ETA moves."""

from __future__ import annotations

from typing import Any

from streamalloc.domain import (
    AllocationEvent,
    Channel,
    Decision,
    ReceiveTransfer,
    ShipTransfer,
    SkuState,
    StockChanged,
    apply,
)
from streamalloc.domain.views import availability

from ._builders import NOW, SKU, allocate, eid, expect, online, receive, stocked, tables

T = tables(online("A"), online("B"), channels=(Channel(channel_id="web", backorder_limit=5),))
DAY = 86_400_000


def backorders(decision: Decision) -> list[tuple[str, int, int | None]]:
    """(order, qty, promised_at) of the decision's `backordered` events."""
    return [
        (e.order_id, e.qty, e.promised_at)
        for e in decision
        if isinstance(e, AllocationEvent) and e.type == "backordered"
    ]


def ship(qty: int, eta: int | None, transfer_id: str = "t1", **kw: Any) -> ShipTransfer:
    return ShipTransfer(
        event_id=eid(), occurred_at=NOW, sku=SKU, location="A", destination="B", qty=qty, eta=eta,
        transfer_id=transfer_id, **kw,
    )  # fmt: skip


def empty() -> SkuState:
    """A SKU known at A, with nothing on hand."""
    return stocked(A=0)


def test_a_backorder_is_promised_the_eta_of_the_units_it_is_counted_against_earliest_first() -> None:
    state = empty()
    apply(state, expect("A", 2, eta=NOW + 10 * DAY, po_id="late"), T, NOW)
    apply(state, expect("A", 2, eta=NOW + 3 * DAY, po_id="soon"), T, NOW)

    assert backorders(apply(state, allocate("o1", qty=2), T, NOW)) == [("o1", 2, NOW + 3 * DAY)]
    assert backorders(apply(state, allocate("o2", qty=1), T, NOW)) == [("o2", 1, NOW + 10 * DAY)]
    # o3 is counted against the last unit of the late order and nothing after it
    assert backorders(apply(state, allocate("o3", qty=1), T, NOW)) == [("o3", 1, NOW + 10 * DAY)]
    assert [e.promised_at for e in state.book.waitlist] == [NOW + 3 * DAY, NOW + 10 * DAY, NOW + 10 * DAY]


def test_a_transfer_in_transit_is_promised_by_its_eta_and_units_without_one_promise_nothing() -> None:
    state = stocked(A=3)
    apply(state, expect("B", 2, eta=NOW + 5 * DAY), T, NOW)
    apply(state, ship(3, eta=NOW + DAY), T, NOW)  # A's stock leaves: nothing sellable now

    assert backorders(apply(state, allocate("o1", qty=3), T, NOW)) == [("o1", 3, NOW + DAY)]
    assert backorders(apply(state, allocate("o2", qty=2), T, NOW)) == [("o2", 2, NOW + 5 * DAY)]

    no_eta = empty()
    apply(no_eta, expect("A", 2), T, NOW)
    assert backorders(apply(no_eta, allocate("o1", qty=2), T, NOW)) == [("o1", 2, None)]


def test_when_a_purchase_order_is_sent_again_with_a_new_eta_the_promises_move_and_are_published() -> None:
    state = empty()
    apply(state, expect("A", 2, eta=NOW + 3 * DAY, po_id="po-1"), T, NOW)
    apply(state, expect("A", 2, eta=NOW + 6 * DAY, po_id="po-2"), T, NOW)
    apply(state, allocate("o1", qty=2), T, NOW)
    apply(state, allocate("o2", qty=2), T, NOW)

    # po-1 slips past po-2: o1 now waits on po-2's units, o2 on po-1's
    moved = apply(state, expect("A", 2, eta=NOW + 9 * DAY, po_id="po-1"), T, NOW)

    (change,) = [e for e in moved if isinstance(e, StockChanged)]
    assert (change.reason, change.incoming_delta, change.incoming) == ("expected", 0, 4)
    assert backorders(moved) == [("o1", 2, NOW + 6 * DAY), ("o2", 2, NOW + 9 * DAY)]
    restated = [e for e in moved if isinstance(e, AllocationEvent)]
    assert all(e.cause_event_id == change.cause_event_id and e.reason == "incoming" for e in restated)
    # the same ETA again moves nothing: nothing is restated
    assert backorders(apply(state, expect("A", 2, eta=NOW + 9 * DAY, po_id="po-1"), T, NOW)) == []


def test_when_a_transfer_is_shipped_again_with_a_new_eta_the_promise_moves() -> None:
    state = stocked(A=2)
    apply(state, ship(2, eta=NOW + DAY), T, NOW)
    apply(state, allocate("o1", qty=2), T, NOW)

    moved = apply(state, ship(2, eta=NOW + 4 * DAY), T, NOW)

    (leg,) = [e for e in moved if isinstance(e, StockChanged)]
    assert (leg.location, leg.reason, leg.on_hand_delta, leg.in_transit_delta) == (
        "B",
        "transfer_eta_changed",
        0,
        0,
    )
    assert backorders(moved) == [("o1", 2, NOW + 4 * DAY)]
    assert state.book.transfers["t1"].eta == NOW + 4 * DAY and state.in_transit("B") == 2
    assert state.balances["A"].on_hand == 0  # nothing shipped twice


def test_a_line_ranked_ahead_pushes_the_others_promises_later_and_they_are_told() -> None:
    state = empty()
    apply(state, expect("A", 2, eta=NOW + DAY, po_id="po-1"), T, NOW)
    apply(state, expect("A", 2, eta=NOW + 2 * DAY, po_id="po-2"), T, NOW)
    apply(state, allocate("o1", qty=2), T, NOW)

    urgent = apply(state, allocate("o2", qty=2, priority=5), T, NOW)

    assert sorted(backorders(urgent)) == [("o1", 2, NOW + 2 * DAY), ("o2", 2, NOW + DAY)]


def test_a_receipt_draws_the_earliest_purchase_order_down_and_fills_before_promising_again() -> None:
    state = empty()
    apply(state, expect("A", 2, eta=NOW + DAY, po_id="po-1"), T, NOW)
    apply(state, expect("A", 3, eta=NOW + 2 * DAY, po_id="po-2"), T, NOW)
    apply(state, allocate("o1", qty=2), T, NOW)
    apply(state, allocate("o2", qty=3), T, NOW)

    decision = apply(state, receive("A", 2), T, NOW)

    filled = [e for e in decision if isinstance(e, AllocationEvent) and e.type == "allocated"]
    assert [(e.order_id, e.qty) for e in filled] == [("o1", 2)]
    assert set(state.book.expected) == {"po-2"}
    assert backorders(decision) == []  # o2's promise did not move
    assert [e.promised_at for e in state.book.waitlist] == [NOW + 2 * DAY]


def test_a_transfer_received_short_leaves_a_promise_it_can_no_longer_keep_unpromised() -> None:
    state = stocked(A=4)
    apply(state, ship(4, eta=NOW + DAY), T, NOW)
    apply(state, allocate("o1", qty=3, location="B"), T, NOW)
    apply(state, allocate("o2", qty=1), T, NOW)

    decision = apply(
        state,
        ReceiveTransfer(event_id=eid(), occurred_at=NOW, sku=SKU, location="B", qty=3, transfer_id="t1"),
        T,
        NOW,
    )

    filled = [
        (e.order_id, e.qty) for e in decision if isinstance(e, AllocationEvent) and e.type == "allocated"
    ]
    assert filled == [("o1", 3)]
    assert backorders(decision) == [("o2", 1, None)]  # its unit was lost in transit


def test_availability_gives_each_channel_what_it_may_promise_by_each_eta() -> None:
    shop = Channel(channel_id="shop", locations=frozenset({"A"}))
    world = tables(online("A"), online("B"), channels=(Channel(channel_id="web", backorder_limit=5), shop))
    state = stocked(A=0, B=1)
    apply(state, expect("A", 4, eta=NOW + 2 * DAY, po_id="po-1"), world, NOW)
    apply(state, expect("B", 3, eta=NOW + DAY, po_id="po-2"), world, NOW)
    apply(state, allocate("o1", qty=4), world, NOW)  # backordered: promised po-2's 3 and one of po-1's

    view = availability(state, world, NOW)

    assert (view.ats["web"], view.ats["shop"]) == (1, 0)
    # web: 1 now; by day 1, po-2's 3 (4 in all, none of o1's units are promised by then);
    # by day 2, po-1's 4 too, less the 4 promised to o1 by then
    assert view.atp["web"] == ((NOW + DAY, 4), (NOW + 2 * DAY, 4))
    # shop may use A only: B's units are not its to promise, and it leaves o1's (conservatively)
    assert view.atp["shop"] == ((NOW + DAY, 0), (NOW + 2 * DAY, 0))
    assert availability(stocked(A=2), world, NOW).atp == {}  # nothing on its way: no buckets
