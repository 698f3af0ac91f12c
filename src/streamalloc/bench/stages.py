"""`streamalloc bench stages`: the engine's three stages in this process, with no broker.

The same orders as `bench engine` (`engine.order_plan`) go through intake, allocator and
order stage, each stage's outputs fed to the next as the worker would see them: partitioned
by key as the producer partitions them (murmur2), one batch of each stage per partition per
round, `before_commit` and a RocksDB flush after each, as a commit does; and a round's
decisions reach the order stage in the next round, after the `accepted` events of their
orders, as a worker's commits order them. What it leaves out
is Kafka (no produce, fetch, transaction or changelog) and the runtime around the stages
(its batch metrics, the metrics endpoint); the allocator's decision metrics are in, on a
Prometheus observer as in a worker. So it gives the CPU each stage spends
per line, free of the broker's noise on a shared machine, for comparing two versions of the
stages side by side (`bench engine` gives the whole pipeline).

It runs with the worker's garbage-collector settings (`runtime.runner.steady_gc`): the
stages keep state between transactions (runtime/state/kept.py), and at CPython's default
thresholds the full collections that scan it would be charged to whichever stage set one
off, which a worker does not pay.

It checks what it measured: every line decided once and every order given a status, else
it fails.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamalloc.bench.engine import (
    FIRST_DECISIONS,
    event_type,
    order_plan,
    order_record,
    stock_events,
    table_rows,
)
from streamalloc.config import Settings
from streamalloc.domain import Tables
from streamalloc.errors import StreamallocError
from streamalloc.kafka.partitioning import partition_for
from streamalloc.metrics.prometheus import PrometheusObserver
from streamalloc.runtime.runner import steady_gc_while
from streamalloc.runtime.stage import PartitionContext, Record, Stage
from streamalloc.runtime.state import PartitionTransaction, RocksDBStore
from streamalloc.serialization import topic_serde
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.intake import IntakeStage
from streamalloc.stages.order_stage import OrderStage
from streamalloc.stages.tables import channel_of, location_of

STAGES = ("intake", "allocator", "order stage")

#: (topic, key, value) as a stage emitted it
_Output = tuple[str, bytes | None, bytes | None]


@dataclass(frozen=True)
class StagesResult:
    lines: int
    orders: int
    #: CPU seconds per stage (decode, process and before_commit), and in the store flushes
    cpu_seconds: dict[str, float]
    flush_seconds: float

    def us_per_line(self, stage: str) -> float:
        return self.cpu_seconds[stage] / self.lines * 1e6

    @property
    def total_us_per_line(self) -> float:
        return (sum(self.cpu_seconds.values()) + self.flush_seconds) / self.lines * 1e6

    @property
    def lines_per_cpu_second(self) -> float:
        return 1e6 / self.total_us_per_line if self.total_us_per_line > 0 else 0.0


class _Runner:
    """One stage over `partitions` RocksDB store partitions, fed batch by batch."""

    def __init__(self, stage: Stage, root: Path, partitions: int) -> None:
        self.stage = stage
        self.stores = [RocksDBStore(name, root) for name in stage.stores]
        self.partitions = partitions
        self.offsets: dict[tuple[str, int], int] = {}
        self.cpu = 0.0
        self.flush = 0.0

    def feed(
        self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], now_ms: int
    ) -> list[_Output]:
        """Decode, process and commit `records` of `topic`, each on its key's partition."""
        placed = []  # where the producer would have put each record: not the stage's work
        for key, value in records:
            partition = partition_for(key or b"", self.partitions)
            offset = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = offset + 1
            placed.append((partition, offset, key, value))
        started = time.process_time()
        by_partition: dict[int, list[Record]] = {}
        decode = self.stage.decode
        for partition, offset, key, value in placed:
            record = Record(topic, partition, offset, key, decode(topic, key, value), now_ms, value)
            by_partition.setdefault(partition, []).append(record)
        emitted: list[_Output] = []

        def emit(
            topic: str,
            key: bytes | str | None,
            value: bytes | None,
            partition: int | None = None,
            headers: Any = None,
        ) -> None:
            emitted.append((topic, key.encode() if isinstance(key, str) else key, value))

        txns: list[PartitionTransaction] = []
        for partition, batch in sorted(by_partition.items()):
            stores = {store.name: store.partition(partition).begin() for store in self.stores}
            ctx = PartitionContext(partition, stores, emit)
            self.stage.process(ctx, batch)
            self.stage.before_commit(ctx)
            txns += stores.values()
        flushing = time.process_time()
        for txn in txns:
            txn.prepare()
            txn.flush(None)
        done = time.process_time()
        self.cpu += flushing - started
        self.flush += done - flushing
        return emitted

    def close(self) -> None:
        for store in self.stores:
            store.close()


