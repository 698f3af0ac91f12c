"""The exactly-once runtime against a real broker, with real worker processes and RocksDB.

The workload is the counting stage: each record adds one to its key's count. Decisions
are checked on state (restored from the changelog the way a worker restores it) and on the
highest output per key; raw output counts are only compared where the broker is real Kafka,
because the embedded broker can leak a killed producer's open transaction (docs/brokers.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from tests.conftest import TestBroker
from tests.integration.helpers import (
    WorkerProcess,
    committed_offsets,
    processes,
    produce,
    read_all,
    wait_for,
)
from tests.integration.timer_worker import timer_key

from streamalloc.config import Settings
from streamalloc.kafka import admin_client, consumer_config, producer_config
from streamalloc.runtime.changelog import SRC_HEADER, RestoreJob, Restorer, encode_src
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import InMemoryStore
from streamalloc.serialization import dead_letter_serde

pytestmark = pytest.mark.slow
PARTITIONS = 4


class Counting:
    """Topics and worker processes of one counting application."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.input = settings.topic("numbers")
        self.output = settings.topic("counted")
        self.changelog = settings.changelog_topic("counts")
        admin = admin_client(settings)
        topics = [
            NewTopic(self.input, PARTITIONS, 1),
            NewTopic(self.output, PARTITIONS, 1),
            NewTopic(settings.topic("dead-letter"), 1, 1),
            NewTopic(self.changelog, PARTITIONS, 1, config={"cleanup.policy": "compact"}),
        ]
        for future in admin.create_topics(topics).values():
            future.result()
        self.sent: Counter[bytes] = Counter()

    def send(self, n: int, keys: int, start: int = 0) -> None:
        records = [(f"k{(start + i) % keys}".encode(), b"%d" % (start + i)) for i in range(n)]
        produce(self.settings, self.input, records)
        self.sent.update(key for key, _ in records)

    def worker(self, name: str, *extra: str) -> WorkerProcess:
        args = [
            "-m", "streamalloc.bench.counting_worker",
            "--bootstrap", str(self.settings.bootstrap),
            "--prefix", self.settings.topic_prefix,
            "--app-id", self.settings.app_id,
            "--state-dir", str(self.tmp / name),
            "--input", self.input,
            "--output", self.output,
            "--log-level", "INFO",
            *extra,
        ]  # fmt: skip
        return WorkerProcess(args, self.tmp / f"{name}.log")

    def committed_total(self) -> int:
        return sum(committed_offsets(self.settings, self.settings.app_id, self.input).values())

    def wait_all_committed(self, timeout_s: float = 120.0) -> None:
        total = sum(self.sent.values()) + getattr(self, "bad", 0)
        wait_for(lambda: self.committed_total() >= total, timeout_s, f"{total} committed input records")

    def restored_state(self) -> dict[bytes, int]:
        """The counts a worker would restore now, using the runtime's own Restorer."""
        store = InMemoryStore("counts")
        committed = committed_offsets(self.settings, self.settings.app_id, self.input)
        restorer = Restorer(consumer_config(self.settings), Observer())
        try:
            for p in range(PARTITIONS):
                restorer.start(
                    RestoreJob(store.partition(p), self.changelog, {f"{self.input}:{p}": committed[p]})
                )
            restore_to_end(restorer, 60)
        finally:
            restorer.close()
        state: dict[bytes, int] = {}
        for p in range(PARTITIONS):
            state.update({k: int(v) for k, v in store.partition(p).iter_prefix(b"")})
        return state

    def highest_output(self) -> dict[bytes, int]:
        highest: dict[bytes, int] = {}
        for _, _, key, value in read_all(self.settings, self.output):
            assert key is not None and value is not None
            highest[key] = max(highest.get(key, 0), int(value))
        return highest


