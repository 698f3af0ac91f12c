"""Every store test runs on both implementations (quix-streams' test_state fixtures idea)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamalloc.runtime.state import InMemoryStore, RocksDBStore, Store, StorePartition


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = InMemoryStore("counts") if request.param == "memory" else RocksDBStore("counts", tmp_path)
    yield made
    made.close()


@pytest.fixture
def part(store: Store) -> StorePartition:
    """Partition 0, fresh and empty."""
    return store.partition(0)
