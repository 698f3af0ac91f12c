"""Plain helpers for integration tests: produce, read to the end, run worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamalloc.config import Settings
from streamalloc.kafka import clients, consumer_config, producer_config


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    producer = Producer(producer_config(settings))
    count = 0
    for key, value in records:
        clients.produce(producer, topic, value, key)
        count += 1
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered"
    return count


def read_all(
    settings: Settings, topic: str, timeout_s: float = 30.0
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every committed record of `topic` as (partition, offset, key, value), read to the end."""
    consumer = Consumer(
        consumer_config(settings, group_id=f"reader-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = set(partitions)
        out: list[tuple[int, int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                        continue
                    raise AssertionError(f"consume error: {error}")
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        assert not pending, f"did not reach the end of {topic} partitions {pending} in {timeout_s}s"
        return out
    finally:
        consumer.close()


_ASK_AGAIN = (
    KafkaError._TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
)


def committed_offsets(
    settings: Settings, group: str, topic: str, *, timeout_s: float = 60.0
) -> dict[int, int]:
    """The group's stable committed offsets of `topic`.

    Under read_committed the broker answers UNSTABLE_OFFSET_COMMIT while a transaction holding
    offsets for the group is open, such as one a killed worker left: it stays open until the
    producer's transaction.timeout.ms aborts it or a new producer with its id fences it.
    librdkafka retries that answer until its own timeout, so ask again until a deadline. A
    broker that has just started answers NOT_COORDINATOR while it loads the group's offsets
    (COORDINATOR_LOAD_IN_PROGRESS): asked again too.
    """
    consumer = Consumer(consumer_config(settings, group_id=group))
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
            except KafkaException as exc:
                if exc.args[0].code() not in _ASK_AGAIN or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            return {tp.partition: max(tp.offset, 0) for tp in committed}
    finally:
        consumer.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class WorkerProcess:
    """A worker in its own process; killed by pid, always, when the test ends."""

    def __init__(self, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        """`env`: variables added to this process's environment for the worker alone."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"worker {self.pid} ignored SIGTERM for {timeout_s}s") from None

    def close(self) -> None:
        if self.alive():
            self.kill9()
        self._log.close()


@contextmanager
def processes() -> Iterator[list[WorkerProcess]]:
    """Collects worker processes and kills any still alive when the block ends."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()
