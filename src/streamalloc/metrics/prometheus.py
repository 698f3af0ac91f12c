"""The runtime observer as Prometheus metrics, on a registry of its own (one per worker)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from streamalloc.domain import reasons
from streamalloc.domain.tables import OFFLINE, ONLINE, STALE
from streamalloc.runtime.dead_letter import CATEGORIES as DEAD_LETTER_CATEGORIES
from streamalloc.runtime.observer import Observer, Reservations, StockSnapshot
from streamalloc.runtime.stage import Stage

#: The decisions every allocator can make from its first order on (and the releases, picks,
#: shipments and returns of what it allocated), exported at zero from the start: a labelled
#: counter appears at its first increment, and `rate()` misses that one.
KNOWN_DECISIONS: tuple[tuple[str, str], ...] = (
    ("allocated", ""),
    *(
        ("rejected", reason)
        for reason in (
            reasons.INVALID_QUANTITY,
            reasons.UNKNOWN_CHANNEL,
            reasons.UNKNOWN_SKU,
            reasons.INSUFFICIENT_STOCK,
            reasons.PROTECTED_FOR_PRIORITY,
            reasons.CHANNEL_NOT_ALLOWED,
            reasons.LOCATION_UNAVAILABLE,
        )
    ),
    ("backordered", reasons.INCOMING),
    ("backordered", reasons.WAITLISTED),
    *(
        ("released", reason)
        for reason in (
            reasons.CANCELLED,
            reasons.SHIP_COMPLETE_FAILED,
            reasons.EXPIRED,
            reasons.HOLD_EXPIRED,
            reasons.REALLOCATED,
            reasons.LOCATION_OFFLINE,
            reasons.LOCATION_STALE,
            reasons.COUNT_SHORTAGE,
        )
    ),
    # the warehouse's steps on what was allocated (reason-less)
    ("picked", ""),
    ("fulfilled", ""),
    ("returned", ""),
)

#: A decision's channel label when the channels table does not know the order's channel: what
#: an order names is unbounded, the label must not be.
OTHER_CHANNEL = ""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A restore takes milliseconds for a fresh partition and minutes for a large one.
#: Order event time to decision: milliseconds when the engine keeps up, minutes in a backlog.
_DECISION_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
_RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class PrometheusObserver(Observer):
    """Counters and histograms named `streamalloc_*`; labels kept few and bounded."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        """`process`: also export the process's CPU, memory and file descriptors, the Python
        platform and the garbage collector (prometheus_client's own collectors)."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.records = Counter("streamalloc_records", "Input records processed", ["stage"], registry=r)
        self.batch_seconds = Histogram(
            "streamalloc_batch_seconds",
            "Time a stage spent on one batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commits = Counter("streamalloc_commits", "Transactions committed", registry=r)
        self.committed_records = Counter(
            "streamalloc_committed_records", "Input records committed", registry=r
        )
        self.changelog_records = Counter(
            "streamalloc_changelog_records", "Changelog records written", registry=r
        )
        self.commit_seconds = Histogram(
            "streamalloc_commit_seconds", "Time to commit a transaction", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.aborts = Counter("streamalloc_aborts", "Transactions aborted", registry=r)
        self.dead_letters = Counter(
            "streamalloc_dead_letters",
            "Records sent to the dead-letter topic, by source topic and reason (a bounded category)",
            ["topic", "reason"],
            registry=r,
        )
        self.restored_records = Counter(
            "streamalloc_restored_records", "Changelog records restored", ["store"], registry=r
        )
        self.restore_seconds = Histogram(
            "streamalloc_restore_seconds",
            "Time to restore a store partition",
            ["store"],
            buckets=_RESTORE_BUCKETS,
            registry=r,
        )
        self.assigned = Gauge("streamalloc_assigned_partitions", "Input partitions owned", registry=r)
        # The per-line metrics count on the worker's thread in plain dicts and lists, read by
        # the scrapes: prometheus_client's children take a lock per increment, a cost per
        # order line that showed in the worker's profile (3% of its time).
        self.decisions = _Decisions()
        r.register(self.decisions)
        self.decision_latency = _Histogram(
            "streamalloc_decision_latency_seconds",
            "Order event time (occurred_at) to the decision of each of its lines",
            _DECISION_LATENCY_BUCKETS,
        )
        r.register(self.decision_latency)
        self.units_shipped = Counter(
            "streamalloc_units_shipped",
            "Units that left a location on a shipment (fulfilled events): inventory turnover over "
            'a window is increase(this) / the average of streamalloc_stock_units{bucket="on_hand"}',
            ["location"],
            registry=r,
        )
        self.location_changes = Counter(
            "streamalloc_location_status_changes",
            "Locations seen becoming online, offline or stale, per partition swept",
            ["location", "status"],
            registry=r,
        )
        self.last_commit = Gauge(
            "streamalloc_last_commit_timestamp_seconds",
            "Unix time of the last commit (of the worker's start, before its first)",
            registry=r,
        )
        self.last_commit.set(time.time())
        self.restoring = Gauge(
            "streamalloc_restoring", "1 while store partitions restore from their changelogs", registry=r
        )
        self.location_stale = Gauge(
            "streamalloc_location_stale",
            "1 while a location's inventory feed is silent past its freshness limit, on any partition here",
            ["location"],
            registry=r,
        )
        self._stale_by_partition: dict[int, frozenset[str]] = {}
        self._locations: frozenset[str] = frozenset()
        self.statistics_at = Gauge(
            "streamalloc_consumer_statistics_timestamp_seconds",
            "Unix time of the consumer's last statistics report (of the worker's start, before it): "
            "reports come every 5 s while the loop polls, so an old one means the loop is stuck",
            registry=r,
        )
        self.statistics_at.set(time.time())
        self.consumer_lag = _ConsumerLag()
        r.register(self.consumer_lag)
        self.stock = _Stock()
        r.register(self.stock)
        # labels() costs a lock and a tuple build per call; the hot paths keep their children.
        self._channels: frozenset[str] = frozenset()
        self._stage_metrics: dict[str, tuple[Any, Any]] = {}
        self._add_decision_channel(OTHER_CHANNEL)

    def _add_decision_channel(self, channel: str) -> None:
        decisions = self.decisions
        decisions.placed.setdefault(channel, 0)
        decisions.filled_first.setdefault(channel, 0)
        for kind, reason in KNOWN_DECISIONS:
            decisions.counts.setdefault((kind, reason or None, channel), 0)

    def on_stages(self, stages: Sequence[Stage]) -> None:
        for stage in stages:
            self._stage_metrics[stage.name] = (
                self.records.labels(stage.name),
                self.batch_seconds.labels(stage.name),
            )
            for topic in stage.topics():
                for reason in DEAD_LETTER_CATEGORIES:
                    self.dead_letters.labels(topic, reason)
            for store in stage.stores:
                self.restored_records.labels(store)
                self.restore_seconds.labels(store)

    def on_batch(self, stage: str, records: int, seconds: float) -> None:
        metrics = self._stage_metrics.get(stage)
        if metrics is None:
            metrics = self._stage_metrics[stage] = (
                self.records.labels(stage),
                self.batch_seconds.labels(stage),
            )
        metrics[0].inc(records)
        metrics[1].observe(seconds)

    def on_commit(self, records: int, changelog_records: int, seconds: float) -> None:
        self.last_commit.set(time.time())
        self.commits.inc()
        self.committed_records.inc(records)
        self.changelog_records.inc(changelog_records)
        self.commit_seconds.observe(seconds)

    def on_abort(self, reason: str) -> None:
        self.aborts.inc()

    def on_dead_letter(self, topic: str, reason: str) -> None:
        self.dead_letters.labels(topic, reason).inc()

    def on_restore(self, store: str, partition: int, records: int, seconds: float) -> None:
        self.restored_records.labels(store).inc(records)
        self.restore_seconds.labels(store).observe(seconds)

    def on_assignment(self, partitions: int) -> None:
        self.assigned.set(partitions)

    def on_decision(self, kind: str, reason: str | None, channel: str) -> None:
        counts = self.decisions.counts
        key = (kind, reason, channel)
        n = counts.get(key)
        if n is None and channel not in self._channels:
            key = (kind, reason, OTHER_CHANNEL)  # not what the order said: unbounded
            n = counts.get(key)
        counts[key] = 1 if n is None else n + 1

    def on_line_placed(self, channel: str, filled_first: bool) -> None:
        decisions = self.decisions
        if channel not in decisions.placed:  # not a channel of the table: under the empty one
            channel = OTHER_CHANNEL
        decisions.placed[channel] += 1
        if filled_first:
            decisions.filled_first[channel] += 1

    def on_shipped(self, location: str, units: int) -> None:
        self.units_shipped.labels(location).inc(units)

    def on_decision_latency(self, seconds: float) -> None:
        self.decision_latency.observe(seconds if seconds > 0 else 0.0)

    def on_channels(self, channels: Collection[str]) -> None:
        for channel in sorted(frozenset(channels) - self._channels):
            self._add_decision_channel(channel)
        # A channel gone from the table keeps its series and its children: a counter does not
        # go back, and the label values stay bounded by every channel the table ever held.
        self._channels = frozenset(channels)
        self.stock.channels = self._channels  # their stock series show zero before any stock

    def on_location_status(self, location: str, status: str) -> None:
        self.location_changes.labels(location, status).inc()

    def on_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        self.consumer_lag.lags = dict(lags)
        self.statistics_at.set(time.time())

    def on_restoring(self, restoring: bool) -> None:
        self.restoring.set(1 if restoring else 0)

    def on_location_staleness(
        self, partition: int, locations: Collection[str], stale: Collection[str]
    ) -> None:
        stale_here = frozenset(stale)
        known = self._locations | frozenset(locations)
        if self._stale_by_partition.get(partition) == stale_here and known == self._locations:
            return  # the usual case: nothing changed since this partition's last punctuation
        self._stale_by_partition[partition] = stale_here
        for location in known - self._locations:  # its status changes and shipments count from zero
            for status in (ONLINE, OFFLINE, STALE):
                self.location_changes.labels(location, status)
            self.units_shipped.labels(location)
        self._locations = known
        anywhere = frozenset().union(*self._stale_by_partition.values())
        for location in known:
            self.location_stale.labels(location).set(1 if location in anywhere else 0)

    def on_stock(self, stage: str, partition: int, stock: StockSnapshot) -> None:
        self.stock.snapshots = {**self.stock.snapshots, (stage, partition): stock}

    def on_task_closed(self, stage: str, partition: int) -> None:
        if (stage, partition) in self.stock.snapshots:
            self.stock.snapshots = {k: v for k, v in self.stock.snapshots.items() if k != (stage, partition)}


class _Stock(Collector):
    """Stock summed over the partitions this worker owns (each counted by its allocator task,
    stages/stock_totals.py): a revoked partition's stock goes with its task."""

    def __init__(self) -> None:
        # replaced whole, never mutated: read by scrapes on the HTTP thread
        self.snapshots: dict[tuple[str, int], StockSnapshot] = {}
        self.channels: frozenset[str] = frozenset()  # the channels table's, as last read
        self.clock = time.time  # the reservations' ages are as of the scrape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshots = self.snapshots.values()
        units: dict[tuple[str, str], int] = {}
        out_of_stock: dict[str, int] = {}
        waiting: dict[str, int] = dict.fromkeys((reasons.INCOMING, reasons.WAITLISTED), 0)
        backordered = skus = 0
        reserved: dict[str, Reservations] = {channel: Reservations() for channel in self.channels}
        ats: dict[str, int] = dict.fromkeys(self.channels, 0)
        out_by_channel: dict[str, int] = dict.fromkeys(self.channels, 0)
        for snapshot in snapshots:
            skus += snapshot.skus
            for channel, n in snapshot.ats.items():
                ats[channel] = ats.get(channel, 0) + n
            for channel, n in snapshot.out_of_stock_by_channel.items():
                out_by_channel[channel] = out_by_channel.get(channel, 0) + n
            for channel, r in snapshot.reservations.items():
                was = reserved.get(channel, Reservations())
                first = min((at for at in (was.oldest_ms, r.oldest_ms) if at is not None), default=None)
                reserved[channel] = Reservations(
                    was.lines + r.lines, first, was.decided_ms_sum + r.decided_ms_sum
                )
            for key, n in snapshot.units.items():
                units[key] = units.get(key, 0) + n
            for location, n in snapshot.out_of_stock.items():
                out_of_stock[location] = out_of_stock.get(location, 0) + n
            for reason, n in snapshot.waiting_lines.items():
                waiting[reason] = waiting.get(reason, 0) + n
            backordered += snapshot.backordered_units
        family = GaugeMetricFamily(
            "streamalloc_stock_units",
            "Units per location and bucket (on_hand, available, allocated, picked, quality_control, "
            "incoming), summed over the SKUs of the partitions owned here",
            labels=["location", "bucket"],
        )
        for (location, bucket), n in sorted(units.items()):
            family.add_metric([location, bucket], n)
        yield family
        family = GaugeMetricFamily(
            "streamalloc_skus_out_of_stock",
            "SKUs with a balance at the location and nothing available there (offline and stale "
            "locations included), over the partitions owned here",
            labels=["location"],
        )
        for location, n in sorted(out_of_stock.items()):
            family.add_metric([location], n)
        yield family
        yield GaugeMetricFamily(
            "streamalloc_skus_stocked",
            "SKUs with a balance at some location, over the partitions owned here (the share a "
            "channel is out of: streamalloc_skus_out_of_stock_by_channel / this)",
            value=skus,
        )
        family = GaugeMetricFamily(
            "streamalloc_channel_ats_units",
            "Units each channel may sell (its ATS: pools, location rules and safety stock applied), "
            "summed over the stocked SKUs of the partitions owned here",
            labels=["channel"],
        )
        for channel, n in sorted(ats.items()):
            family.add_metric([channel], n)
        yield family
        family = GaugeMetricFamily(
            "streamalloc_skus_out_of_stock_by_channel",
            "Stocked SKUs the channel can sell none of (ATS 0), over the partitions owned here",
            labels=["channel"],
        )
        for channel, n in sorted(out_by_channel.items()):
            family.add_metric([channel], n)
        yield family
        now_ms = self.clock() * 1000
        lines = GaugeMetricFamily(
            "streamalloc_open_reservations",
            "Order lines holding soft units not yet picked or released (status allocated; cart "
            "holds not included), by channel, over the partitions owned here",
            labels=["channel"],
        )
        oldest_age = GaugeMetricFamily(
            "streamalloc_open_reservation_oldest_age_seconds",
            "Age of the channel's oldest open reservation (since its line was allocated, counted "
            "from the start of that second), 0 with none; max over workers",
            labels=["channel"],
        )
        ages = GaugeMetricFamily(
            "streamalloc_open_reservation_summed_age_seconds",
            "Ages of the channel's open reservations added up: their mean age is this summed over "
            "workers / streamalloc_open_reservations summed over workers",
            labels=["channel"],
        )
        for channel, r in sorted(reserved.items()):
            lines.add_metric([channel], r.lines)
            age = 0.0 if r.oldest_ms is None else max(0.0, now_ms - r.oldest_ms) / 1000
            oldest_age.add_metric([channel], age)
            ages.add_metric([channel], max(0.0, r.lines * now_ms - r.decided_ms_sum) / 1000)
        yield lines
        yield oldest_age
        yield ages
        yield GaugeMetricFamily(
            "streamalloc_backordered_units",
            "Units order lines wait for against incoming stock, over the partitions owned here",
            value=backordered,
        )
        family = GaugeMetricFamily(
            "streamalloc_waiting_lines",
            "Order lines on waitlists by why they wait (incoming: backordered; waitlisted), "
            "over the partitions owned here",
            labels=["reason"],
        )
        for reason, n in sorted(waiting.items()):
            family.add_metric([reason], n)
        yield family


class _Decisions(Collector):
    """The decisions and the lines placed and filled first, counted in plain dicts on the
    worker's thread (`PrometheusObserver.on_decision`, `on_line_placed`): a scrape copies them
    whole, which the interpreter does without letting the worker in between."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str | None, str], int] = {}  # (type, reason, channel)
        self.placed: dict[str, int] = {}  # channel -> lines
        self.filled_first: dict[str, int] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "streamalloc_decisions",
            "Allocation decisions by type, reason and channel (empty: not a channel of the table)",
            labels=["type", "reason", "channel"],
        )
        for (kind, reason, channel), n in sorted(dict(self.counts).items(), key=_label_order):
            family.add_metric([kind, reason or "", channel], n)
        yield family
        family = CounterMetricFamily(
            "streamalloc_lines_placed",
            "Order lines decided for the first time (allocated, rejected or backordered), by channel "
            "(empty: not a channel of the table)",
            labels=["channel"],
        )
        for channel, n in sorted(dict(self.placed).items()):
            family.add_metric([channel], n)
        yield family
        family = CounterMetricFamily(
            "streamalloc_lines_filled_first",
            "Order lines allocated in full at their first decision, by channel: the cycle service "
            "level is increase(this) / increase(streamalloc_lines_placed_total) over a window",
            labels=["channel"],
        )
        for channel, n in sorted(dict(self.filled_first).items()):
            family.add_metric([channel], n)
        yield family


def _label_order(item: tuple[tuple[str, str | None, str], int]) -> tuple[str, str, str]:
    kind, reason, channel = item[0]
    return kind, reason or "", channel


class _Histogram(Collector):
    """A histogram without labels, observed on one thread and read by scrapes: a bucket
    count per bound (the first bound at or above the value, as `le` has it) and the sum."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total = list(self.counts), self.sum
        cumulative, buckets = 0, []
        for bound, n in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), counts, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class _ConsumerLag(Collector):
    """The lag per owned input partition, as last reported: a revoked partition's series goes."""

    def __init__(self) -> None:
        self.lags: dict[tuple[str, int], int] = {}  # replaced whole, never mutated: read by scrapes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamalloc_consumer_lag",
            "Records not yet consumed per owned input partition (consumer statistics)",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(self.lags.items()):
            family.add_metric([topic, str(partition)], lag)
        yield family
