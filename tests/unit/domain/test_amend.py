"""Order edits (domain/amend.py): a line's new quantity decided in one step, and the order's
rules for the lines an edit lists (domain/orders.py)."""

from __future__ import annotations

from streamalloc.domain import (
    AllocationEvent,
    AmendRequested,
    Channel,
    Decision,
    LineState,
    OrderAccepted,
    OrderState,
    SkuState,
    apply,
    orders,
    reasons,
)

from ._builders import (
    NOW,
    SKU,
    allocate,
    allocation_events,
    amend,
    expect,
    fulfil,
    online,
    pick,
    release,
    stocked,
    tables,
)

T = tables(online("A", priority=2), online("B"))


def kinds(decision: Decision) -> list[tuple[str, int, str | None, str | None]]:
    return [(e.type, e.qty, e.location, e.reason) for e in allocation_events(decision)]


def line_of(state: SkuState, order: str = "o1", line: str = "1") -> LineState:
    found = state.get_line((order, line))
    assert found is not None
    return found


def placed(qty: int, state: SkuState | None = None, tables_: object = T, **kw: object) -> SkuState:
    state = state if state is not None else stocked(A=10, B=10)
    decision = apply(state, allocate(qty=qty, **kw), tables_, NOW)  # type: ignore[arg-type]
    assert decision and decision[0].type in ("allocated", "backordered"), decision  # type: ignore[union-attr]
    return state


# ---------------------------------------------------------------- fewer units


def test_fewer_units_release_the_difference_in_one_decision() -> None:
    state = placed(5)
    decision = apply(state, amend(qty=3, event_id="e1"), T, NOW)
    assert kinds(decision) == [("amended", 3, None, None), ("released", 2, "A", reasons.AMENDED)]
    line = line_of(state)
    assert (line.qty, line.held, line.status) == (3, 3, "allocated")
    assert state.balances["A"].allocated == 3


def test_released_units_go_to_the_waitlist_in_the_same_decision() -> None:
    waiting = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True),))
    state = stocked(A=5)
    apply(state, allocate(qty=5), waiting, NOW)
    assert apply(state, allocate(order="o2", qty=2), waiting, NOW)[0].type == "backordered"  # type: ignore[union-attr]
    decision = apply(state, amend(qty=3), waiting, NOW)
    assert kinds(decision) == [
        ("amended", 3, None, None),
        ("released", 2, "A", reasons.AMENDED),
        ("allocated", 2, "A", None),  # o2, served before anyone else can take them
    ]
    assert [e.order_id for e in allocation_events(decision)] == ["o1", "o1", "o2"]
    assert state.balances["A"].allocated == 5


def test_below_picked_is_refused_and_the_line_stays_as_it_was() -> None:
    state = placed(5)
    apply(state, pick(qty=4), T, NOW)
    decision = apply(state, amend(qty=3), T, NOW)
    assert kinds(decision) == [("rejected", 3, None, reasons.AMEND_BELOW_PICKED)]
    line = line_of(state)
    assert (line.qty, line.allocated, line.picked) == (5, 1, 4)
    # down to what is picked: only the soft unit goes
    assert kinds(apply(state, amend(qty=4), T, NOW)) == [
        ("amended", 4, None, None),
        ("released", 1, "A", reasons.AMENDED),
    ]
    assert line_of(state).status == "picked"


def test_fewer_units_of_a_partial_line_give_up_what_it_waits_for_first() -> None:
    partial = tables(online("A"), channels=(Channel(channel_id="web", allow_partial=True),))
    state = stocked(A=6)
    apply(state, allocate(qty=10), partial, NOW)  # holds 6, waits for 4
    decision = apply(state, amend(qty=8), partial, NOW)
    assert kinds(decision) == [("amended", 8, None, None), ("backordered", 2, None, reasons.WAITLISTED)]
    assert state.book.entry("o1", "1").qty == 2  # type: ignore[union-attr]
    decision = apply(state, amend(qty=5), partial, NOW)
    assert kinds(decision) == [("amended", 5, None, None), ("released", 1, "A", reasons.AMENDED)]
    assert state.book.entry("o1", "1") is None
    assert (line_of(state).status, line_of(state).held) == ("allocated", 5)


# ---------------------------------------------------------------- more units


def test_more_units_are_taken_where_the_line_holds_them() -> None:
    state = placed(2)
    decision = apply(state, amend(qty=5), T, NOW)
    assert kinds(decision) == [("amended", 5, None, None), ("allocated", 3, "A", None)]
    line = line_of(state)
    assert (line.qty, line.held, line.status, len(line.parts)) == (5, 5, "allocated", 1)


