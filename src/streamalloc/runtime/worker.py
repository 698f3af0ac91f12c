"""The worker: one consumer-group member with one transactional producer, running stages.

The loop: restore what is restoring, poll a batch, route it by topic to its stage, run
the punctuations that are due, and commit every `commit_every` records or
`commit_interval_ms`, whichever comes first.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamalloc.config import Settings
from streamalloc.errors import ProcessingError, StreamallocError
from streamalloc.kafka import consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import ConsumedMessage, Headers, consumed
from streamalloc.runtime.changelog import RestoreJob, Restorer
from streamalloc.runtime.checkpoint import Checkpoint
from streamalloc.runtime.lineage import BATCH_HEADER, encode_batch
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import PartitionContext, Record, Stage
from streamalloc.runtime.state import Store
from streamalloc.runtime.task import Task

_log = logging.getLogger("streamalloc.runtime.worker")

#: Builds the dead-letter record value from (message, reason).
DeadLetterEncoder = Callable[[Record, str], bytes]
StoreFactory = Callable[[str], Store]


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
        self._store_factory = store_factory
        self._dead_letter = dead_letter
        self._dead_letter_topic = settings.topic("dead-letter")
        self._before_batch = before_batch
        self._stopping = False
        self._polls = 0
        self._stores: dict[str, Store] = {}
        self._store_stage: dict[str, Stage] = {}
        for stage in self.stages:
            for name in stage.stores:
                self._stores[name] = store_factory(name)
                self._store_stage[name] = stage
        self._routes: dict[str, Stage | None] = {}
        self._tasks: dict[tuple[str, int], Task] = {}  # (stage name, partition) -> task
        self._task_of: dict[tuple[str, int], Task] = {}  # input (topic, partition) -> task
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._restorer: Restorer | None = None
        self._checkpoint: Checkpoint | None = None
        # The earliest punctuation due of any ready task (monotonic s): one comparison a tick.
        self._punctuates = any(stage.punctuate_interval_ms is not None for stage in self.stages)
        self._punctuate_at = math.inf

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Owns input partitions and every one of them has finished restoring."""
        tasks = list(self._tasks.values())
        return bool(tasks) and all(task.ready for task in tasks)

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit, leave the group and return (signal-safe)."""
        self._stopping = True

    def run(self) -> None:
        """Process until `stop()`; raises ProcessingError on a fatal error."""
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
                except KafkaException as exc:
                    _log.warning("abort after failure failed", extra={"error": str(exc)})
            raise
        finally:
            self._close()

    def _start(self) -> None:
        settings = self.settings
        self._producer = Producer(producer_config(settings, transactional_id=self._transactional_id()))
        self._producer.init_transactions(30)
        self._consumer = Consumer(consumer_config(settings, group_id=settings.app_id))
        self._restorer = Restorer(consumer_config(settings), self.observer)
        self._checkpoint = Checkpoint(self._producer, self._consumer, self.settings.changelog_topic)
        topics: list[str] = []
        for stage in self.stages:
            topics += stage.topics()
            pattern = stage.topic_pattern()
            if pattern is not None:
                topics.append("^" + pattern.pattern.lstrip("^"))
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _transactional_id(self) -> str:
        """Stable across restarts of the same state dir, so init_transactions fences our own zombie."""
        path = Path(self.settings.state_dir) / self.settings.app_id / "instance-id"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(uuid.uuid4().hex[:12])
        return f"{self.settings.app_id}-{path.read_text().strip()}"

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group; on_revoke closes the tasks
            except (KafkaException, RuntimeError) as exc:
                _log.warning("consumer close failed", extra={"error": str(exc)})
        if self._restorer is not None:
            self._restorer.close()
        for task in list(self._tasks.values()):
            self._close_task(task)
        for store in self._stores.values():
            store.close()
        if self._producer is not None:
            self._producer.flush(5)

    # ------------------------------------------------------------------ the loop

    def _tick(self) -> None:
        consumer, restorer = self._consumer, self._restorer
        if consumer is None or restorer is None:
            raise ProcessingError("worker not started")
        if restorer.active:
            for job in restorer.step(timeout_s=0.05):
                self._restored(job)
        if self._before_batch is not None:
            self._before_batch()
        messages = consume_available(consumer, self.settings.poll_batch, 0.0 if restorer.active else 0.1)
        self._polls += 1
        if messages:
            self._buffer(messages)
        self._drain()
        if time.monotonic() >= self._punctuate_at:
            self._punctuate()
        checkpoint = self._checkpoint
        if checkpoint is not None and checkpoint.due(
            self.settings.commit_every, self.settings.commit_interval_ms / 1000
        ):
            self._commit()

    def _buffer(self, messages: list[Message]) -> None:
        """Decode polled messages into their task's pending records (failures included, in order)."""
        task_of = self._task_of
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
                value, failed = task.stage.decode(topic, key, raw), None
            except StreamallocError as exc:
                # The record's own fields say where it came from; the reason says what is wrong.
                value, failed = None, getattr(exc, "reason", None) or str(exc)
            task.pending.append(Record(topic, partition, offset, key, value, msg.timestamp()[1], raw, failed))

    def _drain(self) -> None:
        """Process the pending records of every task that is ready and aligned."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            raise ProcessingError("worker not started")
        now = time.monotonic()
        for task in self._tasks.values():
            if not task.pending or not task.ready:
                continue
            multi_input = len(task.positions) > 1
            if multi_input and not self._aligned(task, now):
                continue
            records = task.take_pending(ordered=multi_input)
            checkpoint.begin()
            positions = task.positions
            if task.batch_start is None:
                self._start_batch(task)
            if multi_input:
                for record in records:
                    positions[(record.topic, record.partition)] = record.offset + 1
            else:
                last = records[-1]
                positions[(last.topic, last.partition)] = last.offset + 1
            good = [record for record in records if record.failed is None]
            if len(good) != len(records):
                for record in records:
                    if record.failed is not None:
                        self._to_dead_letter(record, record.failed)
            started = time.perf_counter()
            if good:
                task.stage.process(
                    PartitionContext(task.partition, task.open_txns(), task.emit or self._emit), good
                )
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
        for task in self._tasks.values():
            if task.punctuation_due(now):
                # Before the stage can emit; local in librdkafka until the first produce.
                checkpoint.begin()
                if task.batch_start is None:
                    self._start_batch(task)
                ctx = PartitionContext(task.partition, task.open_txns(), task.emit or self._emit)
                if task.stage.punctuate(ctx, now_ms):
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
            checkpoint.abort()

    def _start_batch(self, task: Task) -> None:
        """Note where the task's batch starts, and tag what it produces with it (lineage.py)."""
        start = task.batch_start = dict(task.positions)
        if task.opened is None:
            task.opened = start
        header = encode_batch(f"{task.stage.name}:{task.partition}", task.incarnation, task.opened, start)
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

    def _aligned(self, task: Task, now: float) -> bool:
        """Whether a task with several inputs may go on (Kafka Streams' max.task.idle.ms).

        Records are processed in timestamp order across the task's partitions; when an input
        partition has nothing buffered and has not answered a fetch yet, the task waits for
        it up to `max_task_idle_ms`, so a receipt that happened before an order is applied
        before it even when its partition is fetched later (as after an assignment).
        Only an unknown watermark means "wait": under read_committed the high watermark
        also counts records of open transactions (our own, for allocation-requests), which
        no fetch can return before they commit.
        """
        consumer = self._consumer
        if consumer is None:
            return True
        buffered = {(r.topic, r.partition) for r in task.pending}
        for topic, partition in task.positions:
            if (topic, partition) in buffered:
                continue
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                high = -1
            if high < 0:
                if task.idle_since is None:
                    task.idle_since, task.idle_polls = now, self._polls
                # A slow tick must not use up the wait alone: at least two more polls too.
                waited = now - task.idle_since >= self.settings.max_task_idle_ms / 1000
                return waited and self._polls - task.idle_polls >= 2
        task.idle_since = None
        return True

    def _emit(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Produce one output inside the open transaction."""
        if self._producer is None:
            raise ProcessingError("worker not started")
        produce(self._producer, topic, value, key, partition, headers)

    def _to_dead_letter(self, record: Record, reason: str) -> None:
        self._emit(self._dead_letter_topic, record.key, self._dead_letter(record, reason))
        self.observer.on_dead_letter(record.topic, reason)
        _log.info(
            "dead letter",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": reason,
            },
        )

    def _on_message_error(self, msg: ConsumedMessage) -> None:
        error = msg.error()
        if error is None:
            return
        if error.code() == KafkaError._PARTITION_EOF:
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
        """Commit the open batch, handling librdkafka's error classes."""
        checkpoint = self._checkpoint
        if checkpoint is None or checkpoint.empty:
            return
        started = time.monotonic()
        records = checkpoint.records
        for task in checkpoint.tasks.values():
            task.stage.before_commit(
                PartitionContext(task.partition, task.open_txns(), task.emit or self._emit)
            )
        for attempt in range(10):
            try:
                changelog = checkpoint.commit()
                self.observer.on_commit(records, changelog, time.monotonic() - started)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    raise ProcessingError(f"fatal producer error (fenced?): {error}") from exc
                if error.txn_requires_abort():
                    self._abort(str(error))
                    return
                if error.retriable() and attempt < 9:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                self._abort(str(error))
                return

    def _abort(self, reason: str) -> None:
        """Abort the transaction, drop the batch from state and rewind to the committed offsets."""
        _log.warning("transaction aborted; rewinding", extra={"reason": reason})
        checkpoint, consumer = self._checkpoint, self._consumer
        if checkpoint is None or consumer is None:
            return
        tasks = list(checkpoint.tasks.values())
        checkpoint.abort()
        for task in self._tasks.values():
            task.pending.clear()  # the consumer is rewound below: they will be fetched again
            task.idle_since = None
        self.observer.on_abort(reason)
        tps = [TopicPartition(t, p) for task in tasks for (t, p) in task.positions]
        if tps:
            for tp in consumer.committed(tps, timeout=10):
                offset = tp.offset if tp.offset >= 0 else 0
                self._task_of[(tp.topic, tp.partition)].positions[(tp.topic, tp.partition)] = offset
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    # ------------------------------------------------------------------ rebalancing

    def _route(self, topic: str) -> Stage | None:
        if topic not in self._routes:
            found = None
            for stage in self.stages:
                pattern = stage.topic_pattern()
                if topic in stage.topics() or (pattern is not None and pattern.fullmatch(topic)):
                    found = stage
                    break
            self._routes[topic] = found
        return self._routes[topic]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        committed = consumer.committed(partitions, timeout=10) if partitions else []
        new_tasks: list[Task] = []
        for tp in committed:
            stage = self._route(tp.topic)
            if stage is None:
                continue
            task = self._tasks.get((stage.name, tp.partition))
            if task is None:
                task = self._tasks[(stage.name, tp.partition)] = Task(stage, tp.partition)
                new_tasks.append(task)
            task.positions[(tp.topic, tp.partition)] = max(tp.offset, 0)
            self._task_of[(tp.topic, tp.partition)] = task
        for task in new_tasks:
            self._open_task(task)
        restoring = [tp for tp in partitions if not self._task_of[(tp.topic, tp.partition)].ready]
        if restoring:
            consumer.pause(restoring)
        if self._punctuates:
            self._punctuate_at = 0.0  # a task without stores is ready at once
        self.observer.on_assignment(len(self._task_of))
        _log.info("assigned", extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in partitions]})

    def _open_task(self, task: Task) -> None:
        restorer = self._restorer
        if restorer is None:
            raise ProcessingError("worker not started")
        committed = {f"{t}:{p}": o for (t, p), o in task.positions.items()}
        for name in task.stage.stores:
            partition = self._stores[name].partition(task.partition)
            if partition.needs_full_restore:
                partition.wipe()  # no checkpoint: local data cannot be trusted
            task.stores[name] = partition
            task.restoring += 1
            restorer.start(RestoreJob(partition, self.settings.changelog_topic(name), committed))

    def _restored(self, job: RestoreJob) -> None:
        consumer = self._consumer
        stage = self._store_stage[job.partition.store_name]
        task = self._tasks.get((stage.name, job.partition.partition))
        if task is None or consumer is None:
            return
        task.restoring -= 1
        if task.ready:
            consumer.resume([TopicPartition(t, p) for (t, p) in task.positions])
            if self._punctuates:
                self._punctuate_at = 0.0  # its first punctuation is due now

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what we have while we still own it; if that fails the next owner redoes it.
        try:
            self._commit()
        except (KafkaException, StreamallocError) as exc:
            _log.warning("commit on revocation failed", extra={"error": str(exc)})
            if self._checkpoint is not None:
                self._checkpoint.abort()
        self._release(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Someone else owns these now: nothing of ours may be committed for them.
        if self._checkpoint is not None:
            self._checkpoint.abort()
        self._release(partitions)

    def _release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            task = self._task_of.pop((tp.topic, tp.partition), None)
            if task is None:
                continue
            task.positions.pop((tp.topic, tp.partition), None)
            if not task.positions:
                self._close_task(task)
        self.observer.on_assignment(len(self._task_of))

    def _close_task(self, task: Task) -> None:
        self._tasks.pop((task.stage.name, task.partition), None)
        if self._checkpoint is not None:
            self._checkpoint.forget([task])
        for name in task.stores:
            if self._restorer is not None:
                self._restorer.cancel(self.settings.changelog_topic(name), task.partition)
            self._stores[name].close_partition(task.partition)
        task.stores.clear()
