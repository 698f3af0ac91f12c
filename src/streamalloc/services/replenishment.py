"""replenishment: `allocations` and `availability` -> `transfer-recommendations`.

Per SKU and location it keeps a demand rate (allocated units, exponentially weighted,
domain/replenishment.py) and the latest availability, and publishes the transfers that
bring a location whose projected cover is below its lead time plus safety cover back to
target. Advice only: units move when someone publishes a `transfer_shipped` inventory
event, so the engine stays the single writer of the books.

Partitioning: `allocations` is keyed by order id, `availability` by SKU. The allocations
agent re-keys each allocated line by SKU onto an internal topic
(`<app>-replenishment-demand`, created with the partition count of `availability`), and
one agent reads that topic and `availability` together, so a SKU's rates, supply and
dedup book live in one table record (`<app>-replenishment-skus-changelog`) on one
partition, whatever instance holds it.

Dedup: a recommendation for the same (sku, from, to) and quantity as the last one
published is not repeated within the dedup window (Settings.replenish_dedup_window_ms).
At-least-once: a demand record read twice after a crash counts twice in the rate (a
small, decaying overcount); a recommendation may be published twice, with the same id.
"""

from __future__ import annotations

import json
import logging
import marshal
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from streamalloc.config import Settings
from streamalloc.domain.replenishment import (
    DemandRate,
    ReplenishmentPolicy,
    Supply,
    observe,
    recommend,
    repeats,
)
from streamalloc.errors import DeserializationError, StateError
from streamalloc.serialization import dead_letter_serde, topic_serde
from streamalloc.services import faust_app
from streamalloc.services.faust_app import Guarantee, Message
from streamalloc.services.http import ServiceHttp
from streamalloc.topics import ALLOCATIONS, AVAILABILITY, DEAD_LETTER, TRANSFER_RECOMMENDATIONS

log = logging.getLogger(__name__)
SERVICE = "replenishment"
_VERSION = 1


def demand_topic(settings: Settings) -> str:
    """The internal topic of allocated units re-keyed by SKU (faust's repartition naming)."""
    return f"{settings.app_id}-{SERVICE}-demand"


