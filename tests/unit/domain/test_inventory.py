"""Receive, adjust, count, expect and inspect: every change has a cause, every refusal a reason."""

from __future__ import annotations

import pytest

from streamalloc.domain import (
    AllocationEvent,
    Command,
    InventoryRejected,
    LocationBalance,
    Lot,
    SkuState,
    StockChanged,
    apply,
    reasons,
)

from ._builders import NOW, SKU, adjust, allocate, count, expect, inspect, online, receive, stocked, tables

T = tables(online("A"))


def single_change(state: SkuState, cmd: Command) -> StockChanged:
    (event,) = apply(state, cmd, T, NOW)
    assert isinstance(event, StockChanged), event
    return event


def single_refusal(state: SkuState, cmd: Command) -> InventoryRejected:
    before = state.copy()
    (event,) = apply(state, cmd, T, NOW)
    assert isinstance(event, InventoryRejected), event
    assert state.balances == before.balances
    return event


def test_receive_adds_on_hand_and_reports_the_change_with_its_cause() -> None:
    state = SkuState(SKU)
    cmd = receive("A", 7, lot="L1")
    event = single_change(state, cmd)
    assert (event.location, event.on_hand_delta, event.on_hand, event.reason, event.lot) == (
        "A",
        7,
        7,
        "received",
        "L1",
    )
    assert (event.cause_event_id, event.event_id, event.decided_at) == (
        cmd.event_id,
        f"{cmd.event_id}:stock:A",
        NOW,
    )
    assert state.balances["A"] == LocationBalance(on_hand=7, lots={"L1": Lot(7, 0, NOW - 5, None)})


def test_receive_at_a_location_the_tables_do_not_know_is_recorded() -> None:
    state = SkuState(SKU)
    single_change(state, receive("nowhere", 2))
    assert state.balances["nowhere"].on_hand == 2


def test_adjust_applies_a_signed_delta_with_its_reason() -> None:
    state = stocked(A=5)
    event = single_change(state, adjust("A", -2, reason="shrinkage"))
    assert (event.on_hand_delta, event.on_hand, event.reason) == (-2, 3, "shrinkage")
    single_change(state, adjust("A", 4, reason="found"))
    assert state.balances["A"].on_hand == 7


def test_adjust_below_what_is_held_releases_the_excess_when_nowhere_else_has_it() -> None:
    state = stocked(A=5)
    apply(state, allocate(qty=4), T, NOW)
    cmd = adjust("A", -3)
    changed, released = apply(state, cmd, T, NOW)
    assert isinstance(changed, StockChanged) and changed.on_hand == 2
    assert isinstance(released, AllocationEvent)
    assert (released.type, released.qty, released.reason, released.cause_event_id) == (
        "released",
        4,
        reasons.COUNT_SHORTAGE,
        cmd.event_id,
    )
    assert state.balances["A"] == LocationBalance(on_hand=2, allocated=0)
    assert state.lines[("o1", "1")].status == "released"


@pytest.mark.parametrize(
    ("qty", "reason", "expected"),
    [
        (0, "x", reasons.INVALID_QUANTITY),
        (-1, None, reasons.REASON_REQUIRED),
        (-1, "", reasons.REASON_REQUIRED),
        (-6, "x", reasons.NEGATIVE_ON_HAND),
    ],
)
def test_adjust_refusals(qty: int, reason: str | None, expected: str) -> None:
    state = stocked(A=5)
    cmd = adjust("A", qty, reason=reason)
    event = single_refusal(state, cmd)
    assert (event.type, event.reason, event.qty, event.event_id) == (
        "adjusted",
        expected,
        qty,
        f"{cmd.event_id}:rejected",
    )


def test_count_sets_on_hand_and_reports_the_difference() -> None:
    state = stocked(A=5)
    assert single_change(state, count("A", 3)).on_hand_delta == -2
    assert single_change(state, count("A", 8)).on_hand_delta == 5
    event = single_change(state, count("A", 8))
    assert (event.on_hand_delta, event.on_hand, event.reason) == (0, 8, "counted")


def test_count_at_a_new_location_creates_its_balance() -> None:
    state = SkuState(SKU)
    assert single_change(state, count("B", 4)).on_hand_delta == 4


def test_a_negative_count_is_invalid() -> None:
    assert single_refusal(stocked(A=5), count("A", -1)).reason == reasons.INVALID_QUANTITY


def test_expect_records_incoming_only() -> None:
    state = stocked(A=5)
    event = single_change(state, expect("A", 20, eta=NOW + 86_400_000))
    assert (event.incoming_delta, event.incoming, event.on_hand_delta) == (20, 20, 0)
    assert state.balances["A"] == LocationBalance(on_hand=5, incoming=20)


def test_an_expected_only_sku_is_known_but_has_nothing_to_sell() -> None:
    state = SkuState(SKU)
    apply(state, expect("A", 20), T, NOW)
    (event,) = apply(state, allocate(), T, NOW)
    assert event.reason == reasons.INSUFFICIENT_STOCK


def test_inspection_pass_moves_units_from_quality_control_to_on_hand() -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=1, quality_control=3)})
    event = single_change(state, inspect("A", 2, "pass"))
    assert (event.quality_control_delta, event.on_hand_delta, event.damaged_delta) == (-2, 2, 0)
    assert state.balances["A"] == LocationBalance(on_hand=3, quality_control=1)


def test_inspection_fail_moves_units_from_quality_control_to_damaged() -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=1, quality_control=3)})
    event = single_change(state, inspect("A", 3, "fail"))
    assert (event.quality_control_delta, event.on_hand_delta, event.damaged_delta) == (-3, 0, 3)
    assert state.balances["A"] == LocationBalance(on_hand=1, damaged=3)


@pytest.mark.parametrize(
    ("qty", "result", "expected"),
    [
        (0, "pass", reasons.INVALID_QUANTITY),
        (4, "pass", reasons.EXCEEDS_QUALITY_CONTROL),
        (1, "maybe", reasons.INVALID_RESULT),
    ],
)
def test_inspect_refusals(qty: int, result: str, expected: str) -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(quality_control=3)})
    assert single_refusal(state, inspect("A", qty, result)).reason == expected


def test_receive_of_nothing_is_invalid() -> None:
    assert single_refusal(SkuState(SKU), receive("A", 0)).reason == reasons.INVALID_QUANTITY
    assert single_refusal(SkuState(SKU), expect("A", 0)).reason == reasons.INVALID_QUANTITY


@pytest.mark.parametrize("make", [receive, adjust, count, expect, inspect])
def test_the_same_inventory_event_again_changes_nothing_and_emits_nothing(make: object) -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=5, quality_control=2)})
    cmd = make()  # type: ignore[operator]
    assert not apply(state, cmd, T, NOW).duplicate
    state.take_changes()
    before = state.copy()

    assert apply(state, cmd, T, NOW + 1).events == ()
    assert state.balances == before.balances
    assert not state.has_changes


def test_a_refused_inventory_event_again_is_a_duplicate_even_once_it_would_pass() -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(quality_control=1)})
    cmd = inspect("A", 2, "pass")
    assert single_refusal(state, cmd).reason == reasons.EXCEEDS_QUALITY_CONTROL
    state.balances["A"].quality_control = 5
    assert apply(state, cmd, T, NOW).duplicate
    assert state.balances["A"].quality_control == 5
