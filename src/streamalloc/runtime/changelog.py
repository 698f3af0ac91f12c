"""Changelog records: written in the batch's transaction, read back to restore a partition.

Every changelog record carries a `src` header: the input positions (next offsets) of the
batch that wrote it. On restore, a record whose batch reached past the committed input
offsets belongs to a transaction that never committed. Real Kafka never shows such a
record to a read_committed reader, but the embedded broker can leak a dead producer's open
transaction (BROKER.md); skipping those records keeps state equal to what was committed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamalloc.kafka.types import consumed
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import StorePartition

SRC_HEADER = "src"

_log = logging.getLogger("streamalloc.runtime.restore")


def encode_src(positions: Mapping[tuple[str, int], int]) -> bytes:
    """The `src` header value: {"topic:partition": next offset} of the batch's inputs."""
    return json.dumps({f"{t}:{p}": o for (t, p), o in positions.items()}, separators=(",", ":")).encode()


def src_committed(header: bytes, committed: Mapping[str, int]) -> bool:
    """True when the batch that wrote a record had committed: no input position beyond `committed`."""
    for tp, offset in json.loads(header).items():
        limit = committed.get(tp)
        if limit is not None and offset > limit:
            return False
    return True


@dataclass
class RestoreJob:
    """One store partition being brought up to its changelog's end."""

    partition: StorePartition
    topic: str
    committed: dict[str, int]  # "topic:partition" -> committed input offset, for the src guard
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    skipped: int = 0
    next_offset: int = 0
    _verdicts: dict[bytes, bool] = field(default_factory=dict)

    def admits(self, header: bytes | None) -> bool:
        if header is None:
            return True
        verdict = self._verdicts.get(header)
        if verdict is None:
            verdict = self._verdicts[header] = src_committed(header, self.committed)
        return verdict


class Restorer:
    """Restores store partitions from their changelogs with its own consumer, outside the group.

    Work happens in `step`, called from the worker's loop, so a rebalance in the middle of a
    restore only has to `cancel` the jobs of the revoked partitions.
    """

    def __init__(self, config: dict[str, Any], observer: Observer) -> None:
        # Reads only committed data; no group membership; EOF tells us we reached the end.
        self._consumer = Consumer({**config, "enable.partition.eof": True, "group.id": "streamalloc-restore"})
        self._jobs: dict[tuple[str, int], RestoreJob] = {}
        self._observer = observer

    @property
    def active(self) -> bool:
        return bool(self._jobs)

    def start(self, job: RestoreJob) -> None:
        partition = job.partition
        start = partition.checkpoint_offset or 0
        job.next_offset = start
        partition.mark_restoring()
        self._jobs[(job.topic, partition.partition)] = job
        self._consumer.incremental_assign([TopicPartition(job.topic, partition.partition, start)])

    def cancel(self, topic: str, partition: int) -> None:
        """Stop restoring (revocation). What was applied is kept; the checkpoint marks how far."""
        job = self._jobs.pop((topic, partition), None)
        if job is not None:
            self._consumer.incremental_unassign([TopicPartition(topic, partition)])

    def step(self, timeout_s: float = 0.1, max_records: int = 50_000) -> list[RestoreJob]:
        """Apply what arrives within `timeout_s`; return the jobs that reached the end."""
        if not self._jobs:
            return []
        done: list[RestoreJob] = []
        pending: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for msg in consumed(self._consumer.consume(max_records, timeout_s)):
            key = (msg.topic(), msg.partition())
            job = self._jobs.get(key)
            if job is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._flush(job, pending.pop(key, []))
                    job.next_offset = max(job.next_offset, msg.offset())
                    done.append(job)
                    continue
                raise error_to_exception(error)
            job.next_offset = msg.offset() + 1
            header = _header(msg.headers())
            record_key = msg.key()
            if record_key is not None and job.admits(header):
                pending.setdefault(key, []).append((record_key, msg.value()))
            else:
                job.skipped += 1
        for key, records in pending.items():
            self._flush(self._jobs[key], records)
        for job in done:
            self._finish(job)
        return done

    def _flush(self, job: RestoreJob, records: list[tuple[bytes, bytes | None]]) -> None:
        if records:
            job.partition.apply_changelog(records)
            job.records += len(records)
        job.partition.write_checkpoint(job.next_offset)

    def _finish(self, job: RestoreJob) -> None:
        self.cancel(job.topic, job.partition.partition)
        job.partition.mark_active()
        seconds = time.monotonic() - job.started
        self._observer.on_restore(job.partition.store_name, job.partition.partition, job.records, seconds)
        _log.info(
            "restored",
            extra={
                "store": job.partition.store_name,
                "partition": job.partition.partition,
                "records": job.records,
                "skipped_uncommitted": job.skipped,
                "seconds": round(seconds, 3),
            },
        )

    def close(self) -> None:
        self._jobs.clear()
        self._consumer.close()


def _header(headers: list[tuple[str, bytes]] | None) -> bytes | None:
    if headers:
        for name, value in headers:
            if name == SRC_HEADER:
                return value
    return None


def error_to_exception(error: KafkaError) -> Exception:
    from confluent_kafka import KafkaException

    return KafkaException(error)