def restore_to_end(restorer: Restorer, timeout_s: float, failure: str = "restore did not finish") -> None:
    """Step `restorer` until every job reached its changelog's end, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while restorer.active and time.monotonic() < deadline:
        restorer.step(0.2)
    assert not restorer.active, failure


@pytest.fixture
def counting(settings: Settings, tmp_path: Path) -> Counting:
    return Counting(settings.replace(commit_interval_ms=100), tmp_path)


def test_100k_records_every_output_and_state_exact(counting: Counting, kafka_broker: TestBroker) -> None:
    counting.send(100_000, keys=1_000)
    with processes() as running:
        worker = counting.worker("w1")
        running.append(worker)
        counting.wait_all_committed()
        assert worker.terminate() == 0, worker.log()
    outputs = read_all(counting.settings, counting.output)
    per_key: dict[bytes, list[int]] = {}
    for _, _, key, value in sorted(outputs):
        assert key is not None and value is not None
        per_key.setdefault(key, []).append(int(value))
    # every key's outputs, in partition order, count 1, 2, ... n exactly once
    assert {k: v for k, v in per_key.items()} == {k: list(range(1, n + 1)) for k, n in counting.sent.items()}
    assert counting.restored_state() == dict(counting.sent)
    # the worker's own RocksDB agrees too
    from streamalloc.runtime.state import RocksDBStore

    store = RocksDBStore("counts", counting.tmp / "w1" / counting.settings.app_id)
    local: dict[bytes, int] = {}
    for p in range(PARTITIONS):
        local.update({k: int(v) for k, v in store.partition(p).iter_prefix(b"")})
    store.close()
    assert local == dict(counting.sent)


def test_kill9_mid_run_state_equals_recomputation_from_committed_input(counting: Counting) -> None:
    counting.send(150_000, keys=500)
    with processes() as running:
        first = counting.worker("w1", "--commit-every", "2000")
        running.append(first)
        wait_for(lambda: counting.committed_total() > 30_000, 60, "a third of the input committed")
        first.kill9()
        # EosTestDriver idea: what the changelog restores must equal counting the input up to
        # the committed offsets, no more (nothing counted twice) and no less (nothing lost).
        committed = committed_offsets(counting.settings, counting.settings.app_id, counting.input)
        assert 0 < sum(committed.values()) < 150_000, "kill landed after the end; test proves nothing"
        expected: Counter[bytes] = Counter()
        for partition, offset, key, _ in read_all(counting.settings, counting.input):
            if offset < committed[partition]:
                assert key is not None
                expected[key] += 1
        assert counting.restored_state() == dict(expected)
        second = counting.worker("w1", "--commit-every", "2000")  # same state dir: restart
        running.append(second)
        counting.wait_all_committed()
        assert second.terminate() == 0, second.log()
    assert counting.restored_state() == dict(counting.sent)
    assert counting.highest_output() == dict(counting.sent)


def write_changelog(
    counting: Counting, batches: list[tuple[tuple[int, int], list[tuple[bytes, bytes]]]]
) -> None:
    """Each batch as one committed transaction on changelog partition 0: ((first, next) input
    offsets of the counting input, its records)."""
    settings = counting.settings
    producer = Producer(producer_config(settings, transactional_id=f"{settings.app_id}-changelog-test"))
    producer.init_transactions(30)
    for (first, end), records in batches:
        header = encode_src({(counting.input, 0): first}, {(counting.input, 0): end})
        producer.begin_transaction()
        for key, value in records:
            producer.produce(counting.changelog, value, key, partition=0, headers=[(SRC_HEADER, header)])
        producer.commit_transaction(30)


def restore(counting: Counting, job: RestoreJob) -> None:
    """Run a restore job to its end against the real broker."""
    restorer = Restorer(consumer_config(counting.settings), Observer())
    try:
        restorer.start(job)
        restore_to_end(restorer, 30)
    finally:
        restorer.close()


def test_restore_skips_a_leaked_batch_even_after_the_next_owner_committed_past_it(
    counting: Counting,
) -> None:
    """A crashed worker's last batch, leaked into the changelog, never reaches restored state.

    The changelog is written as the embedded broker leaves it after a crash (docs/brokers.md): a
    committed batch, the dead worker's batch (visible although its offsets never
    committed), then the next owner's batch redoing the same input with other keys. The
    committed input offsets are now past the leaked batch's end, so only the input ranges
    in the headers can tell it apart.
    """
    write_changelog(
        counting,
        [
            ((0, 10), [(b"a", b"1"), (b"shared", b"1")]),
            ((10, 30), [(b"x", b"7"), (b"shared", b"7")]),
            ((10, 40), [(b"b", b"2"), (b"c", b"2")]),
        ],
    )
    store = InMemoryStore("counts")
    job = RestoreJob(store.partition(0), counting.changelog, {f"{counting.input}:0": 40})
    restore(counting, job)
    assert dict(store.partition(0).iter_prefix(b"")) == {b"a": b"1", b"shared": b"1", b"b": b"2", b"c": b"2"}
    assert job.skipped == 2


def test_a_skipped_batch_the_local_store_already_holds_is_taken_back_by_a_full_restore(
    counting: Counting,
) -> None:
    """Local data may be newer than its checkpoint, and the broker may keep a batch's records
    but not its consumed offsets: the restore then skips a batch the store already applied.

    Seen in the kill -9 demo on the embedded broker: the killed worker's last batch committed
    and was applied locally, the checkpoint file lagged, and the group's offsets stayed
    before the batch, so its successor redid the input but found the lines already decided.
    """
    write_changelog(
        counting,
        [((0, 10), [(b"a", b"1"), (b"shared", b"1")]), ((10, 30), [(b"x", b"7"), (b"shared", b"7")])],
    )
    partition = InMemoryStore("counts").partition(0)
    partition.write_batch({b"a": b"1", b"x": b"7", b"shared": b"7"})  # both batches applied
    partition.write_checkpoint(1)  # the checkpoint only records the first batch's first record
    job = RestoreJob(partition, counting.changelog, {f"{counting.input}:0": 10})  # offsets: before the 2nd
    restore(counting, job)
    assert dict(partition.iter_prefix(b"")) == {b"a": b"1", b"shared": b"1"}
    assert (job.skipped, job.records) == (2, 2), "the second pass restored from the start"


def test_two_workers_one_killed_survivor_restores_and_counts_stay_exact(counting: Counting) -> None:
    counting.send(40_000, keys=400)
    with processes() as running:
        a, b = counting.worker("a"), counting.worker("b")
        running += [a, b]
        wait_for(lambda: "assigned" in a.log() and "assigned" in b.log(), 60, "both workers assigned")
        counting.wait_all_committed()
        b.kill9()
        counting.send(40_000, keys=400, start=40_000)
        counting.wait_all_committed()
        assert a.alive(), a.log()
        assert "restored" in a.log()
        assert a.terminate() == 0, a.log()
    assert counting.restored_state() == dict(counting.sent)
    assert counting.highest_output() == dict(counting.sent)


def test_malformed_records_go_to_dead_letter_and_good_ones_are_processed(counting: Counting) -> None:
    good = [(f"k{i % 50}".encode(), b"%d" % i) for i in range(5_000)]
    bad_values = [b"not-a-number", b"", b"\xff\xfe", b"12x"]
    records: list[tuple[bytes | None, bytes | None]] = []
    bad_keys: list[bytes] = []
    for i, record in enumerate(good):
        records.append(record)
        if i % 500 == 0:
            bad_key = f"bad{i}".encode()
            bad_keys.append(bad_key)
            records.append((bad_key, bad_values[(i // 500) % len(bad_values)]))
    records.append((None, b"7"))  # keyless: invalid for a counted record
    produce(counting.settings, counting.input, records)
    counting.sent.update(key for key, _ in good)
    counting.bad = len(bad_keys) + 1  # type: ignore[attr-defined]
    with processes() as running:
        worker = counting.worker("w1")
        running.append(worker)
        counting.wait_all_committed()
        assert worker.alive()
        assert worker.terminate() == 0, worker.log()
    serde = dead_letter_serde(counting.settings)
    letters = [
        serde.decode(value)
        for _, _, _, value in read_all(counting.settings, counting.settings.topic("dead-letter"))
        if value
    ]
    assert sorted(letter["key"] or b"" for letter in letters) == sorted([*bad_keys, b""])
    for letter in letters:
        assert letter["source_topic"] == counting.input
        assert letter["error"]
        assert letter["offset"] >= 0
    assert counting.restored_state() == dict(counting.sent)


def test_rebalance_while_a_partition_restores(counting: Counting) -> None:
    # A long changelog (one record per distinct key) makes a fresh worker restore for a while.
    counting.send(200_000, keys=200_000)
    with processes() as running:
        first = counting.worker("a")
        running.append(first)
        counting.wait_all_committed(180)
        assert first.terminate() == 0, first.log()
        second = counting.worker("b")  # empty state dir: restores everything
        running.append(second)
        wait_for(lambda: "assigned" in second.log(), 60, "second worker assigned", every_s=0.02)
        # Freeze the second worker in its restore (SIGSTOP), so the group rebalances around it:
        # the third joins, the frozen member misses its heartbeats and loses its partitions.
        os.kill(second.pid, signal.SIGSTOP)
        try:
            frozen_log = second.log()
            third = counting.worker("c")
            running.append(third)
            wait_for(lambda: "assigned" in third.log(), 60, "third worker assigned")
        finally:
            os.kill(second.pid, signal.SIGCONT)
        counting.send(20_000, keys=200_000, start=200_000)
        counting.wait_all_committed(180)
        assert second.alive(), second.log()
        assert third.alive(), third.log()
        assert "Traceback" not in second.log() + third.log()
        assert second.terminate() == 0 and third.terminate() == 0
        second_log = second.log()
    # Evidence that the rebalance really cut into a restore: when the second worker was frozen,
    # some partition of its first assignment had not finished restoring, and it was reassigned.
    frozen = [json.loads(line) for line in frozen_log.splitlines() if line.startswith("{")]
    partitions = next(line["partitions"] for line in frozen if line["msg"] == "assigned")
    restored_before = [line for line in frozen if line["msg"] == "restored"]
    assert len(restored_before) < len(partitions), "restore ended before the rebalance"
    lines = [json.loads(line) for line in second_log.splitlines() if line.startswith("{")]
    assert sum(line["msg"] == "assigned" for line in lines) >= 2, "the second worker was never reassigned"
    assert counting.restored_state() == dict(counting.sent)


@pytest.mark.smoke  # the embedded broker is where a restore after a rebalance was seen to hang
def test_a_worker_keeps_the_stores_of_partitions_a_rebalance_gives_back_without_restoring_them(
    counting: Counting,
) -> None:
    """An eager rebalance takes every partition from every member and gives most back. A
    worker keeps the stores of what it committed until the assignment, and opens the
    partitions it gets back on them as they are: no changelog read (on the embedded broker
    such a restore once waited for minutes behind a transaction left open). The counts
    stay exact through it and after."""
    counting.send(2_000, keys=200)
    with processes() as running:
        first = counting.worker("first")
        running.append(first)
        counting.wait_all_committed(120)
        second = counting.worker("second")  # the group rebalances
        running.append(second)
        wait_for(lambda: "assigned" in second.log(), 60, "second worker assigned")
        wait_for(lambda: first.log().count('"assigned"') >= 2, 60, "the first worker assigned again")
        counting.send(2_000, keys=200, start=2_000)
        counting.wait_all_committed(120)
        assert first.terminate() == 0 and second.terminate() == 0
        first_log = first.log()
    lines = [json.loads(line) for line in first_log.splitlines() if line.startswith("{")]
    assignments = [line["partitions"] for line in lines if line["msg"] == "assigned"]
    again = {int(p.rsplit("[", 1)[1].rstrip("]")) for p in assignments[1]}
    kept = {line["partition"] for line in lines if line["msg"] == "store kept"}  # (said before "assigned")
    restored = [line["partition"] for line in lines if line["msg"] == "restored"]
    assert kept == again, first_log
    assert sorted(restored) == list(range(PARTITIONS)), "a kept partition was restored again"
    assert counting.restored_state() == dict(counting.sent)
    assert counting.highest_output() == dict(counting.sent)


# ---------------------------------------------------------------------- punctuation

TIMER_WORKER = Path(__file__).with_name("timer_worker.py")


class Timers:
    """Topics and worker processes of the timer stage (timer_worker.py): punctuation only."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.input = settings.topic("timer-input")
        self.output = settings.topic("timer-events")
        self.changelog = settings.changelog_topic("timers")
        admin = admin_client(settings)
        topics = [
            NewTopic(self.input, PARTITIONS, 1),
            NewTopic(self.output, PARTITIONS, 1),
            NewTopic(settings.topic("dead-letter"), 1, 1),
            NewTopic(self.changelog, PARTITIONS, 1, config={"cleanup.policy": "compact"}),
        ]
        for future in admin.create_topics(topics).values():
            future.result()

    def worker(self, name: str, state: str, *extra: str) -> WorkerProcess:
        args = [
            str(TIMER_WORKER),
            "--bootstrap", str(self.settings.bootstrap),
            "--prefix", self.settings.topic_prefix,
            "--app-id", self.settings.app_id,
            "--state-dir", str(self.tmp / state),
            "--input", self.input,
            "--output", self.output,
            "--name", name,
            *extra,
        ]  # fmt: skip
        return WorkerProcess(args, self.tmp / f"{name}.log")

    def events(self) -> list[tuple[int, bytes, bytes]]:
        """(partition, key, value) of every committed output, as a read_committed reader sees them."""
        out = []
        for partition, _, key, value in read_all(self.settings, self.output):
            assert key is not None and value is not None
            out.append((partition, key, value))
        return out

    def partitions_with(self, key: bytes, value: bytes | None = None) -> set[int]:
        return {p for p, k, v in self.events() if k == key and (value is None or v == value)}

    def restored_state(self) -> dict[int, dict[bytes, bytes]]:
        """Each partition's `timers` store as a worker would restore it now."""
        store = InMemoryStore("timers")
        committed = committed_offsets(self.settings, self.settings.app_id, self.input)
        restorer = Restorer(consumer_config(self.settings), Observer())
        try:
            for p in range(PARTITIONS):
                restorer.start(
                    RestoreJob(store.partition(p), self.changelog, {f"{self.input}:{p}": committed[p]})
                )
            restore_to_end(restorer, 60)
        finally:
            restorer.close()
        return {p: dict(store.partition(p).iter_prefix(b"")) for p in range(PARTITIONS)}


