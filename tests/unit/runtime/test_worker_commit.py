"""How the worker meets each outcome of a commit, over the fake broker (fake_kafka.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from tests.unit.runtime.fake_kafka import FakeConsumer, FakeProducer, error
from tests.unit.runtime.worker_fixtures import CHANGELOG, IN, OUT, Cluster, Recorder, run_worker, settings

import streamalloc.runtime.worker as worker_module
from streamalloc.bench.counting import CountingStage
from streamalloc.errors import ProducerFenced
from streamalloc.runtime.changelog import SRC_HEADER, encode_src
from streamalloc.runtime.lineage import BATCH_HEADER
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.state import RocksDBStore, Store
from streamalloc.runtime.worker import MAX_FENCES, Worker

RECORDS = 12
KEYS = [b"k0", b"k1", b"k2"]


def send(cluster: Cluster, n: int = RECORDS) -> None:
    cluster.broker.produce_plain(IN, [(KEYS[i % len(KEYS)], b"%d" % i) for i in range(n)])


def all_committed(cluster: Cluster, n: int = RECORDS) -> bool:
    return cluster.committed().get(0, 0) >= n


def counts(n: int = RECORDS) -> dict[bytes, list[int]]:
    per_key = [KEYS[i % len(KEYS)] for i in range(n)]
    return {key: list(range(1, per_key.count(key) + 1)) for key in KEYS}


def last_counts() -> dict[bytes, bytes]:
    return {key: b"%d" % values[-1] for key, values in counts().items()}


def test_a_retriable_commit_error_then_success_writes_the_changelog_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    send(cluster)
    cluster.failures["commit_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    held = run_worker(settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster))

    producer = cluster.txn_producer
    assert producer.calls.count("abort_transaction") == 0
    # The first commit was called again after its retriable error, and nothing else was.
    first_commit = producer.calls.index("commit_transaction")
    assert producer.calls[first_commit + 1] == "commit_transaction"
    assert cluster.outputs() == counts()
    changelog = [(e.key, e.value) for e in cluster.broker.logs[(CHANGELOG, 0)] if not e.control]
    assert len(changelog) == len(set(changelog)), "a batch's changelog was produced twice"
    assert all(e.state == "committed" for e in cluster.broker.logs[(CHANGELOG, 0)])
    assert held["counts"] == last_counts()


def test_the_worker_rewinds_and_redoes_the_batch_after_an_abort(cluster: Cluster, tmp_path: Path) -> None:
    send(cluster)
    cluster.failures["commit_transaction"] = [error(KafkaError.INVALID_TXN_STATE, abortable=True)]
    observer = Recorder()
    held = run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    assert len(observer.aborts) == 1
    producer, consumer = cluster.txn_producer, cluster.group_consumer
    assert producer.calls.count("abort_transaction") == 1
    assert (IN, 0, 0) in consumer.seeks, "the input was not rewound to the committed offset"
    # Redone: every count exactly once in the committed outputs, and once in the store.
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()
    aborted = [e for e in cluster.broker.logs[(OUT, 0)] if e.state == "aborted"]
    assert aborted, "the first batch's outputs were not aborted"


def test_a_consumer_group_that_moved_on_aborts_the_batch_and_it_is_redone(
    cluster: Cluster, tmp_path: Path
) -> None:
    send(cluster)
    cluster.failures["send_offsets_to_transaction"] = [error(KafkaError.ILLEGAL_GENERATION, abortable=True)]
    observer = Recorder()
    run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    assert len(observer.aborts) == 1 and "group moved on" in observer.aborts[0]
    assert cluster.outputs() == counts()


def test_a_fenced_producer_is_renewed_and_the_batch_redone_once(cluster: Cluster, tmp_path: Path) -> None:
    # A broker outage past transaction.timeout.ms ends in a fence: the broker aborted the
    # open transaction and bumped the epoch. A new producer with the same id goes on.
    send(cluster)
    cluster.failures["commit_transaction"] = [error(KafkaError._FENCED, fatal=True)]
    observer = Recorder()
    held = run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    transactional = [p for p in cluster.producers if "transactional.id" in p.config]
    assert len(transactional) == 2
    assert transactional[0].config["transactional.id"] == transactional[1].config["transactional.id"]
    assert "abort_transaction" not in transactional[0].calls  # librdkafka refuses it after a fatal error
    assert len(observer.aborts) == 1 and "fatal" in observer.aborts[0]
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()


def test_a_producer_fenced_again_and_again_stops_the_worker_and_leaves_the_stores_untouched(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Another process with this state directory's transactional id: no new producer cures it.
    send(cluster)
    cluster.failures["commit_transaction"] = [error(KafkaError._FENCED, fatal=True)] * (MAX_FENCES + 1)
    stores: dict[str, Store] = {"counts": RocksDBStore("counts", tmp_path / "db")}
    with pytest.raises(ProducerFenced):
        run_worker(settings(tmp_path), [CountingStage(IN, OUT)], lambda _: False, stores=stores)

    assert len([p for p in cluster.producers if "transactional.id" in p.config]) == MAX_FENCES + 1
    assert cluster.committed() == {}
    assert cluster.outputs() == {}
    reopened = RocksDBStore("counts", tmp_path / "db")
    try:
        part = reopened.partition(0)
        assert dict(part.iter_prefix(b"")) == {}
        assert part.checkpoint_offset in (None, 0)  # the empty changelog's restore, nothing after
    finally:
        reopened.close()


def test_a_batch_that_can_be_neither_committed_nor_aborted_renews_the_producer_and_is_redone_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The broker is away: send_offsets times out, and so does the abort.
    send(cluster)
    cluster.failures["send_offsets_to_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    cluster.failures["abort_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    observer = Recorder()
    held = run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    assert len([p for p in cluster.producers if "transactional.id" in p.config]) == 2
    assert len(observer.aborts) == 1 and "could not be aborted" in observer.aborts[0]
    assert (IN, 0, 0) in cluster.group_consumer.seeks, (
        "the revived task did not restart at the committed offset"
    )
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()


def test_a_new_worker_waits_for_the_transaction_coordinator(cluster: Cluster, tmp_path: Path) -> None:
    # Started while the broker restarts: init_transactions times out, and is tried again.
    send(cluster)
    cluster.failures["init_transactions"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    run_worker(settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster))

    producer = cluster.txn_producer
    assert producer.calls.count("init_transactions") == 2  # resumed on the same producer
    assert len([p for p in cluster.producers if "transactional.id" in p.config]) == 1
    assert cluster.outputs() == counts()


def test_a_retriable_error_that_does_not_clear_aborts_the_batch_and_it_is_redone(
    cluster: Cluster, tmp_path: Path
) -> None:
    send(cluster)
    cluster.failures["commit_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)] * 5
    observer = Recorder()
    run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    assert len(observer.aborts) == 1
    assert cluster.outputs() == counts()


def test_a_producer_fenced_between_batches_is_renewed_at_the_next_begin(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The fence was met in the background (a delivery after the broker bumped the epoch):
    # begin_transaction is the first call to see it.
    send(cluster)
    cluster.failures["begin_transaction"] = [error(KafkaError._FENCED, fatal=True)]
    observer = Recorder()
    held = run_worker(
        settings(tmp_path), [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer
    )

    assert len([p for p in cluster.producers if "transactional.id" in p.config]) == 2
    assert len(observer.aborts) == 1
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()


def test_partitions_lost_with_a_batch_open_abort_it_count_the_abort_and_redo_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    total = 3 * RECORDS

    def more(batch: int) -> None:
        cluster.broker.produce_plain(
            IN, [(KEYS[i % len(KEYS)], b"%d" % i) for i in range(batch * RECORDS, (batch + 1) * RECORDS)]
        )

    send(cluster)
    more(1)  # two batches that leave the transaction open (commit_every below)
    observer = Recorder()
    lost: list[bool] = []

    def lose_mid_batch(worker: Worker) -> bool:
        checkpoint = worker._checkpoint
        if not lost and checkpoint is not None and checkpoint.in_transaction:
            lost.append(True)
            cluster.group_consumer.lose_all()  # at the next poll, as librdkafka reports it
            more(2)  # enough for the redo to commit at once
        return all_committed(cluster, total)

    config = settings(tmp_path, commit_every=total - 1)
    held = run_worker(config, [CountingStage(IN, OUT)], lose_mid_batch, observer=observer)

    assert observer.aborts == ["partitions lost"]
    assert cluster.txn_producer.calls.count("abort_transaction") == 1
    # Redone once the partitions came back: every count exactly once, committed.
    assert cluster.outputs() == counts(total)
    assert held["counts"] == {key: b"%d" % values[-1] for key, values in counts(total).items()}


def test_a_batch_commits_as_soon_as_the_input_is_drained(cluster: Cluster, tmp_path: Path) -> None:
    # Neither the count nor the interval is reached: the batch closes because nothing waits.
    send(cluster)
    observer = Recorder()
    config = settings(tmp_path, commit_every=10_000, commit_interval_ms=600_000, commit_min_gap_ms=0)
    held = run_worker(config, [CountingStage(IN, OUT)], lambda _: all_committed(cluster), observer=observer)

    assert observer.commits == 1
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()


def test_a_drained_batch_waits_for_the_gap_after_the_previous_commit(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    send(cluster, 3)
    observer = Recorder()
    config = settings(tmp_path, commit_every=10_000, commit_interval_ms=600_000, commit_min_gap_ms=50)
    polls: list[int] = []

    def step(worker: Worker) -> bool:
        polls.append(observer.commits)
        if len(polls) == 5:  # after the first commit: more input, drained at once
            cluster.broker.produce_plain(IN, [(b"k0", b"x")])
        clock[0] += 0.01  # 10 ms a round
        return all_committed(cluster, 4)

    run_worker(config, [CountingStage(IN, OUT)], step, observer=observer)

    assert observer.commits == 2
    first, second = polls.index(1), polls.index(2)
    assert second - first >= 5  # 50 ms of 10 ms rounds since the first commit ended


OTHER, OTHER_OUT = "t.other", "t.other-out"


class Forward(BaseStage):
    """A stage without stores: its task is ready, and processes, as soon as it is assigned."""

    name = "forward"

    def topics(self) -> Sequence[str]:
        return [OTHER]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes | None:
        return value

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        for record in records:
            ctx.emit(OTHER_OUT, record.key, record.value, ctx.partition)


class Restores(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.restored: list[tuple[str, int]] = []

    def on_restore(self, store: str, partition: int, records: int, seconds: float) -> None:
        self.restored.append((store, partition))


def test_a_batch_aborted_while_a_store_restores_is_redone_the_worker_recovers_and_all_commits_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The broker-kill chaos run: the previous owner of partition 0 is stuck in its commit,
    # its batch's changelog records open on the changelog. This worker's counting task
    # restores up to them (the last stable offset); its store-less task processes a batch
    # whose commit fails (OUT_OF_ORDER_SEQUENCE_NUMBER) and aborts. While the worker is in
    # that commit, its restore consumer fetches in the background: an end of the changelog
    # partition at the open transaction, then, once the previous owner aborted (the group
    # had moved on), a second one past its records. Both wait in the queue for the next
    # restore step, which finished the store partition twice ("illegal transition to active").
    for topic in (OTHER, OTHER_OUT):
        cluster.broker.create_topic(topic)
    send(cluster)
    cluster.broker.produce_plain(OTHER, [(b"o%d" % i, b"%d" % i) for i in range(5)])
    previous = FakeProducer({"transactional.id": "app-previous"}, cluster.broker)
    previous.begin_transaction()
    src = encode_src({(IN, 0): 0}, {(IN, 0): 5}, None, 1, 1)
    for key in KEYS:
        previous.produce(CHANGELOG, b"1", key, 0, headers=[(SRC_HEADER, src)])
        previous.produce(OUT, b"1", key, 0)
    cluster.failures["commit_transaction"] = [error(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, abortable=True)]

    def restore_consumer() -> FakeConsumer:
        return next(c for c in cluster.consumers if c.group == "streamalloc-restore")

    def meanwhile() -> None:
        # librdkafka's fetcher goes on while the worker waits in its commit.
        restore_consumer().fetch_ahead()
        if previous._in_transaction:
            previous.abort_transaction()

    def done(worker: Worker) -> bool:
        producer = cluster.txn_producer
        if producer.on_flush is None:
            producer.on_flush = meanwhile
        return all_committed(cluster) and cluster.committed(OTHER).get(0, 0) >= 5

    observer = Restores()
    stores: dict[str, Store] = {"counts": RocksDBStore("counts", tmp_path / "db")}
    held = run_worker(
        settings(tmp_path),
        [CountingStage(IN, OUT), Forward()],
        done,
        observer=observer,
        stores=stores,
    )

    assert observer.aborts == [f"injected {KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER}"]
    assert observer.restored == [("counts", 0)], "the store partition's restore finished more than once"
    assert cluster.outputs() == counts()
    assert held["counts"] == last_counts()
    forwarded = [(key, value) for _, _, key, value in cluster.broker.visible(OTHER_OUT)]
    assert forwarded == [(b"o%d" % i, b"%d" % i) for i in range(5)]


@pytest.mark.parametrize(("profile", "tagged"), [("embedded", True), ("kafka", False)])
def test_outputs_carry_the_batch_header_only_where_a_leaked_batch_can_be_read(
    cluster: Cluster, tmp_path: Path, profile: str, tagged: bool
) -> None:
    # The embedded broker can show a batch that never committed, and its readers tell it by
    # this header (runtime/lineage.py); a read_committed reader of Kafka never sees one, and
    # the header cost about 1-1.5 us of each produce call there. The changelog keeps its own.
    send(cluster)
    run_worker(
        settings(tmp_path, broker_profile=profile), [CountingStage(IN, OUT)], lambda _: all_committed(cluster)
    )

    outputs = [e for e in cluster.broker.logs[(OUT, 0)] if e.state == "committed" and not e.control]
    assert len(outputs) == RECORDS
    assert all(any(name == BATCH_HEADER for name, _ in e.headers or ()) is tagged for e in outputs)
    changelog = [e for e in cluster.broker.logs[(CHANGELOG, 0)] if not e.control]
    assert changelog
    assert all(any(name == SRC_HEADER for name, _ in e.headers or ()) for e in changelog)
