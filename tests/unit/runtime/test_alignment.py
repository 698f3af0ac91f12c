"""Which records a task with two inputs may process, over the fake broker's consumer."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from tests.unit.runtime.fake_kafka import FakeBroker, FakeConsumer, FakeProducer

from streamalloc.bench.counting import CountingStage
from streamalloc.runtime.alignment import Alignment
from streamalloc.runtime.stage import Record
from streamalloc.runtime.task import Task

REQ, INV = ("t.requests", 0), ("t.inventory", 0)


@pytest.fixture
def broker() -> FakeBroker:
    made = FakeBroker()
    made.create_topic(REQ[0])
    made.create_topic(INV[0])
    return made


def start(broker: FakeBroker, idle_ms: int = 200) -> tuple[FakeConsumer, Task, Alignment]:
    consumer = FakeConsumer({"group.id": "app", "enable.partition.eof": True}, broker)
    consumer.assign([TopicPartition(*REQ, 0), TopicPartition(*INV, 0)])
    task = Task(CountingStage(REQ[0], "out"), 0)
    task.positions.update({REQ: 0, INV: 0})
    return consumer, task, Alignment(consumer, idle_ms)


def poll(
    consumer: FakeConsumer, task: Task, alignment: Alignment, only: list[tuple[str, int]], n: int
) -> None:
    """What the worker's poll does, with the fetcher serving only the `only` partitions."""
    held = [TopicPartition(*p) for p in (REQ, INV) if p not in only]
    consumer.pause(held)
    messages = consumer.consume(n)
    consumer.resume(held)
    for msg in messages:
        if msg.error() is not None:  # end of partition
            task.at_end[(msg.topic(), msg.partition())] = msg.offset()
            continue
        task.pending.append(
            Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
        )
    alignment.polled(len(messages), n)


def offsets(records: list[Record]) -> list[tuple[str, int]]:
    return [(r.topic, r.offset) for r in records]


def test_a_task_waits_for_an_input_with_records_it_has_not_fetched(broker: FakeBroker) -> None:
    broker.produce_plain(INV[0], [(b"sku", b"receipt")])
    broker.produce_plain(REQ[0], [(b"sku", b"request")])
    consumer, task, alignment = start(broker)
    poll(consumer, task, alignment, [REQ], 10)  # the fetcher handed over the request first
    assert alignment.take(task, now=0.0) == []
    poll(consumer, task, alignment, [REQ, INV], 10)
    assert offsets(alignment.take(task, now=0.0)) == [(INV[0], 0), (REQ[0], 0)]  # the receipt first


def test_an_open_transaction_on_an_input_holds_nothing_once_its_end_is_reported(broker: FakeBroker) -> None:
    broker.produce_plain(INV[0], [(b"sku", b"receipt")])
    producer = FakeProducer({"transactional.id": "other"}, broker)
    producer.begin_transaction()
    producer.produce(REQ[0], b"in an open transaction", b"sku", 0)
    consumer, task, alignment = start(broker)
    poll(consumer, task, alignment, [REQ, INV], 10)  # the receipt, and the end of requests
    assert consumer.get_watermark_offsets(TopicPartition(*REQ), cached=True)[1] == 1  # counts the open one
    assert offsets(alignment.take(task, now=0.0)) == [(INV[0], 0)]


def test_a_task_stops_after_the_last_buffered_record_of_an_input_that_has_more(broker: FakeBroker) -> None:
    broker.produce_plain(INV[0], [(b"sku", b"receipt-1")])
    broker.produce_plain(REQ[0], [(b"sku", b"request-1")])
    broker.produce_plain(INV[0], [(b"sku", b"receipt-2")])
    broker.produce_plain(REQ[0], [(b"sku", b"request-2")])
    consumer, task, alignment = start(broker)
    poll(consumer, task, alignment, [INV], 1)  # the first receipt only
    poll(consumer, task, alignment, [REQ], 10)
    # receipt-1; then inventory ran dry with receipt-2 still to come, which may be earlier
    # than request-1 for all the task knows
    assert offsets(alignment.take(task, now=0.0)) == [(INV[0], 0)]
    assert offsets(task.pending) == [(REQ[0], 0), (REQ[0], 1)]
    poll(consumer, task, alignment, [INV], 10)
    assert offsets(alignment.take(task, now=0.0)) == [(REQ[0], 0), (INV[0], 1), (REQ[0], 1)]


def test_a_task_goes_on_without_a_silent_input_after_the_idle_time_and_two_drained_polls(
    broker: FakeBroker,
) -> None:
    broker.produce_plain(INV[0], [(b"sku", b"receipt")])
    broker.produce_plain(REQ[0], [(b"sku", b"request")])
    consumer, task, alignment = start(broker, idle_ms=200)
    poll(consumer, task, alignment, [REQ], 1)  # a full poll: the local queue may hold more
    assert alignment.take(task, now=0.0) == []
    assert alignment.take(task, now=1.0) == []  # the time is up, but no poll drained the queue
    alignment.polled(0, 10)
    alignment.polled(0, 10)
    assert offsets(alignment.take(task, now=1.0)) == [(REQ[0], 0)]
