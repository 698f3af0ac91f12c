"""`streamalloc bench runtime`: the counting stage with RocksDB, changelog and exactly-once.

Prints records/s excluding group join (first record processed to last commit), records/s
including it (worker start to last commit), and peak RSS of the worker process.

With a rate (`run_latency`) it measures the runtime's own latency instead: records offered
at a steady rate pass two counting stages chained in one worker process (input -> middle
-> output, each hop a stateful stage committing through the worker's transaction), as an
order line passes intake and the allocator. What they take is what the runtime and the
broker cost a decision before any of the engine's work: the floor under `bench engine
--rate` (its hops "request committed" and "decision committed").
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from streamalloc.bench.counting import CountingStage
from streamalloc.bench.counting_worker import SECOND_STORE
from streamalloc.bench.engine import cpu_seconds, peak_rss_mb
from streamalloc.broker.process import terminate
from streamalloc.config import Settings
from streamalloc.errors import StreamallocError
from streamalloc.kafka import admin_client, consume_available, consumer_config, produce, producer_config
from streamalloc.kafka.types import consumed
from streamalloc.runtime.dead_letter import dead_letter_encoder
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import RocksDBStore
from streamalloc.runtime.worker import Worker
from streamalloc.serialization import dead_letter_serde


@dataclass(frozen=True)
class RuntimeResult:
    records: int
    keys: int
    produce_seconds: float
    join_seconds: float
    process_seconds: float
    peak_rss_mb: float

    @property
    def rate_excluding_join(self) -> float:
        return self.records / self.process_seconds

    @property
    def rate_including_join(self) -> float:
        return self.records / (self.join_seconds + self.process_seconds)


class _Progress(Observer):
    def __init__(self, total: int, on_progress: Callable[[int], None]) -> None:
        self.total = total
        self.committed = 0
        self.first_batch: float | None = None
        self.last_commit = 0.0
        self._on_progress = on_progress

    def on_batch(self, stage: str, records: int, seconds: float) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter() - seconds

    def on_commit(self, records: int, changelog_records: int, seconds: float) -> None:
        self.committed += records
        self.last_commit = time.perf_counter()
        self._on_progress(self.committed)


def run(
    settings: Settings,
    *,
    records: int,
    keys: int,
    partitions: int = 4,
    on_progress: Callable[[int], None] = lambda n: None,
) -> RuntimeResult:
    """Produce `records` over `keys` keys, then count them all with one worker."""
    tag = f"bench{int(time.time() * 1000) % 10_000_000}"
    settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    source, sink = _create_topics(settings, ("input", "output"), ("counts",), partitions)

    started = time.perf_counter()
    tuning: dict[str, Any] = {"linger.ms": 20}
    producer = Producer(producer_config(settings, **tuning))
    for i in range(records):
        produce(producer, source, b"%d" % i, b"key-%d" % (i % keys))
    producer.flush(60)
    produce_seconds = time.perf_counter() - started

    state_dir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-"))
    progress = _Progress(records, on_progress)
    worker: Worker | None = None

    def stop_when_done() -> None:
        if progress.committed >= records and worker is not None:
            worker.stop()

    try:
        root = state_dir / settings.app_id
        worker = Worker(
            settings.replace(state_dir=state_dir),
            [CountingStage(source, sink)],
            store_factory=lambda name: RocksDBStore(name, root),
            dead_letter=dead_letter_encoder(dead_letter_serde(settings).encode),
            observer=progress,
            before_batch=stop_when_done,
        )
        worker_started = time.perf_counter()
        worker.run()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    first = progress.first_batch or worker_started
    return RuntimeResult(
        records=progress.committed,
        keys=keys,
        produce_seconds=produce_seconds,
        join_seconds=first - worker_started,
        process_seconds=progress.last_commit - first,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


#: A record's latency through the chain, split where it became readable in between:
#: offered -> committed on the middle topic -> committed on the output topic (as read here).
HOPS = ("first hop committed", "second hop committed")


@dataclass(frozen=True)
class LatencyResult:
    records: int
    rate: int
    latencies_ms: list[float]
    hops_ms: dict[str, list[float]]
    seconds: float  # first record offered to the last output read
    worker_cpu_seconds: float
    peak_rss_mb: float

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float, hop: str | None = None) -> float:
        values = sorted(self.latencies_ms if hop is None else self.hops_ms[hop])
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _create_topics(
    settings: Settings, names: Sequence[str], stores: Sequence[str], partitions: int
) -> list[str]:
    """The counting workers' topics (`names`, prefixed), their dead-letter topic and each
    store's compacted changelog; the topics named, in order."""
    topics = [settings.topic(name) for name in names]
    new = [
        *(NewTopic(topic, partitions, 1) for topic in topics),
        NewTopic(settings.topic("dead-letter"), 1, 1),
        *(
            NewTopic(settings.changelog_topic(store), partitions, 1, config={"cleanup.policy": "compact"})
            for store in stores
        ),
    ]
    admin = admin_client(settings)  # kept until the futures answer: its handle ends with it
    for future in admin.create_topics(new).values():
        future.result()
    return topics


