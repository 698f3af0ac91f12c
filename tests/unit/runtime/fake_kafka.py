"""An in-memory broker with a transactional producer and a consumer, spec'd on confluent-kafka's.

Enough of Kafka for the worker's unit tests: partitioned logs with transaction markers,
read_committed visibility (records of open and aborted transactions are never returned;
the position steps over markers), the last stable offset and the end-of-partition event,
a high watermark that counts open transactions (as measured on both brokers), committed
group offsets written by `send_offsets_to_transaction`, injectable broker errors, and a
consumer's local queue filled by librdkafka's fetcher while the application is busy
elsewhere (`FakeConsumer.fetch_ahead`).
Every public method of the fakes exists on the real classes (test_fake_kafka.py checks).
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

INVALID = -1001  # librdkafka's OFFSET_INVALID


@dataclass
class Entry:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    timestamp: int
    state: str  # "open", "committed" or "aborted"
    control: bool = False


@dataclass
class FakeBroker:
    logs: dict[tuple[str, int], list[Entry]] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    #: topic -> largest record it takes (Kafka's max.message.bytes); others take anything
    max_message_bytes: dict[str, int] = field(default_factory=dict)
    #: whether a refused record fails its transaction before the next produce (librdkafka
    #: learns it from a background thread: sooner or later than the next produce)
    refuses_at_once: bool = False
    clock_ms: int = 1_000

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        for p in range(partitions):
            self.logs.setdefault((topic, p), [])

    def partitions(self, topic: str) -> int:
        return sum(1 for t, _ in self.logs if t == topic)

    def append(self, topic: str, partition: int, key: Any, value: Any, headers: Any, state: str) -> Entry:
        log = self.logs[(topic, partition)]
        self.clock_ms += 1
        entry = Entry(len(log), _bytes(key), _bytes(value), _headers(headers), self.clock_ms, state)
        log.append(entry)
        return entry

    def marker(self, topic: str, partition: int) -> None:
        log = self.logs[(topic, partition)]
        log.append(Entry(len(log), None, None, None, self.clock_ms, "committed", control=True))

    def produce_plain(
        self, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int = 0
    ) -> None:
        """Records written by a non-transactional producer (visible at once)."""
        for key, value in records:
            self.append(topic, partition, key, value, None, "committed")

    def visible(self, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
        """What a read_committed reader sees: (partition, offset, key, value)."""
        return [
            (p, e.offset, e.key, e.value)
            for (t, p), log in sorted(self.logs.items())
            if t == topic
            for e in log
            if e.state == "committed" and not e.control
        ]

    def last_stable(self, topic: str, partition: int) -> int:
        log = self.logs[(topic, partition)]
        return next((e.offset for e in log if e.state == "open"), len(log))


class FakeProducer:
    """confluent_kafka.Producer's transactional API over a FakeBroker."""

    def __init__(self, config: dict[str, Any], broker: FakeBroker) -> None:
        self.config = config
        self.broker = broker
        self.max_bytes = int(config.get("message.max.bytes", 1_000_000))
        #: method name -> errors its next calls raise, in order
        self.failures: dict[str, list[KafkaError]] = {}
        self.calls: list[str] = []
        #: the timeout each transactional call was last given (librdkafka: -1 blocks forever)
        self.timeouts: dict[str, float] = {}
        self._open: list[tuple[str, int, Entry]] = []
        self._reports: list[tuple[Callable[..., None], KafkaError | None, Any]] = []
        self._offsets: list[TopicPartition] = []
        self._group: str | None = None
        self._in_transaction = False
        self._abortable: KafkaError | None = None
        self._refused = False
        self._fatal: KafkaError | None = None
        #: calls that block until `released` is set, as librdkafka's can (#5456)
        self.hangs: set[str] = set()
        self.released = threading.Event()
        #: runs inside flush, as a callback librdkafka serves there would
        self.on_flush: Callable[[], None] | None = None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hangs:
            self.released.wait(30)
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        queued = self.failures.get(name)
        if queued:
            error = queued.pop(0)
            if error.fatal():
                self._fatal = error
            raise KafkaException(error)

    def init_transactions(self, timeout: float = -1) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin_transaction")
        assert not self._in_transaction, "begin_transaction inside a transaction"
        self._in_transaction, self._abortable, self._offsets = True, None, []

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int = -1,
        on_delivery: Callable[..., None] | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        self._call("produce")
        if self._abortable is not None:
            # librdkafka refuses to produce into a transaction that must abort
            raise KafkaException(
                KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state")
            )
        size = len(_bytes(key) or b"") + len(_bytes(value) or b"")
        if size > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Unable to produce message"))
        assert self._in_transaction, "produce outside a transaction"
        if partition < 0:
            partition = zlib.crc32(_bytes(key) or b"") % self.broker.partitions(topic)
        limit = self.broker.max_message_bytes.get(topic)
        if limit is not None and size > limit:
            # The broker refuses it: a failed delivery, and the transaction must abort.
            error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
            self._refused = True
            if self.broker.refuses_at_once:
                self.poll(0)
            if on_delivery is not None:
                self._reports.append((on_delivery, error, None))
            return
        entry = self.broker.append(topic, partition, key, value, headers, "open")
        self._open.append((topic, partition, entry))
        if on_delivery is not None:
            self._reports.append((on_delivery, None, FakeMessage(topic, partition, entry)))

    def poll(self, timeout: float = -1) -> int:
        if self._refused:
            self._refused = False
            self._abortable = KafkaError(
                KafkaError.MSG_SIZE_TOO_LARGE,
                "ProduceRequest failed: Message size too large",
                txn_requires_abort=True,
            )
        reports, self._reports = self._reports, []
        for callback, error, message in reports:
            callback(error, message)
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        self.calls.append("flush")
        if self.on_flush is not None:
            self.on_flush()
        self.poll(0)
        return 0

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        self.timeouts["send_offsets_to_transaction"] = timeout
        self._call("send_offsets_to_transaction")
        if self._abortable is not None:
            raise KafkaException(self._abortable)
        self._offsets, self._group = list(positions), group_metadata.group

    def commit_transaction(self, timeout: float = -1) -> None:
        self.timeouts["commit_transaction"] = timeout
        self._call("commit_transaction")
        self.poll(0)
        if self._abortable is not None:
            raise KafkaException(self._abortable)
        self._end("committed")
        for tp in self._offsets:
            assert self._group is not None
            self.broker.committed[(self._group, tp.topic, tp.partition)] = tp.offset

    def abort_transaction(self, timeout: float = -1) -> None:
        self.timeouts["abort_transaction"] = timeout
        self._call("abort_transaction")
        self._reports = []
        self._end("aborted")

    def _end(self, state: str) -> None:
        touched = set()
        for topic, partition, entry in self._open:
            entry.state = state
            touched.add((topic, partition))
        for topic, partition in sorted(touched):
            self.broker.marker(topic, partition)
        self._open, self._in_transaction, self._abortable, self._refused = [], False, None, False

    def committed_values(self, topic: str) -> list[bytes | None]:
        return [value for _, _, _, value in self.broker.visible(topic)]


