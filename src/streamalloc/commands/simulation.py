"""The simulated world around the engine, shared by `streamalloc demo` and `streamalloc chaos`.

Three channel generators place orders (Poisson arrivals) and cancel some; a warehouse
simulator follows the allocations, picking, shipping and taking back returns, which it
inspects; scarce stock is received at three locations. Workers run as separate
processes, each with its own state directory and log file. One copy of this load keeps
the demo and the chaos test honest about the same scenario.
"""

from __future__ import annotations

import heapq
import importlib.resources
import itertools
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.serialization import topic_serde

CHANNELS = ("web", "store", "marketplace")
REGIONS = {"web": ("east", "west", "south"), "store": ("east",), "marketplace": ("west", "north")}
SKUS = tuple(f"SKU-{i:03d}" for i in range(12))
LOT_SKUS = SKUS[:4]  # lot-tracked at WH-EAST
EXPECTED_SKUS = SKUS[4:8]  # purchase orders due at WH-EAST
RESERVATION_TTL_S = {"marketplace": 3}  # the others hold their reservations until picked
#: Checkout holds: the share of each channel's orders that are carts first, and how long a
#: cart's hold lives (web's `hold_ttl_s` in examples/channels.jsonl).
CARTS = {"web": 0.2}
HOLD_TTL_S = 3
#: Protection levels: the units of each SKU web (the highest priority) keeps from store and
#: marketplace (web's `protected_units` in examples/channels.jsonl).
WEB_PROTECTED_UNITS = 3
OFFLINE_LOCATION = "STORE-NYC"


def examples_dir() -> Path:
    """The demo's data: the installed copy (wheel: streamalloc/_examples) or the repository's examples/."""
    packaged = importlib.resources.files("streamalloc").joinpath("_examples")
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "examples"
    if repo.is_dir():
        return repo
    raise StreamallocError("cannot find the example data (neither streamalloc/_examples nor ./examples)")


@dataclass
class Progress:
    lines_placed: int = 0
    lines_decided: int = 0
    shipped: int = 0
    returned: int = 0
    last_event: float = field(default_factory=time.monotonic)


