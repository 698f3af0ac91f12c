"""The commit protocol: one batch of work, committed as one Kafka transaction, once.

A `Checkpoint` lives for one batch: the worker opens a new one after each commit or abort
(quix-streams' model). Read `Checkpoint.commit` to follow exactly-once: produce the
changelog, flush, send the consumed offsets inside the transaction, commit it, and only
then apply the batch to the local stores and write their checkpoints.

`commit` succeeds or raises, and is never called twice: a second call would prepare the
store transactions again and produce the changelog twice. Inside it only the two broker
calls librdkafka documents as safe to repeat after a retriable error are repeated
(`send_offsets_to_transaction`, `commit_transaction`). Every other failure ends the batch
with a typed outcome (errors.py): CheckpointAborted (the transaction was aborted: redo the
batch), TaskMigrated (aborted because the group moved on), ProducerFenced (the producer is
unusable: stop). In every case the local stores are untouched.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamalloc.errors import (
    CheckpointAborted,
    CheckpointError,
    ProcessingError,
    ProducerFenced,
    RecordTooLarge,
    StateError,
    TaskMigrated,
    TransactionMustAbort,
)
from streamalloc.kafka import produce
from streamalloc.kafka.types import delivered
from streamalloc.runtime.changelog import SRC_HEADER, encode_src
from streamalloc.runtime.task import Task

_log = logging.getLogger("streamalloc.runtime.checkpoint")

#: Attempts of a broker call that failed with a retriable error (librdkafka: call it again).
ATTEMPTS = 5
#: How long an abort waits for what the transaction produced to be delivered (see `abort`).
ABORT_FLUSH_S = 10.0
#: How long one transactional broker call may block. librdkafka's default is forever: after
#: the broker was SIGKILLed and restarted, workers were seen blocked for good in
#: send_offsets_to_transaction. A timeout is a retriable error (the call is made again, up to
#: ATTEMPTS), then the batch aborts; past the transaction timeout (10 s) the broker has
#: aborted the transaction anyway.
TXN_CALL_TIMEOUT_S = 15.0
#: Abortable errors that mean the consumer group moved on: this member's generation is over.
_MIGRATED = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID}
)


class CheckpointStatus(enum.Enum):
    NEW = "new"  # collecting work; no Kafka transaction yet
    IN_TRANSACTION = "in_transaction"
    COMMITTED = "committed"
    ABORTED = "aborted"


_NEW, _IN_TRANSACTION, _COMMITTED, _ABORTED = CheckpointStatus


class Checkpoint:
    """One batch: which tasks it touched, how many records, since when; committed once."""

    def __init__(self, producer: Producer, consumer: Consumer, changelog_topic: Callable[[str], str]) -> None:
        self._producer = producer
        self._consumer = consumer
        self._changelog_topic = changelog_topic  # store name -> changelog topic
        self.tasks: dict[int, Task] = {}
        self.records = 0
        self.started = 0.0
        self.status = _NEW
        self._changelog_offsets: dict[tuple[str, int], int] = {}

    @property
    def in_transaction(self) -> bool:
        return self.status is _IN_TRANSACTION

    @property
    def empty(self) -> bool:
        """Nothing to commit: no transaction was begun (or this checkpoint is over)."""
        return self.status is not _IN_TRANSACTION

    def begin(self) -> None:
        """Open the Kafka transaction before the first output of a batch is produced."""
        if self.status is _NEW:
            self._producer.begin_transaction()
            self.status = _IN_TRANSACTION
            self.started = time.monotonic()
        elif self.status is not _IN_TRANSACTION:
            raise StateError(f"checkpoint is {self.status.value}: open a new one")

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
        return self.status is _IN_TRANSACTION and (
            self.records >= max_records or time.monotonic() - self.started >= max_age_s
        )

    def commit(self) -> int:
        """Commit the batch; return the number of changelog records written.

        Raises a CheckpointError when the batch did not commit; the batch is then aborted
        (or, for ProducerFenced, cannot be) and the local stores are untouched.
        """
        if self.status is not _IN_TRANSACTION:
            raise StateError(f"cannot commit a checkpoint that is {self.status.value}")
        tasks = list(self.tasks.values())
        changelog_records = 0
        try:
            try:
                # 1. Changelog: one record per key changed in this batch (coalesced), tagged
                #    with the batch's input range and with how far the store's changelog was
                #    known when the batch began (its checkpoint), so a restore can tell
                #    committed from leaked batches, those with an empty input range
                #    (punctuations) included (changelog.py). A batch with no changes writes
                #    nothing here; with no touched task at all the commit below is an empty
                #    transaction, which librdkafka ends locally (no request to the broker).
                changelog_records = self._produce_changelog(tasks)
                # 2. Flush, so delivery reports give the changelog offsets the checkpoints
                #    will record. A record that failed delivery makes step 4 fail (abortable).
                self._producer.flush()
                # 3. The consumed offsets, inside the transaction (KIP-447: fresh group metadata).
                offsets = [TopicPartition(t, p, o) for task in tasks for (t, p), o in task.positions.items()]
                if offsets:
                    metadata = self._consumer.consumer_group_metadata()
                    send = self._producer.send_offsets_to_transaction
                    self._retrying("send offsets", lambda: send(offsets, metadata, TXN_CALL_TIMEOUT_S))
            except TransactionMustAbort:
                # An output of the batch failed delivery and librdkafka refuses more work in
                # the transaction: step 4 cannot succeed, and raises why it must abort.
                self._retrying("commit", lambda: self._producer.commit_transaction(TXN_CALL_TIMEOUT_S))
                raise ProcessingError("librdkafka refused a produce, yet committed the transaction") from None
            # 4. Commit: outputs, changelog and offsets become visible together.
            self._retrying("commit", lambda: self._producer.commit_transaction(TXN_CALL_TIMEOUT_S))
        except RecordTooLarge as exc:
            self.abort()
            raise CheckpointAborted(exc.reason, too_large=exc) from exc
        except KafkaException as exc:
            raise self._failed(exc) from exc
        self.status = _COMMITTED
        # 5. Only now touch local state: apply each batch and record how far the changelog is.
        for task in tasks:
            for store_name, txn in task.txns.items():
                offset = self._changelog_offsets.get((self._changelog_topic(store_name), task.partition))
                txn.flush(None if offset is None else offset + 1)
            task.end_batch()
        return changelog_records

    def abort(self) -> None:
        """Abort the Kafka transaction and drop every store change of the batch (once).

        Raises ProducerFenced when the producer cannot abort (a fatal error), and
        ProcessingError when the abort fails otherwise: the transaction's state is then
        unknown and only a new producer (a restart) can settle it.
        """
        if self.status in (_COMMITTED, _ABORTED):
            return
        try:
            if self.status is _IN_TRANSACTION:
                # Let what was produced reach the broker first: an abort while librdkafka is
                # still adding the transaction's partitions (right after a produce) can fail
                # for good with INVALID_TXN_STATE (librdkafka #4849, seen on Kafka 4.1).
                self._producer.flush(ABORT_FLUSH_S)
                self._retrying("abort", lambda: self._producer.abort_transaction(TXN_CALL_TIMEOUT_S))
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise ProducerFenced(f"the producer cannot abort: {error.str()}") from exc
            raise ProcessingError(f"the transaction could not be aborted: {error.str()}") from exc
        finally:
            self.status = _ABORTED
            for task in self.tasks.values():
                task.drop_txns()

    # ------------------------------------------------------------------ failure

    def _failed(self, exc: KafkaException) -> CheckpointError:
        """The outcome of a broker call that failed for good: abort if the producer still can."""
        error: KafkaError = exc.args[0]
        reason = error.str()
        if error.fatal():
            # librdkafka refuses every transactional call from here on; nothing to abort.
            self.status = _ABORTED
            for task in self.tasks.values():
                task.drop_txns()
            return ProducerFenced(f"fatal producer error: {reason}")
        self.abort()
        if error.code() in _MIGRATED:
            return TaskMigrated(f"the consumer group moved on: {reason}")
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return CheckpointAborted(reason, too_large=RecordTooLarge(None))
        return CheckpointAborted(reason)

    def _retrying(self, doing: str, call: Callable[[], Any]) -> None:
        """Make a broker call that librdkafka allows to repeat after a retriable error."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                call()
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if (
                    error.fatal()
                    or error.txn_requires_abort()
                    or not error.retriable()
                    or attempt == ATTEMPTS
                ):
                    raise
                _log.warning("retrying", extra={"doing": doing, "attempt": attempt, "error": error.str()})
                time.sleep(0.05 * attempt)

    # ------------------------------------------------------------------ changelog

    def _produce_changelog(self, tasks: list[Task]) -> int:
        written = 0
        self._changelog_offsets = {}
        for task in tasks:
            start = task.batch_start or task.positions
            for store_name, txn in task.txns.items():
                topic = self._changelog_topic(store_name)
                changes = txn.prepare()
                if not changes:
                    continue
                src = encode_src(
                    start, task.positions, txn.partition.checkpoint_offset, task.incarnation, task.batch_seq
                )
                headers: list[tuple[str, str | bytes | None]] = [(SRC_HEADER, src)]
                for key, value in changes.items():
                    produce(self._producer, topic, value, key, task.partition, headers, self._delivered)
                written += len(changes)
        return written

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            record = delivered(msg)
            key = (record.topic(), record.partition())
            offset = record.offset()
            if offset > self._changelog_offsets.get(key, -1):
                self._changelog_offsets[key] = offset
