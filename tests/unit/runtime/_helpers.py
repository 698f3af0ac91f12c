"""Small helpers shared by the store tests."""

from __future__ import annotations

from streamalloc.runtime.state import PartitionStatus, PartitionTransaction, StorePartition, TransactionStatus


def contents(partition: StorePartition) -> dict[bytes, bytes]:
    return dict(partition.iter_prefix(b""))


def status(thing: StorePartition | PartitionTransaction) -> PartitionStatus | TransactionStatus:
    """Read afresh (a direct `thing.status` stays narrowed for mypy after an assert)."""
    return thing.status


def seeded(part: StorePartition, data: dict[bytes, bytes], offset: int = 10) -> StorePartition:
    part.write_batch(data)
    part.write_checkpoint(offset)
    return part
