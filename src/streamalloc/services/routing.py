"""routing: `allocations` -> `fulfilment-requests`, one request per (order, location).

`allocations` is keyed by order id, so one partition holds all of an order's events in
order. Each event is applied to the order's state with the domain's own rules, and every
(order, location) whose lines changed is published whole (services/fulfilment.py). The
order and what was last published per location live in one RocksDB table record per
order (`<app>-routing-orders-changelog`).

At-least-once, outputs safe to repeat (docs/architecture.md, Downstream services): a
request is absolute and keyed `order_id:location`. faust flushes the producer before it
commits offsets, so an event whose output was lost is read again; if its table write had
reached the changelog, the event is a repeat in the order's state, and then every
request of the order is published again as it stands (same ids, same content).
"""

from __future__ import annotations

import logging
import marshal

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamalloc.config import Settings
from streamalloc.domain import OrderState, orders
from streamalloc.errors import DeserializationError, StateError, ValidationError
from streamalloc.serialization import dead_letter_serde, topic_serde
from streamalloc.services import faust_app
from streamalloc.services.faust_app import Guarantee, Message
from streamalloc.services.fulfilment import (
    FulfilmentRequest,
    Published,
    changed_requests,
    finished,
    pick_lines,
    published_requests,
)
from streamalloc.services.http import ServiceHttp
from streamalloc.stages.order_stage import decode_order, encode_order
from streamalloc.stages.records import order_event
from streamalloc.topics import ALLOCATIONS, DEAD_LETTER, FULFILMENT_ACKS, FULFILMENT_REQUESTS, ORDERS

log = logging.getLogger(__name__)
SERVICE = "routing"
_VERSION = 1


class RoutingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("streamalloc_routing_allocation_events", "Allocation events read.", registry=r)
        self.skipped = Counter(
            "streamalloc_routing_skipped_events", "Events of types routing does not act on.", registry=r
        )
        self.requests = Counter(
            "streamalloc_routing_fulfilment_requests",
            "Requests published, per status.",
            ["status"],
            registry=r,
        )
        self.repeats = Counter(
            "streamalloc_routing_repeated_events", "Events seen again (re-published).", registry=r
        )
        self.dead_letters = Counter(
            "streamalloc_routing_dead_letters", "Undecodable records sent to dead-letter.", registry=r
        )
        self.acks = Counter(
            "streamalloc_routing_acks",
            "Fulfilment acks by result: picked, stale (an older revision), unknown (no such order).",
            ["result"],
            registry=r,
        )
        self.dropped = Counter(
            "streamalloc_routing_orders_dropped",
            "Finished orders removed from the table (every request closed, the order final).",
            registry=r,
        )
        self.lag = Gauge(
            "streamalloc_routing_lag", "Records behind the end of allocations.", ["partition"], registry=r
        )


def encode_entry(order: OrderState, published: Published) -> bytes:
    """One table record per order: the domain's order record, and what was last published."""
    return marshal.dumps((_VERSION, encode_order(order), published))


def decode_entry(data: bytes) -> tuple[OrderState, Published]:
    values = marshal.loads(data)  # noqa: S302 - our own changelog data, marshal never runs code
    if values[0] != _VERSION:
        raise StateError(f"unknown routing record version {values[0]}")
    return decode_order(values[1]), dict(values[2])