@pytest.fixture
def timers(settings: Settings, tmp_path: Path) -> Timers:
    return Timers(settings, tmp_path)


def test_punctuation_commits_state_and_outputs_without_input_and_a_fired_timer_stays_fired(
    timers: Timers,
) -> None:
    """Punctuation alone (no input record is ever sent) writes the store and emits, in
    committed transactions; the store survives SIGKILL and restarts (from the local
    checkpoint and from the changelog alone), and a timer fired once is not fired again.
    """
    everywhere = set(range(PARTITIONS))
    with processes() as running:
        first = timers.worker("w1", "w1", "--no-fire")
        running.append(first)
        wait_for(lambda: timers.partitions_with(b"armed") == everywhere, 60, "every partition armed")
        # From here on the first worker's punctuations find nothing to do and produce
        # nothing (the empty-transaction path), so this kill cannot leave an open
        # transaction for the embedded broker to leak (docs/brokers.md): the counts below are exact.
        first.kill9()
        armed_at = {p: v for p, k, v in timers.events() if k == b"armed"}
        assert timers.restored_state() == {
            p: {b"armed": armed_at[p], timer_key(int(armed_at[p])): b"%d" % p} for p in everywhere
        }

        second = timers.worker("w2", "w1")  # same state dir: local checkpoint, then the tail
        running.append(second)
        wait_for(lambda: timers.partitions_with(b"fired") == everywhere, 60, "every timer fired")
        second.kill9()  # nothing left to do after the fire either: nothing in flight
        assert timers.restored_state() == {p: {b"armed": armed_at[p]} for p in everywhere}

        third = timers.worker("w3", "w3")  # empty state dir: restores from the changelog alone
        running.append(third)
        # Its first punctuation of a partition emits `up`, and would fire a timer the restore
        # brought back in the same call, hence the same transaction: once every `up` is
        # visible, so would be any second fire.
        wait_for(lambda: timers.partitions_with(b"up", b"w3") == everywhere, 60, "the third worker up")
        time.sleep(1.0)  # ten more rounds of punctuations that find nothing to do
        assert third.terminate() == 0, third.log()
        for worker in (first, second, third):
            assert "Traceback" not in worker.log(), worker.log()
    events = timers.events()
    armed = sorted((p, v) for p, k, v in events if k == b"armed")
    fired = sorted((p, v) for p, k, v in events if k == b"fired")
    assert armed == sorted(armed_at.items())  # restored `armed` records were never re-armed
    assert fired == sorted((p, timer_key(int(v))) for p, v in armed_at.items())  # once each
    assert timers.restored_state() == {p: {b"armed": armed_at[p]} for p in everywhere}
    assert set(committed_offsets(timers.settings, timers.settings.app_id, timers.input).values()) == {0}


