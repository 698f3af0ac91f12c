"""Allocation policies: hard allocation, lots, pools, backorders, the waitlist, expiry,
locations going offline or stale, priority, and counts that shrink below what is held."""

from __future__ import annotations

import dataclasses

from streamalloc.domain import (
    Channel,
    ExpireLine,
    SkuState,
    Sweep,
    Tables,
    apply,
    availability,
    reasons,
)

from ._builders import (
    NOW,
    SKU,
    allocate,
    allocation_events,
    count,
    eid,
    expect,
    fulfil,
    inspect,
    online,
    only,
    pick,
    receive,
    release,
    return_,
    stocked,
    tables,
)

T2 = tables(online("A", priority=2), online("B"))


def kinds(decision: object) -> list[tuple[str, str | None, int, str | None]]:
    return [(e.type, e.location, e.qty, e.reason) for e in allocation_events(decision)]  # type: ignore[arg-type]


# ------------------------------------------------------------------ hard allocation


def test_a_pick_at_another_location_moves_the_allocation_there_when_it_has_the_units() -> None:
    state = stocked(A=5, B=5)
    apply(state, allocate(qty=2), T2, NOW)  # A: higher priority
    decision = apply(state, pick(qty=2, location="B"), T2, NOW)
    assert kinds(decision) == [("released", "A", 2, reasons.REALLOCATED), ("picked", "B", 2, None)]
    assert (state.balances["A"].allocated, state.balances["B"].picked) == (0, 2)
    assert state.lines[("o1", "1")].status == "picked"


def test_a_pick_at_another_location_without_the_units_is_rejected_and_changes_nothing() -> None:
    state = stocked(A=5, B=1)
    apply(state, allocate(qty=2), T2, NOW)
    event = only(apply(state, pick(qty=2, location="B"), T2, NOW))
    assert (event.type, event.reason) == ("rejected", reasons.INSUFFICIENT_STOCK)
    assert state.balances["A"].allocated == 2 and state.balances["B"].picked == 0


def test_hard_allocations_stay_when_their_location_goes_offline() -> None:
    state = stocked(A=5, B=5)
    apply(state, allocate(qty=2), T2, NOW)
    apply(state, pick(qty=2), T2, NOW)
    offline_a = tables(online("A", status="offline"), online("B"))
    assert not apply(state, Sweep(event_id="locations:A", occurred_at=NOW, sku=SKU), offline_a, NOW)
    assert state.balances["A"].picked == 2
    view = availability(state, offline_a, NOW)
    assert (view.locations[0].status, view.locations[0].at_risk) == ("offline", 2)


# ------------------------------------------------------------------ lots


def lotted(policy: str | None = None) -> tuple[SkuState, Tables]:
    state = SkuState(SKU)
    t = tables(online("A"), channels=(Channel(channel_id="web", lot_policy=policy),))  # type: ignore[arg-type]
    for received_at, cmd in (
        (NOW - 3000, receive("A", 3, lot="old-late", expires_at=NOW + 30_000)),
        (NOW - 2000, receive("A", 3, lot="mid-soon", expires_at=NOW + 10_000)),
        (NOW - 1000, receive("A", 3, lot="new-none")),
    ):
        apply(state, dataclasses.replace(cmd, occurred_at=received_at), t, NOW)
    return state, t


def test_fefo_counts_an_allocation_against_the_lot_expiring_first() -> None:
    state, t = lotted("FEFO")
    events = allocation_events(apply(state, allocate(qty=4), t, NOW))
    assert [(e.lot, e.qty) for e in events] == [("mid-soon", 3), ("old-late", 1)]
    lots = state.balances["A"].lots or {}
    assert (lots["mid-soon"].held, lots["old-late"].held, lots["new-none"].held) == (3, 1, 0)


def test_fifo_takes_the_oldest_receipt_and_lifo_the_newest() -> None:
    state, t = lotted("FIFO")
    assert [e.lot for e in allocation_events(apply(state, allocate(qty=1), t, NOW))] == ["old-late"]
    state, t = lotted("LIFO")
    assert [e.lot for e in allocation_events(apply(state, allocate(qty=1), t, NOW))] == ["new-none"]


def test_expired_lots_are_never_allocated_and_are_reported() -> None:
    state, t = lotted("FEFO")
    later = NOW + 20_000  # mid-soon has expired
    view = availability(state, t, later)
    assert (view.available, view.expired) == (6, 3)
    events = allocation_events(apply(state, allocate(qty=6), t, later))
    assert sorted(e.lot or "" for e in events) == ["new-none", "old-late"]
    assert only(apply(state, allocate("o2", qty=1), t, later)).reason == reasons.INSUFFICIENT_STOCK


def test_a_pick_naming_another_lot_moves_the_count_or_is_refused() -> None:
    state, t = lotted("FEFO")
    apply(state, allocate(qty=2), t, NOW)  # mid-soon
    event = only(apply(state, pick(qty=2, lot="new-none"), t, NOW))
    assert (event.type, event.lot) == ("picked", "new-none")
    lots = state.balances["A"].lots or {}
    assert (lots["mid-soon"].held, lots["new-none"].held) == (0, 2)
    apply(state, allocate("o2", qty=1), t, NOW)
    refused = only(apply(state, pick("o2", qty=1, lot="nope"), t, NOW))
    assert refused.reason == reasons.LOT_UNAVAILABLE


