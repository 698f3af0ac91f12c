"""A task: one stage on one partition number, with its store partitions and input positions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamalloc.runtime.lineage import KeptBatch
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
    #: (incarnation, start, seq) of earlier owners' batches its restore kept although they
    #: start at or after `opened` (changelog.py `RestoreJob.kept`): its `batch` headers name them
    kept: list[KeptBatch] = field(default_factory=list)
    #: the number of the open (or last) batch in this incarnation, from 1 (lineage.py `seq`)
    batch_seq: int = 0
    #: produces into the open batch, tagging each record with the batch (lineage.py)
    emit: Emit | None = None
    #: store name -> the transaction of the open batch, created on first use
    txns: dict[str, PartitionTransaction] = field(default_factory=dict)
    restoring: int = 0
    #: records processed into the open batch (its size, should it have to be redone in parts)
    batch_records: int = 0
    #: decoded records waiting to be processed (alignment across inputs may hold them back)
    pending: list[Record] = field(default_factory=list)
    #: when the task began waiting for an input (monotonic s), and the drained polls then
    idle_since: float | None = None
    idle_polls: int = 0
    #: input (topic, partition) -> the end offset the last end-of-partition event reported
    #: (the last stable offset under read_committed)
    at_end: dict[tuple[str, int], int] = field(default_factory=dict)
    #: while a batch is redone in parts (an output was too large, see `redo_in_parts`):
    #: the positions to reach, the records per part, how many records from the next one on
    #: hold a culprit, the part in the open transaction (its first record and size), and
    #: the records to dead-letter when they come, with the reason
    redo_until: dict[tuple[str, int], int] | None = None
    part_size: int = 0
    suspects: int = 0
    trying: tuple[RecordId, int] | None = None
    poisoned: dict[RecordId, str] = field(default_factory=dict)
    #: when the stage's next punctuation is due (monotonic seconds); 0: as soon as ready
    punctuate_at: float = 0.0
    #: whether the stage reads its input's `batch` headers (read once here, not per record)
    reads_batches: bool = field(init=False)

    def __post_init__(self) -> None:
        self.reads_batches = bool(getattr(self.stage, "reads_batches", False))

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
        self.txns, self.batch_start, self.emit, self.batch_records = {}, None, None, 0

    def drop_txns(self) -> None:
        """Abort what is still open (a flush that failed half-way leaves some COMPLETE).

        `batch_records` stays: an aborted batch's size decides how it is redone (worker.py).
        """
        for txn in self.txns.values():
            if txn.status in (TransactionStatus.STARTED, TransactionStatus.PREPARED):
                txn.abort()
        self.txns, self.batch_start, self.emit = {}, None, None

    # ------------------------------------------------------------------ a batch redone in parts

    def redo_in_parts(self, reason: str) -> None:
        """An output of the open batch was too large to produce: redo it, fetched again, in
        parts (a transaction each). A part that fails holds the culprit: its first half is
        tried next, and after a part commits, the first half of what is left of the failed
        one, until the record that fails alone is known; that one is dead-lettered with
        `reason` (log2 of the batch's size in aborts). Then parts grow twice as large each
        commit, and once past where the failed batch reached, the task is back to whole
        batches."""
        if self.redo_until is None:
            self.redo_until = dict(self.positions)
            self.suspects = self.batch_records
        elif self.trying is not None:
            first, size = self.trying
            if size <= 1:
                self.poisoned[first] = reason
            self.suspects = size if size > 1 else 0
        self.part_size = max(1, self.suspects // 2)
        self.trying = None

    def next_part(self, records: list[Record]) -> tuple[list[Record], str | None]:
        """Of the `records` the task may process now, the next part, or the record to
        dead-letter alone and the reason; what is left goes back to the pending records."""
        first = records[0]
        reason = self.poisoned.get(_record_id(first))
        if reason is not None:
            self.pending[:0] = records[1:]
            return [first], reason
        size = 0
        for record in records[: self.part_size]:
            if _record_id(record) in self.poisoned:
                break
            size += 1
        self.pending[:0] = records[size:]
        self.trying = (_record_id(first), size)
        return records[:size], None

    def part_committed(self) -> None:
        if self.trying is not None:
            _, size = self.trying
            self.trying = None
            if self.suspects > size:  # the culprit is in what is left of the failed part
                self.suspects -= size
                self.part_size = max(1, self.suspects // 2)
            else:
                self.suspects = 0
                self.part_size *= 2
        until = self.redo_until
        if until is not None and all(self.positions.get(tp, end) >= end for tp, end in until.items()):
            self.redo_until, self.part_size, self.suspects = None, 0, 0
            self.poisoned.clear()


#: (topic, partition, offset) of an input record
RecordId = tuple[str, int, int]


def _record_id(record: Record) -> RecordId:
    return (record.topic, record.partition, record.offset)