def test_restore_drops_a_leaked_punctuation_batch_the_next_writer_never_saw(counting: Counting) -> None:
    """A punctuation batch consumed nothing: its input range is empty, so only the `base` of
    the batch after it tells whether its writer had it (committed) or not (leaked).

    The changelog is written as the embedded broker leaves it when a worker dies inside a
    punctuation's transaction and the next owner works on before the dead worker's
    transactional id comes back (which is when the broker shows the dead transaction).
    """
    settings = counting.settings
    producer = Producer(producer_config(settings, transactional_id=f"{settings.app_id}-leak-test"))
    producer.init_transactions(30)
    delivered: list[int] = []

    def commit_batch(header: bytes, records: list[tuple[bytes, bytes]]) -> int:
        """Commit one batch to changelog partition 0; return the offset after its last record."""
        producer.begin_transaction()
        for key, value in records:
            producer.produce(
                counting.changelog,
                value,
                key,
                partition=0,
                headers=[(SRC_HEADER, header)],
                on_delivery=lambda err, msg: delivered.append(msg.offset()),
            )
        producer.commit_transaction(30)
        return max(delivered) + 1

    tp = (counting.input, 0)
    after_input = commit_batch(encode_src({tp: 0}, {tp: 10}, base=0, writer=1), [(b"a", b"1")])
    # A punctuation that committed: the writer went on from it.
    after_punctuation = commit_batch(
        encode_src({tp: 10}, {tp: 10}, base=after_input, writer=1), [(b"p", b"1")]
    )
    # The dead worker's punctuation, never committed, visible all the same.
    commit_batch(encode_src({tp: 10}, {tp: 10}, base=after_punctuation, writer=1), [(b"x", b"leaked")])
    # The next owner restored up to the committed punctuation only; it punctuated too, then
    # consumed 10..15.
    after_next = commit_batch(
        encode_src({tp: 10}, {tp: 10}, base=after_punctuation, writer=2), [(b"q", b"1")]
    )
    commit_batch(encode_src({tp: 10}, {tp: 15}, base=after_next, writer=2), [(b"b", b"2")])
    store = InMemoryStore("counts")
    job = RestoreJob(store.partition(0), counting.changelog, {f"{counting.input}:0": 15})
    restorer = Restorer(consumer_config(settings), Observer())
    try:
        restorer.start(job)
        restore_to_end(restorer, 30)
    finally:
        restorer.close()
    assert dict(store.partition(0).iter_prefix(b"")) == {b"a": b"1", b"p": b"1", b"q": b"1", b"b": b"2"}
    assert job.skipped == 1


