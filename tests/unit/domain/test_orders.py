"""An order followed from its events (domain.orders): line statuses and units, the order's
status, and its two rules (whole-order cancel, ship-complete)."""

from __future__ import annotations

import copy

from streamalloc.domain import (
    AllocationEvent,
    CancelRequested,
    Channel,
    Decision,
    OrderAccepted,
    OrderEvent,
    OrderState,
    ReleaseLine,
    Sweep,
    apply,
    orders,
    reasons,
)
from streamalloc.domain.events import allocation_event
from streamalloc.domain.orders import History

from ._builders import NOW, SKU, allocate, fulfil, online, pick, stocked, tables

T = tables(online("A", priority=2), online("B"))
A_DOWN = tables(online("A", priority=2, status="offline"), online("B"))


def accepted(
    order: str = "o1", lines: int = 1, *, ship_complete: bool = False, cause: str = "placed"
) -> OrderAccepted:
    return OrderAccepted.of(cause, order, "web", lines, 1, ship_complete, NOW)


def follow(order: OrderState, decision: Decision) -> list[ReleaseLine]:
    """Feed a decision's allocation events to the order; the releases its rules ask for."""
    releases: list[ReleaseLine] = []
    for event in decision:
        if isinstance(event, AllocationEvent):
            releases += orders.apply(order, event)[1]
    return releases


