"""Checkout holds (domain/checkout.py): held for a cart, then confirmed, extended or expired.

Decided in the SKU and followed in the order (orders.py), as the order stage does.
"""

from __future__ import annotations

import itertools

from streamalloc.domain import (
    AllocationEvent,
    Channel,
    Command,
    ConfirmLine,
    Decision,
    ExpireLine,
    ExtendHold,
    HoldLine,
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
from streamalloc.domain.tables import DEFAULT_HOLD_TTL_S

from ._builders import (
    NOW,
    SKU,
    allocate,
    allocation_events,
    fulfil,
    online,
    pick,
    release,
    stocked,
    tables,
)

T = tables(online("A", priority=2), online("B"), channels=(Channel(channel_id="web", hold_ttl_s=60),))
_ids = itertools.count(1)


def hold(
    order: str = "o1", line: str = "1", qty: int = 2, ttl_s: int | None = None, **kw: object
) -> HoldLine:
    return HoldLine(
        event_id=str(kw.pop("event_id", f"hold-{next(_ids)}")), occurred_at=NOW - 5, order_id=order,
        line_id=line, sku=SKU, qty=qty, channel="web", ttl_s=ttl_s, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def confirm(
    order: str = "o1", line: str = "1", event_id: str | None = None, ttl: int | None = None
) -> ConfirmLine:
    return ConfirmLine(
        event_id=event_id or f"confirm-{next(_ids)}", occurred_at=NOW - 5, order_id=order, line_id=line,
        sku=SKU, reservation_ttl_s=ttl,
    )  # fmt: skip


def extend(
    order: str = "o1", line: str = "1", event_id: str | None = None, ttl: int | None = None
) -> ExtendHold:
    return ExtendHold(
        event_id=event_id or f"extend-{next(_ids)}", occurred_at=NOW - 5, order_id=order, line_id=line,
        sku=SKU, ttl_s=ttl,
    )  # fmt: skip


def kinds(decision: Decision) -> list[tuple[str, int, str | None, str | None]]:
    return [(e.type, e.qty, e.location, e.reason) for e in allocation_events(decision)]


def line_of(state: SkuState, order: str = "o1") -> LineState:
    got = state.get_line((order, "1"))
    assert got is not None
    return got


class Cart:
    """One SKU and the cart its events are followed in (intake accepts a `held` event)."""

    def __init__(self, state: SkuState) -> None:
        self.state = state
        self.order = orders.apply(OrderState(), OrderAccepted.of("held", "o1", "web", 1, 2, False, NOW))[0]
        self.releases: list[ReleaseLine] = []

    def __call__(self, cmd: Command, now: int = NOW, t: Tables = T) -> Decision:
        decision = apply(self.state, cmd, t, now)
        for event in decision:
            if isinstance(event, AllocationEvent) and event.order_id == "o1":
                self.releases += orders.apply(self.order, event)[1]
        return decision


def test_a_hold_takes_units_now_until_the_channel_default_ttl() -> None:
    state = stocked(A=5)
    decision = apply(state, hold(), T, NOW)
    assert kinds(decision) == [("held", 2, "A", None)]
    got = line_of(state)
    assert (got.status, got.allocated, got.expires_at) == ("held", 2, NOW + 60_000)
    assert state.balances["A"].allocated == 2


def test_the_event_ttl_wins_over_the_channel_default_and_the_default_default_is_15_minutes() -> None:
    state = stocked(A=5)
    apply(state, hold(ttl_s=5), T, NOW)
    assert line_of(state).expires_at == NOW + 5_000
    plain = stocked(A=5)
    apply(plain, hold(), tables(online("A")), NOW)
    assert line_of(plain).expires_at == NOW + DEFAULT_HOLD_TTL_S * 1000 == NOW + 900_000


def test_a_hold_short_of_stock_is_rejected_even_where_lines_may_wait() -> None:
    waits = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True, allow_partial=True),))
    state = stocked(A=1)
    assert kinds(apply(state, hold(qty=2), waits, NOW)) == [("rejected", 2, None, reasons.INSUFFICIENT_STOCK)]
    assert state.balances["A"].allocated == 0 and not state.book.waitlist


