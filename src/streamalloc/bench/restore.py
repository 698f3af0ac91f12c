"""`streamalloc bench restore`: time to restore one store partition of N keys from its changelog.

Writes a changelog partition the way workers do (transactions of `batch` records, each
record tagged with its batch's `src` header, keys and values the size of the allocator's
balance and line records), then restores it into an empty RocksDB partition with the
runtime's Restorer, the loop a worker runs after a failover, and times that alone.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from streamalloc.config import Settings
from streamalloc.kafka import admin_client, consumer_config, producer_config
from streamalloc.runtime.changelog import SRC_HEADER, RestoreJob, Restorer, encode_src
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import RocksDBStore

_VALUE = bytes(range(64)) + bytes(range(32))  # ~ a marshalled balance or line (96 bytes)


@dataclass(frozen=True)
class RestoreResult:
    keys: int
    produce_seconds: float
    restore_seconds: float
    cpu_seconds: float  # of this process, librdkafka's threads included: steadier than wall on a busy machine
    restored: int

    @property
    def records_per_second(self) -> float:
        return self.restored / self.restore_seconds if self.restore_seconds > 0 else 0.0


def write_changelog(
    settings: Settings, topic: str, keys: int, *, batch: int = 5_000, on_progress: Callable[[int], None]
) -> float:
    """One partition of `keys` records in transactions of `batch`; returns the seconds it took."""
    admin = admin_client(settings)
    for future in admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})]).values():
        future.result()
    started = time.perf_counter()
    producer = Producer(producer_config(settings, transactional_id=f"bench-{uuid.uuid4().hex[:8]}"))
    producer.init_transactions(30)
    source = "bench.input"
    for first in range(0, keys, batch):
        end = min(first + batch, keys)
        src = encode_src({(source, 0): first}, {(source, 0): end}, base=first, writer=1)
        header: list[tuple[str, str | bytes | None]] = [(SRC_HEADER, src)]
        producer.begin_transaction()
        for i in range(first, end):
            key = b"SKU-%08d\x00b\x00WH-%02d" % (i // 4, i % 4)
            producer.produce(topic, _VALUE, key, partition=0, headers=header)
            if i % 10_000 == 0:
                producer.poll(0)
        producer.commit_transaction(60)
        on_progress(end)
    return time.perf_counter() - started


def restore_once(settings: Settings, topic: str, keys: int, state_dir: Path) -> tuple[float, float, int]:
    """Restore partition 0 of `topic` into an empty store under `state_dir`;
    (wall seconds, CPU seconds, records)."""
    store = RocksDBStore("bench", state_dir)
    restorer = Restorer(consumer_config(settings), Observer())
    try:
        partition = store.partition(0)
        job = RestoreJob(partition, topic, {"bench.input:0": keys})
        started, cpu = time.perf_counter(), time.process_time()
        restorer.start(job)
        while restorer.active:
            restorer.step(timeout_s=0.5)
        return time.perf_counter() - started, time.process_time() - cpu, job.records
    finally:
        restorer.close()
        store.close()


def run(
    settings: Settings, *, keys: int, on_progress: Callable[[int], None] = lambda n: None
) -> RestoreResult:
    tag = f"bench{int(time.time() * 1000) % 10_000_000}"
    settings = settings.replace(app_id=tag)
    topic = settings.changelog_topic("restore")
    produce_seconds = write_changelog(settings, topic, keys, on_progress=on_progress)
    state_dir = Path(tempfile.mkdtemp(prefix="streamalloc-bench-restore-"))
    try:
        seconds, cpu, restored = restore_once(settings, topic, keys, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return RestoreResult(keys, produce_seconds, seconds, cpu, restored)
