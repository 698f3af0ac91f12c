"""Global tables: `locations` and `channels`, read whole by every worker, outside the group.

Each table has its own assign()-ed consumer from the beginning. A worker catches up to
the end of every table before it processes a record, then keeps them current between
batches. A null value (tombstone) deletes the key; a record that does not decode is
logged and skipped (the previous value stays), so operations can correct it.

That rule (`row_key`, `apply_row`, `table_rows`) is pure and shared with the offline readers
(commands/io.py `read_table`: the audit, the replay, the chaos verifier), so they see a table
as the workers do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamalloc.errors import BrokerError, StreamallocError
from streamalloc.kafka.types import consumed

_log = logging.getLogger("streamalloc.runtime.tables")

V = TypeVar("V")


def row_key(raw_key: bytes | None) -> str | None:
    """The row id of a table record: its Kafka key as text (the contract's key: location_id,
    channel_id, kit_sku), not a field of its value; None for a keyless record, which is no row."""
    return None if raw_key is None else raw_key.decode("utf-8", errors="replace")


def apply_row(rows: dict[str, V], key: str, value: bytes | None, decode: Callable[[bytes], V]) -> None:
    """Apply one record to the row `key`: a null value (tombstone) deletes it, any other
    replaces it with its decoded value. A value that does not decode raises (StreamallocError)
    and leaves the row as it was."""
    if value is None:
        rows.pop(key, None)
    else:
        rows[key] = decode(value)


def table_rows(
    records: Iterable[tuple[bytes | None, bytes | None]], decode: Callable[[bytes], V]
) -> tuple[dict[str, V], int]:
    """A table as its records, (key, value) in offset order, leave it (the last record per
    key, a tombstone deleting the key), and how many records did not decode (skipped)."""
    rows: dict[str, V] = {}
    bad = 0
    for raw_key, value in records:
        key = row_key(raw_key)
        if key is None:
            continue
        try:
            apply_row(rows, key, value, decode)
        except StreamallocError:
            bad += 1
    return rows, bad


class GlobalTable(Generic[V]):
    """A compacted topic materialised as a dict, key (str) -> decoded value."""

    def __init__(self, topic: str, decode: Callable[[bytes], V], config: dict[str, Any]) -> None:
        self.topic = topic
        self._decode = decode
        self._consumer = Consumer({**config, "enable.partition.eof": True})
        self._rows: dict[str, V] = {}
        self._at_end: set[int] = set()
        self._partitions: list[int] = []
        self.version = 0  # bumps on every change, so users can cache derived views

    @property
    def rows(self) -> Mapping[str, V]:
        return self._rows

    def start(self, timeout_s: float = 10.0) -> None:
        metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise BrokerError(f"global table topic {self.topic} is missing (run `streamalloc topics create`)")
        self._partitions = sorted(topic.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in self._partitions])

    @property
    def caught_up(self) -> bool:
        return len(self._at_end) == len(self._partitions)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply what has arrived; return the number of changes."""
        changes = 0
        for msg in consumed(self._consumer.consume(10_000, timeout_s)):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                    continue
                _log.warning("global table read error", extra={"topic": self.topic, "error": str(error)})
                continue
            key = row_key(msg.key())
            if key is None:
                continue
            try:
                apply_row(self._rows, key, msg.value(), self._decode)
            except StreamallocError as exc:
                _log.warning(
                    "bad global table record skipped",
                    extra={"topic": self.topic, "key": key, "offset": msg.offset(), "error": str(exc)},
                )
                continue
            changes += 1
        if changes:
            self.version += 1
        return changes

    def catch_up(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.caught_up:
            if time.monotonic() > deadline:
                raise BrokerError(f"global table {self.topic} did not reach its end in {timeout_s}s")
            self.poll(0.2)

    def close(self) -> None:
        self._consumer.close()


class GlobalTables:
    """The set of global tables a worker keeps; `poll` is the worker's before-batch hook."""

    def __init__(self, tables: Mapping[str, GlobalTable[Any]]) -> None:
        self.tables = dict(tables)

    def start(self, timeout_s: float = 30.0) -> None:
        for table in self.tables.values():
            table.start()
        for table in self.tables.values():
            table.catch_up(timeout_s)

    def poll(self) -> None:
        for table in self.tables.values():
            table.poll(0.0)

    def close(self) -> None:
        for table in self.tables.values():
            table.close()