def run(
    settings: Settings,
    *,
    lines: int,
    skus: int = 1_000,
    batch_orders: int = 1_000,
    seed: int = 11,
    on_progress: Callable[[int], None] = lambda n: None,
) -> StagesResult:
    """One measurement (module doc). `settings.broker_profile` decides whether the order
    stage keeps each order's history (the embedded broker's guard) or not (`kafka`)."""
    with steady_gc_while():
        return _measure(settings, lines, skus, batch_orders, seed, on_progress)


def _measure(
    settings: Settings,
    lines: int,
    skus: int,
    batch_orders: int,
    seed: int,
    on_progress: Callable[[int], None],
) -> StagesResult:
    rows = table_rows()
    tables = Tables(
        locations={row["location_id"]: location_of(row) for row in rows["locations"]},
        channels={row["channel_id"]: channel_of(row) for row in rows["channels"]},
    )
    now_ms = int(time.time() * 1000)
    topic = settings.topic
    orders_topic, requests_topic = topic("orders"), topic("allocation-requests")
    allocations_topic, status_topic = topic("allocations"), topic("order-status")
    inventory, orders = topic_serde(settings, topic("inventory")), topic_serde(settings, orders_topic)
    plan = order_plan(lines, skus, seed)
    root = Path(tempfile.mkdtemp(prefix="streamalloc-bench-stages-"))
    runners: dict[str, _Runner] = {}  # filled inside the try: a stage that fails to build leaves nothing
    decided = 0
    with_status: set[bytes] = set()
    try:
        runners["intake"] = _Runner(IntakeStage(settings), root, settings.partitions)
        # The decision metrics are the allocator's work per line in a worker too.
        observer = PrometheusObserver(process=False)
        allocator_stage = AllocatorStage(settings, lambda: tables, observer, clock=lambda: now_ms)
        runners["allocator"] = _Runner(allocator_stage, root, settings.partitions)
        runners["order stage"] = _Runner(OrderStage(settings), root, settings.partitions)
        intake, allocator, order_stage = runners.values()
        stock = [
            (sku.encode(), inventory.encode(inventory.validate(event)))
            for sku, event in stock_events(skus, now_ms)
        ]
        allocator.feed(topic("inventory"), stock, now_ms)
        allocator.cpu = allocator.flush = 0.0  # the stock, not the orders
        done = 0
        # What the order stage reads next round: in a worker a round's decisions reach it one
        # commit after the `accepted` events intake wrote with their requests, since the
        # allocator decides in the round that the order stage reads `accepted` (so an order
        # is followed in two transactions at least, each reading and writing its record).
        decided_before: list[tuple[bytes | None, bytes | None]] = []
        for start in range(0, len(plan) + batch_orders, batch_orders):
            round_ = plan[start : start + batch_orders]
            batch = [
                (f"order-{i}".encode(), orders.encode(orders.validate(order_record(i, order_lines, now_ms))))
                for i, order_lines in enumerate(round_, start)
            ]
            requests = intake.feed(orders_topic, batch, now_ms) if batch else []
            allocations = [(k, v) for t, k, v in requests if t == allocations_topic]
            decisions = allocator.feed(
                requests_topic, [(k, v) for t, k, v in requests if t == requests_topic], now_ms
            ) if requests else []  # fmt: skip
            statuses = order_stage.feed(allocations_topic, decided_before + allocations, now_ms)
            with_status.update(k for t, k, _ in statuses if t == status_topic and k is not None)
            decided_before = []
            for t, k, v in decisions:
                if t == allocations_topic:
                    decided_before.append((k, v))
                    decided += v is not None and event_type(v) in FIRST_DECISIONS
            done += sum(len(order_lines) for order_lines in round_)
            on_progress(done)
    finally:
        for runner in runners.values():
            runner.close()
        shutil.rmtree(root, ignore_errors=True)
    if decided != lines or len(with_status) != len(plan):
        raise StreamallocError(
            f"bench stages: {decided} of {lines} lines decided and {len(with_status)} of {len(plan)} "
            "orders given a status: the stages did not finish the work they were timed on"
        )
    return StagesResult(
        lines=lines,
        orders=len(plan),
        cpu_seconds={name: runner.cpu for name, runner in runners.items()},
        flush_seconds=sum(runner.flush for runner in runners.values()),
    )
