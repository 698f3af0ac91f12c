"""`streamalloc bench engine`: order lines through the whole pipeline with exactly-once.

The engine runs as its own worker process (as in production); this process produces the
orders and reads the committed `allocations` topic, so what it measures is what a
downstream consumer sees. Two modes:

- throughput: every order is produced first; lines decided per second is counted from
  the first committed decision to the last (group join excluded, and reported apart);
- rate: orders are produced at a fixed rate of lines per second while the engine runs,
  and decision latency (order event time to the committed allocation event) is reported,
  with its share per hop (`HOPS`), from the record timestamps (set when the stage
  produced the record) and the moments this process saw each committed record.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamalloc.broker.process import terminate_all
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.serialization import topic_serde

LOCATIONS = ("WH-1", "WH-2", "STORE-1")
CHANNELS = ("web", "store", "marketplace")
FIRST_DECISIONS = frozenset({"allocated", "rejected", "backordered"})
#: Where a decision's latency goes, per line: order event time -> intake produced the line's
#: request -> the request committed and readable -> the allocator produced its decision ->
#: the decision committed and read here. Each reader fetches as the next stage does, so the
#: "committed" hops include one fetch; "allocator" can be below zero by the difference
#: between the allocator's fetch and this process's.
HOPS = ("intake", "request committed", "allocator", "decision committed")


@dataclass(frozen=True)
class EngineResult:
    lines: int
    orders: int
    join_seconds: float
    decide_seconds: float
    latencies_ms: list[float]
    peak_rss_mb: float
    hops_ms: dict[str, list[float]] = field(default_factory=dict)
    #: Until every order had its order-status too (the order stage done): the whole pipeline.
    settle_seconds: float = 0.0
    workers: int = 1
    total_rss_mb: float = 0.0  # the workers' peaks, summed (`peak_rss_mb` is the largest)
    #: CPU over the whole run (join included): the workers together, the embedded broker
    #: when this process started it (None: a cluster elsewhere), and this process (the feed
    #: and the reader of the outputs).
    workers_cpu_seconds: float = 0.0
    broker_cpu_seconds: float | None = None
    bench_cpu_seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.decide_seconds if self.decide_seconds > 0 else 0.0

    @property
    def settled_lines_per_second(self) -> float:
        """Lines per second until every order's status was out: a worker that put the order
        stage's work off (and so decided faster) cannot look faster here."""
        return self.lines / self.settle_seconds if self.settle_seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return _percentile(self.latencies_ms, q)

    def hop_percentile(self, hop: str, q: float) -> float:
        return _percentile(self.hops_ms.get(hop, []), q)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table_rows() -> dict[str, list[dict[str, Any]]]:
    """The `locations` and `channels` rows of the workload: every location online, every
    channel on the default rules (an order from a channel without a row is rejected)."""
    return {
        "locations": [
            {"location_id": location, "status": "online", "priority": 1, "regions_served": []}
            for location in LOCATIONS
        ],
        "channels": [{"channel_id": channel} for channel in CHANNELS],
    }


def stock_events(skus: int, occurred_at: int) -> list[tuple[str, dict[str, Any]]]:
    """(SKU, `inventory` event): a million units of every SKU received at every location."""
    return [
        (sku, {"event_id": f"r-{i}-{location}", "type": "received", "sku": sku, "location": location,
               "qty": 10**6, "occurred_at": occurred_at})
        for i, sku in ((i, f"SKU-{i:05d}") for i in range(skus))
        for location in LOCATIONS
    ]  # fmt: skip


def order_record(i: int, order_lines: list[tuple[str, int]], occurred_at: int) -> dict[str, Any]:
    """The `placed` order event of the plan's order `i` (`order_plan`)."""
    return {
        "event_id": f"o-{i}", "type": "placed", "order_id": f"order-{i}",
        "channel": CHANNELS[i % len(CHANNELS)], "occurred_at": occurred_at,
        "lines": [{"line_id": str(j + 1), "sku": s, "qty": q} for j, (s, q) in enumerate(order_lines)],
    }  # fmt: skip


