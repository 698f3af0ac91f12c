"""Release, pick, fulfil and return of an order line."""

from __future__ import annotations

import pytest

from streamalloc.domain import Channel, LocationBalance, SkuState, Tables, apply, reasons

from ._builders import (
    NOW,
    allocate,
    allocation_events,
    fulfil,
    online,
    only,
    pick,
    release,
    return_,
    stock_events,
    stocked,
    tables,
)

T = tables(online("A"), online("B"))
SPLIT = tables(online("A"), online("B"), channels=(Channel(channel_id="web", allow_split=True),))


def allocated(qty: int = 3, t: Tables = T, **on_hand: int) -> SkuState:
    state = stocked(**(on_hand or {"A": 10}))
    decision = apply(state, allocate(qty=qty), t, NOW)
    assert decision and all(e.type == "allocated" for e in allocation_events(decision))
    return state


# ------------------------------------------------------------------ release


def test_release_gives_back_exactly_the_soft_allocation() -> None:
    state = allocated(3)
    cmd = release(reason="expired")
    event = only(apply(state, cmd, T, NOW))
    assert (event.type, event.location, event.qty, event.reason) == ("released", "A", 3, "expired")
    assert event.event_id == f"{cmd.event_id}:o1:1:released:A"
    assert state.balances["A"] == LocationBalance(on_hand=10)
    assert state.lines[("o1", "1")].status == "released"


def test_release_gives_back_picked_units_too() -> None:
    state = allocated(3)
    apply(state, pick(qty=2), T, NOW)
    assert only(apply(state, release(), T, NOW)).qty == 3
    assert state.balances["A"] == LocationBalance(on_hand=10)


def test_release_of_a_split_line_gives_back_each_part_where_it_was_taken() -> None:
    state = allocated(5, SPLIT, A=3, B=3)
    decision = apply(state, release(), SPLIT, NOW)
    assert sorted((e.location, e.qty) for e in allocation_events(decision)) == [("A", 3), ("B", 2)]
    assert state.balances == {"A": LocationBalance(on_hand=3), "B": LocationBalance(on_hand=3)}


def test_release_of_a_rejected_line_confirms_with_zero_units() -> None:
    state = stocked(A=1)
    apply(state, allocate(qty=5), T, NOW)
    event = only(apply(state, release(), T, NOW))
    assert (event.type, event.qty, event.location) == ("released", 0, None)
    assert state.lines[("o1", "1")].status == "released"


def test_release_of_a_released_line_is_a_duplicate_whatever_its_id() -> None:
    state = allocated(3)
    apply(state, release(), T, NOW)
    state.take_changes()
    assert apply(state, release(), T, NOW).duplicate
    assert not state.has_changes


def test_release_of_a_shipped_line_is_refused() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=3), T, NOW)
    event = only(apply(state, release(), T, NOW))
    assert (event.type, event.reason) == ("rejected", reasons.ALREADY_FULFILLED)


def test_release_of_a_partly_shipped_line_gives_back_the_rest() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=1), T, NOW)
    assert only(apply(state, release(), T, NOW)).qty == 2
    assert state.balances["A"] == LocationBalance(on_hand=9)


def test_release_of_an_unknown_line_is_refused_once() -> None:
    state = stocked(A=10)
    cmd = release()
    event = only(apply(state, cmd, T, NOW))
    assert (event.type, event.reason) == ("rejected", reasons.UNKNOWN_LINE)
    assert apply(state, cmd, T, NOW).duplicate


# ------------------------------------------------------------------ pick


def test_pick_turns_soft_units_hard_at_their_location_and_records_the_lot() -> None:
    state = allocated(3)
    event = only(apply(state, pick(qty=3, lot="L-42"), T, NOW))
    assert (event.type, event.location, event.qty, event.lot) == ("picked", "A", 3, "L-42")
    assert state.balances["A"] == LocationBalance(on_hand=10, allocated=0, picked=3)
    line = state.lines[("o1", "1")]
    assert (line.status, line.picked, line.allocated, line.lot) == ("picked", 3, 0, "L-42")


def test_a_partial_pick_leaves_the_rest_soft() -> None:
    state = allocated(3)
    apply(state, pick(qty=1), T, NOW)
    assert state.balances["A"] == LocationBalance(on_hand=10, allocated=2, picked=1)
    assert state.lines[("o1", "1")].status == "allocated"


