"""Drive a running engine worker from a test: publish its inputs, follow its output topics.

`EngineUnderTest` owns one worker process (`python -m streamalloc worker`) on its own topic
prefix, and keeps a read_committed reader on each output topic that remembers everything it
has read, so a test can wait cheaply for the decisions it caused. Tests sharing one engine
stay independent by using their own SKUs and order ids (`Ids`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from tests.integration.helpers import WorkerProcess, read_all, wait_for

from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.kafka import consumer_config, producer_config
from streamalloc.serialization import topic_serde

LOCATION = "WH-1"
LOCATIONS = [
    {"location_id": LOCATION, "status": "online", "priority": 10, "region": "east", "regions_served": []},
]
# No safety stock, pool share or allow-list: every unit on hand is sellable by both channels.
CHANNELS = [
    {"channel_id": "web", "priority": 10, "safety_stock": 0, "backorder_limit": 0},
    {"channel_id": "store", "priority": 5, "safety_stock": 0, "backorder_limit": 0},
]


def now_ms() -> int:
    return int(time.time() * 1000)


class Ids:
    """Unique names for one test: SKUs, order ids and event ids nobody else uses."""

    def __init__(self, name: str) -> None:
        self.tag = f"{name}-{uuid.uuid4().hex[:6]}"

    def sku(self, name: str = "A") -> str:
        return f"SKU-{self.tag}-{name}"

    def order(self, name: str) -> str:
        return f"ord-{self.tag}-{name}"

    def event(self, name: str) -> str:
        return f"ev-{self.tag}-{name}"


class Tail:
    """A reader of one topic from its beginning that keeps its position and what it read."""

    def __init__(self, settings: Settings, topic: str, decode: Callable[[bytes], dict[str, Any]]) -> None:
        self.topic = topic
        self._decode = decode
        self._consumer = Consumer(consumer_config(settings, group_id=f"tail-{uuid.uuid4().hex[:6]}"))
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.records: list[tuple[bytes | None, dict[str, Any]]] = []

    def poll(self, timeout_s: float = 0.2) -> list[tuple[bytes | None, dict[str, Any]]]:
        """Read what has been committed since the last call; returns every record read so far."""
        for msg in self._consumer.consume(10_000, timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consume error on {self.topic}: {error}")
            value = msg.value()
            assert value is not None, f"a record without a value on {self.topic}"
            self.records.append((msg.key(), self._decode(value)))
        return self.records

    def close(self) -> None:
        self._consumer.close()


class EngineUnderTest:
    """Topics, tables, one worker process and readers of the outputs of one engine."""

    def __init__(
        self,
        settings: Settings,
        tmp: Path,
        locations: list[dict[str, Any]] | None = None,
        channels: list[dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.tmp = tmp
        self.tables = {"locations": locations or LOCATIONS, "channels": channels or CHANNELS}
        self.orders_topic = settings.topic("orders")
        self.inventory_topic = settings.topic("inventory")
        self._serdes = {
            name: topic_serde(settings, settings.topic(name))
            for name in (
                "orders",
                "inventory",
                "locations",
                "channels",
                "kits",
                "allocations",
                "availability",
                "order-status",
                "stock-changes",
                "dead-letter",
            )
        }
        self._producer = Producer(producer_config(settings))
        self.worker: WorkerProcess | None = None  # the one started last
        self.started: list[WorkerProcess] = []  # every one: close() kills those still alive
        self._tails: dict[str, Tail] = {}

    # ------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        """Create the contract topics and publish the global tables (before any worker starts)."""
        ensure_topics(self.settings)
        for name, rows in self.tables.items():
            self.publish(name, *rows)
        for name in ("allocations", "availability", "order-status", "stock-changes", "dead-letter"):
            serde = self._serdes[name]
            self._tails[name] = Tail(self.settings, self.settings.topic(name), serde.decode)

    def publish(self, table: str, *rows: dict[str, Any]) -> None:
        """Publish records to a global table (`locations`, `channels` or `kits`), as operations do."""
        serde = self._serdes[table]
        self._send(
            self.settings.topic(table),
            [(serde.key_of(row), serde.encode(serde.validate(row))) for row in rows],
        )

    def start(
        self,
        name: str = "worker",
        state: str = "state",
        *,
        http_port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WorkerProcess:
        """A worker process on `state` (a directory under the test's tmp), logging to `name`.log;
        `env`: STREAMALLOC_* settings for this worker alone."""
        args = [
            "-m", "streamalloc",
            "--bootstrap", str(self.settings.bootstrap),
            "--prefix", self.settings.topic_prefix,
            "--app-id", self.settings.app_id,
            "--state-dir", str(self.tmp / state),
            "--log-level", "INFO",
            "worker",
            *(() if http_port is None else ("--http-port", str(http_port))),
        ]  # fmt: skip
        self.worker = WorkerProcess(args, self.tmp / f"{name}.log", env)
        self.started.append(self.worker)
        return self.worker

    def close(self) -> None:
        for tail in self._tails.values():
            tail.close()
        for worker in self.started:
            worker.close()

    # ------------------------------------------------------------ inputs

    def order(
        self,
        event_id: str,
        type_: str,
        order_id: str,
        lines: Iterable[dict[str, Any]],
        channel: str = "web",
        **fields: Any,
    ) -> dict[str, Any]:
        """A valid order event (defaults filled in by the schema)."""
        event = {
            "event_id": event_id,
            "type": type_,
            "order_id": order_id,
            "channel": channel,
            "occurred_at": fields.pop("occurred_at", now_ms()),
            "lines": [{"location": None, "lot": None, **line} for line in lines],
            **fields,
        }
        return self._serdes["orders"].validate(event)

    def inventory(self, event_id: str, type_: str, sku: str, qty: int, **fields: Any) -> dict[str, Any]:
        event = {
            "event_id": event_id,
            "type": type_,
            "sku": sku,
            "location": fields.pop("location", LOCATION),
            "qty": qty,
            "occurred_at": now_ms(),
            **fields,
        }
        return self._serdes["inventory"].validate(event)

    def send_orders(self, *events: dict[str, Any]) -> None:
        """Publish order events as Avro, keyed by order_id, in one flush."""
        serde = self._serdes["orders"]
        self._send(self.orders_topic, [(serde.key_of(e), serde.encode(e)) for e in events])

    def send_inventory(self, *events: dict[str, Any]) -> None:
        serde = self._serdes["inventory"]
        self._send(self.inventory_topic, [(serde.key_of(e), serde.encode(e)) for e in events])

    def send_raw(self, topic: str, records: Iterable[tuple[bytes | None, bytes]], partition: int) -> None:
        """Publish raw values to one partition, in this order, in one flush."""
        self._send(topic, records, partition)

    def _send(
        self, topic: str, records: Iterable[tuple[bytes | None, bytes]], partition: int | None = None
    ) -> None:
        for key, value in records:
            if partition is None:
                self._producer.produce(topic, value, key)
            else:
                self._producer.produce(topic, value, key, partition=partition)
        remaining = self._producer.flush(30)
        assert remaining == 0, f"{remaining} records to {topic} not delivered"

    # ------------------------------------------------------------ outputs

    def allocations(self, order_id: str) -> list[dict[str, Any]]:
        """Every allocation event of the order read so far, in the order it was written."""
        key = order_id.encode()
        return [event for k, event in self._tails["allocations"].poll() if k == key]

    def availabilities(self, sku: str) -> list[dict[str, Any]]:
        key = sku.encode()
        return [event for k, event in self._tails["availability"].poll() if k == key]

    def statuses(self, order_id: str) -> list[dict[str, Any]]:
        key = order_id.encode()
        return [event for k, event in self._tails["order-status"].poll() if k == key]

    def stock_changes(self, sku: str) -> list[dict[str, Any]]:
        key = sku.encode()
        return [event for k, event in self._tails["stock-changes"].poll() if k == key]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [event for _, event in self._tails["dead-letter"].poll()]

    def settled_availability(self, sku: str) -> dict[str, Any]:
        """The SKU's latest availability, read to the end of the topic by a fresh reader.

        Call it once the decisions it should reflect are visible: availability is written in
        the same transaction as the allocator's decisions, so it is committed by then.
        """
        serde = self._serdes["availability"]
        key = sku.encode()
        latest = [
            serde.decode(v) for _, _, k, v in sorted(read_all(self.settings, serde.topic)) if k == key and v
        ]
        assert latest, f"no availability for {sku}"
        return latest[-1]

    def settled_statuses(self, order_id: str) -> list[dict[str, Any]]:
        serde = self._serdes["order-status"]
        key = order_id.encode()
        return [
            serde.decode(v) for _, _, k, v in sorted(read_all(self.settings, serde.topic)) if k == key and v
        ]

    # ------------------------------------------------------------ waiting

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        """wait_for, with the end of the worker's log in the failure message."""
        try:
            wait_for(predicate, timeout_s, what, every_s=0.1)
        except AssertionError as exc:
            log = self.worker.log()[-4000:] if self.worker is not None else "(no worker)"
            raise AssertionError(f"{exc}\n--- worker log (tail) ---\n{log}") from None

    def wait_stock(self, sku: str, cause_event_id: str) -> dict[str, Any]:
        """Wait until the availability caused by an inventory event is out; return it."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [a for a in self.availabilities(sku) if a["cause_event_id"] == cause_event_id]
            return bool(found)

        self.wait(seen, f"availability of {sku} after {cause_event_id}")
        return found[-1]

    def wait_events(
        self, order_id: str, predicate: Callable[[list[dict[str, Any]]], bool], what: str
    ) -> list[dict[str, Any]]:
        """Wait until the order's allocation events satisfy `predicate`; return them."""
        events: list[dict[str, Any]] = []

        def ready() -> bool:
            events[:] = self.allocations(order_id)
            return predicate(events)

        self.wait(ready, f"{what} ({order_id})")
        return events


def of_type(events: Iterable[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in types]


def location_row(availability: dict[str, Any], location: str = LOCATION) -> dict[str, Any]:
    rows = [row for row in availability["locations"] if row["location"] == location]
    assert len(rows) == 1, f"expected one row for {location} in {availability}"
    return rows[0]
