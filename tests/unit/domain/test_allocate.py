"""AllocateLine: where a line's units come from, and every reason it can be refused."""

from __future__ import annotations

from streamalloc.domain import Channel, Location, LocationBalance, SkuState, Tables, apply, reasons

from ._builders import NOW, SKU, allocate, allocation_events, online, only, receive, stocked, tables


def test_allocation_takes_units_at_the_location_and_emits_allocated() -> None:
    state = stocked(A=10)
    cmd = allocate(qty=3, lot="lot-7")
    event = only(apply(state, cmd, tables(online("A")), NOW))

    assert (event.type, event.location, event.qty, event.lot) == ("allocated", "A", 3, "lot-7")
    assert (event.order_id, event.line_id, event.sku, event.channel) == ("o1", "1", SKU, "web")
    assert (event.cause_event_id, event.occurred_at, event.decided_at) == (cmd.event_id, NOW - 5, NOW)
    assert event.event_id == f"{cmd.event_id}:o1:1:allocated:A:lot-7"
    assert state.balances["A"] == LocationBalance(on_hand=10, allocated=3)
    line = state.lines[("o1", "1")]
    assert (line.status, line.location, line.allocated, line.lot, line.qty) == (
        "allocated",
        "A",
        3,
        "lot-7",
        3,
    )


def test_location_safety_stock_is_not_allocated() -> None:
    state = stocked(A=5)
    t = tables(online("A", safety_stock=2))
    assert only(apply(state, allocate(order="o1", qty=3), t, NOW)).type == "allocated"
    refused = only(apply(state, allocate(order="o2", qty=1), t, NOW))
    assert (refused.type, refused.reason) == ("rejected", reasons.INSUFFICIENT_STOCK)