def order_plan(lines: int, skus: int, seed: int) -> list[list[tuple[str, int]]]:
    """A realistic mix: 60% single-line, 30% two-line, 10% three- or four-line orders."""
    rng = random.Random(seed)
    orders: list[list[tuple[str, int]]] = []
    left = lines
    while left > 0:
        size = min(left, rng.choices((1, 2, 3, 4), weights=(60, 30, 6, 4))[0])
        orders.append([(f"SKU-{rng.randrange(skus):05d}", rng.choice((1, 1, 2))) for _ in range(size)])
        left -= size
    return orders


class _Decisions:
    """Reads committed allocations; counts first decisions and their latency, and the orders
    that have an order status (by key: the order id).

    In latency mode it reads the committed allocation requests too, for the hops (`HOPS`).
    """

    def __init__(self, settings: Settings, *, hops: bool = False) -> None:
        self._serde = topic_serde(settings, settings.topic("allocations"))
        self._requests = topic_serde(settings, settings.topic("allocation-requests"))
        self._status_topic = settings.topic("order-status")
        topics = [
            settings.topic("allocations"),
            self._status_topic,
            *([self._requests.topic] if hops else []),
        ]
        config = consumer_config(settings, group_id=f"bench-observer-{time.time_ns()}")
        self._consumer = Consumer(config)
        # assign(), not subscribe(): no group join of its own to skew the figures
        assigned = []
        for topic in topics:
            partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assigned += [TopicPartition(topic, p, 0) for p in partitions]
        self._consumer.assign(assigned)
        self.decided = 0
        self.first_at: float | None = None
        self.last_at = 0.0
        self.with_status: set[bytes] = set()  # order ids
        self.status_at = 0.0  # when the latest order got its first status
        self.latencies_ms: list[float] = []
        self.hops_ms: dict[str, list[float]] = {hop: [] for hop in HOPS} if hops else {}
        #: (order, line) -> when intake produced its request and when it was seen committed (ms)
        self._requested: dict[tuple[str, str], tuple[float, float]] = {}
        self.measure_latency = False

    def poll(self) -> None:
        # Never waits for a full batch, so the observer adds no latency to what it measures.
        for msg in consumed(consume_available(self._consumer, 10_000, 0.1)):
            value = msg.value()
            if msg.error() is not None or value is None:
                continue
            now = time.time()
            if msg.topic() == self._status_topic:
                order_id = msg.key()
                if order_id is not None and order_id not in self.with_status:
                    self.with_status.add(order_id)
                    self.status_at = now
                continue
            if msg.topic() == self._requests.topic:
                if self.measure_latency:
                    request = self._requests.decode(value)
                    key = (request["order_id"], request["line_id"])
                    self._requested.setdefault(key, (msg.timestamp()[1], now * 1000))
                continue
            if event_type(value) not in FIRST_DECISIONS:
                continue
            self.decided += 1
            self.first_at = self.first_at or now
            self.last_at = now
            if self.measure_latency:
                event = self._serde.decode(value)
                self.latencies_ms.append(now * 1000 - event["occurred_at"])
                requested = self._requested.pop((event["order_id"], event["line_id"]), None)
                if self.hops_ms and requested is not None:
                    produced, committed = requested
                    decided = msg.timestamp()[1]
                    for hop, ms in zip(
                        HOPS,
                        (produced - event["occurred_at"], committed - produced, decided - committed,
                         now * 1000 - decided),
                        strict=True,
                    ):  # fmt: skip
                        self.hops_ms[hop].append(ms)

    def close(self) -> None:
        self._consumer.close()


