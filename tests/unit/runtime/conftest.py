"""Every store test runs on both implementations (quix-streams' test_state fixtures idea);
the worker tests run over a fake broker (worker_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.runtime.worker_fixtures import Cluster, patched_cluster

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


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    return patched_cluster(monkeypatch)
