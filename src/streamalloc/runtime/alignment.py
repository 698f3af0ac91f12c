"""When a task with several inputs may go on (Kafka Streams' max.task.idle.ms).

Records are processed in timestamp order across the task's partitions; when an input
partition has nothing buffered and has not answered a fetch yet, the task waits for it up
to `max_task_idle_ms`, so a receipt that happened before an order is applied before it
even when its partition is fetched later (as after an assignment). Only an unknown
watermark means "wait": under read_committed the high watermark also counts records of
open transactions (our own, for allocation-requests), which no fetch can return before
they commit.
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamalloc.runtime.task import Task


class Alignment:
    """Holds back the tasks whose inputs have not all been fetched yet."""

    def __init__(self, consumer: Consumer, max_task_idle_ms: int) -> None:
        self._consumer = consumer
        self._max_idle_s = max_task_idle_ms / 1000
        self.polls = 0  # the worker counts its polls here

    def ready(self, task: Task, now: float) -> bool:
        """Whether `task` may process its pending records at monotonic `now`."""
        buffered = {(r.topic, r.partition) for r in task.pending}
        for topic, partition in task.positions:
            if (topic, partition) in buffered:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                high = -1
            if high < 0:
                if task.idle_since is None:
                    task.idle_since, task.idle_polls = now, self.polls
                # A slow tick must not use up the wait alone: at least two more polls too.
                return now - task.idle_since >= self._max_idle_s and self.polls - task.idle_polls >= 2
        task.idle_since = None
        return True
