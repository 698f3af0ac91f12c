"""A Worker driven in process over the fake broker: its real loop, commit and rewind paths.

The `cluster` fixture (conftest.py) patches the fakes in where the worker makes its clients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.unit.runtime.fake_kafka import FakeBroker, FakeConsumer, FakeProducer

import streamalloc.runtime.changelog as changelog_module
import streamalloc.runtime.worker as worker_module
from streamalloc.config import Settings
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.stage import Record, Stage
from streamalloc.runtime.state import InMemoryStore, Store
from streamalloc.runtime.worker import Worker

IN, OUT, DEAD = "t.in", "t.out", "t.dead-letter"
CHANGELOG = "app-counts-changelog"


class Recorder(Observer):
    def __init__(self) -> None:
        self.aborts: list[str] = []
        self.commits = 0

    def on_abort(self, reason: str) -> None:
        self.aborts.append(reason)

    def on_commit(self, records: int, changelog_records: int, seconds: float) -> None:
        self.commits += 1


@dataclass
class Cluster:
    """The fake broker and every client the worker made on it."""

    broker: FakeBroker = field(default_factory=FakeBroker)
    producers: list[FakeProducer] = field(default_factory=list)
    consumers: list[FakeConsumer] = field(default_factory=list)
    #: method name -> errors for the transactional producer, installed when it is made
    failures: dict[str, list[Any]] = field(default_factory=dict)

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        made = FakeProducer(config, self.broker)
        if "transactional.id" in config:
            made.failures = self.failures
        self.producers.append(made)
        return made

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        made = FakeConsumer(config, self.broker)
        self.consumers.append(made)
        return made

    @property
    def group_consumer(self) -> FakeConsumer:
        return next(c for c in self.consumers if c.group == "app")

    @property
    def txn_producer(self) -> FakeProducer:
        return next(p for p in self.producers if "transactional.id" in p.config)

    def committed(self, topic: str = IN) -> dict[int, int]:
        return {p: o for (g, t, p), o in self.broker.committed.items() if g == "app" and t == topic}

    def outputs(self, topic: str = OUT) -> dict[bytes, list[int]]:
        """Each key's committed outputs, in order (the counting stage emits the new count)."""
        out: dict[bytes, list[int]] = {}
        for _, _, key, value in self.broker.visible(topic):
            assert key is not None and value is not None
            out.setdefault(key, []).append(int(value))
        return out


def patched_cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """A fake broker whose clients the worker (and its restorer) will make."""
    made = Cluster()
    monkeypatch.setattr(worker_module, "Producer", made.producer)
    monkeypatch.setattr(worker_module, "Consumer", made.consumer)
    monkeypatch.setattr(changelog_module, "Consumer", made.consumer)
    for topic in (IN, OUT, DEAD, CHANGELOG, "app-sizes-changelog"):
        made.broker.create_topic(topic)
    return made


def settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bootstrap": "fake:9092",
        "broker_profile": "kafka",
        "topic_prefix": "t.",
        "app_id": "app",
        "state_dir": tmp,
        "commit_every": 5,
        "commit_interval_ms": 10_000,
        "commit_min_gap_ms": 10_000,  # batches close on the count alone, not when drained
    }
    values.update(overrides)
    return Settings(**values)


def dead_letter(record: Record, reason: str) -> bytes:
    return f"{record.topic}:{record.partition}:{record.offset}:{reason}".encode()


def run_worker(
    config: Settings,
    stages: Sequence[Stage],
    until: Callable[[Worker], bool],
    *,
    observer: Observer | None = None,
    stores: dict[str, Store] | None = None,
    max_ticks: int = 5_000,
) -> dict[str, dict[bytes, bytes]]:
    """Run a worker until `until(worker)` holds (checked before each poll), then stop it cleanly;
    return what its stores held then (store name -> every partition's keys and values)."""
    made = stores if stores is not None else {}
    ticks = Counter[str]()
    held: dict[str, dict[bytes, bytes]] = {}
    worker: Worker | None = None

    def store(name: str) -> Store:
        return made.setdefault(name, InMemoryStore(name))

    def check() -> None:
        ticks["n"] += 1
        assert ticks["n"] < max_ticks, "the worker did not get there"
        if worker is not None and not held and until(worker):
            for name, made_store in made.items():
                held[name] = {}
                for part in made_store.partitions().values():
                    held[name].update(part.iter_prefix(b""))
            worker.stop()

    worker = Worker(
        config, stages, store_factory=store, dead_letter=dead_letter, observer=observer, before_batch=check
    )
    worker.run()
    return held
