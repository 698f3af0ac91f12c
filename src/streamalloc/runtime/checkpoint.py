"""The commit protocol: one batch of work, committed as one Kafka transaction.

Read `Checkpoint.commit` to follow exactly-once: produce the changelog, flush, send the
consumed offsets inside the transaction, commit it, and only then apply the batch to the
local stores and write their checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streamalloc.kafka import produce
from streamalloc.kafka.types import delivered
from streamalloc.runtime.changelog import SRC_HEADER, encode_src
from streamalloc.runtime.task import Task


class Checkpoint:
    """The uncommitted batch: which tasks it touched, how many records, since when."""

    def __init__(self, producer: Producer, consumer: Consumer, changelog_topic: Any) -> None:
        self._producer = producer
        self._consumer = consumer
        self._changelog_topic = changelog_topic  # store name -> changelog topic
        self.tasks: dict[int, Task] = {}
        self.records = 0
        self.started = 0.0
        self.in_transaction = False
        self._changelog_offsets: dict[tuple[str, int], int] = {}

    @property
    def empty(self) -> bool:
        return not self.in_transaction

    def begin(self) -> None:
        """Open the Kafka transaction before the first output of a batch is produced."""
        if not self.in_transaction:
            self._producer.begin_transaction()
            self.in_transaction = True
            self.started = time.monotonic()

    def touch(self, task: Task, records: int) -> None:
        """Join `task` to the batch (records=0 for a punctuation: work without input)."""
        self.tasks[id(task)] = task
        self.records += records

    def touched(self, task: Task) -> bool:
        return id(task) in self.tasks

    @property
    def touched_any(self) -> bool:
        return bool(self.tasks)

    def due(self, max_records: int, max_age_s: float) -> bool:
        return self.in_transaction and (
            self.records >= max_records or time.monotonic() - self.started >= max_age_s
        )

    def commit(self) -> int:
        """Commit the batch; return the number of changelog records written."""
        tasks = list(self.tasks.values())
        # 1. Changelog: one record per key changed in this batch (coalesced), tagged with
        #    the batch's input range and with how far the store's changelog was known when
        #    the batch began (its checkpoint), so a restore can tell committed from leaked
        #    batches, those with an empty input range (punctuations) included (changelog.py).
        #    A batch with no changes (a punctuation that only emitted) writes nothing here;
        #    with no touched task at all the commit below is an empty transaction, which
        #    librdkafka ends locally (no request to the broker).
        changelog_records = 0
        self._changelog_offsets = {}
        for task in tasks:
            start = task.batch_start or task.positions
            for store_name, txn in task.txns.items():
                topic = self._changelog_topic(store_name)
                changes = txn.prepare()
                if not changes:
                    continue
                src = encode_src(start, task.positions, txn.partition.checkpoint_offset, task.incarnation)
                header: list[tuple[str, str | bytes | None]] = [(SRC_HEADER, src)]
                for key, value in changes.items():
                    produce(self._producer, topic, value, key, task.partition, header, self._delivered)
                changelog_records += len(changes)
        # 2. Flush, so delivery reports give the changelog offsets the checkpoints will record.
        self._producer.flush()
        # 3. The consumed offsets, inside the transaction (KIP-447: fresh group metadata).
        offsets = [TopicPartition(t, p, o) for task in tasks for (t, p), o in task.positions.items()]
        if offsets:
            self._producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata())
        # 4. Commit: outputs, changelog and offsets become visible together.
        self._producer.commit_transaction()
        # 5. Only now touch local state: apply each batch and record how far the changelog is.
        for task in tasks:
            for store_name, txn in task.txns.items():
                offset = self._changelog_offsets.get((self._changelog_topic(store_name), task.partition))
                txn.flush(None if offset is None else offset + 1)
            task.txns, task.batch_start, task.emit = {}, None, None
        self._reset()
        return changelog_records

    def abort(self) -> None:
        """Abort the Kafka transaction and drop every store change of the batch."""
        try:
            if self.in_transaction:
                self._producer.abort_transaction()
        finally:
            for task in self.tasks.values():
                task.drop_txns()
            self._reset()

    def forget(self, tasks: Iterable[Task]) -> None:
        """Drop tasks from the batch without committing them (partitions lost)."""
        for task in tasks:
            task.drop_txns()
            self.tasks.pop(id(task), None)

    def _reset(self) -> None:
        self.tasks = {}
        self.records = 0
        self.in_transaction = False

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            record = delivered(msg)
            key = (record.topic(), record.partition())
            offset = record.offset()
            if offset > self._changelog_offsets.get(key, -1):
                self._changelog_offsets[key] = offset
