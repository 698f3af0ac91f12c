"""The commit protocol: one batch of work, committed as one Kafka transaction, once.

A `Checkpoint` lives for one batch: the worker opens a new one after each commit or abort
(quix-streams' model). Read `Checkpoint.commit` to follow exactly-once: produce the
changelog, flush, send the consumed offsets inside the transaction, commit it, and only
then apply the batch to the local stores and write their checkpoints.

`commit` succeeds or raises, and is never called twice: a second call would prepare the
store transactions again and produce the changelog twice. Inside it only
`commit_transaction` is repeated after a retriable error (its outcome is unknown until it
answers; librdkafka documents the repeat), within COMMIT_DEADLINE_S. Every other failure
ends the batch with a typed outcome (errors.py): CheckpointAborted (the transaction was
aborted: redo the batch), TaskMigrated (aborted because the group moved on),
TransactionUnresolved (neither committed nor aborted: the broker is away, or a call hung),
ProducerFenced. A timeout (the coordinator unreachable) is treated as Kafka Streams treats
it, as a reason to abort, not to stop. In every case the local stores are untouched.

Every transactional call runs on a helper thread (`TxnCalls`) and is given up after its
timeout plus a grace: librdkafka can ignore the timeout of send_offsets_to_transaction
when the coordinator was lost (confluentinc/librdkafka#5456, #5511; seen here after a
broker restart), and a worker blocked for good in it never recovers. The helper thread is
a daemon: a call given up may never return, and the process must still exit on SIGTERM.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
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
    TransactionUnresolved,
)
from streamalloc.kafka import flush, produce
from streamalloc.kafka.types import delivered
from streamalloc.runtime.changelog import SRC_HEADER, encode_src
from streamalloc.runtime.task import Task

_log = logging.getLogger("streamalloc.runtime.checkpoint")

#: Attempts of commit_transaction after a retriable error (librdkafka: call it again).
ATTEMPTS = 5
#: How long the attempts of commit_transaction may take in all before the batch is aborted.
COMMIT_DEADLINE_S = 20.0
#: How long an abort waits for what the transaction produced to be delivered (see `abort`).
ABORT_FLUSH_S = 5.0
#: How long one transactional broker call may block. librdkafka's default is forever. Past
#: the transaction timeout (10 s) the broker aborts the transaction anyway.
TXN_CALL_TIMEOUT_S = 10.0
#: How long past its own timeout a transactional call is waited for before it counts as hung.
HUNG_GRACE_S = 5.0
#: Abortable errors that mean the consumer group moved on: this member's generation is over.
_MIGRATED = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID}
)


class TxnCalls:
    """Runs the producer's blocking transactional calls on a helper thread, each given up
    `timeout + HUNG_GRACE_S` after it started (module docstring).

    A call given up keeps running on its thread, on a producer the worker then replaces;
    the next call runs on a new thread.
    """

    def __init__(self) -> None:
        self._thread = _CallThread()

    def run(self, doing: str, call: Callable[[], Any], timeout_s: float) -> None:
        future = self._thread.submit(call)
        try:
            future.result(timeout_s + HUNG_GRACE_S)
        except FutureTimeout:
            self._thread.shutdown()
            self._thread = _CallThread()
            raise TransactionUnresolved(
                f"{doing} did not return within {timeout_s + HUNG_GRACE_S:.0f}s"
            ) from None

    def close(self) -> None:
        self._thread.shutdown()


class _CallThread:
    """One daemon thread running the calls given to it, in order.

    Not a ThreadPoolExecutor: concurrent.futures joins its threads when the interpreter
    exits, shut down or not, so one thread hung for good in send_offsets_to_transaction
    (librdkafka#5456) kept a worker from exiting after SIGTERM until it was SIGKILLed
    (in the chaos run's broker fault: every worker, 30 s each). A daemon thread is not
    waited for; the worker has committed and left the group before the process exits.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="streamalloc-txn", daemon=True).start()

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, call))
        return future

    def shutdown(self) -> None:
        """The thread ends after the call it is in, if that ever returns; it takes no more."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)


class CheckpointStatus(enum.Enum):
    NEW = "new"  # collecting work; no Kafka transaction yet
    IN_TRANSACTION = "in_transaction"
    COMMITTED = "committed"
    ABORTED = "aborted"


_NEW, _IN_TRANSACTION, _COMMITTED, _ABORTED = CheckpointStatus


class Checkpoint:
    """One batch: which tasks it touched, how many records, since when; committed once."""

    def __init__(
        self,
        producer: Producer,
        consumer: Consumer,
        changelog_topic: Callable[[str], str],
        calls: TxnCalls | None = None,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self._calls = calls or TxnCalls()
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
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if not error.fatal():
                    raise
                self._drop()  # fenced or failed in the background since the last batch
                if _fenced(error):
                    raise ProducerFenced(f"fatal producer error: {error.str()}") from exc
                raise TransactionUnresolved(f"fatal producer error: {error.str()}") from exc
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

    def commit(self) -> int:
        """Commit the batch; return the number of changelog records written.

        Raises a CheckpointError when the batch did not commit; the batch is then aborted
        (or, for ProducerFenced and TransactionUnresolved, left for the broker to settle)
        and the local stores are untouched.
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
                #    Bounded: with the broker away the records wait in librdkafka's queue, and
                #    step 3 times out and aborts the batch.
                if flush(self._producer, TXN_CALL_TIMEOUT_S) > 0:
                    self.abort()
                    raise CheckpointAborted(f"changelog not delivered within {TXN_CALL_TIMEOUT_S:.0f}s")
                # 3. The consumed offsets, inside the transaction (KIP-447: fresh group
                #    metadata). Not repeated after a timeout: the batch aborts (Kafka Streams'
                #    TaskCorrupted), and is redone once the broker is back.
                offsets = [TopicPartition(t, p, o) for task in tasks for (t, p), o in task.positions.items()]
                if offsets:
                    metadata = self._consumer.consumer_group_metadata()
                    send = self._producer.send_offsets_to_transaction
                    self._call("send offsets", lambda: send(offsets, metadata, TXN_CALL_TIMEOUT_S))
            except TransactionMustAbort:
                # An output of the batch failed delivery and librdkafka refuses more work in
                # the transaction: step 4 cannot succeed, and raises why it must abort.
                self._commit_transaction()
                raise ProcessingError("librdkafka refused a produce, yet committed the transaction") from None
            # 4. Commit: outputs, changelog and offsets become visible together.
            self._commit_transaction()
        except RecordTooLarge as exc:
            self.abort()
            raise CheckpointAborted(exc.reason, too_large=exc) from exc
        except KafkaException as exc:
            raise self._failed(exc) from exc
        except TransactionUnresolved:
            self._drop()
            raise
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

        Raises ProducerFenced when the producer was fenced, and TransactionUnresolved when
        the abort fails otherwise (the broker is away, the call hung, another fatal error):
        only a new producer can settle the transaction then (worker.py).
        """
        if self.status in (_COMMITTED, _ABORTED):
            return
        try:
            if self.status is _IN_TRANSACTION:
                # Let what was produced reach the broker first: an abort while librdkafka is
                # still adding the transaction's partitions (right after a produce) can fail
                # for good with INVALID_TXN_STATE (librdkafka #4849, seen on Kafka 4.1).
                flush(self._producer, ABORT_FLUSH_S)
                self._call("abort", lambda: self._producer.abort_transaction(TXN_CALL_TIMEOUT_S))
        except KafkaException as exc:
            error = exc.args[0]
            if _fenced(error):
                raise ProducerFenced(f"the producer cannot abort: {error.str()}") from exc
            raise TransactionUnresolved(f"the transaction could not be aborted: {error.str()}") from exc
        finally:
            self._drop()

    def _drop(self) -> None:
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
            self._drop()
            if _fenced(error):
                return ProducerFenced(f"fatal producer error: {reason}")
            return TransactionUnresolved(f"fatal producer error: {reason}")
        self.abort()
        if error.code() in _MIGRATED:
            return TaskMigrated(f"the consumer group moved on: {reason}")
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return CheckpointAborted(reason, too_large=RecordTooLarge(None))
        return CheckpointAborted(reason)

    def _call(self, doing: str, call: Callable[[], Any]) -> None:
        """One transactional call, given up if it hangs (TransactionUnresolved)."""
        self._calls.run(doing, call, TXN_CALL_TIMEOUT_S)

    def _commit_transaction(self) -> None:
        """commit_transaction, repeated after a retriable error (its outcome is unknown until
        it answers) for up to ATTEMPTS and COMMIT_DEADLINE_S; then the error is raised and
        the batch aborts."""
        deadline = time.monotonic() + COMMIT_DEADLINE_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._call("commit", lambda: self._producer.commit_transaction(TXN_CALL_TIMEOUT_S))
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if (
                    error.fatal()
                    or error.txn_requires_abort()
                    or not error.retriable()
                    or attempt == ATTEMPTS
                    or time.monotonic() >= deadline
                ):
                    raise
                _log.warning("retrying", extra={"doing": "commit", "attempt": attempt, "error": error.str()})
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
                # Only the last record reports its delivery: its offset is the partition's
                # highest (one producer, in order), and the transaction commits only when
                # every record was delivered. A report per record cost a Python call each.
                last = len(changes) - 1
                for n, (key, value) in enumerate(changes.items()):
                    produce(
                        self._producer, topic, value, key, task.partition, headers,
                        self._delivered if n == last else None,
                    )  # fmt: skip
                written += len(changes)
        return written

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            record = delivered(msg)
            key = (record.topic(), record.partition())
            offset = record.offset()
            if offset > self._changelog_offsets.get(key, -1):
                self._changelog_offsets[key] = offset


def _fenced(error: KafkaError) -> bool:
    """A fence: librdkafka's `_FENCED` (it maps PRODUCER_FENCED and INVALID_PRODUCER_EPOCH to it)."""
    return error.fatal() and error.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    )
