"""An in-memory harness: drive whole stages and their stores without a broker.

It runs the worker's path (runtime/worker.py) with in-memory stores and outputs collected
in a list, so stage logic is tested fast and exactly, as Kafka Streams' TopologyTestDriver
does: `feed` decodes, processes, runs `before_commit` for the partition and commits;
`advance` moves a fake wall clock and runs the punctuations then due, each committing as
the worker commits it. Time moves only when the test says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamalloc.errors import ProcessingError, StreamallocError
from streamalloc.runtime.stage import PartitionContext, Record, Stage
from streamalloc.runtime.state import InMemoryStore, StorePartition


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | str | None
    value: bytes | None
    partition: int | None
    headers: Any = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


class ManualClock:
    """Wall-clock epoch ms that move only when told; give the same one to the stage and the harness."""

    def __init__(self, now_ms: int = 0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError(f"time moves only forward, not by {ms} ms")
        self.now_ms += ms
        return self.now_ms


class StageHarness:
    """Feed records to a stage and move its wall clock; every batch commits unless told not to.

    The harness owns `partitions` from the start and every partition it is fed. Each owned
    partition punctuates as a freshly restored task does: at once, then at most once per
    `punctuate_interval_ms` (intervals missed by a long `advance` are skipped, not caught up).
    """

    def __init__(
        self, stage: Stage, *, clock: ManualClock | None = None, partitions: Iterable[int] = (0,)
    ) -> None:
        self.stage = stage
        self.clock = clock if clock is not None else ManualClock()
        self.stores = {name: InMemoryStore(name) for name in stage.stores}
        self.outputs: list[Output] = []
        self.dead_letters: list[DeadLetter] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._punctuate_at: dict[int, int] = {}  # owned partition -> when its next punctuation is due
        for partition in partitions:
            self._own(partition)

    def store(self, name: str, partition: int = 0) -> StorePartition:
        return self.stores[name].partition(partition)

    def feed(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        *,
        partition: int = 0,
        timestamp_ms: int | None = None,
        commit: bool = True,
        batch: bytes | None = None,
    ) -> list[Output]:
        """Process one batch on one partition, then `before_commit`, then commit it (or, with
        `commit=False`, fail the commit: everything the batch did is dropped). Records are
        stamped with the clock's time unless `timestamp_ms` is given; `batch` is the `batch`
        header they carry (runtime/lineage.py: the batch of another stage that wrote them),
        for a stage that `reads_batches`. Returns what it emitted."""
        self._own(partition)
        stamp = self.clock() if timestamp_ms is None else timestamp_ms
        header = batch if self.stage.reads_batches else None
        inputs: list[Record] = []
        for key, raw in records:
            offset = self._offsets.get((topic, partition), 0)
            self._offsets[(topic, partition)] = offset + 1
            try:
                value = self.stage.decode(topic, key, raw)
            except StreamallocError as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                self.dead_letters.append(DeadLetter(topic, partition, offset, key, raw, reason))
                continue
            inputs.append(Record(topic, partition, offset, key, value, stamp, raw, batch=header))

        def process(ctx: PartitionContext) -> bool:
            if inputs:
                self.stage.process(ctx, inputs)
            return True  # the records were consumed: the batch commits, dead letters alone included

        return self._batch(partition, process, commit=commit)

    def advance(self, ms: int) -> list[Output]:
        """Move the wall clock on by `ms` and run the punctuations due then, in partition order,
        each as its own batch; `advance(0)` runs those already due. Returns what they emitted."""
        now = self.clock.advance(ms)
        interval = self.stage.punctuate_interval_ms
        if interval is None:
            return []
        emitted: list[Output] = []
        for partition, due in sorted(self._punctuate_at.items()):
            if now < due:
                continue
            self._punctuate_at[partition] = now + interval

            def punctuate(ctx: PartitionContext) -> bool:
                return self.stage.punctuate(ctx, now)

            emitted += self._batch(partition, punctuate, commit=True)
        return emitted

    def _own(self, partition: int) -> None:
        self._punctuate_at.setdefault(partition, self.clock())

    def _batch(
        self, partition: int, work: Callable[[PartitionContext], bool], *, commit: bool
    ) -> list[Output]:
        """One batch on one partition, with the worker's commit semantics.

        `work` says whether the partition joined the batch. If it did, `before_commit` runs
        and the batch commits (store writes flushed, outputs kept). If it did not (a
        punctuation that returned False), its store writes are dropped; it must not have
        emitted, since the worker could neither keep nor drop such records reliably.
        """
        emitted: list[Output] = []

        def emit(
            topic: str,
            key: bytes | str | None,
            value: bytes | None,
            partition: int | None = None,
            headers: Any = None,
        ) -> None:
            emitted.append(Output(topic, key, value, partition, headers))

        txns = {name: store.partition(partition).begin() for name, store in self.stores.items()}
        ctx = PartitionContext(partition, txns, emit)
        joined = work(ctx)
        if joined:
            self.stage.before_commit(ctx)
        keep = joined and commit
        for txn in txns.values():
            if keep:
                txn.prepare()
                txn.flush(None)
            else:
                txn.abort()
        if not joined and emitted:
            raise ProcessingError(
                f"{self.stage.name}: punctuate returned False but emitted {len(emitted)} record(s); "
                "a punctuation that emits must return True so its batch commits"
            )
        if keep:
            self.outputs += emitted
        return emitted
