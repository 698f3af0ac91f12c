"""What a stage is to the runtime: input topics, state stores, and a batch function.

Stages are plain objects. The runtime routes every polled batch by topic to its stage,
hands it the partition's open store transactions and an `emit` function that produces
inside the current Kafka transaction, and commits the whole batch at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamalloc.runtime.state import PartitionTransaction

#: emit(topic, key, value, partition=None, headers=None): produce one output record.
Emit = Callable[..., None]


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


class BaseStage:
    """Defaults for the optional parts of a stage."""

    stores: Sequence[str] = ()

    def topic_pattern(self) -> re.Pattern[str] | None:
        return None

    def before_commit(self, ctx: PartitionContext) -> None:
        return None
