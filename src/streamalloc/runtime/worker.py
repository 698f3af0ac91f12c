"""The worker: one consumer-group member with one transactional producer, running stages.

The loop: restore what is restoring, poll a batch, route it by topic to its task, run
the punctuations that are due, and commit every `commit_every` records or
`commit_interval_ms`, whichever comes first, or as soon as the input is drained
(`Settings.drained_commit_gap_ms`). The tasks' lifecycle (assignment,
revocation, restore, rewind) is the TaskManager's (task_manager.py); the commit protocol
is the Checkpoint's (checkpoint.py), one per batch.

How the worker meets each outcome of a commit (errors.py):

- CheckpointAborted: nothing of the batch is visible; its tasks are rewound to the
  committed offsets and the batch is redone as it is fetched again.
- CheckpointAborted caused by an output too large to produce (RecordTooLarge), here or
  in a stage: redoing the batch would fail again, so its tasks redo it in parts, each a
  transaction, halving the part that fails, until the record that fails alone is sent to
  the dead-letter topic in a transaction of its own; then they return to whole batches
  (Task.redo_in_parts). Nothing of this runs while no output is too large.
- TaskMigrated: as CheckpointAborted; the rebalance that follows takes the partitions.
- TransactionUnresolved (the broker did not answer the commit or the abort, or a call
  hung) and ProducerFenced (a broker outage past transaction.timeout.ms ends in a fence
  too: the broker aborts the open transaction and bumps the producer's epoch): the worker
  makes a new producer with the same transactional id, waiting for the broker to come
  back (its init_transactions settles the old transaction), and revives its tasks: their
  stores restore from the changelog (the tail past their checkpoints) and their inputs
  restart at the committed offsets (Kafka Streams re-creates its producer and revives
  its tasks so).
  Only a fence that keeps coming back (MAX_FENCES within FENCE_WINDOW_S: another
  process uses this state directory's transactional id) stops the worker; a restart
  restores its stores from the changelog.

So a broker outage of tens of seconds costs the batches in flight, redone after it; the
worker keeps its place in the group (librdkafka heartbeats from its own thread) or
rejoins it, and goes on.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamalloc.config import Settings
from streamalloc.errors import (
    CheckpointAborted,
    CheckpointError,
    ProcessingError,
    ProducerFenced,
    RecordTooLarge,
    StreamallocError,
    TransactionMustAbort,
    TransactionUnresolved,
)
from streamalloc.kafka import (
    admin_client,
    consume_available,
    consumer_config,
    flush,
    produce,
    producer_config,
)
from streamalloc.kafka.stats import partition_lags
from streamalloc.kafka.types import ConsumedMessage, Headers, consumed
from streamalloc.runtime.alignment import Alignment
from streamalloc.runtime.changelog import Restorer
from streamalloc.runtime.checkpoint import TXN_CALL_TIMEOUT_S, Checkpoint, TxnCalls
from streamalloc.runtime.dead_letter import (
    DECODE,
    TOO_LARGE,
    DeadLetterEncoder,
    DeadLetters,
    failure_category,
)
from streamalloc.runtime.lineage import BATCH_HEADER, batch_of, encode_batch
from streamalloc.runtime.members import advertised_client_id, describe_group
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import Emit, PartitionContext, Record, Stage
from streamalloc.runtime.standby import StandbyReplicas, assignment_of
from streamalloc.runtime.task import Task
from streamalloc.runtime.task_manager import StoreFactory, TaskManager

_log = logging.getLogger("streamalloc.runtime.worker")

__all__ = ["DeadLetterEncoder", "StoreFactory", "Worker"]

#: How long a new producer waits for the transaction coordinator (a broker restarting)
#: before the worker gives up: at start, and after its producer was lost.
INIT_DEADLINE_S = 120.0
#: More fences than this within FENCE_WINDOW_S stop the worker: another process with this
#: state directory's transactional id keeps fencing it, which a new producer cannot cure.
MAX_FENCES = 3
FENCE_WINDOW_S = 300.0
#: Records waiting this long with nothing committed make the worker say why (`_watch_progress`).
STUCK_AFTER_S = 30.0
#: How often the consumer reports its statistics (the lag per partition): cheap at this rate.
_STATS_INTERVAL_MS = 5000


class Worker:
    """Runs `stages` as one member of the consumer group `settings.app_id`."""

    def __init__(
        self,
        settings: Settings,
        stages: Sequence[Stage],
        *,
        store_factory: StoreFactory,
        dead_letter: DeadLetterEncoder,
        observer: Observer | None = None,
        before_batch: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stages = list(stages)
        self.observer = observer or Observer()
        self.observer.on_stages(self.stages)
        self.tasks = TaskManager(settings, self.stages, store_factory, self.observer)
        self._dead_letter = dead_letter
        self._before_batch = before_batch
        self._stopping = False
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._checkpoint: Checkpoint | None = None
        self._alignment: Alignment | None = None
        self._dead_letters: DeadLetters | None = None
        self._admin: AdminClient | None = None  # describes the group, for standby placement
        self._calls = TxnCalls()  # the producer's transactional calls, given up if they hang
        self._fences: list[float] = []  # when the producer was last fenced (monotonic s)
        self._retired: list[Producer] = []  # lost producers: one may still be in a hung call
        # The earliest punctuation due of any ready task (monotonic s): one comparison a tick.
        self._punctuates = any(stage.punctuate_interval_ms is not None for stage in self.stages)
        self._punctuate_at = math.inf
        self._restoring = False  # as last told to the observer
        # When the worker last committed, or last found nothing waiting (monotonic s), and
        # when it last said it was stuck: see `_watch_progress`.
        self._progress_at = time.monotonic()
        self._stuck_said_at = 0.0
        # A drained batch commits this long after the last commit ended (s; None: only the
        # interval and the count decide), when the last commit ended (monotonic s), and
        # whether the last round took all the input fetched and left none waiting (only
        # looked at when there is a gap).
        gap_ms = settings.drained_commit_gap_ms
        self._drained_gap_s = None if gap_ms is None else gap_ms / 1000
        self._committed_at = 0.0
        self._drained = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Owns input partitions and every one of them has finished restoring."""
        return self.tasks.ready

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return (signal-safe)."""
        self._stopping = True

    def run(self) -> None:
        """Process until `stop()`; a fatal error (ProcessingError, ProducerFenced) is raised."""
        self._start()
        try:
            while not self._stopping:
                self._tick()
            self._commit()
        except BaseException:
            # Never let the revocation in close() commit half a batch that failed.
            if self._checkpoint is not None:
                try:
                    self._checkpoint.abort()
                except (KafkaException, StreamallocError) as exc:
                    _log.warning("abort after failure failed", extra={"error": str(exc)})
            raise
        finally:
            self._close()

    def _start(self) -> None:
        settings = self.settings
        self._producer = self._new_producer()
        # End-of-partition events tell when an input is caught up (alignment.py).
        group = consumer_config(settings, group_id=settings.app_id, **{"enable.partition.eof": True})
        # The consumer lag per partition comes from librdkafka's statistics, served by poll.
        group["statistics.interval.ms"] = _STATS_INTERVAL_MS
        group["stats_cb"] = self._on_stats
        if settings.advertised_url is not None:
            # Where the other workers find this one's HTTP API (members.py).
            group["client.id"] = advertised_client_id(settings.advertised_url)
        self._consumer = Consumer(group)
        standby = None
        if settings.num_standby_replicas > 0:
            self._admin = admin_client(settings)
            tail = Restorer(consumer_config(settings), self.observer, tail=True)
            standby = StandbyReplicas(self.tasks.stores, settings.changelog_topic, tail)
        self.tasks.start(Restorer(consumer_config(settings), self.observer), standby)
        self._alignment = Alignment(self._consumer, settings.max_task_idle_ms)
        self._dead_letters = DeadLetters(
            self._producer, settings.topic("dead-letter"), self._dead_letter, self.observer
        )
        self._checkpoint = self._new_checkpoint()
        self._consumer.subscribe(
            self.tasks.subscriptions(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_stats(self, stats_json: str) -> None:
        try:
            lags = partition_lags(stats_json)
        except (ValueError, TypeError, AttributeError) as exc:
            _log.warning("consumer statistics unreadable", extra={"error": str(exc)})
            return
        self.observer.on_consumer_lag(lags)

    def _transactional_id(self) -> str:
        """Stable across restarts of the same state dir, so init_transactions fences our own zombie."""
        path = Path(self.settings.state_dir) / self.settings.app_id / "instance-id"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(uuid.uuid4().hex[:12])
        return f"{self.settings.app_id}-{path.read_text().strip()}"

    def _new_checkpoint(self) -> Checkpoint:
        if self._producer is None or self._consumer is None:
            raise ProcessingError("worker not started")
        return Checkpoint(self._producer, self._consumer, self.settings.changelog_topic, self._calls)

    def _new_producer(self) -> Producer:
        """A transactional producer with this state directory's id, initialised: which
        fences any earlier producer with the id and settles its open transaction. Waits up
        to INIT_DEADLINE_S for the transaction coordinator (a broker restarting)."""
        config = producer_config(self.settings, transactional_id=self._transactional_id())
        deadline = time.monotonic() + INIT_DEADLINE_S
        producer = Producer(config)
        while True:
            try:
                self._calls.run(
                    "init transactions",
                    partial(producer.init_transactions, TXN_CALL_TIMEOUT_S),
                    TXN_CALL_TIMEOUT_S,
                )
                return producer
            except KafkaException as exc:
                # A timeout is resumed by calling again on the same producer (librdkafka:
                # "retry call to resume"); a second producer would go on initialising in the
                # background and fence the first once the broker answers.
                error: KafkaError = exc.args[0]
                if error.fatal() or time.monotonic() >= deadline:
                    raise ProcessingError(f"the transactional producer cannot start: {error.str()}") from exc
                reason = error.str()
            except TransactionUnresolved as exc:
                if time.monotonic() >= deadline:
                    raise ProcessingError(f"the transactional producer cannot start: {exc}") from exc
                self._retire(producer)  # hung in init: only a new one can go on
                producer = Producer(config)
                reason = str(exc)
            _log.warning("waiting for the transaction coordinator", extra={"error": reason})
            time.sleep(1.0)

    def _retire(self, producer: Producer) -> None:
        """Keep a lost producer referenced for a while rather than destroy it here, in the
        loop: librdkafka's destroy may wait on what it still has in flight."""
        self._retired = [*self._retired[-7:], producer]

    def _renew(self, tasks: list[Task], outcome: CheckpointError) -> None:
        """The producer could not settle the batch (TransactionUnresolved, ProducerFenced):
        replace it, and revive every task from what was committed (module docstring)."""
        now = time.monotonic()
        if isinstance(outcome, ProducerFenced):
            self._fences = [t for t in self._fences if now - t < FENCE_WINDOW_S] + [now]
            if len(self._fences) > MAX_FENCES:
                raise outcome
        _log.warning("renewing the transactional producer", extra={"reason": str(outcome)})
        self.observer.on_abort(str(outcome))
        if self._producer is not None:
            self._retire(self._producer)
        self._producer = None
        self._producer = self._new_producer()
        # Dead letters go through the new producer too (task emitters are made per batch).
        self._dead_letters = DeadLetters(
            self._producer, self.settings.topic("dead-letter"), self._dead_letter, self.observer
        )
        self._checkpoint = self._new_checkpoint()
        for task in tasks:
            task.drop_txns()
        # Every task, not only the batch's: one may hold records taken for the batch that
        # failed before it joined, and all restart from what was committed (Kafka Streams
        # closes its tasks dirty and revives them when it re-creates its producer).
        revived = list(self.tasks.tasks.values())
        if self._consumer is not None:
            self.tasks.revive(self._consumer, revived)
        _log.warning("transactional producer renewed", extra={"tasks": len(revived)})

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group; on_revoke closes the tasks
            except (KafkaException, RuntimeError) as exc:
                _log.warning("consumer close failed", extra={"error": str(exc)})
        self.tasks.close()
        if self._producer is not None:
            try:
                flush(self._producer, 5)
            except KafkaException as exc:  # a fatal producer: the error that stopped us says why
                _log.warning("producer flush on close failed", extra={"error": str(exc)})
        self._calls.close()
        self._retired.clear()

    # ------------------------------------------------------------------ the loop

    def _tick(self) -> None:
        """One round of the loop; a producer lost anywhere in it is renewed (module docstring)."""
        try:
            self._round()
        except (TransactionUnresolved, ProducerFenced) as exc:
            self._renew_after(exc)
        except KafkaException as exc:
            # A produce or begin_transaction on a producer that failed fatally in the
            # background (a fence met by its delivery): the batch cannot go on.
            error: KafkaError = exc.args[0]
            if error.code() not in (KafkaError._FATAL, KafkaError._FENCED):
                raise
            outcome: CheckpointError = (
                ProducerFenced(f"fatal producer error: {error.str()}")
                if error.code() == KafkaError._FENCED or "fenced" in error.str().lower()
                else TransactionUnresolved(f"fatal producer error: {error.str()}")
            )
            self._renew_after(outcome)

    def _renew_after(self, outcome: CheckpointError) -> None:
        """Renew the producer for whatever batch is open (its transaction is lost with it)."""
        checkpoint = self._checkpoint
        tasks = list(checkpoint.tasks.values()) if checkpoint is not None else []
        self._renew(tasks, outcome)

    def _round(self) -> None:
        consumer, alignment = self._consumer, self._alignment
        if consumer is None or alignment is None:
            raise ProcessingError("worker not started")
        if self.tasks.standby is not None:
            self._keep_standbys(consumer)
        restoring = self.tasks.restoring
        if restoring != self._restoring:
            self._restoring = restoring
            self.observer.on_restoring(restoring)
        if restoring and self.tasks.restore(consumer, timeout_s=0.05) and self._punctuates:
            self._punctuate_at = 0.0  # a task that became ready punctuates at once
        if self._before_batch is not None:
            self._before_batch()
        messages = consume_available(consumer, self.settings.poll_batch, self._poll_wait(restoring))
        alignment.polled(len(messages), self.settings.poll_batch)
        if messages:
            self._buffer(messages)
        self._drain()
        if self._drained_gap_s is not None:
            self._drained = len(messages) < self.settings.poll_batch and not any(
                task.pending for task in self.tasks.tasks.values() if task.ready
            )
        self.tasks.throttle(consumer, self.settings.buffered_records_per_partition)
        if time.monotonic() >= self._punctuate_at:
            self._punctuate()
        checkpoint = self._checkpoint
        if checkpoint is not None and checkpoint.in_transaction:
            if time.monotonic() >= self._commit_at(checkpoint):
                self._commit()
        self._watch_progress()

    def _commit_at(self, checkpoint: Checkpoint) -> float:
        """When the open batch is due (monotonic s): `commit_interval_ms` after it began, at
        once with `commit_every` records, and, once the input is drained, the profile's gap
        after the previous commit ended (config.py `commit_min_gap_ms`)."""
        settings = self.settings
        if checkpoint.records >= settings.commit_every:
            return 0.0
        due = checkpoint.started + settings.commit_interval_ms / 1000
        if self._drained and self._drained_gap_s is not None:
            due = min(due, self._committed_at + self._drained_gap_s)
        return due

    def _watch_progress(self) -> None:
        """Say, once every STUCK_AFTER_S, why the worker has records waiting and commits nothing.

        A worker with input buffered, a partition paused or a store restoring should commit
        within seconds; one that does not for STUCK_AFTER_S logs a warning with what each
        task waits on, so that a stall can be told from its log (it goes on working).
        """
        now = time.monotonic()
        tasks = self.tasks
        waiting = [task for task in tasks.tasks.values() if task.pending or not task.ready]
        if not waiting and not tasks.throttled:
            self._progress_at = now
            return
        if now - self._progress_at < STUCK_AFTER_S or now - self._stuck_said_at < STUCK_AFTER_S:
            return
        self._stuck_said_at = now
        _log.warning(
            "records wait and nothing committed",
            extra={
                "seconds": round(now - self._progress_at, 1),
                "tasks": {
                    f"{task.stage.name}:{task.partition}": {
                        "pending": len(task.pending),
                        "restoring": task.restoring,
                        "waiting_s": None if task.idle_since is None else round(now - task.idle_since, 1),
                        "redo": task.redo_until is not None,
                    }
                    for task in waiting[:16]
                },
                "paused": sorted(f"{t}[{p}]" for t, p in tasks.throttled)[:16],
                "in_transaction": self._checkpoint is not None and self._checkpoint.in_transaction,
            },
        )

    def _poll_wait(self, restoring: bool) -> float:
        """How long a poll with nothing buffered may wait for a record: 0.1 s, but never past
        the moment the open batch is due to commit. Waiting the whole 0.1 s held a batch's
        outputs back until the next record arrived or the wait ran out, on every stage."""
        if restoring:
            return 0.0
        checkpoint = self._checkpoint
        if checkpoint is None or not checkpoint.in_transaction:
            return 0.1
        return min(0.1, max(0.0, self._commit_at(checkpoint) - time.monotonic()))

    def _keep_standbys(self, consumer: Consumer) -> None:
        """Place the warm copies when the group changed (standby.py), then feed them."""
        standby = self.tasks.standby
        if standby is None:
            return
        now = time.monotonic()
        if now >= standby.due and self._admin is not None:
            try:
                view = describe_group(self._admin, self.settings.app_id, timeout_s=5.0, attempts=1)
                if view.stable and not view.members and consumer.assignment():
                    # The embedded broker answers DescribeGroups with no members at all: no
                    # ring to place copies on (docs/architecture.md, Standby replicas).
                    _log.warning("the broker lists no group members: standby replicas are off")
                    standby.due = math.inf
                    return
                settled = self.tasks.place_standbys(
                    view, consumer.memberid() or "", assignment_of(consumer.assignment())
                )
            except (StreamallocError, KafkaException) as exc:
                _log.info("standby placement deferred", extra={"error": str(exc)})
                settled = False
            # Settled: look again now and then (a rebalance asks at once); else soon.
            standby.due = now + (30.0 if settled else 0.5)
        standby.step()

    def _buffer(self, messages: list[Message]) -> None:
        """Decode polled messages into their task's pending records (failures included, in order)."""
        task_of = self.tasks.task_of
        for msg in consumed(messages):
            if msg.error() is not None:
                self._on_message_error(msg)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            task = task_of.get((topic, partition))
            if task is None:
                continue  # revoked between fetch and now; the next owner processes it
            key, raw = msg.key(), msg.value()
            try:
                value, failed, category = task.stage.decode(topic, key, raw), None, None
            except StreamallocError as exc:
                # The record's own fields say where it came from; the reason says what is wrong.
                value, failed = None, getattr(exc, "reason", None) or str(exc)
                category = failure_category(exc)
            batch = batch_of(msg.headers()) if task.reads_batches else None
            task.pending.append(
                Record(topic, partition, offset, key, value, msg.timestamp()[1], raw, failed, batch, category)
            )

    def _drain(self) -> None:
        """Process the pending records of every task that is ready and aligned."""
        alignment = self._alignment
        if alignment is None:
            raise ProcessingError("worker not started")
        now = time.monotonic()
        for task in self.tasks.tasks.values():
            if not task.pending or not task.ready:
                continue
            if task.redo_until is not None:
                self._drain_in_parts(task, alignment, now)
                return  # it committed, or aborted and rewound: the other tasks wait a tick
            records = alignment.take(task, now) if len(task.positions) > 1 else task.take_pending()
            if not records:
                continue
            try:
                self._process(task, records)
            except RecordTooLarge as exc:
                self._abort(exc.reason, too_large=exc, culprits=[task])
                return
            except TransactionMustAbort:
                self._commit_doomed(task)
                return

    def _process(self, task: Task, records: list[Record]) -> None:
        """Process `records` of `task` into the open batch (opening it if needed)."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            raise ProcessingError("worker not started")
        checkpoint.begin()
        positions = task.positions
        emit = task.emit if task.emit is not None else self._start_batch(task)
        if len(positions) > 1:
            for record in records:
                positions[(record.topic, record.partition)] = record.offset + 1
        else:
            last = records[-1]
            positions[(last.topic, last.partition)] = last.offset + 1
        task.batch_records += len(records)
        good = [record for record in records if record.failed is None]
        if len(good) != len(records):
            for record in records:
                if record.failed is not None:
                    self._send_dead_letter(record, record.failed, record.failed_category or DECODE)
        started = time.perf_counter()
        if good:
            task.stage.process(PartitionContext(task.partition, task.open_txns(), emit), good)
        checkpoint.touch(task, len(records))
        self.observer.on_batch(task.stage.name, len(good), time.perf_counter() - started)

    def _punctuate(self) -> None:
        """Run the due punctuations of ready tasks, each joining the open batch (stage.py)."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            raise ProcessingError("worker not started")
        opened_here = not checkpoint.in_transaction
        now, now_ms = time.monotonic(), time.time_ns() // 1_000_000
        next_at = math.inf
        for task in self.tasks.tasks.values():
            if task.punctuation_due(now):
                # Before the stage can emit; local in librdkafka until the first produce.
                checkpoint.begin()
                emit = task.emit if task.emit is not None else self._start_batch(task)
                try:
                    worked = task.stage.punctuate(
                        PartitionContext(task.partition, task.open_txns(), emit), now_ms
                    )
                except RecordTooLarge as exc:
                    # No input record to blame: drop the batch; the punctuation runs again
                    # at its next interval (a stage that keeps doing this has a bug).
                    _log.error(
                        "punctuation output too large", extra={"stage": task.stage.name, "error": exc.reason}
                    )
                    self._abort(exc.reason, too_large=None, culprits=[task])
                    return
                except TransactionMustAbort:
                    self._commit_doomed(task)
                    return
                if worked:
                    # No input consumed: the batch's range for this task stays empty, its
                    # offsets are re-sent unchanged, its store writes go to the changelog.
                    checkpoint.touch(task, 0)
                elif not checkpoint.touched(task):
                    task.drop_txns()  # nothing to keep; the task's next batch starts afresh
            if task.ready and task.stage.punctuate_interval_ms is not None:
                next_at = min(next_at, task.punctuate_at)
        self._punctuate_at = next_at
        if opened_here and checkpoint.in_transaction and not checkpoint.touched_any:
            # Nothing to commit: end the transaction here rather than let `due` commit an
            # empty one on age. With nothing produced both are local in librdkafka (~0.1 ms,
            # no request to the broker), but an empty commit would count as a commit in the
            # metrics every interval of an idle worker, and would keep a transaction open
            # across ticks for no work. Only a transaction opened by this round is ended:
            # one opened by `_drain` holds input work and commits as usual.
            self._checkpoint = self._new_checkpoint()
            self._abort_checkpoint(checkpoint, [])

    def _start_batch(self, task: Task) -> Emit:
        """Note where the task's batch starts, and tag what it produces with it (lineage.py)
        where the broker profile asks for it (`Settings.tags_outputs`)."""
        start = task.batch_start = dict(task.positions)
        if task.opened is None:
            task.opened = start
        task.batch_seq += 1
        if not self.settings.tags_outputs:
            task.emit = self._emit
            return self._emit
        header = encode_batch(
            f"{task.stage.name}:{task.partition}",
            task.incarnation,
            task.opened,
            start,
            task.kept,
            task.batch_seq,
        )
        tag: Headers = [(BATCH_HEADER, header)]
        producer = self._producer
        if producer is None:
            raise ProcessingError("worker not started")

        def tagged(
            topic: str,
            key: bytes | str | None,
            value: bytes | None,
            partition: int | None = None,
            headers: Headers | None = None,
        ) -> None:
            produce(producer, topic, value, key, partition, tag if headers is None else [*headers, *tag])

        task.emit = tagged
        return tagged

    def _emit(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Produce one output inside the open transaction, untagged (outside a task's batch)."""
        if self._producer is None:
            raise ProcessingError("worker not started")
        produce(self._producer, topic, value, key, partition, headers)

    def _send_dead_letter(self, record: Record, reason: str, category: str) -> None:
        if self._dead_letters is None:
            raise ProcessingError("worker not started")
        self._dead_letters.send(record, reason, category)

    def _on_message_error(self, msg: ConsumedMessage) -> None:
        error = msg.error()
        if error is None:
            return
        if error.code() == KafkaError._PARTITION_EOF:
            task = self.tasks.task_of.get((msg.topic(), msg.partition()))
            if task is not None:
                task.at_end[(msg.topic(), msg.partition())] = msg.offset()
            return
        if error.fatal():
            raise ProcessingError(f"fatal consumer error: {error}")
        if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            # A pattern (orders.<channel>) that matches no topic yet: expected, not a fault.
            _log.debug("subscribed topic not available", extra={"error": str(error)})
            return
        _log.warning("consumer error", extra={"error": str(error)})

    # ------------------------------------------------------------------ commit and failure

    def _commit(self) -> None:
        """Commit the open batch once; an aborted batch is rewound (module docstring)."""
        checkpoint = self._checkpoint
        if checkpoint is None or checkpoint.empty:
            return
        started = time.monotonic()
        records = checkpoint.records
        tasks = list(checkpoint.tasks.values())
        try:
            try:
                for task in tasks:
                    emit = task.emit or self._emit
                    task.stage.before_commit(PartitionContext(task.partition, task.open_txns(), emit))
            except TransactionMustAbort:
                pass  # the commit below raises why the transaction must abort
            changelog = checkpoint.commit()
        except RecordTooLarge as exc:  # from a stage's before_commit
            self._checkpoint = self._new_checkpoint()
            if self._abort_checkpoint(checkpoint, tasks):
                self._aborted(tasks, CheckpointAborted(exc.reason, too_large=exc))
            return
        except CheckpointAborted as exc:
            self._checkpoint = self._new_checkpoint()
            self._aborted(tasks, exc)
            return
        except (TransactionUnresolved, ProducerFenced) as exc:
            self._renew(tasks, exc)
            return
        self._checkpoint = self._new_checkpoint()
        self._progress_at = self._committed_at = time.monotonic()
        self.observer.on_commit(records, changelog, time.monotonic() - started)
        for task in tasks:
            if task.redo_until is not None:
                task.part_committed()

    def _abort(self, reason: str, *, too_large: RecordTooLarge | None, culprits: list[Task]) -> None:
        """Abort the open batch after a failure while processing it, and rewind its tasks."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            return
        tasks = list(checkpoint.tasks.values())
        tasks += [task for task in culprits if task not in tasks]
        self._checkpoint = self._new_checkpoint()
        aborted = self._abort_checkpoint(checkpoint, tasks)
        for task in culprits:
            task.drop_txns()  # it failed before joining the batch: the abort did not see it
        if not aborted:
            return  # renewed: the tasks restart from what was committed
        if too_large is not None:
            # Only the culprits: the others did nothing wrong and are simply redone.
            for task in culprits:
                task.redo_in_parts(too_large.reason)
        self._aborted(tasks, CheckpointAborted(reason))

    def _abort_checkpoint(self, checkpoint: Checkpoint, tasks: list[Task]) -> bool:
        """Abort `checkpoint`; False if its producer could not and was renewed instead."""
        try:
            checkpoint.abort()
        except (TransactionUnresolved, ProducerFenced) as exc:
            self._renew(tasks, exc)
            return False
        return True

    def _aborted(self, tasks: list[Task], outcome: CheckpointAborted) -> None:
        """React to an aborted batch: rewind its tasks, to redo it in parts if an output was too large."""
        _log.warning("transaction aborted; rewinding", extra={"reason": outcome.reason})
        self.observer.on_abort(outcome.reason)
        for task in tasks:
            if outcome.too_large is not None:
                task.redo_in_parts(outcome.too_large.reason)
            task.trying = None  # a part that aborted for another reason is tried again as it was
        if self._consumer is not None:
            self.tasks.rewind(self._consumer, tasks)

    def _commit_doomed(self, task: Task) -> None:
        """A produce was refused (an earlier output of the transaction failed delivery):
        the commit aborts the batch, `task` with it, and says why."""
        if self._checkpoint is not None:
            self._checkpoint.touch(task, 0)
        self._commit()

    def _drain_in_parts(self, task: Task, alignment: Alignment, now: float) -> None:
        """Redo a task's failed batch one part per transaction (Task.redo_in_parts)."""
        self._commit()  # the part's transaction holds this task alone
        if task.redo_until is None or not task.pending:
            return  # that commit aborted and rewound everything
        records = alignment.take(task, now) if len(task.positions) > 1 else task.take_pending()
        if not records:
            return
        part, reason = task.next_part(records)
        if reason is not None:
            self._dead_letter_alone(task, part[0], reason)
            return
        try:
            self._process(task, part)
        except RecordTooLarge as exc:
            self._abort(exc.reason, too_large=exc, culprits=[task])
            return
        except TransactionMustAbort:
            self._commit_doomed(task)
            return
        self._commit()

    def _dead_letter_alone(self, task: Task, record: Record, reason: str) -> None:
        """Send a record whose outputs are too large to produce (the one culprit a redo in
        parts found) to the dead-letter topic, in its own transaction."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            raise ProcessingError("worker not started")
        checkpoint.begin()
        if task.emit is None:
            self._start_batch(task)
        task.positions[(record.topic, record.partition)] = record.offset + 1
        self._send_dead_letter(record, reason, TOO_LARGE)
        checkpoint.touch(task, 1)
        self._commit()

    # ------------------------------------------------------------------ rebalancing

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.tasks.handle_assignment(consumer, partitions)
        if self._punctuates:
            self._punctuate_at = 0.0  # a task without stores is ready at once

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we have while we still own it; if it aborts, the next owner redoes it.
        # The stores stay open until the assignment, which most often gives them back.
        self._commit()
        self.tasks.handle_revocation(partitions, member=consumer.memberid())

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else owns these now: nothing of ours may be committed for them.
        checkpoint = self._checkpoint
        if checkpoint is None:
            return
        aborted = list(checkpoint.tasks.values())
        open_batch = checkpoint.in_transaction
        self._checkpoint = self._new_checkpoint()
        self.tasks.handle_revocation(partitions)
        if not self._abort_checkpoint(checkpoint, aborted):
            return  # renewed (and counted as an abort): what is still ours restarts from what was committed
        if open_batch:
            _log.warning("partitions lost; the open batch aborted", extra={"partitions": len(partitions)})
            self.observer.on_abort("partitions lost")
        # What the aborted batch did for partitions still ours is redone from their offsets.
        kept = [task for task in aborted if task.positions]
        self.tasks.rewind(consumer, kept)
