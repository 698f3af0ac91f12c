"""The one produce path: a full local queue is waited out, a record too large is a typed error."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from streamalloc.config import Settings
from streamalloc.errors import RecordTooLarge
from streamalloc.kafka import produce, producer_config
from streamalloc.kafka.clients import MESSAGE_MAX_BYTES


class FullQueueOnce:
    """Producer.produce and poll: the first produce finds librdkafka's local queue full."""

    def __init__(self) -> None:
        self.produced: list[tuple[Any, ...]] = []
        self.polls = 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if not self.polls:
            raise BufferError("Local: Queue full")
        self.produced.append((*args, kwargs))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_a_full_local_queue_is_served_then_the_record_is_produced() -> None:
    producer = FullQueueOnce()
    produce(producer, "t", b"v", b"k", 3, [("h", b"1")])  # type: ignore[arg-type]
    assert producer.polls == 1
    assert producer.produced == [("t", b"v", b"k", 3, {"on_delivery": None, "headers": [("h", b"1")]})]


def test_a_record_larger_than_the_producer_takes_raises_record_too_large() -> None:
    # librdkafka refuses it in produce() itself: no broker is needed to see it.
    producer = Producer(producer_config(Settings(bootstrap="127.0.0.1:1"), log_level=0))
    with pytest.raises(RecordTooLarge) as raised:
        produce(producer, "orders-out", b"x" * (MESSAGE_MAX_BYTES + 1), b"key")
    assert raised.value.topic == "orders-out"
    assert raised.value.size == MESSAGE_MAX_BYTES + 4
    assert "too large" in raised.value.reason and "orders-out" in raised.value.reason
    produce(producer, "orders-out", b"x" * 1000, b"key")  # a record that fits still goes
    producer.purge()
