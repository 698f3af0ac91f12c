"""Client configuration profiles and the mapping of librdkafka errors to streamalloc's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from streamalloc.config import Settings
from streamalloc.errors import BrokerError, RecordTooLarge, TransactionMustAbort
from streamalloc.kafka.types import DeliveryCallback, Headers

_log = logging.getLogger("streamalloc.kafka")

# Java clients hash keys with murmur2; so must we, or a channel's Java producer and the
# engine would put the same SKU on different partitions.
PARTITIONER = "murmur2_random"
#: The largest record a producer sends (librdkafka's default, set here so errors can name
#: it): below Kafka's default broker limit (1,048,588), so a record the producer takes
#: also fits the broker unless a topic sets a smaller `max.message.bytes`.
MESSAGE_MAX_BYTES = 1_000_000


def _bootstrap(settings: Settings) -> str:
    if not settings.bootstrap:
        raise BrokerError("no bootstrap servers configured (use --bootstrap or STREAMALLOC_BOOTSTRAP)")
    return settings.bootstrap


def _common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": _bootstrap(settings), "logger": _log}


def producer_config(
    settings: Settings, *, transactional_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Producer settings: idempotent, murmur2, small linger; transactional when an id is given."""
    config: dict[str, Any] = {
        **_common(settings),
        "partitioner": PARTITIONER,
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.max.bytes": MESSAGE_MAX_BYTES,
    }
    if transactional_id is not None:
        config["transactional.id"] = transactional_id
        config["transaction.timeout.ms"] = 60_000
    config.update(extra)
    return config


def consumer_config(settings: Settings, *, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """Consumer settings: read_committed, manual commits, the profile's group timeouts.

    The range assignor gives a member the same partition numbers of every topic it
    subscribes to, which is what co-partitioned inputs (allocation-requests + inventory)
    need; the sticky assignors do not promise that.
    """
    config: dict[str, Any] = {
        **_common(settings),
        "group.id": group_id or f"{settings.app_id}-reader",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        **settings.group_timeouts(),
    }
    config.update(extra)
    return config


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(_common(settings))


@contextmanager
def kafka_errors(doing: str) -> Iterator[None]:
    """Turn librdkafka's exceptions into BrokerError naming what we were doing."""
    try:
        yield
    except KafkaException as exc:
        raise BrokerError(f"{doing}: {exc.args[0] if exc.args else exc}") from exc


def resolve_profile(settings: Settings, timeout_s: float = 10.0) -> Settings:
    """Settle an "auto" broker profile by asking the cluster who it is."""
    if settings.broker_profile != "auto":
        return settings
    with kafka_errors(f"connecting to {settings.bootstrap}"):
        cluster_id = admin_client(settings).list_topics(timeout=timeout_s).cluster_id or ""
    return settings.replace(broker_profile="embedded" if cluster_id.startswith("tansu") else "kafka")


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    partition: int | None = None,
    headers: Headers | None = None,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    """Produce one record: the one way streamalloc produces (the worker's emit included).

    While librdkafka's local queue is full (BufferError) it serves delivery reports and
    tries again. A record larger than the producer takes raises RecordTooLarge: no retry
    can send it. Inside a transaction that an earlier record's failure doomed, librdkafka
    refuses every produce: TransactionMustAbort. The common calls take the plain
    positional form (the worker's hot path).
    """
    while True:
        try:
            if headers is not None or on_delivery is not None:
                producer.produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    on_delivery=on_delivery,
                    headers=headers,
                )
            elif partition is None:
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, partition)
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code == KafkaError.MSG_SIZE_TOO_LARGE:
                raise RecordTooLarge(topic, _size(key) + _size(value), MESSAGE_MAX_BYTES) from exc
            if code == KafkaError._STATE:
                raise TransactionMustAbort(f"cannot produce to {topic}: {error}") from exc
            raise


def _size(data: bytes | str | None) -> int:
    return 0 if data is None else len(data)


def consume_available(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to `max_messages` without holding back what has arrived.

    consume(n, t) waits until it has n messages or t has passed, so a blocking call for a
    whole batch delays every record by the full timeout when traffic is light. This takes
    what is buffered; when nothing is, it waits up to `timeout_s` for one message only,
    then takes whatever else is there.
    """
    messages: list[Message] = consumer.consume(max_messages, 0.0)
    if not messages and timeout_s > 0:
        messages = consumer.consume(1, timeout_s)
        if messages and max_messages > 1:
            messages.extend(consumer.consume(max_messages - 1, 0.0))
    return messages
