"""`streamalloc bench failover`: from a worker's SIGKILL to the first decision another makes for it.

Two worker processes share the group; the engine holds `skus` SKUs of stock (three
locations each), so a store partition has something to restore; orders arrive at a steady
rate all along. Then one worker is killed with SIGKILL, and the time runs until the
first committed decision, read as a downstream consumer reads it, for an order placed
after the kill whose SKU lives on a partition the dead worker owned.

What that time is made of: the group noticing the death (the session timeout: 10 s in the
`kafka` profile, `--session-timeout-ms` to shorten it; the broker refuses less than its
group.min.session.timeout.ms, 6 s by default), the rebalance, the dead producer's open
transaction (aborted by the broker after transaction.timeout.ms, 10 s, counted from
when it began, so mostly overlapping the session timeout), and the restore of the
partitions' stores: all of the changelog without standby replicas, the tail with them.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamalloc.bench.engine import CHANNELS, LOCATIONS
from streamalloc.broker.process import free_port, terminate_all
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import admin_client, consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.partitioning import partition_for
from streamalloc.kafka.types import consumed
from streamalloc.runtime.members import describe_group
from streamalloc.serialization import topic_serde


@dataclass(frozen=True)
class FailoverResult:
    standby: int
    session_timeout_ms: int
    failover_seconds: float
    restored_records: int  # by the survivor, for the dead worker's allocator partitions
    changelog_records: int  # the end offsets of those partitions' changelogs


def _log_events(path: Path, msg: str) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"msg": "{msg}"' in line:
            found.append(json.loads(line))
    return found


class _Engine:
    """Topics, tables, stock, a steady order feed and the two worker processes of one run."""

    def __init__(self, settings: Settings, workdir: Path, skus: int) -> None:
        self.settings = settings
        self.workdir = workdir
        self.skus = skus
        tuning: dict[str, Any] = {"linger.ms": 20}
        self.producer = Producer(producer_config(settings, **tuning))
        self.orders = topic_serde(settings, settings.topic("orders"))
        self.workers: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self.placed_at: dict[str, float] = {}  # order id -> wall time it was produced

    def prepare(self) -> None:
        settings = self.settings
        ensure_topics(settings)
        locations = topic_serde(settings, settings.topic("locations"))
        channels = topic_serde(settings, settings.topic("channels"))
        inventory = topic_serde(settings, settings.topic("inventory"))
        for location in LOCATIONS:
            row = {"location_id": location, "status": "online", "priority": 1, "regions_served": []}
            produce(
                self.producer, locations.topic, locations.encode(locations.validate(row)), location.encode()
            )
        for channel in CHANNELS:
            row = {"channel_id": channel}
            produce(self.producer, channels.topic, channels.encode(channels.validate(row)), channel.encode())
        now = int(time.time() * 1000)
        for i in range(self.skus):
            sku = f"SKU-{i:06d}"
            for location in LOCATIONS:
                event = {"event_id": f"r-{i}-{location}", "type": "received", "sku": sku,
                         "location": location, "qty": 10**6, "occurred_at": now}  # fmt: skip
                produce(
                    self.producer, inventory.topic, inventory.encode(inventory.validate(event)), sku.encode()
                )
        self.producer.flush(120)

    def start_worker(self, name: str, env: dict[str, str]) -> str:
        port = free_port()
        log = self.workdir / f"{name}.log"
        s = self.settings
        command = [
            sys.executable, "-m", "streamalloc", "--bootstrap", str(s.bootstrap),
            "--prefix", s.topic_prefix, "--app-id", s.app_id, "--state-dir", str(self.workdir / name),
            "--broker-profile", s.broker_profile, "--log-level", "INFO",
            "worker", "--no-create-topics", "--http-port", str(port),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
            )
        url = f"http://127.0.0.1:{port}"
        self.workers.append((process, url, log))
        return url

    def feed(self, rate: int) -> None:
        """Place one-line orders at `rate` per second until stopped."""
        rng = random.Random(5)

        def run() -> None:
            i = 0
            begin = time.monotonic()
            while not self._stop.is_set():
                order_id = f"order-{i}"
                sku = f"SKU-{rng.randrange(self.skus):06d}"
                order = {"event_id": f"o-{i}", "type": "placed", "order_id": order_id,
                         "channel": CHANNELS[i % 3], "occurred_at": int(time.time() * 1000),
                         "lines": [{"line_id": "1", "sku": sku, "qty": 1}]}  # fmt: skip
                self.placed_at[order_id] = time.time()
                produce(
                    self.producer,
                    self.orders.topic,
                    self.orders.encode(self.orders.validate(order)),
                    order_id.encode(),
                )
                self.producer.poll(0)
                i += 1
                ahead = i / rate - (time.monotonic() - begin)
                if ahead > 0:
                    time.sleep(ahead)
            self.producer.flush(30)

        self._feeder = threading.Thread(target=run, daemon=True)
        self._feeder.start()

    def close(self) -> None:
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(30)
        terminate_all([process for process, _, _ in self.workers], 30)


class _Decisions:
    """Reads committed allocations; remembers when each order's first one was seen, and its SKU."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topic("allocations")
        self._serde = topic_serde(settings, topic)
        self._consumer = Consumer(consumer_config(settings, group_id=f"bench-failover-{time.time_ns()}"))
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.seen: dict[str, tuple[float, str]] = {}  # order id -> (wall time seen, sku)

    def poll(self) -> None:
        for msg in consumed(consume_available(self._consumer, 10_000, 0.1)):
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            event = self._serde.decode(value)
            if event.get("sku"):  # a line's decision (order-level events name no SKU)
                self.seen.setdefault(event["order_id"], (time.time(), event["sku"]))

    def close(self) -> None:
        self._consumer.close()


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise StreamallocError(f"bench failover: {what} did not happen within {timeout_s:.0f}s")
        tick()


