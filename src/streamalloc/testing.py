"""An in-memory harness: drive whole stages and their stores without a broker.

It runs the same decode -> process -> commit path as the worker, with in-memory stores
and outputs collected in a list, so stage logic is tested fast and exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamalloc.errors import StreamallocError
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


class StageHarness:
    """Feed records to a stage; every `feed` is one committed batch unless `commit=False`."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.stores = {name: InMemoryStore(name) for name in stage.stores}
        self.outputs: list[Output] = []
        self.dead_letters: list[DeadLetter] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def store(self, name: str, partition: int = 0) -> StorePartition:
        return self.stores[name].partition(partition)

    def feed(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None]],
        *,
        partition: int = 0,
        timestamp_ms: int = 0,
        commit: bool = True,
    ) -> list[Output]:
        """Decode and process one batch on one partition; return the outputs it emitted."""
        batch: list[Record] = []
        for key, raw in records:
            offset = self._offsets.get((topic, partition), 0)
            self._offsets[(topic, partition)] = offset + 1
            try:
                value = self.stage.decode(topic, key, raw)
            except StreamallocError as exc:
                self.dead_letters.append(DeadLetter(topic, partition, offset, key, raw, str(exc)))
                continue
            batch.append(Record(topic, partition, offset, key, value, timestamp_ms, raw))
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
        self.stage.process(PartitionContext(partition, txns, emit), batch)
        for txn in txns.values():
            if commit:
                txn.prepare()
                txn.flush(None)
            else:
                txn.abort()
        if commit:
            self.outputs += emitted
        return emitted
