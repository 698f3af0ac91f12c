"""A task: one stage on one partition number, with its store partitions and input positions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamalloc.runtime.stage import Emit, Record, Stage
from streamalloc.runtime.state import PartitionTransaction, StorePartition, TransactionStatus


@dataclass(eq=False)
class Task:
    stage: Stage
    partition: int
    #: store name -> open store partition
    stores: dict[str, StorePartition] = field(default_factory=dict)
    #: input (topic, partition) -> next offset to process (committed or processed)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the positions when the open batch began (its input range starts there), else None
    batch_start: dict[tuple[str, int], int] | None = None
    #: when this owner opened the task (ns since the epoch) and the positions it opened at
    incarnation: int = field(default_factory=time.time_ns)
    opened: dict[tuple[str, int], int] | None = None
    #: produces into the open batch, tagging each record with the batch (lineage.py)
    emit: Emit | None = None
    #: store name -> the transaction of the open batch, created on first use
    txns: dict[str, PartitionTransaction] = field(default_factory=dict)
    restoring: int = 0
    #: decoded records waiting to be processed (alignment across inputs may hold them back)
    pending: list[Record] = field(default_factory=list)
    #: when the task began waiting for an input (monotonic s), and the drained polls then
    idle_since: float | None = None
    idle_polls: int = 0
    #: input (topic, partition) -> the end offset the last end-of-partition event reported
    #: (the last stable offset under read_committed)
    at_end: dict[tuple[str, int], int] = field(default_factory=dict)
    #: when the stage's next punctuation is due (monotonic seconds); 0: as soon as ready
    punctuate_at: float = 0.0

    def take_pending(self) -> list[Record]:
        """Every pending record (a task with one input; alignment.py merges several)."""
        records, self.pending = self.pending, []
        return records

    @property
    def ready(self) -> bool:
        return self.restoring == 0

    def punctuation_due(self, now: float) -> bool:
        """Whether the stage punctuates this task at monotonic `now`; if so, the next is due
        one interval later (missed intervals are skipped, not caught up: Kafka Streams' rule)."""
        interval = self.stage.punctuate_interval_ms
        if interval is None or now < self.punctuate_at or self.restoring:
            return False
        self.punctuate_at = now + interval / 1000
        return True

    def open_txns(self) -> dict[str, PartitionTransaction]:
        if not self.txns and self.stores:
            self.txns = {name: store.begin() for name, store in self.stores.items()}
        return self.txns

    def end_batch(self) -> None:
        """The open batch committed: the next one starts afresh."""
        self.txns, self.batch_start, self.emit = {}, None, None

    def drop_txns(self) -> None:
        """Abort what is still open (a flush that failed half-way leaves some COMPLETE)."""
        for txn in self.txns.values():
            if txn.status in (TransactionStatus.STARTED, TransactionStatus.PREPARED):
                txn.abort()
        self.end_batch()