def _stock_processed(settings: Settings) -> Callable[[], bool]:
    """True once the group's committed offsets on `inventory` reach its end (read, not joined)."""
    topic = settings.topic("inventory")
    reader = Consumer(consumer_config(settings, group_id=settings.app_id))
    count = len(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    tps = [TopicPartition(topic, p) for p in range(count)]
    ends = [reader.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
    done = [False]

    def check() -> bool:
        if not done[0]:
            committed = reader.committed(tps, timeout=10)
            done[0] = all(tp.offset >= end for tp, end in zip(committed, ends, strict=True))
            if done[0]:
                reader.close()
            else:
                time.sleep(0.5)
        return done[0]

    return check


def run(
    settings: Settings,
    *,
    skus: int,
    standby: int,
    session_timeout_ms: int,
    rate: int = 50,
    on_progress: Callable[[int], None] = lambda n: None,
) -> FailoverResult:
    tag = f"bench{time.time_ns() % 10**9}"
    settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-failover-"))
    engine = _Engine(settings, workdir, skus)
    env = {
        "STREAMALLOC_NUM_STANDBY_REPLICAS": str(standby),
        "STREAMALLOC_KAFKA_SESSION_TIMEOUT_MS": str(session_timeout_ms),
        "STREAMALLOC_KAFKA_HEARTBEAT_INTERVAL_MS": str(max(100, session_timeout_ms // 10)),
    }
    decisions: _Decisions | None = None
    try:
        engine.prepare()
        urls = [engine.start_worker("w0", env), engine.start_worker("w1", env)]
        decisions = _Decisions(settings)
        admin = admin_client(settings)
        topic = settings.topic("allocation-requests")
        partitions = settings.partitions
        observer = decisions

        def tick() -> None:
            observer.poll()
            on_progress(len(observer.seen))
            for process, _, log in engine.workers[:2]:
                if process.poll() is not None and process is not victim_process():
                    raise StreamallocError(f"a worker exited with {process.returncode}; see {log}")

        killed: list[subprocess.Popen[bytes]] = []

        def victim_process() -> subprocess.Popen[bytes] | None:
            return killed[0] if killed else None

        def both_own() -> bool:
            view = describe_group(admin, settings.app_id)
            return view.stable and {m.url for m in view.members if m.assignment} == set(urls)

        _wait(both_own, 180, "both workers joined", tick)
        stock_in = _stock_processed(settings)
        _wait(stock_in, 900, "the stock processed", tick)
        engine.feed(rate)
        # Steady state: orders decided on every partition, stock processed, copies warm.
        _wait(lambda: len(observer.seen) >= rate * 5, 300, "the first decisions", tick)
        settle_until = time.monotonic() + 5
        _wait(lambda: time.monotonic() > settle_until, 60, "settling", tick)
        view = describe_group(admin, settings.app_id)
        victim = next(m for m in view.members if m.url == urls[0])
        taken = {p for t, p in victim.assignment if t == topic}
        process, _, _ = engine.workers[0]
        killed.append(process)
        survivor_log = engine.workers[1][2]
        restores_before = len(_log_events(survivor_log, "restored"))
        killed_at = time.time()
        process.kill()
        process.wait(10)

        def decided_there() -> bool:
            return any(
                at >= killed_at and engine.placed_at.get(order, 0.0) >= killed_at
                and partition_for(sku.encode(), partitions) in taken
                for order, (at, sku) in list(observer.seen.items())
            )  # fmt: skip

        _wait(decided_there, 300, "a decision on the killed worker's partitions", tick)
        first = min(
            at for order, (at, sku) in observer.seen.items()
            if at >= killed_at and engine.placed_at.get(order, 0.0) >= killed_at
            and partition_for(sku.encode(), partitions) in taken
        )  # fmt: skip
        restored = [
            e for e in _log_events(survivor_log, "restored")[restores_before:]
            if e.get("store") == "allocator" and e.get("partition") in taken
        ]  # fmt: skip
        reader = Consumer(consumer_config(settings))
        try:
            changelog = settings.changelog_topic("allocator")
            ends = [reader.get_watermark_offsets(TopicPartition(changelog, p), timeout=10)[1] for p in taken]
        finally:
            reader.close()
        return FailoverResult(
            standby=standby,
            session_timeout_ms=session_timeout_ms,
            failover_seconds=first - killed_at,
            restored_records=sum(int(e["records"]) for e in restored),
            changelog_records=sum(ends),
        )
    finally:
        engine.close()
        if decisions is not None:
            decisions.close()


def summary(results: list[FailoverResult]) -> dict[str, float]:
    seconds = [r.failover_seconds for r in results]
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "restored": statistics.median(r.restored_records for r in results),
        "changelog": statistics.median(r.changelog_records for r in results),
    }
