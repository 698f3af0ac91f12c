"""SkuState as the store sees it: lazy lines, dirty tracking, copies; events, decisions, views."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import pytest

from streamalloc.domain import (
    AllocationEvent,
    Channel,
    Decision,
    InventoryRejected,
    LineKey,
    LineState,
    LocationBalance,
    SkuState,
    StockChanged,
    apply,
    availability,
    reasons,
)
from streamalloc.domain.events import allocation_event, stock_changed

from ._builders import NOW, SKU, allocate, fulfil, online, pick, receive, release, stocked, tables

T = tables(online("A"), online("B"))


class StoreLines(Mapping[LineKey, LineState]):
    """A store-backed `lines` stand-in: answers `get`, records what was asked, refuses scans."""

    def __init__(self, lines: dict[LineKey, LineState]) -> None:
        self._lines = lines
        self.asked: list[LineKey] = []

    def __getitem__(self, key: LineKey) -> LineState:
        self.asked.append(key)
        return self._lines[key]

    def __iter__(self) -> Iterator[LineKey]:
        raise AssertionError("the state scanned every line")

    def __len__(self) -> int:
        raise AssertionError("the state counted every line")


def closed_lines(n: int) -> dict[LineKey, LineState]:
    return {(f"old-{i}", "1"): LineState(f"old-{i}", "1", "web", 1, "released") for i in range(n)}


# ------------------------------------------------------------------ lazy lines


def test_a_command_reads_only_the_line_it_names() -> None:
    lines = StoreLines(closed_lines(1000))
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=5)}, lines=lines)
    apply(state, allocate(order="new"), T, NOW)
    apply(state, release(order="old-7"), T, NOW)
    assert lines.asked == [("new", "1"), ("old-7", "1")]


def test_the_state_never_changes_the_lines_it_was_given() -> None:
    state = stocked(A=10)
    apply(state, allocate(qty=3), T, NOW)
    given = {k: v.copy() for k, v in state.lines.items()}
    kept = {k: v.copy() for k, v in given.items()}

    reloaded = SkuState(SKU, balances=state.balances, lines=given)
    apply(reloaded, pick(qty=2), T, NOW)
    assert given == kept
    assert reloaded.lines[("o1", "1")].picked == 2


def test_applied_events_are_looked_up_in_the_given_container() -> None:
    state = SkuState(SKU, balances={"A": LocationBalance(on_hand=5)}, applied_events={"inv-1"})
    assert apply(state, receive("A", 3, event_id="inv-1"), T, NOW).duplicate
    assert state.balances["A"].on_hand == 5


# ------------------------------------------------------------------ dirty tracking


def test_changes_list_exactly_the_touched_balances_lines_and_event_ids() -> None:
    state = SkuState(
        SKU,
        balances={"A": LocationBalance(on_hand=5), "B": LocationBalance(on_hand=5), "C": LocationBalance()},
        lines=closed_lines(3),
    )
    apply(state, receive("B", 1, event_id="inv-9"), T, NOW)
    apply(state, allocate(order="o1", qty=2, location="A"), T, NOW)

    changes = state.take_changes()
    assert set(changes.balances) == {"A", "B"}
    assert set(changes.lines) == {("o1", "1")}
    assert changes.applied_events == ("inv-9",)
    assert changes.balances["A"] is state.balances["A"]
    assert not state.has_changes and not state.take_changes()


def test_a_duplicate_or_a_refused_allocation_touches_no_balance() -> None:
    state = stocked(A=1)
    cmd = allocate(qty=1)
    apply(state, cmd, T, NOW)
    state.take_changes()
    apply(state, cmd, T, NOW)
    assert not state.has_changes
    apply(state, allocate(order="o2", qty=5), T, NOW)
    changes = state.take_changes()
    assert not changes.balances and set(changes.lines) == {("o2", "1")}


def test_a_state_rebuilt_from_its_written_records_decides_the_same() -> None:
    store_balances: dict[str, LocationBalance] = {}
    store_lines: dict[LineKey, LineState] = {}
    store_events: set[str] = set()

    def write(state: SkuState) -> None:
        changes = state.take_changes()
        store_balances.update({k: v.copy() for k, v in changes.balances.items()})
        store_lines.update({k: v.copy() for k, v in changes.lines.items()})
        store_events.update(changes.applied_events)

    def load() -> SkuState:
        balances = {k: v.copy() for k, v in store_balances.items()}
        return SkuState(SKU, balances=balances, lines=dict(store_lines), applied_events=set(store_events))

    live = SkuState(SKU)
    commands = [receive("A", 5), allocate(qty=2), pick(qty=1), fulfil(qty=2), receive("B", 1), release()]
    for cmd in commands:
        rebuilt = load()
        assert apply(rebuilt, cmd, T, NOW) == apply(live, cmd, T, NOW)
        write(rebuilt)
        live.take_changes()
        assert store_balances == live.balances and store_lines == dict(live.lines)


def test_copy_is_independent() -> None:
    state = stocked(A=10)
    apply(state, allocate(qty=3), T, NOW)
    snapshot = state.copy()
    apply(state, pick(qty=3), T, NOW)
    apply(state, receive("A", 1), T, NOW)
    assert snapshot.balances["A"] == LocationBalance(on_hand=10, allocated=3)
    assert snapshot.lines[("o1", "1")].status == "allocated"
    assert state.lines[("o1", "1")].status == "picked"


# ------------------------------------------------------------------ events and decisions


def test_fast_built_events_equal_constructor_built_ones_and_are_frozen() -> None:
    fast = allocation_event("c", "allocated", "o", "1", SKU, "web", 2, "A", "lot", None, 1, 2)
    slow = AllocationEvent(
        event_id="c:o:1:allocated:A:lot", cause_event_id="c", type="allocated", order_id="o", line_id="1",
        sku=SKU, channel="web", qty=2, location="A", lot="lot", reason=None, line_count=None,
        occurred_at=1, decided_at=2,
    )  # fmt: skip
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.as_record() == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.qty = 3  # type: ignore[misc]

    change = stock_changed("c", SKU, "A", "received", 1, 0, 0, 0, (1, 0, 0, 0), None, None, None, 1, 2)
    assert set(change.as_record()) == {f.name for f in dataclasses.fields(StockChanged)}


def test_event_ids_are_derived_from_the_cause() -> None:
    state = stocked(A=10)
    events = [e.event_id for e in apply(state, allocate(order="o1", line="7", qty=1, event_id="E1"), T, NOW)]
    events += [e.event_id for e in apply(state, fulfil(order="o1", line="7", qty=1, event_id="E2"), T, NOW)]
    events += [e.event_id for e in apply(state, receive("B", 0, event_id="E3"), T, NOW)]
    assert events == ["E1:o1:7:allocated:A", "E2:o1:7:fulfilled:A", "E2:7:stock:A", "E3:rejected"]


def test_event_ids_of_lines_of_different_orders_filled_by_one_cause_differ() -> None:
    t = tables(online("A"), channels=(Channel(channel_id="web", waitlist=True),))
    state = stocked(A=0)
    apply(state, allocate(order="o1", line="1", qty=1), t, NOW)
    apply(state, allocate(order="o2", line="1", qty=1), t, NOW)
    filled = [
        e.event_id
        for e in apply(state, receive("A", 2, event_id="R"), t, NOW)
        if e.event_id.startswith("R:o")
    ]
    assert filled == ["R:o1:1:allocated:A", "R:o2:1:allocated:A"]


def test_decision_is_a_tuple_of_its_events_with_the_reasons_of_its_refusals() -> None:
    state = stocked(A=1)
    ok = apply(state, allocate(order="o1"), T, NOW)
    refused = apply(state, allocate(order="o2"), T, NOW)
    refused_inventory = apply(state, receive("A", -1), T, NOW)
    assert isinstance(ok, Decision) and ok.events == tuple(ok) and not ok.duplicate and ok.reasons == ()
    assert refused.reasons == (reasons.INSUFFICIENT_STOCK,)
    assert isinstance(refused_inventory[0], InventoryRejected)
    assert refused_inventory.reasons == (reasons.INVALID_QUANTITY,)


def test_apply_refuses_another_skus_command_and_a_non_command() -> None:
    with pytest.raises(ValueError, match="other-sku"):
        apply(SkuState("other-sku"), allocate(), T, NOW)
    with pytest.raises(TypeError):
        apply(SkuState(SKU), object(), T, NOW)  # type: ignore[arg-type]


# ------------------------------------------------------------------ availability view


def test_availability_per_location_totals_and_channel_ats() -> None:
    state = SkuState(
        SKU,
        balances={
            "A": LocationBalance(on_hand=10, allocated=2, picked=1, quality_control=4, damaged=1, incoming=5),
            "B": LocationBalance(on_hand=6),
            "C": LocationBalance(on_hand=9),
        },
    )
    t = tables(
        online("A", safety_stock=2),
        online("B"),
        online("C", status="offline"),
        channels=(
            Channel(channel_id="web", safety_stock=3),
            Channel(channel_id="shop", locations=frozenset({"A"}), pool_share=0.5),
        ),
    )
    view = availability(state, t, as_of=NOW)

    assert [(r.location_id, r.status, r.safety_stock, r.available) for r in view.locations] == [
        ("A", "online", 2, 5),
        ("B", "online", 0, 6),
        ("C", "offline", 0, 0),
    ]
    assert (view.on_hand, view.allocated, view.picked, view.available, view.incoming) == (25, 2, 1, 11, 5)
    # Sellable at usable locations: A 10-2=8, B 6: 14. shop's pool is 7 of them; it may
    # use A only (5 available). web sells what no pool fences: 11 - 3 safety - 7 = 1.
    assert view.ats == {"shop": 5, "web": 1}
    assert view.as_of == NOW and view.sku == SKU