class Publisher:
    """One producer, serdes per topic, thread-safe enough for the demo (librdkafka is)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings))
        self.orders = {c: topic_serde(settings, settings.topic(f"orders.{c}")) for c in CHANNELS}
        self.inventory = topic_serde(settings, settings.topic("inventory"))
        self.locations = topic_serde(settings, settings.topic("locations"))

    def location(self, record: dict[str, Any]) -> None:
        record = self.locations.validate(record)
        self._send(self.locations.topic, self.locations.key_of(record), self.locations.encode(record))
        self.producer.flush(30)

    def order(self, event: dict[str, Any]) -> None:
        serde = self.orders[event["channel"]]
        record = serde.validate(event)
        self._send(serde.topic, serde.key_of(record), serde.encode(record))

    def stock(self, event: dict[str, Any]) -> None:
        record = self.inventory.validate(event)
        self._send(self.inventory.topic, self.inventory.key_of(record), self.inventory.encode(record))

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        produce(self.producer, topic, value, key)


def now_ms() -> int:
    return int(time.time() * 1000)


def stock(publisher: Publisher, rng: random.Random) -> set[str]:
    """Receive scarce stock of every SKU at the three locations; the SKUs that got some."""
    n = 0
    stocked: set[str] = set()
    for sku in SKUS:
        for location in ("WH-EAST", "STORE-NYC", "3PL-WEST"):
            qty = rng.choice((0, 10, 20, 30, 40, 50))
            if qty:
                n += 1
                stocked.add(sku)
                publisher.stock(
                    {"event_id": f"demo-recv-{n}", "type": "received", "sku": sku,
                     "location": location, "qty": qty, "occurred_at": now_ms()}
                )  # fmt: skip
    day = 86_400_000
    for sku in LOT_SKUS:  # lots at WH-EAST: one expired, one expiring soon, one late
        stocked.add(sku)
        for lot, qty, expires_in in (("EXPIRED", 8, -day), ("SOON", 6, 2 * day), ("LATE", 6, 60 * day)):
            publisher.stock(
                {"event_id": f"demo-lot-{sku}-{lot}", "type": "received", "sku": sku, "location": "WH-EAST",
                 "qty": qty, "occurred_at": now_ms(),
                 "lot": {"lot_id": f"{sku}-{lot}", "expires_at": now_ms() + expires_in}}
            )  # fmt: skip
    for sku in EXPECTED_SKUS:  # purchase orders web may backorder against
        stocked.add(sku)
        publisher.stock(
            {"event_id": f"demo-po-{sku}", "type": "expected", "sku": sku, "location": "WH-EAST",
             "qty": 15, "occurred_at": now_ms(), "eta": now_ms() + 60_000}
        )  # fmt: skip
    publisher.producer.flush(30)
    return stocked


def receive_purchase_orders(publisher: Publisher) -> None:
    """The expected stock arrives: the waitlist is served from it before anyone else."""
    for sku in EXPECTED_SKUS:
        publisher.stock(
            {"event_id": f"demo-po-{sku}-received", "type": "received", "sku": sku, "location": "WH-EAST",
             "qty": 15, "occurred_at": now_ms()}
        )  # fmt: skip
    publisher.producer.flush(30)


def set_location(publisher: Publisher, status: str) -> None:
    for line in (examples_dir() / "locations.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["location_id"] == OFFLINE_LOCATION:
            publisher.location({**record, "status": status})


def wait_until_engine_has(settings: Settings, skus: set[str], timeout_s: float) -> None:
    """Block until the engine has published availability for every one of `skus`.

    That is when both workers run the allocator on every partition: orders placed from
    now on meet a running engine, so they are decided as they arrive.
    """
    consumer = Consumer(consumer_config(settings, group_id=f"demo-ready-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic("availability")])
    serde = topic_serde(settings, settings.topic("availability"))
    missing = set(skus)
    deadline = time.monotonic() + timeout_s
    try:
        while missing:
            if time.monotonic() > deadline:
                raise StreamallocError(
                    f"the engine published no availability for {len(missing)} SKU(s) within {timeout_s:.0f}s"
                )
            for msg in consumed(consume_available(consumer, 1000, 0.2)):
                value = msg.value()
                if msg.error() is None and value is not None:
                    missing.discard(serde.decode(value)["sku"])
    finally:
        consumer.close()


def place_orders(
    publisher: Publisher,
    channel: str,
    orders: int,
    rate: float,
    seed: int,
    progress: Progress,
    *,
    stop: threading.Event | None = None,
    ttl_s: Mapping[str, int] = RESERVATION_TTL_S,
    carts: float = 0.0,
) -> None:
    """Place `orders` orders at `rate` per second on average (Poisson arrivals), cancelling some.

    `stop` ends it early (the chaos test runs for a time, not a count); `ttl_s` is how
    long each channel's reservations live (none: until picked). A share `carts` of the
    orders go through checkout first (`checkout`): held, then confirmed, extended and then
    confirmed, or left to expire.
    """
    rng = random.Random(seed)
    placed: list[dict[str, Any]] = []
    later: list[tuple[float, int, dict[str, Any]]] = []  # (when, tie-break, order event): a heap
    ties = itertools.count()

    def send_due(until: float) -> None:
        while later and later[0][0] <= until:
            publisher.order({**heapq.heappop(later)[2], "occurred_at": now_ms()})

    for i in range(orders):
        if stop is not None and stop.is_set():
            break
        send_due(time.monotonic())
        lines = [
            {"line_id": str(j + 1), "sku": sku, "qty": rng.choice((1, 1, 2))}
            for j, sku in enumerate(rng.sample(SKUS, rng.choice((1, 1, 2, 3))))
        ]
        order = {
            "event_id": f"demo-{channel}-{i}", "type": "placed", "order_id": f"{channel}-{i}",
            "channel": channel, "occurred_at": now_ms(), "priority": rng.choice((0, 0, 1)),
            "region": rng.choice(REGIONS[channel]),
            "ship_complete": rng.random() < 0.1, "lines": lines,
            "reservation_ttl_s": ttl_s.get(channel),
        }  # fmt: skip
        if rng.random() < carts:
            for when, event in checkout(order, rng):
                heapq.heappush(later, (when, next(ties), event))
            order = {**order, "type": "held", "event_id": f"demo-hold-{channel}-{i}"}
            order["reservation_ttl_s"] = None  # the channel's hold_ttl_s
        publisher.order(order)
        placed.append(order)
        progress.lines_placed += len(lines)
        if placed and rng.random() < 0.08:  # a customer cancels an earlier order
            victim = rng.choice(placed)
            listed = [] if rng.random() < 0.5 else victim["lines"][:1]
            publisher.order(
                {"event_id": f"demo-cancel-{channel}-{i}", "type": "cancelled",
                 "order_id": victim["order_id"], "channel": channel, "occurred_at": now_ms(), "lines": listed}
            )  # fmt: skip
        time.sleep(rng.expovariate(rate))
    while later and (stop is None or not stop.is_set()):  # the last carts' payments
        time.sleep(max(0.0, later[0][0] - time.monotonic()))
        send_due(time.monotonic())
    publisher.producer.flush(30)


def checkout(order: dict[str, Any], rng: random.Random) -> list[tuple[float, dict[str, Any]]]:
    """What follows a cart's hold, with when: paid within a second or so (`confirmed`, keeping
    the held units), paid after an extension while a slower payment runs (`extended` with
    a longer time to live, then `confirmed`), or abandoned (nothing: the hold expires after
    its channel's `hold_ttl_s`)."""
    now, fate = time.monotonic(), rng.random()
    base = {"order_id": order["order_id"], "channel": order["channel"], "lines": order["lines"]}
    confirm = {**base, "event_id": f"{order['event_id']}:confirm", "type": "confirmed"}
    if fate < 0.6:
        return [(now + rng.uniform(0.3, 1.2), confirm)]
    if fate < 0.75:
        extend = {**base, "event_id": f"{order['event_id']}:extend", "type": "extended"}
        extend["reservation_ttl_s"] = 30
        return [(now + rng.uniform(0.3, 1.0), extend), (now + rng.uniform(4.5, 6.0), confirm)]
    return []


def warehouse(
    settings: Settings, publisher: Publisher, progress: Progress, stop: threading.Event, seed: int
) -> None:
    """Follow allocations: pick and ship some lines, take some back, inspect the returns."""
    rng = random.Random(seed)
    serde = topic_serde(settings, settings.topic("allocations"))
    consumer = Consumer(consumer_config(settings, group_id=f"demo-warehouse-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic("allocations")])
    decided: set[tuple[str, str]] = set()
    try:
        while not stop.is_set():
            for msg in consumed(consume_available(consumer, 1000, 0.2)):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                event = serde.decode(value)
                progress.last_event = time.monotonic()
                kind, line_id = event["type"], event["line_id"]
                if line_id is None:
                    continue
                key = (event["order_id"], line_id)
                if kind in ("allocated", "rejected", "backordered", "held") and key not in decided:
                    decided.add(key)
                    progress.lines_decided = len(decided)
                base = {"order_id": event["order_id"], "channel": event["channel"], "occurred_at": now_ms()}
                line = {
                    "line_id": line_id,
                    "sku": event["sku"],
                    "qty": event["qty"],
                    "location": event["location"],
                }
                if kind in ("allocated", "confirmed") and rng.random() < 0.5:
                    publisher.order(
                        {**base, "event_id": f"{event['event_id']}:pick", "type": "picked", "lines": [line]}
                    )
                elif kind == "picked":
                    publisher.order(
                        {
                            **base,
                            "event_id": f"{event['event_id']}:ship",
                            "type": "fulfilled",
                            "lines": [line],
                        }
                    )
                elif kind == "fulfilled":
                    progress.shipped += event["qty"]
                    if rng.random() < 0.25:
                        publisher.order(
                            {
                                **base,
                                "event_id": f"{event['event_id']}:rma",
                                "type": "returned",
                                "lines": [line],
                            }
                        )
                elif kind == "returned":
                    progress.returned += event["qty"]
                    publisher.stock(
                        {"event_id": f"{event['event_id']}:qc", "type": "inspected", "sku": event["sku"],
                         "location": event["location"], "qty": event["qty"], "occurred_at": now_ms(),
                         "result": "pass" if rng.random() < 0.7 else "fail"}
                    )  # fmt: skip
            publisher.producer.poll(0)
    finally:
        publisher.producer.flush(30)
        consumer.close()


def start_worker(settings: Settings, name: str, workdir: Path) -> subprocess.Popen[bytes]:
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "streamalloc",
        "--bootstrap", str(settings.bootstrap), "--prefix", settings.topic_prefix,
        "--app-id", settings.app_id,
        "--state-dir", str(workdir / name), "--broker-profile", settings.broker_profile,
        "--log-level", "INFO",  # into its own file: assignments, restores and aborts, for diagnosis
        "worker", "--no-create-topics",
    ]  # fmt: skip
    with log_path.open("ab") as log:  # the child keeps its own descriptor; ours closes here
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