@dataclass(frozen=True)
class GroupMetadata:
    group: str


class FakeConsumer:
    """confluent_kafka.Consumer (read_committed, manual commits) over a FakeBroker."""

    def __init__(self, config: dict[str, Any], broker: FakeBroker) -> None:
        self.config = config
        self.broker = broker
        self.group = str(config.get("group.id"))
        self.eof = bool(config.get("enable.partition.eof", False))
        self.seeks: list[tuple[str, int, int]] = []
        self._subscription: list[str] | None = None
        self._callbacks: dict[str, Callable[..., None] | None] = {}
        self._assigned: dict[tuple[str, int], int] = {}  # -> next offset to read
        self._app_position: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._eof_at: dict[tuple[str, int], int] = {}
        #: fetched ahead and not consumed yet (librdkafka's local queue): each message with
        #: the position of its partition once the application has it
        self._queued: list[tuple[FakeMessage, int]] = []
        self._rebalance_due = False
        self._lose_due = False
        self._member = 0  # the group member id's number: a new one after losing the group

    # ------------------------------------------------------------------ group

    def memberid(self) -> str:
        return f"{self.group}-member-{self._member}"

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., None] | None = None,
        on_revoke: Callable[..., None] | None = None,
        on_lost: Callable[..., None] | None = None,
    ) -> None:
        self._subscription = list(topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._rebalance_due = True

    def consumer_group_metadata(self) -> GroupMetadata:
        return GroupMetadata(self.group)

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.broker.committed.get((self.group, tp.topic, tp.partition), INVALID),
            )
            for tp in partitions
        ]

    def close(self) -> None:
        revoke = self._callbacks.get("revoke")
        if self._subscription is not None and self._assigned and revoke is not None:
            revoke(self, [TopicPartition(t, p) for t, p in self._assigned])
        self._assigned.clear()

    def revoke_all(self) -> None:
        """A rebalance takes every partition (test helper: the next consume reassigns them)."""
        revoke = self._callbacks.get("revoke")
        if revoke is not None:
            revoke(self, [TopicPartition(t, p) for t, p in self._assigned])
        self.unassign()
        self._rebalance_due = True

    def lose_all(self) -> None:
        """The group moved on without this member (a missed session, test helper): at the next
        consume, as in librdkafka's poll, every partition goes by the `lost` callback and is
        then assigned again."""
        self._lose_due = True

    # ------------------------------------------------------------------ assignment and position

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._assigned.clear()
        self._queued.clear()
        self.incremental_assign(partitions)

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            offset = tp.offset
            if offset < 0:
                offset = self.broker.committed.get((self.group, tp.topic, tp.partition), 0)
            self._assigned[key] = offset
            self._app_position[key] = INVALID
            self._eof_at.pop(key, None)
            self._drop_queued(key)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self._drop_queued((tp.topic, tp.partition))

    def unassign(self) -> None:
        self._assigned.clear()
        self._queued.clear()

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        key = (partition.topic, partition.partition)
        self.seeks.append((*key, partition.offset))
        self._assigned[key] = partition.offset
        self._app_position[key] = INVALID
        self._eof_at.pop(key, None)
        self._drop_queued(key)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self._app_position.get((tp.topic, tp.partition), INVALID))
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.broker.logs[(partition.topic, partition.partition)])

    # ------------------------------------------------------------------ fetching

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        if self._lose_due:
            self._lose_due = False
            lost = self._callbacks.get("lost")
            if lost is not None:
                lost(self, [TopicPartition(t, p) for t, p in self._assigned])
            self.unassign()
            self._member += 1  # librdkafka rejoins with a new member id
            self._rebalance_due = True
        if self._rebalance_due and self._subscription is not None:
            self._rebalance_due = False
            partitions = [TopicPartition(t, p) for t, p in sorted(self.broker.logs) if self._subscribed(t)]
            assign = self._callbacks.get("assign")
            if assign is not None:
                assign(self, partitions)
            else:
                self.assign(partitions)
        queued, self._queued = self._queued[:num_messages], self._queued[num_messages:]
        fetched = queued + self._fetch(num_messages - len(queued))
        for msg, position in fetched:
            self._app_position[(msg.topic(), msg.partition())] = position
        return [msg for msg, _ in fetched]

    def fetch_ahead(self) -> None:
        """librdkafka's fetcher at work while the application is busy elsewhere (test
        helper): what it fetches now waits in the local queue, and the next consume returns
        it ahead of what that consume fetches itself. An end-of-partition event it queued
        stays queued even if the partition's end moves on before the application consumes:
        a later fetch then queues a second one for the same partition."""
        self._queued += self._fetch(1_000_000_000)

    def _drop_queued(self, key: tuple[str, int]) -> None:
        """What was fetched for a partition before it was assigned again, unassigned or
        sought is never delivered (librdkafka discards it by the partition's version)."""
        self._queued = [(m, o) for m, o in self._queued if (m.topic(), m.partition()) != key]

    def _fetch(self, num_messages: int) -> list[tuple[FakeMessage, int]]:
        """Up to `num_messages` from the assigned partitions' logs, each with its partition's
        position once the application has it."""
        out: list[tuple[FakeMessage, int]] = []
        for key in list(self._assigned):
            if key in self._paused:
                continue
            log = self.broker.logs[key]
            while len(out) < num_messages and self._assigned[key] < len(log):
                entry = log[self._assigned[key]]
                if entry.state == "open":
                    break  # the last stable offset
                self._assigned[key] += 1
                if entry.state == "committed" and not entry.control:
                    out.append((FakeMessage(key[0], key[1], entry), self._assigned[key]))
                elif out and (out[-1][0].topic(), out[-1][0].partition()) == key:
                    out[-1] = (out[-1][0], self._assigned[key])  # stepped over a marker
                else:
                    self._app_position[key] = self._assigned[key]
            end = self.broker.last_stable(*key)
            if (
                self.eof
                and len(out) < num_messages
                and self._assigned[key] == end
                and self._eof_at.get(key) != end
            ):
                self._eof_at[key] = end
                out.append((FakeMessage(key[0], key[1], None, eof_offset=end), end))
        return out

    def _subscribed(self, topic: str) -> bool:
        assert self._subscription is not None
        return any(
            topic == s or (s.startswith("^") and re.fullmatch(s[1:], topic)) for s in self._subscription
        )


class FakeMessage:
    """A consumed record, an end-of-partition event, or a delivery report's message."""

    def __init__(self, topic: str, partition: int, entry: Entry | None, eof_offset: int = INVALID) -> None:
        self._topic, self._partition, self._entry, self._eof = topic, partition, entry, eof_offset

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self._entry is None else None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._eof if self._entry is None else self._entry.offset

    def key(self) -> bytes | None:
        return None if self._entry is None else self._entry.key

    def value(self) -> bytes | None:
        return None if self._entry is None else self._entry.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None if self._entry is None else self._entry.headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 0 if self._entry is None else self._entry.timestamp)


def error(code: int, *, retriable: bool = False, abortable: bool = False, fatal: bool = False) -> KafkaError:
    return KafkaError(
        code, f"injected {code}", fatal=fatal, retriable=retriable, txn_requires_abort=abortable
    )


def _bytes(data: Any) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _headers(headers: Any) -> list[tuple[str, bytes]] | None:
    if not headers:
        return None
    return [(name, _bytes(value) or b"") for name, value in headers]
