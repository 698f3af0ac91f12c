"""channel-sync: `availability` -> per-channel ATS feed (`channel-ats`), coalesced, queryable.

Each availability record carries every channel's ATS for one SKU. The service keeps the
newest per (channel, SKU) in a RocksDB table (`<app>-channel-sync-ats-changelog`) and
pushes to `channel-ats` (compacted, keyed `channel:sku`, absolute quantities) through the
`Coalescer` (services/coalesce.py): at most one push per key per window, only on change,
the newest last, with the stock threshold it crossed.

Kits (the `kits` global table, read whole by every instance): a change of a component's
ATS also moves each kit it is part of, pushed keyed `channel:<kit sku>` as the whole kits
the components make (`domain.kits.kit_ats`). An instance reads the SKUs of its own
partitions only, so the reader of a component tells the kit's owner through the service's
repartition topic (`<app_id>-channel-sync-kit-components-repartition`, keyed by kit SKU),
and the owner keeps every component's newest ATS in its `kit-components` table and pushes
the kit (services/kit_components.py): exact with any number of instances. When the kits
table changes (and after a recovery), each instance tells the owners of the kits that
changed what it knows of their components (each SKU's newest values kept in memory,
seeded from the table on recovery). Kit values are pushed, not kept in the `ats` table, so
`/ats` does not answer them.

At-least-once, with outputs safe to repeat (docs/architecture.md, Downstream services):
faust flushes the producer before it commits offsets, so a record whose push or table
write was lost is read again. A table entry records what was last pushed from the agent;
after a restart the first change of a key is pushed even if equal (the in-memory push
times are gone), and on recovery every entry whose newest value was not yet pushed is
queued again, so a push waiting for its window when the process died is not lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from streamalloc.api.queries import FORWARDED_HEADER
from streamalloc.config import Settings
from streamalloc.domain.kits import Kit, kits_by_component
from streamalloc.errors import DeserializationError
from streamalloc.kafka import admin_client, consumer_config
from streamalloc.kafka.admin import TopicSpec, create_topics
from streamalloc.kafka.partitioning import partition_for
from streamalloc.runtime.global_tables import GlobalTable
from streamalloc.serialization import dead_letter_serde, topic_serde
from streamalloc.services import faust_app
from streamalloc.services.coalesce import AtsValue, Coalescer, Push, ats_values, stock_status
from streamalloc.services.faust_app import Guarantee, Message
from streamalloc.services.http import Handler, ServiceHttp
from streamalloc.services.kit_components import ComponentAts, encode_entry, kit_values, merge, unpushed
from streamalloc.services.webhooks import WebhookConfig, WebhookSender
from streamalloc.stages.tables import KitsView
from streamalloc.topics import AVAILABILITY, CHANNEL_ATS, DEAD_LETTER, KITS

log = logging.getLogger(__name__)
SERVICE = "channel-sync"
#: The table of each kit's components' newest ATS, at the kit's owner (kit_components.py).
KIT_TABLE = "kit-components"


def kit_components_topic(settings: Settings) -> str:
    """The repartition topic a component's reader tells its kits' owners through, named
    as Kafka Streams names one (`<application id>-<name>-repartition`)."""
    return f"{settings.app_id}-{SERVICE}-{KIT_TABLE}-repartition"


@dataclass(frozen=True, slots=True)
class ChannelSyncConfig:
    """What channel-sync is told at the edge (CLI or environment)."""

    window_ms: int = 1_000
    #: Low-stock threshold per channel, and for channels not named.
    low_stock: dict[str, int] = field(default_factory=dict)
    default_low_stock: int = 0
    guarantee: Guarantee = "at_least_once"
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)


class ChannelSyncMetrics:
    """Prometheus counters of the service, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "streamalloc_channel_sync_availability_records", "Availability records read.", registry=r
        )
        self.changes = Counter(
            "streamalloc_channel_sync_ats_changes", "ATS values read, per channel.", ["channel"], registry=r
        )
        self.pushes = Counter(
            "streamalloc_channel_sync_pushes",
            "ATS pushes to channel-ats, per channel.",
            ["channel"],
            registry=r,
        )
        self.coalesced = Counter(
            "streamalloc_channel_sync_coalesced",
            "ATS changes folded into a later push, per channel.",
            ["channel"],
            registry=r,
        )
        self.stock_events = Counter(
            "streamalloc_channel_sync_stock_events",
            "Threshold events pushed.",
            ["channel", "event"],
            registry=r,
        )
        self.superseded = Counter(
            "streamalloc_channel_sync_superseded_records",
            "Availability records skipped for a newer one of their SKU read in the same batch.",
            registry=r,
        )
        self.dead_letters = Counter(
            "streamalloc_channel_sync_dead_letters", "Undecodable records sent to dead-letter.", registry=r
        )
        self.waiting = Gauge(
            "streamalloc_channel_sync_waiting", "Keys waiting for their window to close.", registry=r
        )
        self.webhooks = Counter(
            "streamalloc_channel_sync_webhook_attempts",
            "Webhook POSTs per channel by result: delivered, retried, failed (then dead-lettered).",
            ["channel", "result"],
            registry=r,
        )
        self.lag = Gauge(
            "streamalloc_channel_sync_lag",
            "Records behind the end of availability.",
            ["partition"],
            registry=r,
        )


