"""Values a stage decoded from a store partition, kept from one transaction to the next.

A stage that reads the same keys batch after batch (the allocator: a SKU busy in every
batch) keeps what it decoded rather than reading and decoding it from the store in each
batch. It pays only where a key comes back while it is still kept: the order stage keeps
nothing, since under a backlog an order's decisions come long after its acceptance.

The stage changes the kept values in place as it processes, so they are what the store
holds only while every write to the store partition is the flush of a transaction they
served, and that flush completed. `Kept.serve` checks this before each new transaction:
the last transaction it served completed, and the partition's `generation` is still the
one that flush left. Otherwise it starts empty: an aborted batch changed the values but
not the store; a changelog restore or a wipe changed the store but not the values.

A stage puts back, before the commit, every value it took and changed: the transaction's
flush then writes exactly what is kept.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from streamalloc.runtime.state.base import PartitionStatus, StorePartition
from streamalloc.runtime.state.transaction import PartitionTransaction, TransactionStatus

V = TypeVar("V")


class Kept(Generic[V]):
    """Up to `size` values of one store partition by key, the least recently used first out."""

    __slots__ = ("store", "_txn", "_values", "_size")

    def __init__(self, txn: PartitionTransaction, size: int) -> None:
        self.store: StorePartition = txn.partition
        self._txn = txn
        self._values: dict[str, V] = {}
        self._size = size

    def __len__(self) -> int:
        return len(self._values)

    def serve(self, txn: PartitionTransaction) -> None:
        """Serve `txn` from now on (a no-op for the transaction it serves already)."""
        last = self._txn
        if txn is last:
            return
        if last.status is not TransactionStatus.COMPLETE or last.flushed_generation != self.store.generation:
            self._values.clear()
        self._txn = txn

    def take(self, key: str) -> V | None:
        """The value kept for `key`, if any, taken out until `put` brings it back (as the
        most recently used)."""
        return self._values.pop(key, None)

    def put(self, key: str, value: V) -> None:
        values = self._values
        values[key] = value
        if len(values) > self._size:
            del values[next(iter(values))]


class KeptByPartition(Generic[V]):
    """A stage's `Kept` values per partition; a new store partition (the partition revoked
    and assigned again) gets a new one, and one whose store closed is dropped."""

    __slots__ = ("_size", "_parts")

    def __init__(self, size: int) -> None:
        self._size = size
        self._parts: dict[int, Kept[V]] = {}

    def serving(self, partition: int, txn: PartitionTransaction) -> Kept[V]:
        kept = self._parts.get(partition)
        if kept is not None and kept.store is txn.partition:
            kept.serve(txn)
            return kept
        for gone in [p for p, k in self._parts.items() if k.store.status is PartitionStatus.CLOSED]:
            del self._parts[gone]
        kept = self._parts[partition] = Kept(txn, self._size)
        return kept