def test_pick_at_a_named_location_of_a_split_line() -> None:
    state = allocated(5, SPLIT, A=3, B=3)
    event = only(apply(state, pick(qty=2, location="B"), SPLIT, NOW))
    assert (event.location, event.qty) == ("B", 2)
    assert state.balances["B"] == LocationBalance(on_hand=3, allocated=0, picked=2)
    assert state.balances["A"] == LocationBalance(on_hand=3, allocated=3, picked=0)


@pytest.mark.parametrize(
    ("setup", "cmd_kw", "reason"),
    [
        ("none", {"qty": 1}, reasons.UNKNOWN_LINE),
        ("allocated", {"qty": 0}, reasons.INVALID_QUANTITY),
        ("allocated", {"qty": 4}, reasons.EXCEEDS_ALLOCATION),
        ("allocated", {"qty": 1, "location": "B"}, reasons.INSUFFICIENT_STOCK),  # nothing at B to move to
        ("picked", {"qty": 1}, reasons.NOT_ALLOCATED),
        ("released", {"qty": 1}, reasons.NOT_ALLOCATED),
        ("rejected", {"qty": 1}, reasons.NOT_ALLOCATED),
    ],
)
def test_pick_refusals(setup: str, cmd_kw: dict[str, int | str], reason: str) -> None:
    state = stocked(A=10)
    if setup != "none":
        apply(state, allocate(qty=3 if setup != "rejected" else 99), T, NOW)
    if setup == "picked":
        apply(state, pick(qty=3), T, NOW)
    if setup == "released":
        apply(state, release(), T, NOW)
    before = state.copy()
    cmd = pick(**cmd_kw)  # type: ignore[arg-type]

    event = only(apply(state, cmd, T, NOW))
    assert (event.type, event.reason) == ("rejected", reason)
    assert state.balances == before.balances
    assert apply(state, cmd, T, NOW).duplicate  # the refusal is recorded: a repeat is a no-op


# ------------------------------------------------------------------ fulfil


def test_fulfil_depletes_picked_units_from_on_hand() -> None:
    state = allocated(3)
    apply(state, pick(qty=3), T, NOW)
    cmd = fulfil(qty=3)
    decision = apply(state, cmd, T, NOW)

    (shipped,) = allocation_events(decision)
    (stock,) = stock_events(decision)
    assert (shipped.type, shipped.location, shipped.qty) == ("fulfilled", "A", 3)
    assert (stock.location, stock.on_hand_delta, stock.on_hand, stock.reason) == ("A", -3, 7, "fulfilled")
    assert (stock.order_id, stock.line_id, stock.event_id) == ("o1", "1", f"{cmd.event_id}:1:stock:A")
    assert state.balances["A"] == LocationBalance(on_hand=7)
    assert state.lines[("o1", "1")].status == "fulfilled"


def test_fulfil_of_a_line_never_picked_depletes_its_soft_units() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=3), T, NOW)
    assert state.balances["A"] == LocationBalance(on_hand=7)


def test_fulfil_takes_picked_units_before_soft_ones() -> None:
    state = allocated(3)
    apply(state, pick(qty=1), T, NOW)
    apply(state, fulfil(qty=2), T, NOW)
    assert state.balances["A"] == LocationBalance(on_hand=8, allocated=1, picked=0)
    assert state.lines[("o1", "1")].status == "allocated"


@pytest.mark.parametrize(
    ("setup", "cmd_kw", "reason"),
    [
        ("none", {"qty": 1}, reasons.UNKNOWN_LINE),
        ("allocated", {"qty": -1}, reasons.INVALID_QUANTITY),
        ("allocated", {"qty": 4}, reasons.EXCEEDS_ALLOCATION),
        ("allocated", {"qty": 1, "location": "B"}, reasons.LOCATION_MISMATCH),
        ("fulfilled", {"qty": 1}, reasons.ALREADY_FULFILLED),
        ("released", {"qty": 1}, reasons.NOT_ALLOCATED),
    ],
)
def test_fulfil_refusals(setup: str, cmd_kw: dict[str, int | str], reason: str) -> None:
    state = stocked(A=10)
    if setup != "none":
        apply(state, allocate(qty=3), T, NOW)
    if setup == "fulfilled":
        apply(state, fulfil(qty=3), T, NOW)
    if setup == "released":
        apply(state, release(), T, NOW)
    before = state.copy()

    event = only(apply(state, fulfil(**cmd_kw), T, NOW))  # type: ignore[arg-type]
    assert (event.type, event.reason) == ("rejected", reason)
    assert state.balances == before.balances