def _entry(value: AtsValue, pushed: int | None) -> bytes:
    """The table record of a key: its newest value and what was last pushed for it."""
    return json.dumps(
        {
            "ats": value.ats,
            "as_of": value.as_of,
            "cause_event_id": value.cause_event_id,
            "availability_event_id": value.availability_event_id,
            "pushed": pushed,
        },
        separators=(",", ":"),
    ).encode()


def _value_of(key: str, entry: dict[str, Any]) -> AtsValue:
    channel, _, sku = key.partition(":")
    return AtsValue(
        channel,
        sku,
        int(entry["ats"]),
        int(entry["as_of"]),
        entry["cause_event_id"],
        entry["availability_event_id"],
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class ChannelSync:
    """The service: a faust app, its table, the coalescer, metrics and HTTP routes."""

    def __init__(
        self,
        settings: Settings,
        config: ChannelSyncConfig,
        *,
        self_url: str | None = None,
        kits: Callable[[], Mapping[str, Kit]] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.kits = kits  # the kits table as kit SKU -> Kit (stages/tables.py KitsView); None: none
        self._kits_seen: Mapping[str, Kit] | None = None
        self._kits_of: dict[str, tuple[Kit, ...]] = {}
        #: SKU -> the values of its newest availability record read, told to its kits' owners
        self._latest: dict[str, list[AtsValue]] = {}
        self._kits_told: Mapping[str, Kit] = {}  # the kits table as `_follow_kits` last saw it
        self._tell_all = False  # after a recovery: tell every kit's owner again
        self.self_url = self_url
        self.app = faust_app.make_app(settings, SERVICE, guarantee=config.guarantee, canonical_url=self_url)
        self.metrics = ChannelSyncMetrics()
        self.coalescer = Coalescer(config.window_ms, dict(config.low_stock), config.default_low_stock)
        self._availability = topic_serde(settings, settings.topic(AVAILABILITY))
        self._feed = topic_serde(settings, settings.topic(CHANNEL_ATS))
        self._dead = dead_letter_serde(settings)
        self._feed_topic = faust_app.raw_topic(self.app, settings.topic(CHANNEL_ATS))
        self._dead_topic = faust_app.raw_topic(self.app, settings.topic(DEAD_LETTER))
        self.table = faust_app.table(self.app, "ats")
        self.table.on_recover(self._on_recover)
        # availability is absolute per SKU: of a batch read together only each SKU's newest
        # record matters, so a backlog is read at the rate of SKUs, not of records
        faust_app.latest_agent(
            self.app,
            faust_app.raw_topic(self.app, settings.topic(AVAILABILITY)),
            self._handle,
            max_records=100,
            within_s=0.02,
        )
        self._kit_topic = faust_app.raw_topic(self.app, kit_components_topic(settings), internal=True)
        self.kit_table = faust_app.table(self.app, KIT_TABLE)
        self.kit_table.on_recover(self._on_recover_kits)
        faust_app.agent(self.app, self._kit_topic, self._handle_component, name="kits")
        faust_app.timer(self.app, max(config.window_ms / 4000, 0.01), self._tick)
        self.http: ServiceHttp | None = None
        self._session: aiohttp.ClientSession | None = None  # for forwarded queries
        self.webhooks = WebhookSender(
            config.webhooks,
            self._webhook_dead_letter,
            on_result=lambda channel, result: self.metrics.webhooks.labels(channel, result).inc(),
        )

    # ------------------------------------------------------------ stream

    async def _handle(self, message: Message) -> None:
        self.metrics.records.inc(1 + message.superseded)
        if message.superseded:
            self.metrics.superseded.inc(message.superseded)
        self.metrics.lag.labels(str(message.partition)).set(max(message.highwater - message.offset - 1, 0))
        try:
            if message.value is None:
                return  # a tombstone: the engine never deletes availability; nothing to tell channels
            record = self._availability.decode(
                message.value, topic=message.topic, partition=message.partition, offset=message.offset
            )
        except DeserializationError as exc:
            await self._dead_letter(message, str(exc))
            return
        now = _now_ms()
        values = ats_values(record)
        for value in values:
            key = value.key.encode()
            self.metrics.changes.labels(value.channel).inc()
            if self.coalescer.pushed(value.key) is None:
                stored = self.table.get(key)
                if stored is not None:
                    self.coalescer.known(value.key, json.loads(stored)["pushed"])
            push = self.coalescer.offer(value, now)
            if push is not None:
                await self._publish(push)
            self.table[key] = _entry(value, self.coalescer.pushed(value.key))
        if values:
            sku = values[0].sku
            self._latest[sku] = values
            for kit in self._kits_with(sku):
                await self._tell(kit.kit_sku, values)
        self.metrics.waiting.set(self.coalescer.waiting())

    def _kits_with(self, sku: str) -> tuple[Kit, ...]:
        """The kits `sku` is part of, by the kits table as it is now (re-indexed when it changed)."""
        if self.kits is None:
            return ()
        kits = self.kits()
        if kits is not self._kits_seen:
            self._kits_of, self._kits_seen = kits_by_component(kits), kits
        return self._kits_of.get(sku, ())

    async def _tell(self, kit_sku: str, values: list[AtsValue]) -> None:
        """Tell the owner of `kit_sku` a component's newest ATS per channel (kit_components.py)."""
        component = ComponentAts.of(kit_sku, values)
        if component is not None:
            await self._kit_topic.send(key=kit_sku.encode(), value=component.encode())

    async def _handle_component(self, message: Message) -> None:
        """At a kit's owner: take a component's ATS in, and push the kit's ATS per channel."""
        try:
            component = ComponentAts.decode(message.value)
        except DeserializationError as exc:
            await self._dead_letter(message, str(exc))
            return
        key = component.kit_sku.encode()
        stored = self.kit_table.get(key)
        entry = merge(None if stored is None else json.loads(stored), component)
        if entry is None:
            return  # older than the ATS held: a former reader of the component, late
        kit = self._kits_now().get(component.kit_sku)
        if kit is not None:
            await self._push_kit(kit, entry, _now_ms())
        self.kit_table[key] = encode_entry(entry)

    async def _push_kit(self, kit: Kit, entry: dict[str, Any], now: int) -> None:
        """Offer the kit's ATS per channel to the coalescer; note in `entry` what was offered
        and what is pushed (kit_components.py)."""
        for value in kit_values(kit, entry):
            if self.coalescer.pushed(value.key) is None:
                self.coalescer.known(value.key, entry["pushed"].get(value.channel))
            self.metrics.changes.labels(value.channel).inc()
            push = self.coalescer.offer(value, now)
            if push is not None:
                await self._publish(push)
            entry["kit_ats"][value.channel] = value.ats
            entry["pushed"][value.channel] = self.coalescer.pushed(value.key)

    def _kits_now(self) -> Mapping[str, Kit]:
        return self.kits() if self.kits is not None else {}

    async def _follow_kits(self, now: int) -> None:
        """When the kits table changed (or after a recovery, every kit): tell the owners of
        the kits that changed what this instance knows of their components, and push again
        a kit held here, as it is now."""
        kits = self._kits_now()
        if kits is self._kits_told and not self._tell_all:
            return
        told, tell_all = self._kits_told, self._tell_all
        self._kits_told, self._tell_all = kits, False
        for kit in kits.values():
            if not tell_all and told.get(kit.kit_sku) == kit:
                continue
            for sku, _ in kit.components:
                values = self._latest.get(sku)
                if values:
                    await self._tell(kit.kit_sku, values)
            stored = self.kit_table.get(kit.kit_sku.encode())  # no event: any partition held here
            if stored is not None:
                await self._push_kit(kit, json.loads(stored), now)

    async def _tick(self) -> None:
        await self._follow_kits(_now_ms())
        for push in self.coalescer.due(_now_ms()):
            await self._publish(push)
        self.metrics.waiting.set(self.coalescer.waiting())

    async def _on_recover(self) -> None:
        """Queue again every key whose newest value had not been pushed when the process stopped."""
        now = _now_ms()
        self._tell_all = True
        for key, stored in self.table.items():
            entry = json.loads(stored)
            name = key.decode()
            value = _value_of(name, entry)
            latest = self._latest.get(value.sku)
            if latest is None or latest[0].as_of < value.as_of:
                self._latest[value.sku] = [value]
            elif latest[0].as_of == value.as_of and all(v.channel != value.channel for v in latest):
                latest.append(value)
            if entry["pushed"] != entry["ats"]:
                self.coalescer.known(name, entry["pushed"])
                push = self.coalescer.offer(value, now)
                if push is not None:
                    await self._publish(push)

    async def _on_recover_kits(self) -> None:
        """Queue again every kit ATS computed here and not pushed when the process stopped."""
        now = _now_ms()
        self._tell_all = True
        for key, stored in self.kit_table.items():
            for value, pushed in unpushed(key.decode(), json.loads(stored)):
                self.coalescer.known(value.key, pushed)
                push = self.coalescer.offer(value, now)
                if push is not None:
                    await self._publish(push)

    async def _publish(self, push: Push) -> None:
        value = push.value
        record = {
            "event_id": push.event_id,
            "feed_key": value.key,
            "channel": value.channel,
            "sku": value.sku,
            "ats": value.ats,
            "previous_ats": push.previous_ats,
            "status": push.status,
            "stock_event": push.stock_event,
            "as_of": value.as_of,
            "cause_event_id": value.cause_event_id,
            "availability_event_id": value.availability_event_id,
            "changes": push.changes,
            "pushed_at": push.pushed_at,
        }
        await self._feed_topic.send(key=value.key.encode(), value=self._feed.encode(record))
        self.webhooks.submit(value.channel, value.key, push.event_id, record)
        self.metrics.pushes.labels(value.channel).inc()
        if push.changes > 1:
            self.metrics.coalesced.labels(value.channel).inc(push.changes - 1)
        if push.stock_event is not None:
            self.metrics.stock_events.labels(value.channel, push.stock_event).inc()

    async def _dead_letter(self, message: Message, error: str) -> None:
        log.warning(
            "record of %s at %s/%s undecodable: %s", message.topic, message.partition, message.offset, error
        )
        record = faust_app.dead_letter_record(message, error)
        await self._dead_topic.send(key=message.key, value=self._dead.encode(record))
        self.metrics.dead_letters.inc()

    async def _webhook_dead_letter(self, channel: str, key: str, body: bytes, error: str) -> None:
        """A push no webhook attempt delivered: kept on dead-letter with its body, to resend."""
        event_id = json.loads(body)["event_id"]
        record = {
            "event_id": f"dlq:webhook:{channel}:{event_id}",
            "source_topic": self.settings.topic(CHANNEL_ATS),
            "partition": -1,  # not read from a partition: a push that could not be delivered
            "offset": -1,
            "key": key.encode(),
            "value": body,
            "error": error,
            "failed_at": _now_ms(),
        }
        await self._dead_topic.send(key=key.encode(), value=self._dead.encode(record))

    # ------------------------------------------------------------ queries

    def _view(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        channel, _, sku = key.partition(":")
        return {
            "channel": channel,
            "sku": sku,
            "ats": entry["ats"],
            "status": stock_status(entry["ats"], self.coalescer.threshold(channel)),
            "as_of": entry["as_of"],
            "cause_event_id": entry["cause_event_id"],
        }

    def _entries(self, channel: str) -> Iterator[tuple[str, dict[str, Any]]]:
        prefix = f"{channel}:"
        for key, stored in self.table.items():
            name = key.decode()
            if name.startswith(prefix):
                yield name, json.loads(stored)

    async def ats_of(self, request: web.Request) -> web.Response:
        """GET /ats/<channel>/<sku>, on any instance: the owner of the SKU's partition answers.

        The table's partition of a key is the SKU's `availability` partition. Held here: the
        answer (404 if never seen). Held by another instance: forwarded there and its answer
        relayed, or, with query forwarding off or for a query already forwarded (no loops while
        two instances disagree during a rebalance), 421 with the owner's address. No owner
        known (before the first assignment, during a rebalance): 503, try again.
        """
        channel, sku = request.match_info["channel"], request.match_info["sku"]
        key = f"{channel}:{sku}"
        stored = self.table.get(key.encode())
        if stored is not None:
            return web.json_response({**self._view(key, json.loads(stored)), "served_by": self.self_url})
        owners = faust_app.table_owners(self.app, "ats")
        base: dict[str, Any] = {"channel": channel, "sku": sku}
        if not owners:
            return web.json_response(
                {**base, "error": "no instance owns the SKU's partition now"}, status=503
            )
        partition = partition_for(sku.encode(), max(owners) + 1)
        owner = owners.get(partition)
        base["partition"] = partition
        if owner is None:
            return web.json_response(
                {**base, "error": "no instance owns the SKU's partition now"}, status=503
            )
        if _same_url(owner, self.self_url):
            return web.json_response({**base, "error": f"no ATS known for {key}"}, status=404)
        if request.headers.get(FORWARDED_HEADER) is not None or not self.settings.query_forwarding:
            return web.json_response(
                {**base, "error": "another instance owns this SKU", "owner": owner}, status=421
            )
        return await self._forward(owner, request, base)

    async def _forward(self, owner: str, request: web.Request, base: dict[str, Any]) -> web.Response:
        url = owner.rstrip("/") + request.rel_url.path_qs
        headers = {FORWARDED_HEADER: self.self_url or ""}
        try:
            session = self._client()
            async with session.get(url, headers=headers) as response:
                body = await response.read()
                return web.Response(body=body, status=response.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("forwarding /ats to %s failed: %s", owner, type(exc).__name__)
            error = {**base, "error": "the owner did not answer; try again", "owner": owner}
            return web.json_response(error, status=503)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def ats_changed(self, request: web.Request) -> web.Response:
        """GET /ats/<channel>?changed_since=<epoch ms>: every SKU whose ATS is newer than that."""
        raw = request.query.get("changed_since", "0")
        try:
            since = int(raw)
        except ValueError:
            return web.json_response(
                {"error": f"changed_since must be epoch milliseconds, not {raw!r}"}, status=400
            )
        channel = request.match_info["channel"]
        items = [self._view(k, e) for k, e in self._entries(channel) if e["as_of"] > since]
        items.sort(key=lambda v: (v["as_of"], v["sku"]))
        return web.json_response({"channel": channel, "changed_since": since, "items": items})

    def routes(self) -> dict[str, Handler]:
        return {"/ats/{channel}/{sku}": self.ats_of, "/ats/{channel}": self.ats_changed}


def _same_url(a: str, b: str | None) -> bool:
    return b is not None and a.rstrip("/") == b.rstrip("/")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build(
    settings: Settings, config: ChannelSyncConfig, *, http_host: str, http_port: int | None
) -> ChannelSync:
    """The service with its HTTP edge started once faust is running (port None: no HTTP)."""
    if http_port == 0:  # the group must know the address before the HTTP server starts
        http_port = _free_port(http_host)
    self_url = settings.advertised_url or f"http://{http_host}:{http_port}" if http_port is not None else None
    _create_kit_components_topic(settings)
    kits_table = _kits_table(settings)
    service = ChannelSync(settings, config, self_url=self_url, kits=KitsView(kits_table))
    faust_app.on_started(service.app, lambda: _follow(kits_table))
    if http_port is not None:
        http = ServiceHttp(
            http_host,
            http_port,
            registry=service.metrics.registry,
            ready=lambda: faust_app.ready(service.app),
            routes=service.routes(),
        )
        service.http = http

        async def start() -> None:
            port = await http.start()
            log.warning(
                "channel-sync HTTP on http://%s:%s (/ats, /health, /ready, /metrics)", http_host, port
            )

        faust_app.on_started(service.app, start)
    return service


def _create_kit_components_topic(settings: Settings) -> None:
    """The repartition topic, made before faust joins the group: its assignor leaves out a
    topic missing then (faust declares its internal topics too late for the first one)."""
    specs = [TopicSpec(kit_components_topic(settings), settings.partitions, settings.replication_factor)]
    create_topics(admin_client(settings), specs)


def _kits_table(settings: Settings) -> GlobalTable[dict[str, Any]]:
    """The kits table, read whole outside the group as the engine reads it (runtime/global_tables.py)."""
    topic = settings.topic(KITS)
    serde = topic_serde(settings, topic)
    reader = consumer_config(settings, group_id=f"{settings.app_id}-{SERVICE}-tables")
    return GlobalTable(topic, lambda value: serde.decode(value, topic=topic), reader)


async def _follow(table: GlobalTable[dict[str, Any]]) -> None:
    """Catch up with the kits table, then apply its changes every second (it changes rarely)."""
    await asyncio.to_thread(table.start)  # blocking calls, off the loop the agents run on
    await asyncio.to_thread(table.catch_up)
    try:
        while True:
            table.poll(0.0)
            await asyncio.sleep(1.0)
    finally:  # cancelled as the app stops
        table.close()


def run(settings: Settings, config: ChannelSyncConfig, *, http_host: str, http_port: int | None) -> int:
    service = build(settings, config, http_host=http_host, http_port=http_port)
    return faust_app.run(service.app, settings.log_level)
