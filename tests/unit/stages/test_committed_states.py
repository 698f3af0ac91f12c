"""The allocator's SKU states kept between transactions (state_codec.CommittedStates): a kept
state is what the store holds, or it is not used. Through the stage, with its harness: a
batch that failed to commit, a changelog restore and an eviction each leave the next batch
deciding on the stored state."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.stages._inputs import (
    AVAILABILITY,
    INVENTORY,
    REQUESTS,
    SETTINGS,
    T0,
    decoded,
    inventory,
    request,
    tables,
)

from streamalloc.domain import LocationBalance
from streamalloc.runtime.state import InMemoryStore
from streamalloc.stages import allocator as allocator_module
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.state_codec import CommittedStates, write_changes
from streamalloc.testing import ManualClock, Output, StageHarness


def _allocator() -> StageHarness:
    clock = ManualClock(T0)
    return StageHarness(AllocatorStage(SETTINGS, lambda: tables(), clock=clock), clock=clock)


def _available(outputs: list[Output], sku: str = "SKU-A") -> int:
    key = sku.encode()
    views = [decoded(AVAILABILITY, o.value) for o in outputs if o.topic == AVAILABILITY and o.key == key]
    assert len(views) == 1, views
    totals: dict[str, Any] = views[0]["totals"]
    return int(totals["available"])


def test_a_batch_that_failed_to_commit_leaves_the_next_one_the_stored_balances() -> None:
    harness = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10))])
    # Kept after this commit, then changed in place by a batch whose commit fails...
    harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 4))], commit=False)
    # ...so the next batch must read the store again: 10 units, not 6.
    assert _available(harness.feed(REQUESTS, [(b"SKU-A", request("o2", "1", "SKU-A", 4))])) == 6


def test_a_changelog_restore_into_the_store_is_what_the_next_batch_decides_on() -> None:
    harness = _allocator()
    harness.feed(INVENTORY, [(b"SKU-A", inventory("r1", "SKU-A", "WH-1", 10))])  # kept: 10 units
    # Another owner's state, as a restore from the changelog writes it: 3 units at WH-1.
    other = _allocator()
    other.feed(INVENTORY, [(b"SKU-A", inventory("r9", "SKU-A", "WH-1", 3))])
    restored = list(other.store("allocator").iter_prefix(b""))
    harness.store("allocator").apply_changelog(restored)
    assert _available(harness.feed(REQUESTS, [(b"SKU-A", request("o1", "1", "SKU-A", 1))])) == 2


def test_skus_past_the_limit_are_read_from_the_store_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator_module, "CACHED_SKUS", 2)
    harness = _allocator()
    skus = ["SKU-A", "SKU-B", "SKU-C", "SKU-D"]
    harness.feed(INVENTORY, [(s.encode(), inventory(f"r-{s}", s, "WH-1", 10)) for s in skus])
    for n in range(1, 4):  # each round uses every SKU: each time two of them were evicted
        outputs = harness.feed(REQUESTS, [(s.encode(), request(f"o{n}-{s}", "1", s, 1)) for s in skus])
        assert [_available(outputs, s) for s in skus] == [10 - n] * 4


def _store_with(balances: dict[str, int]) -> Any:
    part = InMemoryStore("allocator").partition(0)
    txn = part.begin()
    for sku, on_hand in balances.items():
        state = CommittedStates(txn, 10).load(sku)
        state.edit_balance("WH-1").on_hand = on_hand
        write_changes(sku, state.take_changes(), txn)
    txn.flush(None)
    return part


def test_a_kept_state_is_served_as_kept_while_the_store_had_no_other_writer() -> None:
    part = _store_with({"SKU-A": 5})
    first = part.begin()
    states = CommittedStates(first, 10)
    state = states.load("SKU-A")
    balance = state.edit_balance("WH-1")
    balance.on_hand = 7
    write_changes("SKU-A", state.take_changes(), first)
    states.keep(state)
    first.flush(None)

    second = part.begin()
    states.begin(second)
    again = states.load("SKU-A")
    assert again.balances["WH-1"] is balance  # not read from the store: the object kept
    assert again.balances["WH-1"].on_hand == 7


@pytest.mark.parametrize("writer", ["aborted", "restore", "wipe", "another transaction"])
def test_kept_states_are_dropped_when_the_store_may_differ(writer: str) -> None:
    part = _store_with({"SKU-A": 5})
    first = part.begin()
    states = CommittedStates(first, 10)
    state = states.load("SKU-A")
    state.edit_balance("WH-1").on_hand = 7
    write_changes("SKU-A", state.take_changes(), first)
    states.keep(state)
    if writer == "aborted":
        first.abort()
        expected = 5
    else:
        first.flush(None)
        expected = 7
        if writer == "restore":
            other = _store_with({"SKU-A": 2})
            part.apply_changelog(list(other.iter_prefix(b"")))
            expected = 2
        elif writer == "another transaction":
            expected = 9
            txn = part.begin()
            fresh = CommittedStates(txn, 10).load("SKU-A")
            fresh.edit_balance("WH-1").on_hand = expected
            write_changes("SKU-A", fresh.take_changes(), txn)
            txn.flush(None)
    if writer == "wipe":
        part.wipe()
        expected = 0
    second = part.begin()
    states.begin(second)
    again = states.load("SKU-A")
    assert len(states) == 0
    assert again.balances.get("WH-1", LocationBalance()).on_hand == expected


def test_the_least_recently_used_state_goes_first_past_the_size() -> None:
    part = _store_with({"SKU-A": 1, "SKU-B": 2, "SKU-C": 3})
    txn = part.begin()
    states = CommittedStates(txn, 2)
    a, b = states.load("SKU-A"), states.load("SKU-B")
    states.keep(a)
    states.keep(b)
    states.keep(states.load("SKU-A"))  # used again: now B is the least recently used
    states.keep(states.load("SKU-C"))
    assert len(states) == 2
    assert states.load("SKU-A").balances["WH-1"] is a.balances["WH-1"]  # kept
    assert states.load("SKU-B").balances["WH-1"] is not b.balances["WH-1"]  # evicted: read again
