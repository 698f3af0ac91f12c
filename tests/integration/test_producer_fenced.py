"""A producer fenced by another with the same transactional id, on a real broker: its
checkpoint ends as ProducerFenced, the typed outcome, whatever call meets the fence first.

Before, a fence met inside the changelog flush came out of confluent-kafka as a
SystemError (the fatal error was pending when the next delivery callback ran), which no
caller expected. Real Kafka only: the embedded broker does not fence a producer's epoch
the way Kafka does (docs/brokers.md).
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from tests.conftest import EMBEDDED, TestBroker

from streamalloc.bench.counting import CountingStage
from streamalloc.errors import ProducerFenced
from streamalloc.kafka import admin_client, consumer_config, producer_config
from streamalloc.runtime.checkpoint import Checkpoint
from streamalloc.runtime.state import InMemoryStore
from streamalloc.runtime.task import Task

pytestmark = pytest.mark.slow


def test_a_checkpoint_whose_producer_was_fenced_before_its_changelog_flush_is_producer_fenced(
    kafka_broker: TestBroker,
) -> None:
    if kafka_broker.kind == EMBEDDED:
        pytest.skip("the embedded broker does not fence producer epochs as Kafka does")
    settings = kafka_broker.settings()
    source, output = settings.topic("in"), settings.topic("out")
    changelog = settings.changelog_topic("counts")
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (source, output, changelog)]).values():
        future.result()
    config = producer_config(settings, transactional_id=f"{settings.app_id}-shared")
    first, second = Producer(config), Producer(config)
    consumer = Consumer(consumer_config(settings, group_id=settings.app_id))
    try:
        first.init_transactions(30)
        checkpoint = Checkpoint(first, consumer, settings.changelog_topic)
        checkpoint.begin()
        # Another producer with the same id (a second worker on this state dir) fences it
        # before anything of the batch reached the broker.
        second.init_transactions(30)
        task = Task(CountingStage(source, output), 0)
        task.stores["counts"] = InMemoryStore("counts").partition(0)
        task.batch_start = {(source, 0): 0}
        task.positions[(source, 0)] = 3
        txn = task.open_txns()["counts"]
        for i in range(200):
            txn.set(b"k%d" % i, b"%d" % i)
        checkpoint.touch(task, 3)

        with pytest.raises(ProducerFenced):
            checkpoint.commit()
        assert dict(task.stores["counts"].iter_prefix(b"")) == {}
    finally:
        consumer.close()
        second.flush(5)
