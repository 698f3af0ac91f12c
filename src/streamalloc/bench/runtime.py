"""`streamalloc bench runtime`: the counting stage with RocksDB, changelog and exactly-once.

Prints records/s excluding group join (first record processed to last commit), records/s
including it (worker start to last commit), and peak RSS of the worker process.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from streamalloc.bench.counting import CountingStage
from streamalloc.config import Settings
from streamalloc.kafka import admin_client, produce, producer_config
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
    source, sink = settings.topic("input"), settings.topic("output")
    admin = admin_client(settings)
    new = [
        NewTopic(source, partitions, 1),
        NewTopic(sink, partitions, 1),
        NewTopic(settings.topic("dead-letter"), 1, 1),
        NewTopic(settings.changelog_topic("counts"), partitions, 1, config={"cleanup.policy": "compact"}),
    ]
    for future in admin.create_topics(new).values():
        future.result()

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