class SkuBook:
    """What the service knows of one SKU: rates and supply per location, and per (from, to)
    the last recommendation published (qty, when)."""

    __slots__ = ("published", "rates", "supply")

    def __init__(self) -> None:
        self.rates: dict[str, DemandRate] = {}
        self.supply: dict[str, Supply] = {}
        self.published: dict[tuple[str, str], tuple[int, int]] = {}

    def encode(self) -> bytes:
        return marshal.dumps(
            (
                _VERSION,
                {k: tuple(v) for k, v in self.rates.items()},
                {k: tuple(v) for k, v in self.supply.items()},
                self.published,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> SkuBook:
        values = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
        if values[0] != _VERSION:
            raise StateError(f"unknown replenishment record version {values[0]}")
        book = cls()
        book.rates = {k: DemandRate(*v) for k, v in values[1].items()}
        book.supply = {k: Supply(*v) for k, v in values[2].items()}
        book.published = dict(values[3])
        return book


class ReplenishmentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.demand = Counter(
            "streamalloc_replenishment_demand_units", "Allocated units counted.", registry=r
        )
        self.availability = Counter(
            "streamalloc_replenishment_availability_events", "Availability records read.", registry=r
        )
        self.recommendations = Counter(
            "streamalloc_replenishment_recommendations", "Recommendations published.", registry=r
        )
        self.repeats = Counter(
            "streamalloc_replenishment_repeats_suppressed",
            "Recommendations not published: the same as the last within the dedup window.",
            registry=r,
        )
        self.dead_letters = Counter(
            "streamalloc_replenishment_dead_letters", "Undecodable records sent to dead-letter.", registry=r
        )


class Replenishment:
    """The service: a faust app, its table of SKUs, metrics."""

    def __init__(self, settings: Settings, guarantee: Guarantee = "at_least_once") -> None:
        self.app = faust_app.make_app(settings, SERVICE, guarantee=guarantee)
        self.policy: ReplenishmentPolicy = settings.replenishment_policy()
        self.window_ms = settings.replenish_dedup_window_ms
        self.metrics = ReplenishmentMetrics()
        self._allocations = topic_serde(settings, settings.topic(ALLOCATIONS))
        self._availability = topic_serde(settings, settings.topic(AVAILABILITY))
        self._recommendations = topic_serde(settings, settings.topic(TRANSFER_RECOMMENDATIONS))
        self._dead = dead_letter_serde(settings)
        self._availability_name = settings.topic(AVAILABILITY)
        self._recommendations_topic = faust_app.raw_topic(self.app, settings.topic(TRANSFER_RECOMMENDATIONS))
        self._dead_topic = faust_app.raw_topic(self.app, settings.topic(DEAD_LETTER))
        self._demand_topic = faust_app.raw_topic(self.app, demand_topic(settings))
        self.table = faust_app.table(self.app, "skus")
        faust_app.agent(self.app, faust_app.raw_topic(self.app, settings.topic(ALLOCATIONS)), self._rekey)
        per_sku = faust_app.raw_topic(self.app, demand_topic(settings), settings.topic(AVAILABILITY))
        faust_app.agent(self.app, per_sku, self._handle, name="skus")

    async def _rekey(self, message: Message) -> None:
        """An allocated line's units onto the demand topic, keyed by its SKU."""
        if message.value is None:
            return
        try:
            record = self._allocations.decode(
                message.value, topic=message.topic, partition=message.partition, offset=message.offset
            )
        except DeserializationError as exc:
            await self._dead_letter(message, str(exc))
            return
        if record["type"] != "allocated" or not record["sku"] or not record["location"]:
            return
        demand = {
            "event_id": record["event_id"],
            "location": record["location"],
            "qty": record["qty"],
            "at": record["decided_at"],
        }
        await self._demand_topic.send(key=record["sku"].encode(), value=json.dumps(demand).encode())

    async def _handle(self, message: Message) -> None:
        if message.value is None or message.key is None:
            return
        key = message.key
        stored = self.table.get(key)
        book = SkuBook() if stored is None else SkuBook.decode(stored)
        if message.topic == self._availability_name:
            try:
                record = self._availability.decode(
                    message.value, topic=message.topic, partition=message.partition, offset=message.offset
                )
            except DeserializationError as exc:
                await self._dead_letter(message, str(exc))
                return
            self.metrics.availability.inc()
            book.supply = supply_of(record)
            cause, now = record["event_id"], record["as_of"]
        else:
            demand = json.loads(message.value)
            location = demand["location"]
            book.rates[location] = observe(book.rates.get(location), demand["qty"], demand["at"], self.policy)
            self.metrics.demand.inc(demand["qty"])
            cause, now = demand["event_id"], demand["at"]
        sku = key.decode()
        for rec in recommend(sku, book.supply, book.rates, self.policy, now, cause):
            pair = (rec.from_location, rec.to_location)
            if repeats(book.published.get(pair), rec.qty, now, self.window_ms):
                self.metrics.repeats.inc()
                continue
            book.published[pair] = (rec.qty, now)
            value = self._recommendations.encode(rec.as_record())
            await self._recommendations_topic.send(key=key, value=value)
            self.metrics.recommendations.inc()
        self.table[key] = book.encode()

    async def _dead_letter(self, message: Message, error: str) -> None:
        log.warning("record at %s/%s undecodable: %s", message.partition, message.offset, error)
        record = faust_app.dead_letter_record(message, error)
        await self._dead_topic.send(key=message.key, value=self._dead.encode(record))
        self.metrics.dead_letters.inc()


def supply_of(availability: dict[str, Any]) -> dict[str, Supply]:
    """Per online location: units available to allocate, and units in transit towards it."""
    return {
        row["location"]: Supply(row["available"], row["in_transit"])
        for row in availability["locations"]
        if row["status"] == "online"
    }


def run(settings: Settings, *, guarantee: Guarantee, http_host: str, http_port: int | None) -> int:
    """Run replenishment until SIGTERM or Ctrl-C, with health, readiness and metrics over HTTP."""
    service = Replenishment(settings, guarantee)
    if http_port is not None:
        http = ServiceHttp(
            http_host,
            http_port,
            registry=service.metrics.registry,
            ready=lambda: faust_app.ready(service.app),
        )

        async def start() -> None:
            port = await http.start()
            log.warning("replenishment HTTP on http://%s:%s (/health, /ready, /metrics)", http_host, port)

        faust_app.on_started(service.app, start)
    return faust_app.run(service.app, settings.log_level)