class Routing:
    """The service: a faust app, its table of orders, metrics."""

    def __init__(
        self, settings: Settings, guarantee: Guarantee = "at_least_once", *, auto_pick: bool = False
    ) -> None:
        self.app = faust_app.make_app(settings, SERVICE, guarantee=guarantee)
        self.metrics = RoutingMetrics()
        self._allocations = topic_serde(settings, settings.topic(ALLOCATIONS))
        self._requests = topic_serde(settings, settings.topic(FULFILMENT_REQUESTS))
        self._dead = dead_letter_serde(settings)
        self._requests_topic = faust_app.raw_topic(self.app, settings.topic(FULFILMENT_REQUESTS))
        self._dead_topic = faust_app.raw_topic(self.app, settings.topic(DEAD_LETTER))
        self.table = faust_app.table(self.app, "orders")
        faust_app.agent(self.app, faust_app.raw_topic(self.app, settings.topic(ALLOCATIONS)), self._handle)
        if auto_pick:
            self._acks = topic_serde(settings, settings.topic(FULFILMENT_ACKS))
            self._orders = topic_serde(settings, settings.topic(ORDERS))
            self._orders_topic = faust_app.raw_topic(self.app, settings.topic(ORDERS))
            acks = faust_app.raw_topic(self.app, settings.topic(FULFILMENT_ACKS))
            faust_app.agent(self.app, acks, self._handle_ack, name="acks")

    async def _handle(self, message: Message) -> None:
        self.metrics.events.inc()
        self.metrics.lag.labels(str(message.partition)).set(max(message.highwater - message.offset - 1, 0))
        if message.value is None:
            return
        try:
            record = self._allocations.decode(
                message.value, topic=message.topic, partition=message.partition, offset=message.offset
            )
        except DeserializationError as exc:
            await self._dead_letter(message, str(exc))
            return
        try:
            event = order_event(record)
        except ValidationError:
            self.metrics.skipped.inc()  # a type routing does not follow (the set grows): not an error
            return
        key = event.order_id.encode()
        stored = self.table.get(key)
        order, published = (OrderState(), {}) if stored is None else decode_entry(stored)
        if event.event_id in order.applied:
            self.metrics.repeats.inc()
            for request in published_requests(event.order_id, order, published):
                await self._publish(request)
            return
        orders.apply(order, event)
        at = getattr(event, "decided_at", 0) or event.occurred_at
        requests, published = changed_requests(event.order_id, order, published, event.event_id, at)
        for request in requests:
            await self._publish(request)
        if finished(order, published):
            # after its closing requests went out: a table that kept every order would grow forever
            if stored is not None:
                del self.table[key]
                self.metrics.dropped.inc()
        else:
            self.table[key] = encode_entry(order, published)

    async def _handle_ack(self, message: Message) -> None:
        """Auto-pick: a location acknowledged a request, so its soft units become picked.

        The picked order events go to `orders` like a WMS's own; the engine then hardens
        the units and routing updates the request from the `picked` allocation events.
        Their ids derive from the ack's, so a repeated ack repeats them, and the engine
        drops the repeat. An ack is keyed by order id, so it is read by the instance that
        holds the order (`fulfilment-acks` has the partition count of `allocations`).
        """
        if message.value is None:
            return
        try:
            ack = self._acks.decode(
                message.value, topic=message.topic, partition=message.partition, offset=message.offset
            )
        except DeserializationError as exc:
            await self._dead_letter(message, str(exc))
            return
        stored = self.table.get(ack["order_id"].encode())
        if stored is None:
            self.metrics.acks.labels("unknown").inc()
            return
        order, published = decode_entry(stored)
        picks = pick_lines(published, ack["location"], ack["revision"])
        self.metrics.acks.labels("picked" if picks else "stale").inc()
        for line_id, sku, lot, qty in picks:
            event = {
                "event_id": f"{ack['event_id']}:picked:{line_id}:{lot or ''}",
                "type": "picked",
                "order_id": ack["order_id"],
                "channel": order.channel,
                "occurred_at": ack["acked_at"],
                "lines": [
                    {"line_id": line_id, "sku": sku, "qty": qty, "location": ack["location"], "lot": lot}
                ],
            }
            value = self._orders.encode(self._orders.validate(event))
            await self._orders_topic.send(key=ack["order_id"].encode(), value=value)

    async def order_of(self, request: web.Request) -> web.Response:
        """GET /orders/<order_id>: the requests as last published, if this instance holds the order.

        404 once the order is finished and forgotten, or when its partition is another's.
        """
        order_id = request.match_info["order_id"]
        stored = self.table.get(order_id.encode())
        if stored is None:
            return web.json_response({"error": f"routing holds no order {order_id}"}, status=404)
        order, published = decode_entry(stored)
        requests = [r.as_record() for r in published_requests(order_id, order, published)]
        return web.json_response({"order_id": order_id, "requests": requests})

    async def _publish(self, request: FulfilmentRequest) -> None:
        await self._requests_topic.send(
            key=request.request_id.encode(), value=self._requests.encode(request.as_record())
        )
        self.metrics.requests.labels(request.status).inc()

    async def _dead_letter(self, message: Message, error: str) -> None:
        log.warning("allocation record at %s/%s undecodable: %s", message.partition, message.offset, error)
        record = faust_app.dead_letter_record(message, error)
        await self._dead_topic.send(key=message.key, value=self._dead.encode(record))
        self.metrics.dead_letters.inc()


def run(
    settings: Settings,
    *,
    guarantee: Guarantee,
    http_host: str,
    http_port: int | None,
    auto_pick: bool = False,
) -> int:
    """Run routing until SIGTERM or Ctrl-C, with health, readiness and metrics over HTTP."""
    service = Routing(settings, guarantee, auto_pick=auto_pick)
    if http_port is not None:
        http = ServiceHttp(
            http_host,
            http_port,
            registry=service.metrics.registry,
            ready=lambda: faust_app.ready(service.app),
            routes={"/orders/{order_id}": service.order_of},
        )

        async def start() -> None:
            port = await http.start()
            log.warning("routing HTTP on http://%s:%s (/orders, /health, /ready, /metrics)", http_host, port)

        faust_app.on_started(service.app, start)
    return faust_app.run(service.app, settings.log_level)
