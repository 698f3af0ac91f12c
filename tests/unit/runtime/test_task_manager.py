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
from streamalloc.runtime.state import InMemoryStore
from streamalloc.runtime.task_manager import TaskManager

TOPIC = "t.two"


def assigned(cluster: Cluster, tmp_path: Path) -> tuple[TaskManager, Any]:
    cluster.broker.create_topic(TOPIC, 2)
    cluster.broker.create_topic(CHANGELOG, 2)
    cluster.broker.committed[("app", TOPIC, 0)] = 3
    cluster.broker.committed[("app", TOPIC, 1)] = 5
    manager = TaskManager(settings(tmp_path), [CountingStage(TOPIC, OUT)], InMemoryStore, Observer())
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