def test_more_units_elsewhere_only_with_allow_split() -> None:
    state = placed(8)  # at A, which keeps 2
    decision = apply(state, amend(qty=12), T, NOW)
    assert kinds(decision) == [("rejected", 12, "A", reasons.INSUFFICIENT_STOCK)]
    assert (line_of(state).qty, line_of(state).held) == (8, 8)  # never released to make room
    split = tables(
        online("A", priority=2), online("B"), channels=(Channel(channel_id="web", allow_split=True),)
    )
    decision = apply(state, amend(qty=12), split, NOW)
    assert kinds(decision) == [("amended", 12, None, None), ("allocated", 4, "B", None)]
    assert line_of(state).held == 12


def test_more_units_not_there_are_backordered_against_incoming() -> None:
    backorder = tables(online("A"), channels=(Channel(channel_id="web", backorder_limit=10),))
    state = stocked(A=3)
    apply(state, expect(qty=5), backorder, NOW)
    apply(state, allocate(qty=3), backorder, NOW)
    decision = apply(state, amend(qty=6), backorder, NOW)
    assert kinds(decision) == [("amended", 6, None, None), ("backordered", 3, None, reasons.INCOMING)]
    line = line_of(state)
    assert (line.qty, line.held, line.status) == (6, 3, "partially_allocated")
    assert state.balances["A"].allocated == 3


def test_more_units_not_there_are_refused_without_a_backorder_rule() -> None:
    state = placed(10, stocked(A=10))
    decision = apply(state, amend(qty=11), T, NOW)
    assert kinds(decision) == [("rejected", 11, "A", reasons.INSUFFICIENT_STOCK)]
    line = line_of(state)
    assert (line.qty, line.held, line.status) == (10, 10, "allocated")


def test_more_units_with_allow_partial_take_what_is_there() -> None:
    partial = tables(online("A"), channels=(Channel(channel_id="web", allow_partial=True),))
    state = stocked(A=5)
    apply(state, allocate(qty=3), partial, NOW)
    decision = apply(state, amend(qty=7), partial, NOW)
    assert kinds(decision) == [
        ("amended", 7, None, None),
        ("allocated", 2, "A", None),
        ("backordered", 2, None, reasons.WAITLISTED),
    ]
    assert (line_of(state).held, line_of(state).status) == (5, "partially_allocated")


def test_a_waiting_line_waits_for_the_extra_in_its_place() -> None:
    waiting = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True),))
    state = stocked(A=1)
    apply(state, allocate(qty=2), waiting, NOW)
    apply(state, allocate(order="o2", qty=2), waiting, NOW)
    decision = apply(state, amend(qty=4), waiting, NOW)
    assert kinds(decision) == [("amended", 4, None, None), ("backordered", 4, None, reasons.WAITLISTED)]
    assert [e.order_id for e in state.book.waitlist] == ["o1", "o2"]


# ---------------------------------------------------------------- lines, closed lines, repeats


def test_a_line_new_to_the_sku_is_placed() -> None:
    state = stocked(A=10)
    decision = apply(state, amend(line="2", qty=4), T, NOW)
    assert kinds(decision) == [("allocated", 4, "A", None)]
    assert line_of(state, line="2").status == "allocated"


def test_a_closed_line_is_refused() -> None:
    state = placed(2)
    apply(state, release(), T, NOW)
    assert kinds(apply(state, amend(qty=3), T, NOW)) == [("rejected", 3, None, reasons.LINE_CLOSED)]
    shipped = placed(2)
    apply(shipped, fulfil(qty=2), T, NOW)
    assert kinds(apply(shipped, amend(qty=1), T, NOW)) == [("rejected", 1, None, reasons.LINE_CLOSED)]
    assert line_of(shipped).status == "fulfilled"


def test_zero_is_refused_a_line_leaves_by_being_left_out() -> None:
    state = placed(2)
    assert kinds(apply(state, amend(qty=0), T, NOW)) == [("rejected", 0, None, reasons.INVALID_QUANTITY)]
    assert line_of(state).held == 2


def test_the_same_quantity_and_a_repeat_change_nothing() -> None:
    state = placed(5)
    same = apply(state, amend(qty=5, event_id="e0"), T, NOW)
    assert kinds(same) == [("amended", 5, None, None)] and state.balances["A"].allocated == 5
    first = apply(state, amend(qty=3, event_id="e1"), T, NOW)
    assert not first.duplicate
    assert apply(state, amend(qty=5, event_id="e0"), T, NOW).duplicate  # it does not come back as a change
    before = state.copy()
    assert apply(state, amend(qty=3, event_id="e1"), T, NOW).duplicate
    assert apply(state, amend(qty=9, event_id="e1"), T, NOW).duplicate  # the same event id
    assert state.balances == before.balances
    assert line_of(state).qty == 3


