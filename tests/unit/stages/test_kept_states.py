"""What the allocator and the order stage keep between transactions (runtime.state.kept):
a batch that failed to commit, a changelog restore and an eviction each leave the next
batch deciding on what the store holds."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.stages._inputs import (
    ALLOCATIONS,
    AVAILABILITY,
    INVENTORY,
    ORDER_STATUS,
    REQUESTS,
    SETTINGS,
    T0,
    allocation,
    decoded,
    inventory,
    request,
    tables,
)

from streamalloc.stages import allocator as allocator_module
from streamalloc.stages import order_stage as order_stage_module
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.order_stage import OrderStage
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


def _status(outputs: list[Output]) -> dict[str, Any]:
    [status] = [decoded(ORDER_STATUS, o.value) for o in outputs if o.topic == ORDER_STATUS]
    return status


def test_an_order_changed_by_a_batch_that_failed_to_commit_is_read_from_the_store_again() -> None:
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("o1:accepted", "accepted", "o1", qty=0, line_count=2)
    first = allocation("o1:1:allocated", "allocated", "o1", "1", qty=2, location="WH-1")
    harness.feed(ALLOCATIONS, [(b"o1", accepted), (b"o1", first)])  # kept: line 1 allocated
    lost = allocation("o1:2:allocated", "allocated", "o1", "2", qty=1, location="WH-2")
    harness.feed(ALLOCATIONS, [(b"o1", lost)], commit=False)
    # Line 2 is undecided in the store, so this rejection is its decision. Had the failed
    # batch's allocation stayed in the kept order, it would be a decided line's, refused.
    rejected = allocation("o1:2:rejected", "rejected", "o1", "2", reason="insufficient_stock")
    status = _status(harness.feed(ALLOCATIONS, [(b"o1", rejected)]))
    assert status["status"] == "partially_allocated"
    assert [(line["line_id"], line["status"]) for line in status["lines"]] == [
        ("1", "allocated"),
        ("2", "rejected"),
    ]


def test_orders_past_the_limit_are_read_from_the_store_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(order_stage_module, "CACHED_ORDERS", 1)
    harness = StageHarness(OrderStage(SETTINGS))
    ids = ["o1", "o2", "o3"]
    harness.feed(
        ALLOCATIONS,
        [(i.encode(), allocation(f"{i}:accepted", "accepted", i, qty=0, line_count=1)) for i in ids],
    )
    outputs = harness.feed(
        ALLOCATIONS,
        [
            (i.encode(), allocation(f"{i}:1:allocated", "allocated", i, "1", qty=1, location="WH-1"))
            for i in ids
        ],
    )
    statuses = [decoded(ORDER_STATUS, o.value) for o in outputs if o.topic == ORDER_STATUS]
    assert [(s["order_id"], s["status"]) for s in statuses] == [(i, "allocated") for i in ids]