def test_a_hold_with_a_ttl_of_zero_is_rejected() -> None:
    state = stocked(A=5)
    assert kinds(apply(state, hold(ttl_s=0), T, NOW)) == [("rejected", 2, None, reasons.INVALID_TTL)]
    assert state.balances["A"].allocated == 0


def test_confirm_keeps_the_units_and_ends_the_expiry() -> None:
    cart = Cart(stocked(A=5))
    cart(hold())
    assert orders.status(cart.order) == "held"
    decision = cart(confirm(event_id="pay-1"))
    assert kinds(decision) == [("confirmed", 2, "A", None)]
    got = line_of(cart.state)
    assert (got.status, got.allocated, got.expires_at) == ("allocated", 2, None)
    assert cart.state.balances["A"].allocated == 2
    assert orders.status(cart.order) == "allocated"
    assert cart.order.lines["1"].held == 2
    # The timer set for the hold fires later and changes nothing.
    assert apply(cart.state, ExpireLine.due(SKU, "o1", "1", NOW + 60_000), T, NOW + 60_000).duplicate


def test_a_confirm_may_start_the_order_lines_own_reservation() -> None:
    state = stocked(A=5)
    apply(state, hold(), T, NOW)
    apply(state, confirm(ttl=30), T, NOW + 1)
    assert line_of(state).expires_at == NOW + 1 + 30_000


def test_a_repeated_confirm_or_extend_is_a_no_op() -> None:
    state = stocked(A=5)
    apply(state, hold(event_id="cart"), T, NOW)
    assert apply(state, hold(event_id="cart"), T, NOW).duplicate
    assert apply(state, hold(event_id="cart-again", qty=3), T, NOW).duplicate  # a line is held once
    ext = extend(event_id="ext-1", ttl=120)
    assert kinds(apply(state, ext, T, NOW + 10)) == [("extended", 2, None, None)]
    before = line_of(state).copy()
    assert apply(state, ext, T, NOW + 20).duplicate
    assert line_of(state) == before
    ok = confirm(event_id="pay-1")
    apply(state, ok, T, NOW + 30)
    assert apply(state, ok, T, NOW + 40).duplicate
    assert line_of(state).status == "allocated"


def test_extend_moves_the_expiry_so_the_old_timer_is_moot() -> None:
    cart = Cart(stocked(A=5))
    cart(hold(ttl_s=10))
    cart(extend(ttl=100), NOW + 5_000)
    assert line_of(cart.state).expires_at == NOW + 105_000
    assert cart(ExpireLine.due(SKU, "o1", "1", NOW + 10_000), NOW + 10_000).duplicate
    assert line_of(cart.state).status == "held"
    cart(extend(), NOW + 50_000)  # no TTL named: the channel's
    assert line_of(cart.state).expires_at == NOW + 110_000


def test_an_expired_hold_releases_its_units_to_the_waitlist_and_cannot_be_confirmed() -> None:
    waits = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True, hold_ttl_s=60),))
    cart = Cart(stocked(A=2))
    cart(hold(), t=waits)
    # Another order waits for the held units.
    assert kinds(apply(cart.state, allocate(order="o2", qty=2), waits, NOW))[0][0] == "backordered"
    decision = cart(ExpireLine.due(SKU, "o1", "1", NOW + 60_000), NOW + 60_000, waits)
    assert kinds(decision) == [
        ("released", 2, "A", reasons.HOLD_EXPIRED),
        ("allocated", 2, "A", None),  # o2 is served from what came back
    ]
    assert line_of(cart.state).status == "released"
    assert orders.status(cart.order) == "cancelled"
    assert kinds(cart(confirm(), NOW + 61_000, waits)) == [("rejected", 0, None, reasons.HOLD_EXPIRED)]
    assert kinds(cart(extend(), NOW + 61_000, waits)) == [("rejected", 0, None, reasons.HOLD_EXPIRED)]
    assert orders.status(cart.order) == "cancelled"  # a refused command leaves the line as it was


