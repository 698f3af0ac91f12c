"""A stateful counting stage: the runtime's test and benchmark workload.

Each input record (key = any bytes, value = ASCII digits) adds one to its key's count in
the `counts` store (or the one named) and emits the new count to the output topic on the same partition.
A value that is not digits is invalid input and goes to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamalloc.errors import ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record


class CountingStage(BaseStage):
    """`store` and `name` tell two counting stages of one worker apart (a chain of hops)."""

    def __init__(
        self, input_topic: str, output_topic: str, store: str = "counts", name: str = "counting"
    ) -> None:
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.store = store
        self.name = name
        self.stores: Sequence[str] = (store,)

    def topics(self) -> Sequence[str]:
        return [self.input_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes:
        if key is None:
            raise ValidationError("a counted record needs a key")
        if not value or not value.isdigit():
            raise ValidationError(
                f"value must be ASCII digits, got {value[:40]!r}" if value else "empty value"
            )
        return value

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        counts = ctx.stores[self.store]
        get, set_, emit, out, partition = counts.get, counts.set, ctx.emit, self.output_topic, ctx.partition
        for record in records:
            key = record.key
            assert key is not None  # decode refused keyless records  # noqa: S101
            current = get(key)
            count = (int(current) if current is not None else 0) + 1
            value = b"%d" % count
            set_(key, value)
            emit(out, key, value, partition)
