"""A worker whose only work is punctuation: `python tests/integration/timer_worker.py ...`.

The timer stage keeps, per partition, an `armed` record and timers keyed by due time in
its `timers` store, the way the allocator keeps reservation expiries. Its punctuation,
with no input traffic at all:

- the first time it runs for a partition in this process, emits `up` (value: --name);
- if the partition has no `armed` record, writes it and a timer due at once, emits `armed`;
- otherwise, unless --no-fire, fires every timer due by now: deletes it, emits `fired`.

Runtime tests start it as a process and kill it with real signals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from streamalloc import logs
from streamalloc.config import Settings
from streamalloc.kafka.clients import resolve_profile
from streamalloc.runtime.dead_letter import dead_letter_encoder
from streamalloc.runtime.runner import run_until_signalled
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import RocksDBStore
from streamalloc.runtime.worker import Worker
from streamalloc.serialization import dead_letter_serde

TIMER_PREFIX = b"timer/"


def timer_key(due_ms: int) -> bytes:
    return TIMER_PREFIX + b"%013d" % due_ms


class TimerStage(BaseStage):
    name = "timers"
    stores: Sequence[str] = ("timers",)
    punctuate_interval_ms = 100

    def __init__(self, input_topic: str, output_topic: str, *, name: str, fire: bool) -> None:
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.instance = name.encode()
        self.fire = fire
        self.announced: set[int] = set()

    def topics(self) -> Sequence[str]:
        return [self.input_topic]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes | None:
        return value

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        return None  # the tests send no input: everything happens in punctuate

    def punctuate(self, ctx: PartitionContext, now_ms: int) -> bool:
        timers, emit, out, partition = ctx.stores["timers"], ctx.emit, self.output_topic, ctx.partition
        wrote = False
        if partition not in self.announced:
            self.announced.add(partition)
            emit(out, b"up", self.instance, partition)
            wrote = True
        if timers.get(b"armed") is None:
            timers.set(b"armed", b"%d" % now_ms)
            timers.set(timer_key(now_ms), b"%d" % partition)
            emit(out, b"armed", b"%d" % now_ms, partition)
            return True
        if self.fire:
            for key, _ in list(timers.iter_prefix(TIMER_PREFIX)):
                if int(key[len(TIMER_PREFIX) :]) <= now_ms:
                    timers.delete(key)
                    emit(out, b"fired", key, partition)
                    wrote = True
        return wrote


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timer_worker")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--no-fire", action="store_true")
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
        [TimerStage(args.input, args.output, name=args.name, fire=not args.no_fire)],
        store_factory=lambda name: RocksDBStore(name, root),
        dead_letter=dead_letter_encoder(dead_letter_serde(settings).encode),
    )
    return run_until_signalled(worker)


if __name__ == "__main__":
    sys.exit(main())