def test_shipping_a_lot_takes_its_units_out_of_that_lot() -> None:
    state, t = lotted("FEFO")
    apply(state, allocate(qty=2), t, NOW)
    apply(state, fulfil(qty=2), t, NOW)
    lots = state.balances["A"].lots or {}
    assert (lots["mid-soon"].on_hand, lots["mid-soon"].held, state.balances["A"].on_hand) == (1, 0, 7)


# ------------------------------------------------------------------ channel pools


def test_a_pool_is_fenced_off_from_other_channels_and_caps_its_own() -> None:
    state = stocked(A=10)
    t = tables(online("A"), channels=(Channel(channel_id="store", pool_share=0.3), Channel(channel_id="web")))
    # store owns 3 of 10: web may take 7, never the 8th
    assert only(apply(state, allocate("w1", qty=7), t, NOW)).type == "allocated"
    assert only(apply(state, allocate("w2", qty=1), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    # store sells from its pool, not beyond it
    assert only(apply(state, allocate("s1", qty=3, channel="store"), t, NOW)).type == "allocated"
    assert (
        only(apply(state, allocate("s2", qty=1, channel="store"), t, NOW)).reason
        == reasons.INSUFFICIENT_STOCK
    )


# ------------------------------------------------------------------ backorders and the waitlist

BO = tables(online("A"), channels=(Channel(channel_id="web", backorder_limit=5),))


def test_a_line_beyond_available_is_backordered_against_incoming_never_beyond_it() -> None:
    state = stocked(A=1)
    apply(state, expect("A", 4), BO, NOW)
    event = only(apply(state, allocate("o1", qty=3), BO, NOW))
    assert (event.type, event.reason, event.qty) == ("backordered", reasons.INCOMING, 3)
    # 3 of the 4 incoming are promised: a line of 2 is one too many
    assert only(apply(state, allocate("o2", qty=2), BO, NOW)).reason == reasons.INSUFFICIENT_STOCK
    # and a line above the channel's limit never waits
    apply(state, expect("A", 10), BO, NOW)
    assert only(apply(state, allocate("o3", qty=6), BO, NOW)).reason == reasons.INSUFFICIENT_STOCK


def test_a_receipt_fills_the_waitlist_before_the_units_are_available_to_anyone() -> None:
    state = stocked(A=0)
    apply(state, expect("A", 4), BO, NOW)
    apply(state, allocate("o1", qty=3), BO, NOW)
    cmd = receive("A", 4)
    decision = apply(state, cmd, BO, NOW)
    (filled,) = allocation_events(decision)
    assert (filled.type, filled.order_id, filled.qty, filled.cause_event_id) == (
        "allocated",
        "o1",
        3,
        cmd.event_id,
    )
    assert state.balances["A"].incoming == 0 and state.balances["A"].allocated == 3
    assert not state.waiting and state.lines[("o1", "1")].status == "allocated"
    assert availability(state, BO, NOW).available == 1


def test_the_waitlist_is_served_in_priority_then_channel_priority_then_arrival_order() -> None:
    t = tables(
        online("A"),
        channels=(
            Channel(channel_id="web", waitlist=True),
            Channel(channel_id="vip", priority=5, waitlist=True),
        ),
    )
    state = stocked(A=0)
    for order, kw in (("first", {}), ("vip", {"channel": "vip"}), ("urgent", {"priority": 9}), ("last", {})):
        event = only(apply(state, allocate(order, qty=1, **kw), t, NOW))
        assert (event.type, event.reason) == ("backordered", reasons.WAITLISTED)
    decision = apply(state, receive("A", 3), t, NOW)
    assert [e.order_id for e in allocation_events(decision)] == ["urgent", "vip", "first"]
    assert [e.order_id for e in state.book.waitlist] == ["last"]


def test_a_cancelled_waiting_line_leaves_the_waitlist() -> None:
    state = stocked(A=0)
    apply(state, expect("A", 4), BO, NOW)
    apply(state, allocate("o1", qty=3), BO, NOW)
    assert kinds(apply(state, release("o1"), BO, NOW)) == [("released", None, 0, "cancelled")]
    assert not state.waiting and state.book.backordered() == 0
    assert not allocation_events(apply(state, receive("A", 4), BO, NOW))


def test_a_release_and_a_passed_inspection_serve_the_waitlist() -> None:
    t = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True),))
    state = stocked(A=2)
    apply(state, allocate("o1", qty=2), t, NOW)
    apply(state, allocate("o2", qty=2), t, NOW)  # waits
    freed = apply(state, release("o1"), t, NOW)
    assert [(e.type, e.order_id) for e in allocation_events(freed)] == [
        ("released", "o1"),
        ("allocated", "o2"),
    ]
    apply(state, fulfil("o2", qty=2), t, NOW)
    apply(state, allocate("o3", qty=1), t, NOW)  # waits
    apply(state, return_("o2", qty=1), t, NOW)
    passed = apply(state, inspect("A", 1), t, NOW)
    assert [(e.type, e.order_id) for e in allocation_events(passed)] == [("allocated", "o3")]


