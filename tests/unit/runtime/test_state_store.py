"""Stores across partitions, run on the in-memory and the RocksDB store alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamalloc.errors import StateError
from streamalloc.runtime.state import (
    InMemoryStore,
    PartitionStatus,
    PartitionTransaction,
    RocksDBStore,
    Store,
    StorePartition,
)


def test_partitions_are_independent(store: Store) -> None:
    zero, one = store.partition(0), store.partition(1)
    zero.write_batch({b"a": b"0"})
    zero.write_checkpoint(1)
    assert one.get(b"a") is None and one.checkpoint_offset is None
    one.wipe()
    assert zero.get(b"a") == b"0"


def test_store_tracks_open_partitions_and_closes_them(store: Store) -> None:
    zero = store.partition(0)
    assert store.partition(0) is zero
    two = store.partition(2)
    assert dict(store.partitions()) == {0: zero, 2: two}
    store.close_partition(2)
    store.close_partition(7)  # not open: nothing to do
    assert dict(store.partitions()) == {0: zero} and two.status is PartitionStatus.CLOSED
    zero.close()  # closed behind the store's back: partition() opens a fresh one
    assert store.partition(0) is not zero
    store.close()
    assert dict(store.partitions()) == {}
    with pytest.raises(StateError):
        store.partition(0)


def test_bad_arguments_are_refused(store: Store, part: StorePartition) -> None:
    with pytest.raises(ValueError):
        part.write_checkpoint(-1)
    with pytest.raises(ValueError):
        store.partition(-1)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../up", "a b"])
def test_store_names_must_be_safe_path_components(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        InMemoryStore(name)
    with pytest.raises(ValueError):
        RocksDBStore(name, tmp_path)


def test_begin_returns_a_transaction_bound_to_the_partition(part: StorePartition) -> None:
    txn = part.begin()
    assert isinstance(txn, PartitionTransaction) and txn.partition is part
