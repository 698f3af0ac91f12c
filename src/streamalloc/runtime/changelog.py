"""Changelog records: written in the batch's transaction, read back to restore a partition.

Every changelog record carries a `src` header: the input range of the batch that wrote
it, {"topic:partition": [first offset, next offset]}. Real Kafka never shows a record of an
uncommitted transaction to a read_committed reader, but the embedded broker can leak a
dead producer's open transaction (docs/brokers.md), and the leaked batch then sits in the
changelog for good. A restore tells it from committed batches by the input ranges:

- the committed batches of a task form a chain, each starting where the one before ended;
- a leaked batch starts where the last committed one ended, and so does the batch the
  next owner processes after it, from the same committed offsets: a batch followed by one
  that starts before its end was never committed;
- the last batch of the changelog is committed only if the committed input offsets reach
  its end (a restore right after the crash).

A punctuation that consumed nothing writes a batch with an empty input range ([p, p]), so
the ranges cannot judge it: the next owner starts at p as well. Its header also names the
changelog offset the writer's store had reached when the batch began (`base`, the store's
checkpoint). A batch whose writer's store had not reached the held batch's first record
(`following.base <= first offset`) was built without it: the held batch never committed,
or at least nobody went on from it, and it is dropped. A leaked punctuation at the end of
the changelog is kept: it only becomes visible there when its own worker restarts (the
embedded broker holds back everything behind an open transaction until then), its
outputs are visible too and its input offsets are unchanged, so it is
indistinguishable from, and as good as, a committed one; the next batch's `base` then
records that it was kept, so every later restore agrees. The header also names the
writer (the task's incarnation): the restore tells batches apart by their headers, and a
leaked punctuation and the next owner's punctuation can have the same ranges and base.

A restore that skips a batch while it began on local data starts over from an empty
store: the local data may be newer than its checkpoint and already hold that batch (the
embedded broker can keep a batch's records but not its consumed offsets, so a batch the
worker applied looks uncommitted to the next owner), and a replay from the checkpoint
cannot take writes back.

So a restore holds each batch's records until the next batch, or the end of the
changelog, settles it. Checking only "does the batch end before the committed offsets"
is not enough: once the next owner commits past it, a leaked batch would pass that test
in every later restore, and its keys (lines decided at another location) would then sit
beside the balances the next owner wrote.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamalloc.kafka.types import ConsumedMessage, consumed
from streamalloc.runtime.lineage import KeptBatch
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import StorePartition

SRC_HEADER = "src"
#: The restore consumer fetches in big requests and keeps more queued: a restore reads one
#: partition from start to end as fast as it can (bench restore: about 10% less CPU and
#: less waiting than librdkafka's 1 MB per partition fetch), bounded to 64 MB in memory.
RESTORE_FETCH = {
    "enable.partition.eof": True,
    "max.partition.fetch.bytes": 8 << 20,
    "fetch.max.bytes": 32 << 20,
    "queued.max.messages.kbytes": 64 << 10,
}
#: A restore that has read nothing for this long says why (Restorer.step): most often an
#: open transaction that began before its position, which holds back every later record
#: from a read_committed reader (and its end) until it ends. Real Kafka ends one within
#: `transaction.timeout.ms`; the embedded broker only when its transactional id is
#: initialised again (docs/brokers.md).
RESTORE_STALL_S = 30.0
#: Keys of `base`, `writer` and `seq` in the `src` header; "@" cannot occur in a topic name.
_BASE, _WRITER, _SEQ = "@base", "@writer", "@seq"

_log = logging.getLogger("streamalloc.runtime.restore")

Positions = Mapping[tuple[str, int], int]
ChangelogRecord = tuple[bytes, bytes | None]


def encode_src(
    start: Positions,
    end: Positions,
    base: int | None = None,
    writer: int | None = None,
    seq: int | None = None,
) -> bytes:
    """The `src` header value: {"topic:partition": [first, next]} offsets of the batch's inputs,
    `base`, the changelog offset the writer's store had reached when the batch began,
    `writer`, which owner wrote it (the task's incarnation), and `seq`, the batch's number
    in that incarnation (its `batch` header's, lineage.py)."""
    ranges: dict[str, object] = {f"{t}:{p}": [start.get((t, p), o), o] for (t, p), o in end.items()}
    if base is not None:
        ranges[_BASE] = base
    if writer is not None:
        ranges[_WRITER] = writer
    if seq is not None:
        ranges[_SEQ] = seq
    return json.dumps(ranges, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BatchSource:
    """The input range of one batch, from its `src` header."""

    ranges: Mapping[str, tuple[int, int]]
    base: int | None = None  # None in headers of earlier releases
    writer: int | None = None  # the writer's incarnation; None in headers of earlier releases
    seq: int | None = None  # the batch's number in its incarnation; None in earlier releases

    @classmethod
    def parse(cls, header: bytes) -> BatchSource:
        ranges: dict[str, tuple[int, int]] = {}
        data = json.loads(header)
        base, writer, seq = (data.pop(key, None) for key in (_BASE, _WRITER, _SEQ))
        for tp, value in data.items():
            # A bare offset is the header of earlier releases: the end only.
            first, end = (value, value) if isinstance(value, int) else value
            ranges[tp] = (int(first), int(end))
        return cls(ranges, *(None if v is None else int(v) for v in (base, writer, seq)))

    def past(self, committed: Mapping[str, int]) -> bool:
        """True when the batch starts at or after the committed offsets on every input both name:
        the `batch` header rule (lineage.py) would judge it redone by an owner opening there."""
        common = self.ranges.keys() & committed.keys()
        return bool(common) and all(committed[tp] <= self.ranges[tp][0] for tp in common)

    def committed_by(self, committed: Mapping[str, int]) -> bool:
        """True when the committed offsets reach the batch's end on every input they name."""
        return all(committed.get(tp, end) >= end for tp, (_, end) in self.ranges.items())

    def overlapped_by(self, later: BatchSource) -> bool:
        """True when `later` starts before this batch ended: it redid this batch's input."""
        for tp, (first, _) in later.ranges.items():
            mine = self.ranges.get(tp)
            if mine is not None and first < mine[1]:
                return True
        return False

    def built_without(self, offset: int) -> bool:
        """True when this batch's writer had not reached changelog `offset` when it began."""
        return self.base is not None and self.base <= offset


@dataclass
class RestoreJob:
    """One store partition being brought up to its changelog's end."""

    partition: StorePartition
    topic: str
    committed: dict[str, int]  # "topic:partition" -> committed input offset
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    skipped: int = 0
    next_offset: int = 0
    #: this pass began on local data (a checkpoint, maybe older than the data) or on nothing
    on_local_data: bool = False
    #: this pass skipped a batch although it began on local data (see `needs_full_restore`)
    skipped_past_checkpoint: bool = False
    #: (writer, start, seq) of the batches it kept that start at or after the committed
    #: offsets (`BatchSource.past`): the new owner names them in its `batch` headers (lineage.py)
    kept: list[KeptBatch] = field(default_factory=list)
    #: when this pass last read a record (monotonic s), and last said that it reads none
    progress_at: float = field(default_factory=time.monotonic)
    stall_said_at: float = 0.0
    _held: list[ChangelogRecord] = field(default_factory=list)
    _held_header: bytes | None = None
    _held_from: int = 0

    def offer(self, offset: int, header: bytes | None, record: ChangelogRecord) -> list[ChangelogRecord]:
        """Take the changelog record at `offset`; return the records now known to be committed."""
        return self.offer_run(offset, offset, header, [record])

    def offer_run(
        self, first: int, last: int, header: bytes | None, records: list[ChangelogRecord]
    ) -> list[ChangelogRecord]:
        """Take consecutive records `first`..`last` that share one `header` (one batch's, or
        all untagged): the same as offering each in turn, at a cost per run, not per record.
        Returns the records now known to be committed."""
        self.next_offset = last + 1
        settled: list[ChangelogRecord] = []
        if header != self._held_header or header is None:
            settled = self._settle(None if header is None else BatchSource.parse(header))
        if header is None:
            settled.extend(records)  # untagged (written outside a batch): applied as they come
            return settled
        if not self._held:
            self._held_header, self._held_from = header, first
        self._held.extend(records)
        return settled

    def at_end(self) -> list[ChangelogRecord]:
        """The end of the changelog: the held batch is committed if the committed offsets reach it."""
        return self._settle(None, at_end=True)

    @property
    def needs_full_restore(self) -> bool:
        """Whether this pass must be redone from an empty store.

        Local data may be newer than its checkpoint (the checkpoint file is written after the
        data): replaying from the checkpoint is idempotent for batches it keeps, but cannot
        take back one it skips. The embedded broker can acknowledge a commit whose consumed
        offsets it then does not keep (seen in the kill -9 demo: a batch committed and applied
        locally, its input offsets back where they were), so the restore skips a batch the
        store already holds. Only a restore from nothing is sure to leave it out.
        """
        return self.skipped_past_checkpoint

    def restart_from_scratch(self) -> None:
        self.next_offset = 0
        self.on_local_data = False
        self.records = self.skipped = 0
        self.skipped_past_checkpoint = False
        self.kept = []
        self._held, self._held_header, self._held_from = [], None, 0

    @property
    def safe_offset(self) -> int:
        """Where a restore may resume: before any record that is still held."""
        return self._held_from if self._held else self.next_offset

    def _settle(self, following: BatchSource | None, *, at_end: bool = False) -> list[ChangelogRecord]:
        held, header = self._held, self._held_header
        self._held, self._held_header = [], None
        if not held or header is None:
            return held
        batch = BatchSource.parse(header)
        if at_end:
            keep = batch.committed_by(self.committed)
        else:
            keep = following is None or not (
                batch.overlapped_by(following) or following.built_without(self._held_from)
            )
        if keep:
            if batch.writer is not None and batch.past(self.committed):
                start = {tp: first for tp, (first, _) in batch.ranges.items()}
                self.kept.append((batch.writer, start, batch.seq))
            return held
        self.skipped += len(held)
        if self.on_local_data:
            self.skipped_past_checkpoint = True
        _log.info(
            "skipped a batch that never committed",
            extra={"topic": self.topic, "partition": self.partition.partition, "records": len(held)},
        )
        return []


class Restorer:
    """Restores store partitions from their changelogs with its own consumer, outside the group.

    Work happens in `step`, called from the worker's loop, so a rebalance in the middle of a
    restore only has to `cancel` the jobs of the revoked partitions.
    """

    def __init__(
        self,
        config: dict[str, Any],
        observer: Observer,
        *,
        tail: bool = False,
        stall_after_s: float = RESTORE_STALL_S,
    ) -> None:
        # Reads only committed data; no group membership; EOF tells us we reached the end.
        group = "streamalloc-standby" if tail else "streamalloc-restore"
        self._consumer = Consumer({**config, **RESTORE_FETCH, "group.id": group})
        self._jobs: dict[tuple[str, int], RestoreJob] = {}
        self._observer = observer
        #: standby replicas (standby.py): a job never ends; at the end of the changelog it
        #: keeps the last batch held (no committed offsets to judge it by) and waits for more
        self._tail = tail
        self._stall_after_s = stall_after_s
        self._stalls_checked_at = time.monotonic()

    @property
    def active(self) -> bool:
        return bool(self._jobs)

    def start(self, job: RestoreJob) -> None:
        partition = job.partition
        start = partition.checkpoint_offset or 0
        job.next_offset = start
        job.on_local_data = partition.checkpoint_offset is not None
        partition.mark_restoring()
        job.progress_at = time.monotonic()
        self._jobs[(job.topic, partition.partition)] = job
        self._consumer.incremental_assign([TopicPartition(job.topic, partition.partition, start)])

    def cancel(self, topic: str, partition: int) -> RestoreJob | None:
        """Stop restoring (revocation). What was applied is kept; the checkpoint marks how far."""
        job = self._jobs.pop((topic, partition), None)
        if job is not None:
            self._consumer.incremental_unassign([TopicPartition(topic, partition)])
        return job

    def jobs(self) -> list[RestoreJob]:
        return list(self._jobs.values())

    def step(self, timeout_s: float = 0.1, max_records: int = 50_000) -> list[RestoreJob]:
        """Apply what arrives within `timeout_s`; return the jobs that reached the end.

        The hot loop of every restore (a failover restores millions of records): it does
        per record only what must be per record (route, key, value, header), and hands
        each run of consecutive records of one partition and one batch to its job at once.

        A job ends at the first end of its partition it meets, once: from then on it is no
        longer a job, and what this poll still holds for its partition is left alone. The
        poll can hold two ends of one partition: librdkafka's fetcher queues one at the last
        stable offset, and another once that moves on (an earlier owner's transaction on the
        changelog ended) if the loop was busy in between (a commit waiting for the broker).
        Finishing the job twice made its store partition active twice (a StateError that
        stopped the worker), and a restart from scratch after the first end would have
        handed the task a wiped store (Kafka Streams completes a changelog once, at the end
        offset it restores to, and ignores records past it).
        """
        if not self._jobs:
            return []
        now = time.monotonic()
        done: list[RestoreJob] = []
        pending: dict[tuple[str, int], list[ChangelogRecord]] = {}
        run = _Run()
        for msg in consumed(self._consumer.consume(max_records, timeout_s)):
            error = msg.error()
            tp = (msg.topic(), msg.partition())
            if error is not None:
                self._end_run(run, pending)
                job = self._jobs.get(tp)
                if job is None:
                    continue
                if error.code() != KafkaError._PARTITION_EOF:
                    raise error_to_exception(error)
                job.next_offset = max(job.next_offset, msg.offset())
                if self._tail:
                    self._flush(job, pending.pop(tp, []))
                    if job.needs_full_restore:
                        self._from_scratch(job)
                    continue
                self._flush(job, pending.pop(tp, []) + job.at_end())
                if job.needs_full_restore:
                    self._from_scratch(job)
                else:
                    self.cancel(*tp)  # done: nothing more of this poll is its (docstring)
                    done.append(job)
                continue
            key = msg.key()
            headers = msg.headers()
            header = headers[0][1] if headers and headers[0][0] == SRC_HEADER else _header(headers)
            if tp != run.tp or header != run.header or key is None or run.job is None:
                self._end_run(run, pending)
                job = self._jobs.get(tp)
                if job is None:
                    continue
                if key is None:
                    job.next_offset = msg.offset() + 1
                    job.skipped += 1
                    continue
                run.start(tp, job, header, msg.offset())
                job.progress_at = now
            run.records.append((key, msg.value()))
            run.last = msg
        self._end_run(run, pending)
        for tp, records in pending.items():
            job = self._jobs.get(tp)
            if job is not None:
                self._flush(job, records)
        for job in done:
            self._finish(job)
        if now - self._stalls_checked_at >= 1.0:
            self._stalls_checked_at = now
            self._say_stalls(now)
        return done

    def _say_stalls(self, now: float) -> None:
        """Warn, once every `stall_after_s`, of each job that has read nothing for as long
        while its changelog has records past its position (a standby at the end waits for
        more, so only that counts there): with the broker's high watermark, which tells a
        transaction that holds them back from a broker that sends nothing."""
        for job in self._jobs.values():
            if now - job.progress_at < self._stall_after_s or now - job.stall_said_at < self._stall_after_s:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(job.topic, job.partition.partition), cached=True
                )
            except KafkaException:
                high = -1
            held_back = high > job.next_offset
            if self._tail and not held_back:
                continue
            job.stall_said_at = now
            _log.warning(
                "a restore reads nothing: records past its position are held back, most likely "
                "by an open transaction that began before it"
                if held_back
                else "a restore reads nothing and the broker has not said where the changelog ends",
                extra={
                    "topic": job.topic,
                    "partition": job.partition.partition,
                    "position": job.next_offset,
                    "high_watermark": high if high >= 0 else None,
                    "seconds": round(now - job.progress_at, 1),
                },
            )

    @staticmethod
    def _end_run(run: _Run, pending: dict[tuple[str, int], list[ChangelogRecord]]) -> None:
        job, last = run.job, run.last
        if job is not None and last is not None and run.records:
            settled = job.offer_run(run.first, last.offset(), run.header, run.records)
            if settled:
                pending.setdefault(run.tp, []).extend(settled)
        run.clear()

    def _from_scratch(self, job: RestoreJob) -> None:
        _log.warning(
            "a skipped batch may be in the local store: restoring it from the start",
            extra={"topic": job.topic, "partition": job.partition.partition},
        )
        job.partition.wipe()
        job.restart_from_scratch()
        tp = TopicPartition(job.topic, job.partition.partition, 0)
        self._consumer.incremental_unassign([tp])
        self._consumer.incremental_assign([tp])

    def _flush(self, job: RestoreJob, records: list[ChangelogRecord]) -> None:
        if records:
            job.partition.apply_changelog(records)
            job.records += len(records)
        job.partition.write_checkpoint(job.safe_offset)

    def _finish(self, job: RestoreJob) -> None:
        """End a job that reached its end in this step (already cancelled: no longer read)."""
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


@dataclass
class _Run:
    """Consecutive records of one changelog partition with one `src` header (Restorer.step)."""

    tp: tuple[str, int] = ("", -1)
    job: RestoreJob | None = None
    header: bytes | None = None
    first: int = 0
    last: ConsumedMessage | None = None
    records: list[ChangelogRecord] = field(default_factory=list)

    def start(self, tp: tuple[str, int], job: RestoreJob, header: bytes | None, first: int) -> None:
        self.tp, self.job, self.header, self.first = tp, job, header, first

    def clear(self) -> None:
        self.tp, self.job, self.header, self.last, self.records = ("", -1), None, None, None, []


def _header(headers: list[tuple[str, bytes]] | None) -> bytes | None:
    if headers:
        for name, value in headers:
            if name == SRC_HEADER:
                return value
    return None


def error_to_exception(error: KafkaError) -> Exception:
    return KafkaException(error)