def test_a_shipment_the_books_did_not_cover_takes_on_hand_below_zero() -> None:
    state = allocated(3, A=3)
    state.balances["A"].on_hand = 1  # two units were written off after the allocation
    apply(state, fulfil(qty=3), T, NOW)
    assert state.balances["A"].on_hand == -2
    assert state.balances["A"].available(0) == 0


# ------------------------------------------------------------------ return


def test_return_puts_units_into_quality_control_where_the_line_shipped_from() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=3), T, NOW)
    decision = apply(state, return_(qty=2), T, NOW)

    (returned,) = allocation_events(decision)
    (stock,) = stock_events(decision)
    assert (returned.type, returned.location, returned.qty) == ("returned", "A", 2)
    assert (stock.quality_control_delta, stock.on_hand_delta, stock.reason) == (2, 0, "returned")
    assert state.balances["A"] == LocationBalance(on_hand=7, quality_control=2)
    assert state.lines[("o1", "1")].status == "fulfilled"  # one unit is still out

    apply(state, return_(qty=1, location="B"), T, NOW)
    assert state.balances["B"] == LocationBalance(quality_control=1)
    assert state.lines[("o1", "1")].status == "returned"


def test_return_of_more_than_shipped_is_refused() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=2), T, NOW)
    apply(state, return_(qty=1), T, NOW)
    assert only(apply(state, return_(qty=2), T, NOW)).reason == reasons.EXCEEDS_FULFILLED


def test_return_of_a_known_line_that_never_shipped_is_refused() -> None:
    state = allocated(3)
    before = state.copy()
    assert only(apply(state, return_(qty=1), T, NOW)).reason == reasons.NOT_FULFILLED
    assert state.balances == before.balances


def test_return_of_an_unknown_line_is_accepted_at_the_named_location() -> None:
    state = stocked(A=10)
    cmd = return_(order="legacy-9", qty=2, location="A", channel="web")
    decision = apply(state, cmd, T, NOW)
    assert [(e.type, e.location, e.qty) for e in allocation_events(decision)] == [("returned", "A", 2)]
    assert [(e.location, e.quality_control_delta) for e in stock_events(decision)] == [("A", 2)]
    assert state.balances["A"] == LocationBalance(on_hand=10, quality_control=2)
    line = state.lines[("legacy-9", "1")]
    assert (line.status, line.returned, line.channel) == ("returned", 2, "web")
    assert apply(state, cmd, T, NOW).duplicate


def test_return_of_an_unknown_line_without_a_location_is_refused() -> None:
    state = stocked(A=10)
    cmd = return_(qty=2)
    assert only(apply(state, cmd, T, NOW)).reason == reasons.LOCATION_REQUIRED
    assert state.balances["A"] == LocationBalance(on_hand=10)
    assert apply(state, cmd, T, NOW).duplicate


def test_return_of_zero_units_is_invalid() -> None:
    state = allocated(3)
    apply(state, fulfil(qty=3), T, NOW)
    assert only(apply(state, return_(qty=0), T, NOW)).reason == reasons.INVALID_QUANTITY


# ------------------------------------------------------------------ repeated line commands


@pytest.mark.parametrize("kind", ["release", "pick", "fulfil", "return"])
def test_the_same_line_command_again_changes_nothing_and_emits_nothing(kind: str) -> None:
    state = allocated(3)
    if kind == "return":
        apply(state, fulfil(qty=3), T, NOW)
    cmd = {"release": release(), "pick": pick(qty=1), "fulfil": fulfil(qty=1), "return": return_(qty=1)}[kind]
    assert not apply(state, cmd, T, NOW).duplicate
    state.take_changes()
    before = state.copy()

    assert apply(state, cmd, T, NOW + 1).events == ()
    assert state.balances == before.balances and dict(state.lines) == dict(before.lines)
    assert not state.has_changes


def test_a_refused_command_for_an_unplaced_line_stays_refused_after_the_placement() -> None:
    state = stocked(A=10)
    early = pick(qty=1)
    assert only(apply(state, early, T, NOW)).reason == reasons.UNKNOWN_LINE
    assert state.lines[("o1", "1")].status == "unplaced"

    assert only(apply(state, allocate(qty=3), T, NOW)).type == "allocated"  # still decided
    assert apply(state, early, T, NOW).duplicate  # redelivered: not a pick now
    assert state.balances["A"] == LocationBalance(on_hand=10, allocated=3)
