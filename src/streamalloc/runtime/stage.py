"""What a stage is to the runtime: input topics, state stores, and a batch function.

Stages are plain objects. The runtime routes every polled batch by topic to its stage,
hands it the partition's open store transactions and an `emit` function that produces
inside the current Kafka transaction, and commits the whole batch at once.

A stage may also punctuate (Kafka Streams' wall-clock punctuation): every
`punctuate_interval_ms` the runtime calls `punctuate` for each of its restored partitions,
with the same context as `process`, for work that no input record triggers (timers kept
in a store, a change of a global table). What it does commits with the batch it joins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamalloc.kafka.types import Headers
from streamalloc.runtime.state import PartitionTransaction


class Emit(Protocol):
    """Produce one output record inside the batch's Kafka transaction.

    `partition` None lets the partitioner place it by key (murmur2). Raises
    RecordTooLarge for a record no broker would take: the worker dead-letters the input
    record that caused it rather than stall (worker.py).
    """

    def __call__(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None: ...


@dataclass(slots=True)
class Record:
    """One decoded input record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp_ms: int
    raw: bytes | None = None  # the value as it came, for dead letters
    failed: str | None = None  # why decoding failed: the record goes to the dead-letter topic
    #: its `batch` header (runtime/lineage.py), for a stage whose `reads_batches` is True
    batch: bytes | None = None
    #: the bounded category of `failed` (runtime/dead_letter.py: decode or validation)
    failed_category: str | None = None


@dataclass(slots=True)
class PartitionContext:
    """What a stage may touch while it processes one partition's records."""

    partition: int
    stores: Mapping[str, PartitionTransaction]
    emit: Emit


class Stage(Protocol):
    """A processing stage. `topics` are full names; `topic_pattern` optionally adds a regex."""

    name: str
    stores: Sequence[str]

    def topics(self) -> Sequence[str]: ...

    def topic_pattern(self) -> re.Pattern[str] | None: ...

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> Any:
        """Turn raw bytes into the stage's value; raise StreamallocError to dead-letter it."""
        ...

    def process(self, ctx: PartitionContext, records: list[Record]) -> None: ...

    def before_commit(self, ctx: PartitionContext) -> None:
        """Called once per partition the batch touched, inside the transaction, before it
        commits: the place to emit what should go out at most once per commit."""
        ...

    #: How often `punctuate` runs per partition, in wall-clock ms; None: never.
    punctuate_interval_ms: int | None

    #: Whether its records carry the `batch` header of the batch that wrote them (`Record.batch`):
    #: a stage that follows another stage's outputs live and must tell leaked batches apart.
    reads_batches: bool

    def punctuate(self, ctx: PartitionContext, now_ms: int) -> bool:
        """Work no input record triggers; `now_ms` is wall-clock epoch ms.

        Runs inside the open Kafka transaction, at most once per interval per partition,
        only once the partition is restored. Read and write `ctx.stores`, emit through
        `ctx.emit`, exactly as in `process`. Return True when it wrote state or emitted
        anything: that joins the partition to the batch, so it commits (changelog and
        `before_commit` included). False means it did neither; any store change is dropped.
        A punctuation may be redone after a crash, so what it does must be idempotent
        given the state (delete the timer it fires, derive output ids from the state).
        """
        ...


class BaseStage:
    """Defaults for the optional parts of a stage."""

    stores: Sequence[str] = ()
    punctuate_interval_ms: int | None = None
    reads_batches: bool = False

    def topic_pattern(self) -> re.Pattern[str] | None:
        return None

    def before_commit(self, ctx: PartitionContext) -> None:
        return None

    def punctuate(self, ctx: PartitionContext, now_ms: int) -> bool:
        return False
