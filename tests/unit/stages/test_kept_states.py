"""What the allocator keeps of its SKUs between transactions (runtime.state.kept): a batch
that failed to commit, a changelog restore and an eviction each leave the next batch
deciding on what the store holds."""

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

from streamalloc.stages import allocator as allocator_module
from streamalloc.stages.allocator import AllocatorStage
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
