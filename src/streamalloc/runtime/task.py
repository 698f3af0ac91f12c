"""A task: one stage on one partition number, with its store partitions and input positions."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamalloc.runtime.stage import Stage
from streamalloc.runtime.state import PartitionTransaction, StorePartition, TransactionStatus


@dataclass(eq=False)
class Task:
    stage: Stage
    partition: int
    #: store name -> open store partition
    stores: dict[str, StorePartition] = field(default_factory=dict)
    #: input (topic, partition) -> next offset to process (committed or processed)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    #: store name -> the transaction of the open batch, created on first use
    txns: dict[str, PartitionTransaction] = field(default_factory=dict)
    restoring: int = 0

    @property
    def ready(self) -> bool:
        return self.restoring == 0

    def open_txns(self) -> dict[str, PartitionTransaction]:
        if not self.txns and self.stores:
            self.txns = {name: store.begin() for name, store in self.stores.items()}
        return self.txns

    def drop_txns(self) -> None:
        """Abort what is still open (a flush that failed half-way leaves some COMPLETE)."""
        for txn in self.txns.values():
            if txn.status in (TransactionStatus.STARTED, TransactionStatus.PREPARED):
                txn.abort()
        self.txns = {}