def test_a_hold_past_its_time_is_not_confirmed_before_its_timer_fires() -> None:
    state = stocked(A=5)
    apply(state, hold(), T, NOW)
    assert kinds(apply(state, confirm(), T, NOW + 60_000)) == [("rejected", 2, None, reasons.HOLD_EXPIRED)]
    assert line_of(state).status == "held"  # the timer releases it


def test_confirm_or_extend_of_a_line_not_on_hold_is_rejected() -> None:
    state = stocked(A=5)
    apply(state, allocate(order="o2", qty=1), T, NOW)
    assert kinds(apply(state, confirm(order="o2"), T, NOW)) == [("rejected", 1, None, reasons.NOT_HELD)]
    assert kinds(apply(state, extend(order="o3"), T, NOW)) == [("rejected", 0, None, reasons.UNKNOWN_LINE)]
    apply(state, hold(), T, NOW)
    apply(state, confirm(), T, NOW)
    assert kinds(apply(state, confirm(), T, NOW)) == [("rejected", 2, None, reasons.NOT_HELD)]
    assert line_of(state).status == "allocated"


def test_a_held_line_is_not_picked_or_shipped_before_it_is_confirmed_but_may_be_cancelled() -> None:
    cart = Cart(stocked(A=5))
    cart(hold())
    assert kinds(cart(pick(qty=1))) == [("rejected", 1, None, reasons.ON_HOLD)]
    assert kinds(cart(fulfil(qty=1))) == [("rejected", 1, None, reasons.ON_HOLD)]
    assert line_of(cart.state).status == "held"
    assert kinds(cart(release())) == [("released", 2, "A", reasons.CANCELLED)]
    assert cart.state.balances["A"].allocated == 0
    assert orders.status(cart.order) == "cancelled"


def test_a_hold_at_a_location_gone_offline_moves_and_stays_a_hold_or_goes() -> None:
    cart = Cart(stocked(A=5, B=5))
    cart(hold())
    down = Tables.of([online("A", status="offline"), online("B")], T.channels.values())
    decision = cart(Sweep(event_id="sweep", occurred_at=NOW, sku=SKU), t=down)
    assert kinds(decision) == [
        ("released", 2, "A", reasons.REALLOCATED),
        ("reallocated", 2, "B", reasons.LOCATION_OFFLINE),
    ]
    assert line_of(cart.state).status == "held" and cart.order.lines["1"].status == "held"
    # Nowhere to go, on a channel whose lines would wait: the hold goes.
    waits = Channel(channel_id="web", waitlist=True, hold_ttl_s=60)
    gone = Tables.of([online("A"), online("B", status="offline")], [waits])
    cart.state.balances["A"].on_hand = 0
    decision = cart(Sweep(event_id="sweep-2", occurred_at=NOW, sku=SKU), t=gone)
    assert kinds(decision) == [("released", 2, "B", reasons.LOCATION_OFFLINE)]
    assert line_of(cart.state).status == "released" and not cart.state.book.waitlist


def test_an_order_status_with_held_and_other_lines() -> None:
    order = orders.apply(OrderState(), OrderAccepted.of("held", "o1", "web", 2, 3, False, NOW))[0]
    state = stocked(A=2)
    for cmd in (hold(line="1", qty=2, event_id="held"), hold(line="2", qty=1, event_id="held")):
        for event in apply(state, cmd, T, NOW):
            if isinstance(event, AllocationEvent):
                orders.apply(order, event)
    assert [line.status for line in order.lines.values()] == ["held", "rejected"]
    assert orders.status(order) == "partially_allocated"  # one line held, the other refused
