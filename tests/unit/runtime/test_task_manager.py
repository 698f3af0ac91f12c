"""The task lifecycle apart from the loop: assignment opens tasks, an abort rewinds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from tests.unit.runtime.worker_fixtures import CHANGELOG, OUT, Cluster, settings

from streamalloc.bench.counting import CountingStage
from streamalloc.runtime.changelog import Restorer
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import Record
from streamalloc.runtime.state import InMemoryStore, PartitionStatus
from streamalloc.runtime.task_manager import TaskManager

TOPIC = "t.two"


class _Closed(Observer):
    def __init__(self) -> None:
        self.closed: list[tuple[str, int]] = []

    def on_task_closed(self, stage: str, partition: int) -> None:
        self.closed.append((stage, partition))


def assigned(cluster: Cluster, tmp_path: Path, observer: Observer | None = None) -> tuple[TaskManager, Any]:
    cluster.broker.create_topic(TOPIC, 2)
    cluster.broker.create_topic(CHANGELOG, 2)
    cluster.broker.committed[("app", TOPIC, 0)] = 3
    cluster.broker.committed[("app", TOPIC, 1)] = 5
    manager = TaskManager(
        settings(tmp_path), [CountingStage(TOPIC, OUT)], InMemoryStore, observer or Observer()
    )
    manager.start(Restorer({"group.id": "restore"}, Observer()))
    consumer = cluster.consumer({"group.id": "app"})
    manager.handle_assignment(consumer, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    return manager, consumer


def test_assignment_opens_a_task_per_partition_at_the_committed_offsets_paused_until_restored(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = assigned(cluster, tmp_path)
    tasks = {task.partition: task for task in manager.tasks.values()}
    assert {p: t.positions for p, t in tasks.items()} == {0: {(TOPIC, 0): 3}, 1: {(TOPIC, 1): 5}}
    assert not manager.ready and manager.restoring
    while manager.restoring:
        manager.restore(consumer, 0.0)
    assert manager.ready


def test_a_rewind_seeks_back_what_a_task_outside_the_aborted_batch_held_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = assigned(cluster, tmp_path)
    tasks = {task.partition: task for task in manager.tasks.values()}
    aborted, holding = tasks[0], tasks[1]
    aborted.positions[(TOPIC, 0)] = 10  # the aborted batch processed 3..9
    # The other task fetched 5..7 but held them back (alignment): they are past its
    # committed position and nowhere else once dropped.
    holding.pending = [Record(TOPIC, 1, offset, b"k", b"1", 0) for offset in (5, 6, 7)]
    manager.rewind(consumer, [aborted])
    assert aborted.positions == {(TOPIC, 0): 3}
    assert holding.pending == [] and holding.positions == {(TOPIC, 1): 5}
    assert set(consumer.seeks) == {(TOPIC, 0, 3), (TOPIC, 1, 5)}


def _buffered(task: Any, partition: int, count: int) -> None:
    task.pending = [Record(TOPIC, partition, offset, b"k", b"1", 0) for offset in range(count)]


def test_a_partition_whose_task_buffers_more_than_the_limit_is_paused_until_half_is_left(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = assigned(cluster, tmp_path)
    while manager.restoring:
        manager.restore(consumer, 0.0)
    tasks = {task.partition: task for task in manager.tasks.values()}
    _buffered(tasks[0], 0, 11)
    _buffered(tasks[1], 1, 10)
    manager.throttle(consumer, limit=10)
    assert consumer._paused == {(TOPIC, 0)} == manager.throttled  # 10 is not over the limit
    _buffered(tasks[0], 0, 6)
    manager.throttle(consumer, limit=10)
    assert consumer._paused == {(TOPIC, 0)}, "more than half is still buffered"
    _buffered(tasks[0], 0, 5)
    manager.throttle(consumer, limit=10)
    assert consumer._paused == set() == manager.throttled


def test_a_revoked_partition_is_forgotten_and_a_restoring_one_is_never_resumed(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = assigned(cluster, tmp_path)
    while manager.restoring:
        manager.restore(consumer, 0.0)
    tasks = {task.partition: task for task in manager.tasks.values()}
    _buffered(tasks[0], 0, 30)
    _buffered(tasks[1], 1, 30)
    manager.throttle(consumer, limit=10)
    assert manager.throttled == {(TOPIC, 0), (TOPIC, 1)}
    manager.handle_revocation([TopicPartition(TOPIC, 0)])
    assert manager.throttled == {(TOPIC, 1)}
    tasks[1].pending = []
    tasks[1].restoring = 1  # (as if it were restoring again) its restore resumes it, not this
    manager.throttle(consumer, limit=10)
    assert (TOPIC, 1) in consumer._paused


def _restored(cluster: Cluster, tmp_path: Path, observer: Observer | None = None) -> tuple[TaskManager, Any]:
    manager, consumer = assigned(cluster, tmp_path, observer)
    while manager.restoring:
        manager.restore(consumer, 0.0)
    return manager, consumer


def _stores(manager: TaskManager) -> dict[int, Any]:
    return {task.partition: task.stores["counts"] for task in manager.tasks.values()}


def test_a_partition_given_back_to_the_same_member_opens_with_its_store_as_it_was_and_no_restore(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = _restored(cluster, tmp_path)
    before = _stores(manager)
    both = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    manager.handle_revocation(both, member=consumer.memberid())
    assert manager.tasks == {}
    manager.handle_assignment(consumer, both)
    assert manager.ready and not manager.restoring
    assert all(after is before[p] for p, after in _stores(manager).items())
    assert {t.partition: t.positions for t in manager.tasks.values()} == {
        0: {(TOPIC, 0): 3},
        1: {(TOPIC, 1): 5},
    }


def test_a_kept_store_whose_partition_went_elsewhere_is_closed_at_the_assignment(
    cluster: Cluster, tmp_path: Path
) -> None:
    observer = _Closed()
    manager, consumer = _restored(cluster, tmp_path, observer)
    before = _stores(manager)
    manager.handle_revocation(
        [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)], member=consumer.memberid()
    )
    assert observer.closed == []  # what the observer was told of them still holds while kept
    manager.handle_assignment(consumer, [TopicPartition(TOPIC, 0)])
    assert _stores(manager)[0] is before[0] and manager.ready
    assert before[1].status is PartitionStatus.CLOSED
    assert observer.closed == [("counting", 1)]
    manager.close()
    assert before[0].status is PartitionStatus.CLOSED


def test_stores_are_not_kept_across_a_loss_nor_for_a_member_that_rejoined_under_a_new_id(
    cluster: Cluster, tmp_path: Path
) -> None:
    manager, consumer = _restored(cluster, tmp_path)
    both = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    before = _stores(manager)
    manager.handle_revocation(both)  # lost: others own them now
    assert all(store.status is PartitionStatus.CLOSED for store in before.values())
    manager.handle_assignment(consumer, both)
    assert manager.restoring
    while manager.restoring:
        manager.restore(consumer, 0.0)
    before = _stores(manager)
    # Dropped from the group between the two callbacks: another member may have written them.
    manager.handle_revocation(both, member="a member id of an earlier membership")
    manager.handle_assignment(consumer, both)
    assert manager.restoring
    assert all(store.status is PartitionStatus.CLOSED for store in before.values())


def test_a_task_still_restoring_at_the_revocation_keeps_nothing(cluster: Cluster, tmp_path: Path) -> None:
    manager, consumer = assigned(cluster, tmp_path)
    assert manager.restoring
    before = _stores(manager)
    both = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    manager.handle_revocation(both, member=consumer.memberid())
    assert all(store.status is PartitionStatus.CLOSED for store in before.values())
    manager.handle_assignment(consumer, both)
    assert manager.restoring