# ------------------------------------------------------------------ reservation expiry


def test_expiry_releases_soft_units_with_reason_expired_unless_picked() -> None:
    state = stocked(A=5)
    apply(state, allocate("o1", qty=2, reservation_ttl_s=60), T2, NOW)
    apply(state, allocate("o2", qty=1, reservation_ttl_s=60), T2, NOW)
    apply(state, pick("o2", qty=1), T2, NOW)
    due = NOW + 60_000
    assert state.lines[("o1", "1")].expires_at == due
    expired = apply(
        state, ExpireLine(event_id="clock:o1", occurred_at=due, order_id="o1", line_id="1", sku=SKU), T2, due
    )
    assert kinds(expired) == [("released", "A", 2, reasons.EXPIRED)]
    assert state.lines[("o1", "1")].status == "released"
    # picked in time: nothing to expire; the same timer again: nothing either
    for order in ("o2", "o1"):
        cmd = ExpireLine(event_id=f"clock:{order}", occurred_at=due, order_id=order, line_id="1", sku=SKU)
        assert apply(state, cmd, T2, due).duplicate
    assert state.balances["A"].allocated == 0 and state.balances["A"].picked == 1


def test_allocation_aging_is_in_the_availability_record() -> None:
    state = stocked(A=5)
    apply(state, allocate("o1", qty=2), T2, NOW)
    apply(state, allocate("o2", qty=2), T2, NOW + 10_000)
    assert availability(state, T2, NOW + 20_000).allocation_age_s == 15.0


# ------------------------------------------------------------------ locations offline or stale


def test_an_offline_location_moves_its_soft_allocations_and_coming_back_serves_the_waitlist() -> None:
    t = tables(online("A", priority=2), online("B"), channels=(Channel(channel_id="web", waitlist=True),))
    state = stocked(A=4, B=1)
    apply(state, allocate("o1", qty=1), t, NOW)
    apply(state, allocate("o2", qty=2), t, NOW)
    down = tables(online("A", status="offline"), online("B"), channels=t.channels.values())
    decision = apply(state, Sweep(event_id="locations:A:offline", occurred_at=NOW, sku=SKU), down, NOW)
    assert [(e.type, e.order_id, e.location, e.reason) for e in allocation_events(decision)] == [
        ("released", "o1", "A", reasons.REALLOCATED),
        ("reallocated", "o1", "B", reasons.LOCATION_OFFLINE),
        ("released", "o2", "A", reasons.REALLOCATED),
        ("backordered", "o2", None, reasons.WAITLISTED),
    ]
    assert (state.balances["A"].allocated, state.balances["B"].allocated) == (0, 1)
    back = apply(state, Sweep(event_id="locations:A:online", occurred_at=NOW, sku=SKU), t, NOW)
    assert [(e.type, e.order_id, e.location) for e in allocation_events(back)] == [("allocated", "o2", "A")]
    assert apply(state, Sweep(event_id="locations:A:online", occurred_at=NOW, sku=SKU), t, NOW).duplicate


def test_a_stale_location_is_treated_as_offline_with_its_own_reason() -> None:
    state = stocked(A=4, B=4)
    apply(state, allocate("o1", qty=1), T2, NOW)
    stale = Tables.of(T2.locations.values(), stale=("A",))
    assert stale.status("A") == "stale" and "A" not in stale.online
    decision = apply(state, Sweep(event_id="locations:A:stale", occurred_at=NOW, sku=SKU), stale, NOW)
    assert kinds(decision)[-1] == ("reallocated", "B", 1, reasons.LOCATION_STALE)
    assert availability(state, stale, NOW).locations[0].status == "stale"


def test_without_stock_elsewhere_or_a_waitlist_the_line_is_released_with_the_reason() -> None:
    state = stocked(A=4)
    apply(state, allocate("o1", qty=1), tables(online("A")), NOW)
    down = tables(online("A", status="offline"))
    decision = apply(state, Sweep(event_id="locations:A", occurred_at=NOW, sku=SKU), down, NOW)
    assert kinds(decision) == [("released", "A", 1, reasons.LOCATION_OFFLINE)]
    assert state.lines[("o1", "1")].status == "released"


# ------------------------------------------------------------------ counts


def test_a_count_below_what_is_held_moves_the_newest_soft_allocation_elsewhere() -> None:
    state = stocked(A=4, B=3)
    apply(state, allocate("old", qty=2), T2, NOW)
    apply(state, allocate("new", qty=2), T2, NOW + 1)
    decision = apply(state, count("A", 2, event_id=eid()), T2, NOW + 2)
    assert [(e.type, e.order_id, e.location) for e in allocation_events(decision)] == [
        ("released", "new", "A"),
        ("reallocated", "new", "B"),
    ]
    balance = state.balances["A"]
    assert (balance.on_hand, balance.allocated) == (2, 2)
    assert availability(state, T2, NOW).allocated == 4  # nothing lost, nothing oversold