def test_soft_and_hard_allocations_both_reduce_available() -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=5, allocated=2, picked=2)})
    t = tables(online("A"))
    assert only(apply(state, allocate(order="o1", qty=2), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    assert only(apply(state, allocate(order="o2", qty=1), t, NOW)).type == "allocated"


# ------------------------------------------------------------------ location choice


def test_a_location_serving_the_region_wins_over_a_higher_priority_one() -> None:
    state = stocked(A=10, B=10)
    t = tables(online("A", priority=9, region="us"), online("B", priority=0, region="eu"))
    assert only(apply(state, allocate(qty=1, region="eu"), t, NOW)).location == "B"


def test_regions_served_count_as_serving() -> None:
    state = stocked(A=10, B=10)
    t = tables(
        online("A", priority=9, region="us"), online("B", region="us", regions_served=frozenset({"eu"}))
    )
    assert only(apply(state, allocate(qty=1, region="eu"), t, NOW)).location == "B"


def test_among_serving_locations_higher_priority_wins_over_more_available() -> None:
    state = stocked(A=100, B=10)
    t = tables(online("A", priority=1, region="eu"), online("B", priority=5, region="eu"))
    assert only(apply(state, allocate(qty=1, region="eu"), t, NOW)).location == "B"


def test_at_equal_region_and_priority_most_available_wins() -> None:
    state = stocked(A=10, B=30, C=20)
    t = tables(online("A"), online("B"), online("C"))
    assert only(apply(state, allocate(qty=1), t, NOW)).location == "B"


def test_a_full_tie_goes_to_the_smallest_location_id() -> None:
    state = stocked(B=10, A=10)
    assert only(apply(state, allocate(qty=1), tables(online("B"), online("A")), NOW)).location == "A"


def test_without_a_region_priority_decides() -> None:
    state = stocked(A=100, B=10)
    t = tables(online("A", priority=1, region="eu"), online("B", priority=2, region="us"))
    assert only(apply(state, allocate(qty=1), t, NOW)).location == "B"


def test_a_preferred_location_too_small_for_the_line_is_passed_over() -> None:
    state = stocked(A=2, B=10)
    t = tables(online("A", priority=9, region="eu"), online("B"))
    assert only(apply(state, allocate(qty=5, region="eu"), t, NOW)).location == "B"


def test_offline_and_unknown_locations_are_never_chosen() -> None:
    state = stocked(A=10, B=10, C=10)
    t = tables(online("A", status="offline"), online("B"))  # C is not in the table
    assert only(apply(state, allocate(order="o1", qty=10), t, NOW)).location == "B"
    assert only(apply(state, allocate(order="o2", qty=1), t, NOW)).reason == reasons.INSUFFICIENT_STOCK


# ------------------------------------------------------------------ split


def test_a_line_is_not_split_unless_the_channel_allows_it() -> None:
    state = stocked(A=3, B=3)
    event = only(apply(state, allocate(qty=5), tables(online("A"), online("B")), NOW))
    assert (event.type, event.reason) == ("rejected", reasons.INSUFFICIENT_STOCK)
    assert state.balances["A"].allocated == state.balances["B"].allocated == 0


def test_a_splitting_channel_takes_from_the_best_locations_first() -> None:
    state = stocked(A=3, B=4, C=2)
    t = tables(
        online("A"),
        online("B", priority=1),
        online("C"),
        channels=(Channel(channel_id="web", allow_split=True),),
    )
    decision = apply(state, allocate(qty=8), t, NOW)

    assert [(e.type, e.location, e.qty) for e in allocation_events(decision)] == [
        ("allocated", "B", 4),
        ("allocated", "A", 3),
        ("allocated", "C", 1),
    ]
    assert len({e.event_id for e in decision}) == 3
    line = state.lines[("o1", "1")]
    assert [(p.location, p.allocated) for p in line.parts] == [("B", 4), ("A", 3), ("C", 1)]
    assert line.allocated == 8


def test_a_splitting_channel_still_prefers_one_location_that_holds_the_line() -> None:
    state = stocked(A=3, B=6)
    t = tables(online("A", priority=5), online("B"), channels=(Channel(channel_id="web", allow_split=True),))
    assert only(apply(state, allocate(qty=5), t, NOW)).location == "B"


def test_even_a_splitting_channel_gets_all_or_nothing() -> None:
    state = stocked(A=3, B=3)
    t = tables(online("A"), online("B"), channels=(Channel(channel_id="web", allow_split=True),))
    assert only(apply(state, allocate(qty=7), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    assert not any(b.allocated for b in state.balances.values())


# ------------------------------------------------------------------ channel policy


def test_channel_safety_stock_holds_units_back_over_its_pool() -> None:
    state = stocked(A=5, B=5)
    t = tables(online("A"), online("B"), channels=(Channel(channel_id="web", safety_stock=4),))
    assert only(apply(state, allocate(order="o1", qty=5), t, NOW)).type == "allocated"
    assert only(apply(state, allocate(order="o2", qty=2), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    assert only(apply(state, allocate(order="o3", qty=1), t, NOW)).type == "allocated"


def test_pool_share_bounds_what_the_channel_may_take() -> None:
    state = stocked(A=100)
    t = tables(online("A"), channels=(Channel(channel_id="web", pool_share=0.29),))
    assert only(apply(state, allocate(order="o1", qty=30), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    assert only(apply(state, allocate(order="o2", qty=29), t, NOW)).type == "allocated"  # not 28.99 -> 28


def test_allow_list_limits_the_locations() -> None:
    state = stocked(A=10, B=10)
    t = tables(
        online("A", priority=9),
        online("B"),
        channels=(Channel(channel_id="web", locations=frozenset({"B"})),),
    )
    assert only(apply(state, allocate(qty=1), t, NOW)).location == "B"


def test_channel_not_allowed_when_the_allow_list_excludes_every_stocked_location() -> None:
    state = stocked(A=10, B=0)
    t = tables(online("A"), online("B"), channels=(Channel(channel_id="web", locations=frozenset({"B"})),))
    event = only(apply(state, allocate(qty=1), t, NOW))
    assert (event.type, event.reason) == ("rejected", reasons.CHANNEL_NOT_ALLOWED)


def test_insufficient_stock_when_an_allowed_location_has_some_but_too_little() -> None:
    state = stocked(A=10, B=1)
    t = tables(online("A"), online("B"), channels=(Channel(channel_id="web", locations=frozenset({"B"})),))
    assert only(apply(state, allocate(qty=2), t, NOW)).reason == reasons.INSUFFICIENT_STOCK


def test_insufficient_stock_when_no_location_has_stock_at_all() -> None:
    state = stocked(A=0)
    t = tables(online("A"), channels=(Channel(channel_id="web", locations=frozenset({"Z"})),))
    assert only(apply(state, allocate(qty=1), t, NOW)).reason == reasons.INSUFFICIENT_STOCK


def test_an_order_from_a_channel_the_table_does_not_know_is_rejected_and_takes_nothing() -> None:
    state = stocked(A=3, B=3)
    t = tables(online("A"), online("B"))
    event = only(apply(state, allocate(qty=3, channel="brand-new"), t, NOW))
    assert (event.type, event.reason, event.location) == ("rejected", reasons.UNKNOWN_CHANNEL, None)
    assert state.balances == {"A": LocationBalance(on_hand=3), "B": LocationBalance(on_hand=3)}
    assert state.lines[("o1", "1")].status == "rejected"
    # ahead of what else is wrong with the line: there are no rules to judge it by
    assert only(apply(state, allocate(order="o2", qty=0, channel="brand-new"), t, NOW)).reason == (
        reasons.UNKNOWN_CHANNEL
    )


# ------------------------------------------------------------------ a named location


def test_a_named_location_is_the_only_candidate() -> None:
    state = stocked(A=10, B=10)
    t = tables(online("A", priority=9), online("B"))
    assert only(apply(state, allocate(qty=4, location="B"), t, NOW)).location == "B"
    assert only(apply(state, allocate(order="o2", qty=7, location="B"), t, NOW)).reason == (
        reasons.INSUFFICIENT_STOCK
    )


def test_a_named_location_offline_or_unknown_is_unavailable() -> None:
    state = stocked(A=10, B=10)
    t = tables(online("A", status="offline"))
    assert (
        only(apply(state, allocate(order="o1", location="A"), t, NOW)).reason == reasons.LOCATION_UNAVAILABLE
    )
    assert (
        only(apply(state, allocate(order="o2", location="B"), t, NOW)).reason == reasons.LOCATION_UNAVAILABLE
    )


def test_a_named_location_outside_the_allow_list_is_not_allowed() -> None:
    state = stocked(A=10)
    t = tables(online("A"), channels=(Channel(channel_id="web", locations=frozenset({"B"})),))
    assert only(apply(state, allocate(location="A"), t, NOW)).reason == reasons.CHANNEL_NOT_ALLOWED


# ------------------------------------------------------------------ other rejections


def test_zero_or_negative_quantity_is_invalid() -> None:
    state = stocked(A=10)
    for n, qty in enumerate((0, -2)):
        event = only(apply(state, allocate(order=f"o{n}", qty=qty), tables(online("A")), NOW))
        assert (event.type, event.reason, event.qty) == ("rejected", reasons.INVALID_QUANTITY, qty)
    assert state.balances["A"].allocated == 0


def test_a_sku_no_inventory_event_ever_reached_is_unknown() -> None:
    state = SkuState(SKU)
    cmd = allocate()
    event = only(apply(state, cmd, tables(online("A")), NOW))
    assert (event.type, event.reason, event.event_id) == (
        "rejected",
        reasons.UNKNOWN_SKU,
        f"{cmd.event_id}:o1:1:rejected",
    )


def test_a_sku_received_then_sold_out_is_known_but_short() -> None:
    state = SkuState(SKU)
    t = tables(online("A"))
    apply(state, receive("A", 1), t, NOW)
    apply(state, allocate(order="o1"), t, NOW)
    assert only(apply(state, allocate(order="o2"), t, NOW)).reason == reasons.INSUFFICIENT_STOCK


def test_a_rejected_line_is_recorded_with_its_reason() -> None:
    state = stocked(A=1)
    apply(state, allocate(qty=2), tables(online("A")), NOW)
    line = state.lines[("o1", "1")]
    assert (line.status, line.reason, line.held) == ("rejected", reasons.INSUFFICIENT_STOCK, 0)


# ------------------------------------------------------------------ idempotence


def test_the_same_allocation_again_changes_nothing_and_emits_nothing() -> None:
    state = stocked(A=10)
    t = tables(online("A"))
    cmd = allocate(qty=4)
    apply(state, cmd, t, NOW)
    state.take_changes()
    before = state.copy()

    decision = apply(state, cmd, t, NOW + 1)
    assert decision.duplicate and decision.events == ()
    assert state.balances == before.balances and dict(state.lines) == dict(before.lines)
    assert not state.has_changes


def test_a_line_already_decided_is_not_redecided_under_a_new_event_id() -> None:
    state = stocked(A=1)
    t = tables(online("A"))
    assert only(apply(state, allocate(qty=2), t, NOW)).reason == reasons.INSUFFICIENT_STOCK
    apply(state, receive("A", 10), t, NOW)
    assert apply(state, allocate(qty=2), t, NOW).duplicate  # the re-published order does not allocate now
    assert state.balances["A"].allocated == 0


def test_allocation_is_deterministic() -> None:
    def run() -> list[object]:
        state = SkuState(SKU, balances={"A": LocationBalance(on_hand=4), "B": LocationBalance(on_hand=4)})
        t = Tables.of([Location(location_id="A"), Location(location_id="B")])
        cmds = [allocate(order=f"o{i}", qty=3, event_id=f"e{i}") for i in range(3)]
        return [e for c in cmds for e in apply(state, c, t, NOW)]

    assert run() == run()


def test_a_split_uses_the_fewest_locations_before_the_preferred_ones() -> None:
    # Taking the best ranked first would need three locations (A 3, B 4, then C 1);
    # C and A hold the line in two.
    state = stocked(A=3, B=4, C=6)
    t = tables(
        online("A", priority=9),
        online("B", priority=5),
        online("C", priority=1),
        channels=(Channel(channel_id="web", allow_split=True),),
    )
    decision = apply(state, allocate(qty=8), t, NOW)
    assert [(e.location, e.qty) for e in allocation_events(decision)] == [("A", 3), ("C", 5)]