def event(
    type_: str, line: str = "1", qty: int = 1, location: str | None = "A", **kw: object
) -> AllocationEvent:
    fields: dict[str, object] = {"lot": None, "reason": None, "cause": "placed", **kw}
    return allocation_event(
        str(fields["cause"]), type_, "o1", line, SKU, "web", qty, location,  # type: ignore[arg-type]
        fields["lot"], fields["reason"], NOW, NOW,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_line_moved_to_another_location_still_holds_there_and_a_cancel_releases_it() -> None:
    state = stocked(A=5, B=5)
    order = orders.apply(OrderState(), accepted())[0]
    assert follow(order, apply(state, allocate(qty=2, event_id="placed"), T, NOW)) == []
    # A goes offline: released (reason reallocated) at A, then reallocated at B
    moved = apply(state, Sweep(event_id="locations:A:offline", occurred_at=NOW, sku=SKU), A_DOWN, NOW)
    assert [(e.type, e.location, e.reason) for e in moved if isinstance(e, AllocationEvent)] == [
        ("released", "A", reasons.REALLOCATED),
        ("reallocated", "B", reasons.LOCATION_OFFLINE),
    ]
    assert follow(order, moved) == []

    line = order.lines["1"]
    assert (line.status, line.held, line.held_at()) == ("allocated", 2, (("B", 2),))
    assert orders.status(order) == "allocated"

    _, releases = orders.apply(order, CancelRequested.of("cancel", "o1", "web", NOW))
    assert [(r.line_id, r.reason, r.event_id) for r in releases] == [
        ("1", "cancelled", "cancel:cancel_requested")
    ]
    assert orders.status(order) is None  # its release is in flight
    assert follow(order, apply(state, releases[0], A_DOWN, NOW)) == []
    assert (line.status, line.held, orders.status(order)) == ("released", 0, "cancelled")
    assert state.balances["B"].allocated == 0


def test_a_pick_elsewhere_and_a_partial_shipment_move_the_units_as_the_books_do() -> None:
    state = stocked(A=5, B=5)
    order = orders.apply(OrderState(), accepted())[0]
    follow(order, apply(state, allocate(qty=3, event_id="placed"), T, NOW))
    follow(order, apply(state, pick(qty=2, location="B"), T, NOW))  # moves 2 of its 3 units to B
    line = order.lines["1"]
    assert (line.status, line.held_at(), line.soft) == ("allocated", (("A", 1), ("B", 2)), 1)
    follow(order, apply(state, fulfil(qty=2, location="B"), T, NOW))
    assert (line.status, line.held, line.shipped) == ("allocated", 1, 2)
    follow(order, apply(state, pick(qty=1), T, NOW))
    assert (line.status, line.held) == ("picked", 1)
    assert line.status == state.lines[("o1", "1")].status


def test_an_expiry_leaves_the_picked_units_and_the_line_reads_picked() -> None:
    order = orders.apply(OrderState(), accepted())[0]
    for e in (event("allocated", qty=3), event("picked", qty=1, cause="pick")):
        orders.apply(order, e)
    orders.apply(order, event("released", qty=2, reason=reasons.EXPIRED, cause="clock"))
    line = order.lines["1"]
    assert (line.status, line.held, line.soft) == ("picked", 1, 0)
    orders.apply(order, event("released", qty=1, reason=reasons.CANCELLED, cause="cancel"))
    assert (line.status, line.reason, line.held) == ("released", "cancelled", 0)


def test_a_refused_pick_neither_decides_a_line_nor_fails_a_ship_complete_order() -> None:
    order = orders.apply(OrderState(), accepted(lines=2, ship_complete=True))[0]
    assert orders.apply(order, event("allocated", line="1"))[1] == ()
    refused = event("rejected", line="1", qty=5, reason=reasons.EXCEEDS_ALLOCATION, cause="pick-event")
    assert orders.apply(order, refused)[1] == ()
    assert (order.lines["1"].status, order.ship_failed) == ("allocated", False)
    # a pick for a line not decided yet is refused too, and leaves it undecided
    early = event("rejected", line="2", qty=0, location=None, reason=reasons.INVALID_QUANTITY, cause="pick")
    assert orders.apply(order, early)[1] == ()
    assert order.lines["2"].status == "pending" and orders.status(order) is None


def test_a_rejected_line_of_a_ship_complete_order_releases_the_others_now_and_later() -> None:
    order = orders.apply(OrderState(), accepted(lines=3, ship_complete=True))[0]
    orders.apply(order, event("allocated", line="1"))
    _, releases = orders.apply(
        order, event("rejected", line="2", location=None, reason=reasons.INSUFFICIENT_STOCK)
    )
    assert [(r.line_id, r.reason) for r in releases] == [("1", reasons.SHIP_COMPLETE_FAILED)]
    assert orders.status(order) is None  # never partially allocated
    _, later = orders.apply(order, event("backordered", line="3", location=None, reason=reasons.INCOMING))
    assert [(r.line_id, r.reason) for r in later] == [("3", reasons.SHIP_COMPLETE_FAILED)]
    for line in ("1", "3"):
        orders.apply(order, event("released", line=line, reason=reasons.SHIP_COMPLETE_FAILED, cause="r"))
    assert orders.status(order) == "rejected"


def test_a_split_allocation_of_a_cancelled_order_is_released_once() -> None:
    state = stocked(A=2, B=2)
    split = tables(
        online("A", priority=2), online("B"), channels=(Channel(channel_id="web", allow_split=True),)
    )
    order = orders.apply(OrderState(), accepted())[0]
    orders.apply(order, CancelRequested.of("cancel", "o1", "web", NOW))  # before the line is decided
    releases = follow(order, apply(state, allocate(qty=3, event_id="placed"), split, NOW))
    assert [(r.line_id, r.reason) for r in releases] == [("1", "cancelled")]
    follow(order, apply(state, releases[0], split, NOW))
    assert (orders.status(order), order.lines["1"].held) == ("cancelled", 0)


def test_the_status_waits_for_every_line_and_says_what_they_are() -> None:
    order = orders.apply(OrderState(), accepted(lines=2))[0]
    orders.apply(order, event("allocated", line="1"))
    assert orders.status(order) is None
    orders.apply(order, event("rejected", line="2", location=None, reason=reasons.UNKNOWN_SKU))
    assert orders.status(order) == "partially_allocated"
    orders.apply(order, event("fulfilled", line="1", cause="ship"))
    assert (order.lines["1"].status, orders.status(order)) == ("fulfilled", "partially_allocated")
    assert order.decided_at == NOW


def test_without_an_accepted_a_rejection_decides_unless_the_line_is_unknown() -> None:
    order = OrderState()  # e.g. a record from before placements were kept
    orders.apply(order, event("rejected", line="1", location=None, reason=reasons.UNKNOWN_LINE, cause="x"))
    assert order.lines["1"].status == "pending"
    orders.apply(order, event("rejected", line="1", location=None, reason=reasons.INSUFFICIENT_STOCK))
    assert order.lines["1"].status == "rejected"


def test_an_event_applied_again_changes_nothing_and_asks_for_nothing() -> None:
    order = orders.apply(OrderState(), accepted(lines=2, ship_complete=True))[0]
    allocated = event("allocated", qty=2)
    orders.apply(order, allocated)
    rejected = event("rejected", line="2", location=None, reason=reasons.INSUFFICIENT_STOCK)
    assert len(orders.apply(order, rejected)[1]) == 1
    before = copy.deepcopy(order)
    for repeat in (allocated, rejected, accepted(lines=2, ship_complete=True)):
        assert orders.apply(order, repeat)[1] == ()
    assert order == before and order.lines["1"].held == 2


def test_events_built_in_one_step_equal_those_built_by_their_constructors() -> None:
    accepted_event = OrderAccepted.of("placed", "o1", "web", 2, 3, True, NOW)
    assert accepted_event == OrderAccepted(
        event_id="placed:accepted", cause_event_id="placed", order_id="o1", channel="web", line_count=2,
        qty=3, ship_complete=True, occurred_at=NOW,
    )  # fmt: skip
    assert OrderAccepted.from_record(accepted_event.as_record()) == accepted_event
    cancel = CancelRequested.of("c", "o1", "web", NOW)
    assert cancel == CancelRequested(
        event_id="c:cancel_requested", cause_event_id="c", order_id="o1", channel="web", occurred_at=NOW
    )
    assert CancelRequested.from_record(cancel.as_record()) == cancel
    allocated = event("allocated", qty=2)
    assert AllocationEvent.from_record({**allocated.as_record(), "ship_complete": False}) == allocated
    assert "ship_complete" not in vars(
        AllocationEvent.from_record({**allocated.as_record(), "ship_complete": False})
    )


def test_a_history_handed_over_in_a_stores_form_is_expanded_only_when_read() -> None:
    """Most orders are never retracted: their stored entries go back as they came."""
    events = [(accepted(), "b1"), (event("allocated"), "b2")]
    expanded: list[int] = []

    def expand(entry: int) -> tuple[OrderEvent, str]:
        expanded.append(entry)
        return events[entry]

    history = History(stored=(0, 1), expand=expand)
    later = (event("picked", cause="pick"), "b3")
    history.append(later)
    assert len(history) == 3 and history
    assert history.entries(lambda entry: events.index(entry) if entry in events else 2) == (0, 1, 2)
    assert history.last() == later and expanded == [], "written back and its last read: nothing expanded"
    assert list(history) == [*events, later] and expanded == [0, 1]
    assert history == History([*events, later]) == [*events, later]
    assert History().last() is None and not History()


def test_a_retracted_source_takes_its_events_out_of_a_stored_history() -> None:
    events = [(accepted(), "b1"), (event("allocated"), "void")]
    order = OrderState()
    for applied, source in events:
        orders.apply(order, applied, source)
    stored = OrderState(
        order.channel, order.line_count, order.ship_complete, order.placements, order.cancelled,
        order.ship_failed, order.decided_at, copy.deepcopy(order.lines), set(order.applied),
        History(stored=(0, 1), expand=events.__getitem__),
    )  # fmt: skip
    assert stored == order
    again, _ = orders.retract(stored, {"void"})
    assert "1" not in again.lines, "the void batch's allocation is taken out"
    assert [e.event_id for e, _ in again.history or ()] == [events[0][0].event_id]
