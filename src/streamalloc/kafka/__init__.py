"""Thin typed wrappers over confluent-kafka, kept apart from the engine.

Every client the project creates gets its settings from here, so the broker profile
(docs/brokers.md: short group timeouts on the embedded broker, murmur2 partitioning everywhere)
is applied in one place.
"""

from streamalloc.kafka.clients import (
    admin_client,
    consume_available,
    consumer_config,
    flush,
    kafka_errors,
    poll,
    produce,
    producer_config,
)

__all__ = [
    "admin_client",
    "consume_available",
    "consumer_config",
    "flush",
    "kafka_errors",
    "poll",
    "produce",
    "producer_config",
]