@pytest.mark.smoke  # the embedded broker is where it was seen
def test_a_restore_held_back_by_an_open_transaction_says_so_and_ends_once_it_does(
    counting: Counting, caplog: pytest.LogCaptureFixture
) -> None:
    """A restore that starts past the start of another producer's open transaction gets
    neither records nor its changelog's end from a read_committed reader until that
    transaction ends (librdkafka reports the end only at the last stable offset itself).
    Seen once in the kill -9 demo on the embedded broker, a restore waiting for minutes
    and no word of why: now the restore names its position and the high watermark, and
    it ends as soon as the transaction does."""
    settings = counting.settings
    changelog, tp = counting.changelog, (counting.input, 0)
    committed: list[int] = []
    writer = Producer(producer_config(settings, transactional_id=f"{settings.app_id}-committer"))
    writer.init_transactions(30)

    def commit(key: bytes) -> None:
        writer.begin_transaction()
        writer.produce(
            changelog, b"1", key, partition=0,
            headers=[(SRC_HEADER, encode_src({tp: 0}, {tp: 0}))],
            on_delivery=lambda err, msg: committed.append(msg.offset()),
        )  # fmt: skip
        writer.commit_transaction(30)

    commit(b"before")
    stuck = Producer(producer_config(settings, transactional_id=f"{settings.app_id}-open"))
    stuck.init_transactions(30)
    stuck.begin_transaction()
    stuck.produce(changelog, b"1", b"open", partition=0, headers=[(SRC_HEADER, encode_src({tp: 0}, {tp: 0}))])
    stuck.flush(30)
    commit(b"after")  # committed, but behind the open transaction
    store = InMemoryStore("counts")
    store.partition(0).write_checkpoint(max(committed) + 1)  # this store had written "after"
    job = RestoreJob(store.partition(0), changelog, {f"{counting.input}:0": 0})
    restorer = Restorer(consumer_config(settings), Observer(), stall_after_s=1.0)
    try:
        restorer.start(job)
        said: list[logging.LogRecord] = []
        with caplog.at_level("WARNING", logger="streamalloc.runtime.restore"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not said:
                assert not restorer.step(0.2), "the restore ended behind an open transaction"
                said = [r for r in caplog.records if r.getMessage().startswith("a restore reads nothing")]
        assert said, "the stalled restore said nothing"
        assert "held back" in said[0].getMessage()
        assert (said[0].__dict__["position"], said[0].__dict__["high_watermark"]) == (
            max(committed) + 1,
            max(committed) + 2,  # the commit marker of "after"
        )
        stuck.commit_transaction(30)
        restore_to_end(restorer, 30, "the restore did not end once the transaction did")
    finally:
        restorer.close()
