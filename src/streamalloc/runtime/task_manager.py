"""The worker's tasks: created on assignment, restored, rewound, closed on revocation.

Kafka Streams' TaskManager (`handleAssignment`, `handleRevocation`, `handleLostAll`): a
task is one stage on one partition number, with its store partitions and the positions of
its input partitions. Assignment opens a task per (stage, partition) and starts restoring
its stores; its input partitions stay paused until the restore is done. Revocation and
loss close tasks; an aborted batch rewinds them to the committed offsets. The loop that
processes them is the worker's (worker.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamalloc.config import Settings
from streamalloc.errors import ProcessingError
from streamalloc.runtime.changelog import RestoreJob, Restorer
from streamalloc.runtime.members import GroupView
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import Stage
from streamalloc.runtime.standby import StandbyReplicas, standby_partitions
from streamalloc.runtime.state import Store, StorePartition
from streamalloc.runtime.task import Task

_log = logging.getLogger("streamalloc.runtime.worker")

StoreFactory = Callable[[str], Store]
TopicPartitionKey = tuple[str, int]
#: How long reading the group's committed offsets may keep timing out (a broker restarting)
#: before the worker gives up.
COMMITTED_DEADLINE_S = 120.0


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], deadline_s: float = COMMITTED_DEADLINE_S
) -> list[TopicPartition]:
    """The group's committed offsets of `partitions`, asked again while the broker does not
    answer (a timeout, the coordinator loading after a restart) for up to `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return list(consumer.committed(partitions, timeout=10))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or time.monotonic() >= deadline:
                raise ProcessingError(f"cannot read the group's committed offsets: {error.str()}") from exc
            _log.warning("committed offsets not read; asking again", extra={"error": error.str()})
            time.sleep(0.5)


class TaskManager:
    """Owns the tasks of one worker and the stores they open."""

    def __init__(
        self, settings: Settings, stages: Sequence[Stage], store_factory: StoreFactory, observer: Observer
    ) -> None:
        self.settings = settings
        self.stages = list(stages)
        self.observer = observer
        #: (stage name, partition) -> task
        self.tasks: dict[tuple[str, int], Task] = {}
        #: input (topic, partition) -> the task that consumes it
        self.task_of: dict[TopicPartitionKey, Task] = {}
        self._stores: dict[str, Store] = {}
        self._store_stage: dict[str, Stage] = {}
        for stage in self.stages:
            for name in stage.stores:
                self._stores[name] = store_factory(name)
                self._store_stage[name] = stage
        self._routes: dict[str, Stage | None] = {}
        self._restorer: Restorer | None = None
        self.standby: StandbyReplicas | None = None
        #: input partitions paused because their task buffers too many of their records
        self.throttled: set[TopicPartitionKey] = set()
        #: (store name, partition) -> the open store of a task closed by a revocation, kept
        #: until the next assignment says whether the partition is still this worker's
        #: (`handle_revocation`)
        self._kept: dict[tuple[str, int], StorePartition] = {}
        self._kept_for: str | None = None  # the group member id they were kept under

    @property
    def stores(self) -> Mapping[str, Store]:
        return MappingProxyType(self._stores)

    def start(self, restorer: Restorer, standby: StandbyReplicas | None = None) -> None:
        self._restorer = restorer
        self.standby = standby

    def place_standbys(self, view: GroupView, me: str, assigned: frozenset[TopicPartitionKey]) -> bool:
        """Keep the copies the ring gives this worker (standby.py), none of what it owns.

        False, changing nothing, while the group's description is not the settled outcome
        of this worker's last assignment (a rebalance in flight): the caller asks again.
        """
        standby = self.standby
        if standby is None:
            return True
        mine = next((m for m in view.members if m.member_id == me), None)
        if not view.stable or mine is None or mine.assignment != assigned:
            return False
        wanted = standby_partitions(view, me, self.settings.num_standby_replicas, self._stores_of)
        owned = {(name, task.partition) for task in self.tasks.values() for name in task.stage.stores}
        standby.keep(wanted - owned)
        return True

    def _stores_of(self, topic: str) -> Sequence[str]:
        stage = self._route(topic)
        return stage.stores if stage is not None else ()

    def subscriptions(self) -> list[str]:
        """The topics (and `^regex` patterns) the worker's consumer subscribes to."""
        topics: list[str] = []
        for stage in self.stages:
            topics += stage.topics()
            pattern = stage.topic_pattern()
            if pattern is not None:
                topics.append("^" + pattern.pattern.lstrip("^"))
        return topics

    @property
    def ready(self) -> bool:
        """Owns input partitions and every one of them has finished restoring."""
        tasks = list(self.tasks.values())
        return bool(tasks) and all(task.ready for task in tasks)

    @property
    def restoring(self) -> bool:
        return self._restorer is not None and self._restorer.active

    def throttle(self, consumer: Consumer, limit: int) -> None:
        """Pause an input partition while its task buffers more than `limit` of its records;
        resume it once they are down to half (Kafka Streams' buffered.records.per.partition).

        Without it a task that waits for a lagging input (alignment.py) buffers every record
        the consumer hands it, and the consumer's queue fills with one topic's backlog in
        front of the input the task waits for. A paused partition's position stays after the
        last record buffered, so nothing is skipped when it resumes.
        """
        over: set[TopicPartitionKey] = set()
        keep: set[TopicPartitionKey] = set()
        half = limit // 2
        for task in self.tasks.values():
            if len(task.pending) <= half:
                continue  # none of its partitions can be over half
            counts = Counter((record.topic, record.partition) for record in task.pending)
            over.update(tp for tp, n in counts.items() if n > limit)
            keep.update(tp for tp, n in counts.items() if n > half)
        pause = over - self.throttled
        resume = {tp for tp in self.throttled - keep if tp in self.task_of and self.task_of[tp].ready}
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
            self.throttled |= pause
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume])
            self.throttled -= resume

    def restore(self, consumer: Consumer, timeout_s: float) -> bool:
        """Restore for up to `timeout_s`; True when a task became ready (and was resumed)."""
        if self._restorer is None:
            return False
        became_ready = False
        for job in self._restorer.step(timeout_s=timeout_s):
            stage = self._store_stage[job.partition.store_name]
            task = self.tasks.get((stage.name, job.partition.partition))
            if task is None:
                continue
            task.restoring -= 1
            task.kept += job.kept
            if task.ready:
                consumer.resume([TopicPartition(t, p) for (t, p) in task.positions])
                became_ready = True
        return became_ready

    # ------------------------------------------------------------------ assignment

    def handle_assignment(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Open a task per (stage, partition) at the committed offsets; pause what restores.

        A store kept from the revocation before (`handle_revocation`) goes to its partition's
        task again as it is, with no restore; one whose partition went elsewhere is closed."""
        if consumer.memberid() != self._kept_for:
            self.drop_kept()  # the member left the group in between: others may have written
        consumer.assign(partitions)
        self._open_tasks(consumer, partitions)
        self.drop_kept()
        _log.info("assigned", extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in partitions]})

    def revive(self, consumer: Consumer, tasks: Iterable[Task]) -> None:
        """Close `tasks` without applying their batch, and open them again from what was
        committed: their stores restore from the changelog and their inputs restart at the
        committed offsets (Kafka Streams' closeDirtyAndRevive). For a batch whose outcome
        this worker cannot know (its producer was lost mid-commit)."""
        owned = [task for task in tasks if self.tasks.get((task.stage.name, task.partition)) is task]
        partitions = [TopicPartition(t, p) for task in owned for (t, p) in task.positions]
        for task in owned:
            self._close(task)
        for tp in partitions:
            self.task_of.pop((tp.topic, tp.partition), None)
            self.throttled.discard((tp.topic, tp.partition))
        self._open_tasks(consumer, partitions)
        for tp in partitions:
            revived = self.task_of.get((tp.topic, tp.partition))
            if revived is not None:
                consumer.seek(
                    TopicPartition(tp.topic, tp.partition, revived.positions[(tp.topic, tp.partition)])
                )
        _log.info("revived", extra={"partitions": [f"{tp.topic}[{tp.partition}]" for tp in partitions]})

    def _open_tasks(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = committed_offsets(consumer, partitions) if partitions else []
        new_tasks: list[Task] = []
        for tp in committed:
            stage = self._route(tp.topic)
            if stage is None:
                continue
            task = self.tasks.get((stage.name, tp.partition))
            if task is None:
                task = self.tasks[(stage.name, tp.partition)] = Task(stage, tp.partition)
                new_tasks.append(task)
            task.positions[(tp.topic, tp.partition)] = max(tp.offset, 0)
            self.task_of[(tp.topic, tp.partition)] = task
        for task in new_tasks:
            self._open(task)
        if self.standby is not None:
            self.standby.due = 0.0  # the group changed: place the copies again
        restoring = [
            tp
            for tp in partitions
            if (tp.topic, tp.partition) in self.task_of and not self.task_of[(tp.topic, tp.partition)].ready
        ]
        if restoring:
            consumer.pause(restoring)
        self.observer.on_assignment(len(self.task_of))

    def handle_revocation(self, partitions: list[TopicPartition], *, member: str | None = None) -> None:
        """Close the tasks of revoked (or lost) partitions; the caller committed or aborted first.

        With `member`, this worker's group member id (a revocation the worker committed
        before, not a loss): the stores of a closed task that had finished restoring stay
        open until the next assignment, which most often gives the partition back (an eager
        rebalance takes every partition from every member first). They hold exactly what
        was committed (the stores change only after a commit, checkpoint.py). If the next
        assignment comes to the same member id, no other member can have owned the
        partition in between (a member dropped from a generation rejoins with a new id), so
        the task opens again without reading its changelog (Kafka Streams suspends and
        resumes its tasks so). Besides the time, that spares a restore that could wait on a
        transaction still open on the changelog (the embedded broker keeps some open until
        their id is initialised again, docs/brokers.md)."""
        for tp in partitions:
            self.throttled.discard((tp.topic, tp.partition))
            task = self.task_of.pop((tp.topic, tp.partition), None)
            if task is None:
                continue
            task.positions.pop((tp.topic, tp.partition), None)
            if not task.positions:
                self._close(task, keep_stores=member is not None and task.ready)
        if member is not None:
            self._kept_for = member
        self.observer.on_assignment(len(self.task_of))

    def drop_kept(self) -> None:
        """Close the stores kept from a revocation that no task took back."""
        closed: set[tuple[str, int]] = set()
        for name, partition in list(self._kept):
            del self._kept[(name, partition)]
            self._stores[name].close_partition(partition)
            closed.add((self._store_stage[name].name, partition))
        for stage, partition in closed:
            self.observer.on_task_closed(stage, partition)

    def rewind(self, consumer: Consumer, aborted: Iterable[Task]) -> None:
        """Put the tasks of an aborted batch back at their committed offsets, and every task
        that holds records it has not processed yet back where its processing stands:
        their buffered records are dropped and fetched again."""
        aborted = list(aborted)
        for task in self.tasks.values():
            if task.pending and task not in aborted:
                # Its positions are committed (it is not in the aborted batch) and its
                # buffered records lie past them: seek, or dropping them would skip them.
                held = {(r.topic, r.partition) for r in task.pending}
                for t, p in held:
                    consumer.seek(TopicPartition(t, p, task.positions[(t, p)]))
            task.pending.clear()
            task.idle_since = None
        for task in aborted:
            task.batch_records = 0
        tps = [TopicPartition(t, p) for task in aborted for (t, p) in task.positions]
        if not tps:
            return
        for tp in committed_offsets(consumer, tps):
            offset = tp.offset if tp.offset >= 0 else 0
            owner = self.task_of.get((tp.topic, tp.partition))
            if owner is not None:
                owner.positions[(tp.topic, tp.partition)] = offset
                consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def close(self) -> None:
        """Close every task and store (shutdown)."""
        for task in list(self.tasks.values()):
            self._close(task)
        self.drop_kept()
        if self.standby is not None:
            self.standby.close()
        for store in self._stores.values():
            store.close()

    # ------------------------------------------------------------------ one task

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

    def _open(self, task: Task) -> None:
        restorer = self._restorer
        if restorer is None:
            raise ProcessingError("worker not started")
        committed = {f"{t}:{p}": o for (t, p), o in task.positions.items()}
        for name in task.stage.stores:
            kept = self._kept.pop((name, task.partition), None)
            if kept is not None:
                task.stores[name] = kept  # what was committed, as it was (handle_revocation)
                _log.info("store kept", extra={"store": name, "partition": task.partition})
                continue
            if self.standby is not None:
                # A warm copy becomes the task's store: closed here (its checkpoint written),
                # reopened below, restored from that checkpoint, so only the tail is read.
                self.standby.release(name, task.partition)
            partition = self._stores[name].partition(task.partition)
            if partition.needs_full_restore:
                partition.wipe()  # no checkpoint: local data cannot be trusted
            task.stores[name] = partition
            task.restoring += 1
            restorer.start(RestoreJob(partition, self.settings.changelog_topic(name), committed))

    def _close(self, task: Task, *, keep_stores: bool = False) -> None:
        self.tasks.pop((task.stage.name, task.partition), None)
        if not keep_stores or not task.stores:
            # (with its stores kept, what was reported about it still holds: `drop_kept`
            # says it once they go)
            self.observer.on_task_closed(task.stage.name, task.partition)
        task.drop_txns()
        for name, store_partition in task.stores.items():
            if self._restorer is not None:
                self._restorer.cancel(self.settings.changelog_topic(name), task.partition)
            if keep_stores:
                self._kept[(name, task.partition)] = store_partition
            else:
                self._stores[name].close_partition(task.partition)
        task.stores.clear()
