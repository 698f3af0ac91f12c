"""A worker whose stage makes outputs and state as large as its input says: `python
tests/integration/sizing_worker.py ...`.

For each input record (value: ASCII), the sizing stage stores a value under the record's
key in its `sizes` store and emits `<partition>:<offset>:` plus padding, keyed like the
input, on the input's partition. A value `o<N>` pads the output with N bytes, `s<N>` makes
the stored value N bytes (so its changelog record); anything else stays small. Nothing in
decode can tell that a record's outputs will be too large: the runtime's dead-letter
backstop is what the tests check with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from streamalloc import logs
from streamalloc.config import Settings
from streamalloc.errors import ValidationError
from streamalloc.kafka.clients import resolve_profile
from streamalloc.runtime.dead_letter import dead_letter_encoder
from streamalloc.runtime.runner import run_until_signalled
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import RocksDBStore
from streamalloc.runtime.worker import Worker
from streamalloc.serialization import dead_letter_serde


class SizingStage(BaseStage):
    name = "sizing"
    stores: Sequence[str] = ("sizes",)

    def __init__(self, input_topic: str, output_topic: str) -> None:
        self.input_topic = input_topic
        self.output_topic = output_topic

    def topics(self) -> Sequence[str]:
        return [self.input_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes:
        if key is None or not value:
            raise ValidationError("a sized record needs a key and a value")
        return value

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        sizes, emit, out, partition = ctx.stores["sizes"], ctx.emit, self.output_topic, ctx.partition
        for record in records:
            value: bytes = record.value
            pad = int(value[1:]) if value[:1] == b"o" and value[1:].isdigit() else 0
            stored = int(value[1:]) if value[:1] == b"s" and value[1:].isdigit() else 1
            assert record.key is not None  # noqa: S101 - decode refused keyless records
            sizes.set(record.key, b"s" * stored)
            emit(out, record.key, b"%d:%d:" % (record.partition, record.offset) + b"o" * pad, partition)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sizing_worker")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    settings = Settings.from_env(
        {},
        bootstrap=args.bootstrap,
        topic_prefix=args.prefix,
        app_id=args.app_id,
        state_dir=args.state_dir,
        log_level=args.log_level,
    )
    logs.configure(settings.log_level)
    settings = resolve_profile(settings)
    root = Path(settings.state_dir) / settings.app_id
    worker = Worker(
        settings,
        [SizingStage(args.input, args.output)],
        store_factory=lambda name: RocksDBStore(name, root),
        dead_letter=dead_letter_encoder(dead_letter_serde(settings).encode),
    )
    return run_until_signalled(worker)


if __name__ == "__main__":
    sys.exit(main())
