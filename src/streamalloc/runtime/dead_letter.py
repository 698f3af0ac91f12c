"""Dead-letter records: what failed, where it came from, and the bytes exactly as they came."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from streamalloc.errors import RecordTooLarge, StreamallocError, ValidationError
from streamalloc.kafka import produce
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import Record

_log = logging.getLogger("streamalloc.runtime.worker")

#: Builds the dead-letter record value from (record, reason).
DeadLetterEncoder = Callable[[Record, str], bytes]

# Why a record went to the dead-letter topic, as a metric label: bounded, unlike the letter's
# error text (which says exactly what was wrong).
DECODE = "decode"  # the bytes are not a record of the topic's schema (or of no known schema)
VALIDATION = "validation"  # a record of the schema that breaks the contract's rules
TOO_LARGE = "too_large"  # an output it caused is too large to produce (worker.py redoes in parts)
REFUSED = "refused"  # the engine refused an inventory event (the letter names the domain's reason)
CATEGORIES: tuple[str, ...] = (DECODE, VALIDATION, TOO_LARGE, REFUSED)


def failure_category(exc: StreamallocError) -> str:
    """The category of a decoding failure."""
    return VALIDATION if isinstance(exc, ValidationError) else DECODE


def dead_letter_record(record: Record, error: str, now_ms: int | None = None) -> dict[str, Any]:
    """The contract's dead-letter event for a record that could not be decoded or validated."""
    topic, partition, offset = record.topic, record.partition, record.offset
    return {
        "event_id": f"dlq:{topic}:{partition}:{offset}",
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key": record.key,
        "value": record.raw,
        "error": error,
        "failed_at": now_ms if now_ms is not None else int(time.time() * 1000),
    }


def dead_letter_encoder(encode: Callable[[dict[str, Any]], bytes]) -> Callable[[Record, str], bytes]:
    """Adapt a record encoder (the dead-letter serde) to the worker's (message, reason) hook."""

    def encoder(record: Record, error: str) -> bytes:
        return encode(dead_letter_record(record, error))

    return encoder


class DeadLetters:
    """Sends input records that cannot be processed to the dead-letter topic, in the open transaction."""

    def __init__(self, producer: Producer, topic: str, encode: DeadLetterEncoder, observer: Observer) -> None:
        self._producer = producer
        self._topic = topic
        self._encode = encode
        self._observer = observer

    def send(self, record: Record, reason: str, category: str) -> None:
        """Dead-letter `record` with `reason` (the letter's error text); `category` is the
        bounded kind of that reason the metrics count (CATEGORIES)."""
        try:
            produce(self._producer, self._topic, self._encode(record, reason), record.key)
        except RecordTooLarge:
            # The input itself is too large to carry along: the letter names it without its bytes.
            reason = f"{reason}; its key and value are left out: too large for a dead letter"
            bare = dataclasses.replace(record, key=None, raw=None)
            produce(self._producer, self._topic, self._encode(bare, reason), None)
        self._observer.on_dead_letter(record.topic, category)
        _log.info(
            "dead letter",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": reason,
            },
        )