def event_type(value: bytes) -> str:
    """The `type` of an Avro allocation event without decoding it all: the third field,
    after event_id and cause_event_id (strings: zig-zag varint length, then bytes)."""
    pos = 5  # magic byte and schema id
    for _ in range(3):
        shift = length = 0
        while True:
            byte = value[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        length >>= 1
        if _ == 2:
            return value[pos : pos + length].decode()
        pos += length
    return ""


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run(
    settings: Settings,
    *,
    lines: int,
    skus: int = 1_000,
    rate: int | None = None,
    seed: int = 11,
    on_progress: Callable[[int], None] = lambda n: None,
    timeout_s: float = 600.0,
    workers: int = 1,
    after_join: bool = False,
) -> EngineResult:
    """One measurement. `after_join`: produce the orders once every worker has its partitions
    (else before the workers start): with several workers the first to join would otherwise
    decide much of the backlog alone; `bench engine --workers` runs one worker this way too,
    so the two compare."""
    tag = f"bench{time.time_ns() % 10**9}"
    settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    ensure_topics(settings)
    # In latency mode the feed sends each order at once: its own batching is not the engine's latency.
    tuning: dict[str, Any] = {"linger.ms": 20 if rate is None else 0}
    producer = Producer(producer_config(settings, **tuning))
    orders_serde = topic_serde(settings, settings.topic("orders"))
    inventory = topic_serde(settings, settings.topic("inventory"))

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        produce(producer, topic, value, key)

    for name, rows in table_rows().items():
        serde = topic_serde(settings, settings.topic(name))
        for row in rows:
            send(serde.topic, serde.key_of(row), serde.encode(serde.validate(row)))
    for sku, event in stock_events(skus, int(time.time() * 1000)):
        send(inventory.topic, sku.encode(), inventory.encode(inventory.validate(event)))
    producer.flush(60)

    plan = order_plan(lines, skus, seed)

    def order_bytes(i: int, order_lines: list[tuple[str, int]]) -> tuple[bytes, bytes]:
        order = order_record(i, order_lines, int(time.time() * 1000))
        return order["order_id"].encode(), orders_serde.encode(orders_serde.validate(order))

    observer = _Decisions(settings, hops=rate is not None)
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-"))
    # At a fixed rate, one warm-up order goes first and the steady feed starts once it is
    # decided: latency under load is measured on a running engine, not on a join backlog.
    upfront = plan if rate is None else plan[:1]

    def produce_upfront() -> None:
        for i, order_lines in enumerate(upfront):
            key, value = order_bytes(i, order_lines)
            send(orders_serde.topic, key, value)
        producer.flush(120)

    if not after_join:
        produce_upfront()
    logs = [workdir / f"worker-{n}.log" for n in range(workers)]
    started = time.time()
    cpu_before = cpu_seconds(os.getpid()), _children_cpu_seconds()
    processes = [_start_worker(settings, workdir / f"state-{n}", log) for n, log in enumerate(logs)]
    pids = {worker.pid for worker in processes}
    # With several workers the group settles once each has been assigned partitions: the
    # decisions before that (by the first to join, on every partition) are not counted.
    joined_at: float | None = None
    decided_at_join = 0
    next_look = 0.0
    try:
        feeder = None
        if rate is not None:

            def feed() -> None:
                sent, begin = 0, time.monotonic()
                for i, order_lines in enumerate(plan[1:], start=1):
                    key, value = order_bytes(i, order_lines)
                    send(orders_serde.topic, key, value)
                    sent += len(order_lines)
                    ahead = sent / rate - (time.monotonic() - begin)
                    if ahead > 0:
                        producer.poll(0)
                        time.sleep(ahead)
                producer.flush(60)

            feeder = threading.Thread(target=feed, daemon=True)
        deadline = time.monotonic() + timeout_s

        def watch() -> None:
            nonlocal joined_at, decided_at_join, next_look
            if time.monotonic() > deadline:
                raise StreamallocError(
                    f"only {observer.decided} of {lines} lines decided and {len(observer.with_status)} "
                    f"of {len(plan)} orders given a status in {timeout_s}s"
                )
            for worker in processes:
                if worker.poll() is not None:
                    raise StreamallocError(f"a worker exited with {worker.returncode}; see {workdir}")
            if (workers > 1 or after_join) and joined_at is None and time.monotonic() >= next_look:
                next_look = time.monotonic() + 0.25
                assigned = [_assigned_at(log) for log in logs]
                if all(at is not None for at in assigned):
                    joined_at, decided_at_join = max(a for a in assigned if a is not None), observer.decided
                    if after_join:
                        joined_at = time.time()
                        produce_upfront()
            observer.poll()

        while observer.decided < lines:
            watch()
            on_progress(observer.decided)
            if feeder is not None and not observer.measure_latency and observer.decided >= len(plan[0]):
                observer.measure_latency = True  # from the steady feed on
                feeder.start()
        while len(observer.with_status) < len(plan):  # the order stage's tail
            watch()
        peaks = [peak_rss_mb(worker.pid) for worker in processes]
        workers_cpu = sum(cpu_seconds(worker.pid) for worker in processes)
        others = {pid: cpu for pid, cpu in _children_cpu_seconds().items() if pid not in pids}
        broker_cpu = sum(others.values()) - sum(c for pid, c in cpu_before[1].items() if pid in others)
        bench_cpu = cpu_seconds(os.getpid()) - cpu_before[0]
        if feeder is not None:
            feeder.join(30)
    finally:
        terminate_all(processes, 30)
        observer.close()
    # Join ends when the worker is assigned its partitions (its log says when), not at the
    # first decision: by then intake has already worked through part of the backlog.
    first = joined_at or _assigned_at(logs[0]) or observer.first_at or started
    # A run that failed keeps its directory: the errors above point to the workers' logs.
    shutil.rmtree(workdir, ignore_errors=True)
    return EngineResult(
        lines=observer.decided - decided_at_join,
        orders=len(plan),
        join_seconds=first - started,
        decide_seconds=observer.last_at - first,
        latencies_ms=observer.latencies_ms,
        peak_rss_mb=max(peaks),
        hops_ms=observer.hops_ms,
        settle_seconds=observer.status_at - first,
        workers=workers,
        total_rss_mb=sum(peaks),
        workers_cpu_seconds=workers_cpu,
        broker_cpu_seconds=broker_cpu if others else None,
        bench_cpu_seconds=bench_cpu,
    )


def _start_worker(settings: Settings, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "streamalloc", "--bootstrap", str(settings.bootstrap),
        "--prefix", settings.topic_prefix, "--app-id", settings.app_id, "--state-dir", str(state_dir),
        "--broker-profile", settings.broker_profile, "--log-level", "INFO", "worker", "--no-create-topics",
    ]  # fmt: skip
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603


_TICKS = os.sysconf("SC_CLK_TCK")


def _parent_and_cpu(stat: Path) -> tuple[int, float] | None:
    """(parent pid, user and system CPU seconds) from a /proc/<pid>/stat; None once it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a live process (0 where it cannot be read)."""
    found = _parent_and_cpu(Path(f"/proc/{pid}/stat"))
    return 0.0 if found is None else found[1]


def _children_cpu_seconds() -> dict[int, float]:
    """CPU seconds of each live child of this process: the embedded broker, when it runs here."""
    me, found = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            seen = _parent_and_cpu(entry / "stat")
            if seen is not None and seen[0] == me:
                found[int(entry.name)] = seen[1]
    return found


def _assigned_at(log: Path) -> float | None:
    """Wall-clock time of the worker's first partition assignment, from its JSON log."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == "assigned" and entry.get("partitions"):
                return float(entry["ts"])
    return None


def summary(results: list[EngineResult]) -> dict[str, Any]:
    return {
        "lines_per_second": statistics.median(r.lines_per_second for r in results),
        "settled_lines_per_second": statistics.median(r.settled_lines_per_second for r in results),
        "join_seconds": statistics.median(r.join_seconds for r in results),
        "p50_ms": statistics.median(r.percentile(0.50) for r in results),
        "p95_ms": statistics.median(r.percentile(0.95) for r in results),
        "p99_ms": statistics.median(r.percentile(0.99) for r in results),
        "peak_rss_mb": max(r.peak_rss_mb for r in results),
        "total_rss_mb": max(r.total_rss_mb for r in results),
        "workers_cpu_seconds": statistics.median(r.workers_cpu_seconds for r in results),
        "bench_cpu_seconds": statistics.median(r.bench_cpu_seconds for r in results),
        **{
            f"{hop} p{q}_ms": statistics.median(r.hop_percentile(hop, q / 100) for r in results)
            for hop in HOPS
            for q in (50, 99)
        },
    }