def run_latency(
    settings: Settings,
    *,
    rate: int,
    records: int,
    keys: int = 1_000,
    partitions: int = 4,
    on_progress: Callable[[int], None] = lambda n: None,
    timeout_s: float = 120.0,
) -> LatencyResult:
    """Offer `records` at `rate` per second to a two-hop counting worker (its own process,
    as in production) and time each from its produce to its committed output.

    Record i goes to key i % keys with value i, so the output count n of key k answers the
    record (n - 1) * keys + k: exactly-once gives each record one count per hop. One record
    of a key of its own goes first and the steady feed starts once it is out, so the
    group join is not in the figures.
    """
    tag = f"bench{time.time_ns() % 10**9}"
    settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    source, middle, sink = _create_topics(
        settings, ("input", "middle", "output"), ("counts", SECOND_STORE), partitions
    )
    # Each record sent at once: the feed's batching is not the runtime's latency.
    unbatched: dict[str, Any] = {"linger.ms": 0}
    producer = Producer(producer_config(settings, **unbatched))
    reader = Consumer(consumer_config(settings, group_id=f"{tag}-reader"))
    reader.assign([TopicPartition(topic, p, 0) for topic in (middle, sink) for p in range(partitions)])
    sent_ms = [0.0] * records
    workdir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-"))
    command = [
        sys.executable, "-m", "streamalloc.bench.counting_worker", "--bootstrap", str(settings.bootstrap),
        "--prefix", settings.topic_prefix, "--app-id", settings.app_id, "--state-dir", str(workdir),
        "--input", source, "--output", middle, "--then", sink, "--broker-profile", settings.broker_profile,
    ]  # fmt: skip
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
    latencies: list[float] = []
    hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
    middle_at: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s + records / rate

    def read() -> list[tuple[str, int, float]]:
        if time.monotonic() > deadline:
            raise StreamallocError(f"only {len(latencies)} of {records} records through both hops in time")
        if worker.poll() is not None:
            raise StreamallocError(f"the counting worker exited with {worker.returncode}; see {workdir}")
        found = []
        messages = consume_available(reader, 10_000, 0.05)
        now = time.time() * 1000
        for msg in consumed(messages):
            key, value = msg.key(), msg.value()
            if msg.error() is None and key is not None and value is not None:
                index = -1 if key == b"warm-up" else int(key) + (int(value) - 1) * keys
                found.append((msg.topic(), index, now))
        # A record's middle output is committed a transaction before its output, but one
        # consume may return both, in any order: the middle ones first.
        return sorted(found, key=lambda seen: seen[0] != middle)

    def feed() -> None:
        begin = time.monotonic()
        for i in range(records):
            sent_ms[i] = time.time() * 1000
            produce(producer, source, b"%d" % i, b"%d" % (i % keys))
            ahead = (i + 1) / rate - (time.monotonic() - begin)
            if ahead > 0:
                producer.poll(0)
                time.sleep(ahead)
        producer.flush(60)

    try:
        produce(producer, source, b"0", b"warm-up")
        producer.flush(30)
        while not any(topic == sink for topic, _, _ in read()):
            pass
        feeder = threading.Thread(target=feed, daemon=True)
        started = time.time() * 1000
        feeder.start()
        while len(latencies) < records:
            for topic, i, now in read():
                if i < 0:
                    continue  # the warm-up record
                if topic == middle:
                    middle_at[i] = now
                    continue
                latencies.append(now - sent_ms[i])
                hops[HOPS[0]].append(middle_at.get(i, now) - sent_ms[i])
                hops[HOPS[1]].append(now - middle_at.pop(i, now))
            on_progress(len(latencies))
        seconds = (time.time() * 1000 - started) / 1000
        cpu, rss = cpu_seconds(worker.pid), peak_rss_mb(worker.pid)
        feeder.join(30)
    finally:
        terminate(worker, 30)
        log.close()
        reader.close()
    shutil.rmtree(workdir, ignore_errors=True)  # a run that failed keeps it: the error names it
    return LatencyResult(records, rate, latencies, hops, seconds, cpu, rss)


def latency_summary(results: list[LatencyResult]) -> dict[str, float]:
    """Medians over runs of each run's percentiles (total and per hop)."""
    figures = {f"p{q}": statistics.median(r.percentile(q / 100) for r in results) for q in (50, 95, 99)}
    for hop in HOPS:
        for q in (50, 99):
            figures[f"{hop} p{q}"] = statistics.median(r.percentile(q / 100, hop) for r in results)
    return figures