# ---------------------------------------------------------------- the order's rules


def _event(type_: str, line: str, qty: int, location: str | None = None, **kw: object) -> AllocationEvent:
    cause = kw.pop("cause", "c")
    values = {
        "event_id": f"{cause}:{line}:{type_}:{location}", "cause_event_id": cause,
        "type": type_, "order_id": "o1", "line_id": line, "sku": kw.pop("sku", SKU), "channel": "web",
        "qty": qty, "location": location, "lot": None, "reason": kw.pop("reason", None),
        "line_count": None, "occurred_at": NOW, "decided_at": NOW,
    }  # fmt: skip
    return AllocationEvent(**values)  # type: ignore[arg-type]


def _amend_requested(line: str, qty: int, count: int, sku: str = SKU) -> AmendRequested:
    return AmendRequested.of("edit", "o1", "web", line, sku, qty, count, NOW)


def _order() -> OrderState:
    order = OrderState()
    orders.apply(order, OrderAccepted.of("p", "o1", "web", 2, 5, False, NOW))
    orders.apply(order, _event("allocated", "1", 3, "A", cause="p"))
    orders.apply(order, _event("allocated", "2", 2, "A", cause="p", sku="sku-2"))
    return order


def test_the_order_follows_a_new_quantity_and_keeps_its_status() -> None:
    order = _order()
    orders.apply(order, _event("amended", "1", 2, cause="edit"))
    orders.apply(order, _event("released", "1", 1, "A", cause="edit", reason=reasons.AMENDED))
    line = order.lines["1"]
    assert (line.qty, line.held, line.status) == (2, 2, "allocated")
    assert orders.status(order) == "allocated"


def test_the_order_releases_lines_an_edit_leaves_out_and_counts_new_ones() -> None:
    order = _order()
    assert orders.apply(order, _amend_requested("1", 3, 2))[1] == ()  # the edit is not seen whole yet
    _, releases = orders.apply(order, _amend_requested("3", 1, 2, sku="sku-3"))
    assert [(r.line_id, r.sku, r.reason) for r in releases] == [("2", "sku-2", reasons.AMENDED)]
    assert order.line_count == 2 and order.lines["3"].status == "pending"
    assert orders.status(order) is None  # line 3 is not decided yet
    orders.apply(order, _event("released", "2", 2, "A", cause="edit", sku="sku-2", reason=reasons.AMENDED))
    orders.apply(order, _event("allocated", "3", 1, "A", cause="edit", sku="sku-3"))
    assert orders.status(order) == "allocated"  # the line that left is no longer counted
    # a repeat of the edit asks for nothing more
    assert orders.apply(order, _amend_requested("3", 1, 2, sku="sku-3"))[1] == ()


def test_a_line_whose_sku_changes_is_released_there_and_placed_again() -> None:
    order = _order()
    orders.apply(order, _amend_requested("1", 3, 2))
    _, releases = orders.apply(order, _amend_requested("2", 2, 2, sku="sku-9"))
    assert [(r.line_id, r.sku, r.reason) for r in releases] == [("2", "sku-2", reasons.AMENDED)]
    assert (order.lines["2"].sku, order.lines["2"].status) == ("sku-9", "pending")
    orders.apply(order, _event("released", "2", 2, "A", cause="edit", sku="sku-2", reason=reasons.AMENDED))
    assert order.lines["2"].status == "pending"  # about the old SKU: left out
    orders.apply(order, _event("allocated", "2", 2, "B", cause="edit", sku="sku-9"))
    assert orders.status(order) == "allocated"


def test_a_rejected_new_line_fails_a_ship_complete_order() -> None:
    order = OrderState()
    orders.apply(order, OrderAccepted.of("p", "o1", "web", 1, 3, True, NOW))
    orders.apply(order, _event("allocated", "1", 3, "A", cause="p"))
    orders.apply(order, _amend_requested("1", 3, 2))
    orders.apply(order, _amend_requested("2", 1, 2))
    _, releases = orders.apply(
        order, _event("rejected", "2", 1, cause="edit", reason=reasons.INSUFFICIENT_STOCK)
    )
    assert [(r.line_id, r.reason) for r in releases] == [("1", reasons.SHIP_COMPLETE_FAILED)]
    # a refused edit of a decided line fails nothing
    order = _order()
    assert (
        orders.apply(order, _event("rejected", "1", 9, cause="edit2", reason="insufficient_stock"))[1] == ()
    )
    assert order.lines["1"].status == "allocated"
