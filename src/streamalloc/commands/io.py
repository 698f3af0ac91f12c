"""`streamalloc produce` and `streamalloc consume`: JSONL in, JSON lines out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streamalloc.config import Settings
from streamalloc.errors import BrokerError, StreamallocError, ValidationError
from streamalloc.kafka import consumer_config, kafka_errors, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.runtime.global_tables import table_rows
from streamalloc.runtime.lineage import batch_of
from streamalloc.serialization import TopicSerde, topic_serde


@dataclass(frozen=True, slots=True)
class Prepared:
    key: bytes | None
    value: bytes


def jsonl_records(paths: Sequence[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, JSON object) for every non-blank line of the files, in order; a line that
    is not a JSON object is refused (ValidationError naming file and line)."""
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read {path}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"not JSON: {exc.msg} at column {exc.colno}", where=where) from exc
            if not isinstance(record, dict):
                raise ValidationError(f"expected a JSON object, got {type(record).__name__}", where=where)
            yield where, record


def prepare_file(serde: TopicSerde, path: Path) -> list[Prepared]:
    """Validate and encode every line of a JSONL file; refuse the whole file on the first bad line."""
    prepared: list[Prepared] = []
    for where, record in jsonl_records([path]):
        try:
            normalised = serde.validate(record)
            prepared.append(Prepared(serde.key_of(normalised), serde.encode(normalised)))
        except StreamallocError as exc:
            raise ValidationError(getattr(exc, "reason", str(exc)), where=where) from exc
    return prepared


def produce_file(settings: Settings, topic: str, path: Path) -> int:
    """Send every event of `path` to `topic`, keyed as the contract says; all or nothing on validation."""
    records = prepare_file(topic_serde(settings, topic), path)
    producer = Producer(producer_config(settings))
    failures: list[str] = []

    def on_delivery(error: Any, _msg: Any) -> None:
        if error is not None:
            failures.append(str(error))

    with kafka_errors(f"producing to {topic}"):
        for record in records:
            produce(producer, topic, record.value, record.key, on_delivery=on_delivery)
        remaining = producer.flush(30)
    if remaining or failures:
        raise BrokerError(f"{remaining} record(s) undelivered, {len(failures)} failed: {failures[:3]}")
    return len(records)


def consume_json(
    settings: Settings,
    topic: str,
    *,
    max_records: int | None,
    from_beginning: bool,
    idle_timeout_s: float | None,
    on_record: Callable[[dict[str, Any]], None],
) -> int:
    """Print decoded events (read_committed) until `max_records`, or idle for `idle_timeout_s`."""
    serde = topic_serde(settings, topic)
    config = consumer_config(
        settings,
        group_id=f"{settings.app_id}-consume-{uuid.uuid4().hex[:8]}",
        **{"auto.offset.reset": "earliest" if from_beginning else "latest"},
    )
    consumer = Consumer(config)
    count = 0
    try:
        with kafka_errors(f"reading {topic}"):
            metadata = consumer.list_topics(topic, timeout=10)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise BrokerError(f"topic {topic} does not exist")
            partitions = sorted(metadata.topics[topic].partitions)
            start = 0 if from_beginning else -1  # -1: OFFSET_END
            consumer.assign([TopicPartition(topic, p, start) for p in partitions])
            for event in _events(consumer, serde, idle_timeout_s):
                on_record(event)
                count += 1
                if max_records is not None and count >= max_records:
                    break
    finally:
        consumer.close()
    return count


def _events(consumer: Consumer, serde: TopicSerde, idle_timeout_s: float | None) -> Iterator[dict[str, Any]]:
    last = time.monotonic()
    while idle_timeout_s is None or time.monotonic() - last < idle_timeout_s:
        for msg in consumed(consumer.consume(500, 0.2)):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise BrokerError(str(error))
                continue
            last = time.monotonic()
            value = msg.value()
            if value is None:
                yield {"key": (msg.key() or b"").decode(errors="replace"), "value": None}
                continue
            yield serde.decode(value, topic=msg.topic(), partition=msg.partition(), offset=msg.offset())


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every committed event of `topic`, decoded, in partition order; undecodable ones and null
    values skipped. For a table topic (`locations`, `channels`, `kits`) use `read_table`."""
    return [event for _, event in read_with_batches(settings, topic, timeout_s)]


def read_with_batches(
    settings: Settings, topic: str, timeout_s: float = 60.0
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Like `read_to_end`, each event with the `batch` header of the batch that wrote it."""
    serde = topic_serde(settings, topic)
    events: list[tuple[bytes | None, dict[str, Any]]] = []
    for record in read_records(settings, topic, timeout_s):
        if record.value is None:
            continue
        try:
            events.append((batch_of(record.headers), serde.decode(record.value)))
        except StreamallocError:
            continue  # bad input: the engine sent it to the dead-letter topic
    return events


def read_table(settings: Settings, topic: str, timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """A global table (`locations`, `channels`, `kits`) as its topic ends, row id -> decoded
    record, by the workers' own rule (runtime/global_tables.py `table_rows`): the row id is
    the Kafka key, the last record per key wins, a null value (tombstone) deletes the row, a
    record that does not decode is skipped and the row stays as it was."""
    serde = topic_serde(settings, topic)
    records = read_records(settings, topic, timeout_s)
    rows, _ = table_rows(((r.key, r.value) for r in records), lambda value: serde.decode(value, topic=topic))
    return rows


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    headers: list[tuple[str, bytes]] | None
    key: bytes | None
    value: bytes | None


def read_records(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[RawRecord]:
    """Every committed record of `topic`, undecoded, in offset order per partition (none when
    the topic does not exist)."""
    config = consumer_config(
        settings, group_id=f"{settings.app_id}-read-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
    )
    consumer = Consumer(config)
    records: list[RawRecord] = []
    try:
        with kafka_errors(f"reading {topic}"):
            metadata = consumer.list_topics(topic, timeout=10)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                return []
            pending = set(metadata.topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, 0) for p in pending])
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise BrokerError(f"did not reach the end of {topic} within {timeout_s}s")
                for msg in consumed(consumer.consume(10_000, 0.5)):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                            continue
                        raise BrokerError(str(error))
                    records.append(
                        RawRecord(msg.partition(), msg.offset(), msg.headers(), msg.key(), msg.value())
                    )
    finally:
        consumer.close()
    return records


def order_topics(settings: Settings) -> list[str]:
    """`orders` and every existing `orders.<channel>` topic."""
    from streamalloc.kafka import admin_client
    from streamalloc.kafka.admin import existing_partitions

    names = existing_partitions(admin_client(settings))
    channel_topics = sorted(n for n in names if n.startswith(settings.topic("orders.")))
    return [settings.topic("orders"), *channel_topics]
