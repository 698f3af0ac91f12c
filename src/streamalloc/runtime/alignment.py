"""Which pending records a task with several inputs may process now, in timestamp order.

Kafka Streams' rule (PartitionGroup, max.task.idle.ms): a task processes its records in
timestamp order across its input partitions, and only while every input has records
buffered or is caught up to its end. So it waits while an input has nothing buffered and
is behind, and it stops after the last buffered record of an input that may have more: a
receipt that happened before an order is then applied before it, even when a worker
starts on a backlog and the fetcher hands it thousands of orders first. A task waits for
an input that is behind up to `max_task_idle_ms`, then goes on without it; but the wait
only runs out once two polls have drained the consumer's local queue, since a backlog can
hold the input's records behind thousands of others for longer.

What "caught up" can be told from, measured with librdkafka 2.16 on Kafka 4.1.1 and on the
embedded broker (Tansu 0.6.0), both alike:

- the cached high watermark (`get_watermark_offsets(cached=True)`) counts the records of
  open transactions even under read_committed. The engine's own transactions write
  allocation-requests in every batch, so "position >= high watermark" alone would make the
  allocator wait on nearly every batch;
- the end-of-partition event (`enable.partition.eof`) reports the last stable offset: it
  comes once the fetch position reaches it, and again after a seek;
- `position()` steps over transaction markers; it is unknown (< 0) after an assignment or
  a seek until a record of the partition is consumed.
"""

from __future__ import annotations

import heapq

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamalloc.runtime.stage import Record
from streamalloc.runtime.task import Task

Partition = tuple[str, int]


class Alignment:
    """Hands a task with several inputs the records it may process, in timestamp order."""

    def __init__(self, consumer: Consumer, max_task_idle_ms: int) -> None:
        self._consumer = consumer
        self._max_idle_s = max_task_idle_ms / 1000
        self._drained = 0  # polls that emptied the consumer's local queue

    def polled(self, messages: int, asked: int) -> None:
        """The worker polled: `messages` came of the `asked` it takes at most."""
        if messages < asked:
            self._drained += 1

    def take(self, task: Task, now: float) -> list[Record]:
        """The records `task` may process at monotonic `now`, merged by timestamp (each
        partition in offset order); the others stay pending. Empty while it waits."""
        queues: dict[Partition, list[Record]] = {}
        for record in task.pending:
            queues.setdefault((record.topic, record.partition), []).append(record)
        behind = [tp for tp in task.positions if tp not in queues and not self.caught_up(task, *tp)]
        if behind and self._holding(task, now):
            return []
        if len(queues) == 1:
            records, task.pending = task.pending, []
        else:
            merged = list(heapq.merge(*queues.values(), key=_timestamp))
            # Stop after the last buffered record of an input that may have more: its next
            # record may come before the other inputs' next ones.
            left = {tp: len(queue) for tp, queue in queues.items()}
            open_ended = {tp for tp in queues if not self.caught_up(task, *tp)}
            cut = len(merged)
            for i, record in enumerate(merged):
                tp = (record.topic, record.partition)
                left[tp] -= 1
                if not left[tp] and tp in open_ended and i + 1 < cut:
                    cut = i + 1
                    break
            if cut < len(merged) and not self._holding(task, now):
                cut = len(merged)  # waited long enough: go on without it
            records, task.pending = merged[:cut], merged[cut:]
        if not behind and not task.pending:
            task.idle_since = None
        return records

    def caught_up(self, task: Task, topic: str, partition: int) -> bool:
        """Whether the task has every record of an input partition that is there to read:
        its last event was the end-of-partition event (the position is still where that
        event put it), or it has reached the high watermark."""
        tp = TopicPartition(topic, partition)
        position = self._consumer.position([tp])[0].offset
        if position < 0:
            position = task.positions.get((topic, partition), 0)
        if task.at_end.get((topic, partition)) == position:
            return True
        try:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return False
        return high >= 0 and max(position, low) >= high

    def _holding(self, task: Task, now: float) -> bool:
        """Whether the task still waits for an input that is behind (starting the wait)."""
        if task.idle_since is None:
            task.idle_since, task.idle_polls = now, self._drained
        waited = now - task.idle_since >= self._max_idle_s and self._drained - task.idle_polls >= 2
        return not waited


def _timestamp(record: Record) -> int:
    return record.timestamp_ms
