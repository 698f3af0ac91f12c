"""The commit protocol, step by step and on every failure path, with spec'd fake clients.

Modelled on quix-streams' tests/test_quixstreams/test_checkpointing.py: a checkpoint
commits once or raises a typed error, and its stores are applied only after the commit.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka import KafkaError, KafkaException
from tests.unit.runtime.fake_kafka import FakeBroker, FakeConsumer, FakeProducer, error

from streamalloc.bench.counting import CountingStage
from streamalloc.errors import (
    CheckpointAborted,
    ProducerFenced,
    StateError,
    TaskMigrated,
    TransactionUnresolved,
)
from streamalloc.runtime import checkpoint as checkpoint_module
from streamalloc.runtime.checkpoint import ATTEMPTS, TXN_CALL_TIMEOUT_S, Checkpoint
from streamalloc.runtime.state import InMemoryStore, TransactionStatus
from streamalloc.runtime.task import Task

IN, OUT, CHANGELOG = "t.in", "t.out", "app-counts-changelog"


@pytest.fixture
def broker() -> FakeBroker:
    made = FakeBroker()
    for topic in (IN, OUT, CHANGELOG):
        made.create_topic(topic)
    return made


@pytest.fixture
def producer(broker: FakeBroker) -> FakeProducer:
    return FakeProducer({"transactional.id": "app-1"}, broker)


@pytest.fixture
def consumer(broker: FakeBroker) -> FakeConsumer:
    return FakeConsumer({"group.id": "app"}, broker)


def batch(
    producer: FakeProducer, consumer: FakeConsumer, changes: dict[bytes, bytes]
) -> tuple[Checkpoint, Task]:
    """A checkpoint holding one task that consumed offsets 0..4 and changed `changes`."""
    checkpoint = Checkpoint(producer, consumer, lambda store: f"app-{store}-changelog")
    task = Task(CountingStage(IN, OUT), 0)
    task.stores["counts"] = InMemoryStore("counts").partition(0)
    checkpoint.begin()
    task.batch_start = {(IN, 0): 0}
    task.positions[(IN, 0)] = 5
    txn = task.open_txns()["counts"]
    for key, value in changes.items():
        txn.set(key, value)
    producer.produce(OUT, b"out", b"a")
    checkpoint.touch(task, 5)
    return checkpoint, task


def changelog(broker: FakeBroker) -> list[tuple[bytes | None, bytes | None, str]]:
    return [(e.key, e.value, e.state) for e in broker.logs[(CHANGELOG, 0)] if not e.control]


def test_commit_writes_the_changelog_commits_then_applies_the_stores(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    checkpoint, task = batch(producer, consumer, {b"a": b"1", b"b": b"2"})
    part = task.stores["counts"]
    assert checkpoint.commit() == 2
    assert producer.calls[-3:] == ["flush", "send_offsets_to_transaction", "commit_transaction"]
    assert changelog(broker) == [(b"a", b"1", "committed"), (b"b", b"2", "committed")]
    assert broker.committed[("app", IN, 0)] == 5
    assert dict(part.iter_prefix(b"")) == {b"a": b"1", b"b": b"2"}
    assert part.checkpoint_offset == 2  # the next changelog offset after its records
    assert (task.txns, task.batch_start, task.emit) == ({}, None, None)


def test_no_transactional_call_may_block_forever(producer: FakeProducer, consumer: FakeConsumer) -> None:
    # librdkafka's default timeout (-1) is forever: after a broker restart a worker hung for
    # good in send_offsets_to_transaction.
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    checkpoint.commit()
    aborted, _ = batch(producer, consumer, {b"b": b"2"})
    aborted.abort()
    calls = ("send_offsets_to_transaction", "commit_transaction", "abort_transaction")
    assert {name: producer.timeouts[name] for name in calls} == dict.fromkeys(calls, TXN_CALL_TIMEOUT_S)


def test_a_checkpoint_commits_once(producer: FakeProducer, consumer: FakeConsumer) -> None:
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    checkpoint.commit()
    with pytest.raises(StateError):
        checkpoint.commit()
    with pytest.raises(StateError):
        checkpoint.begin()


def test_a_retriable_commit_error_calls_commit_again_and_produces_the_changelog_once(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    producer.failures["commit_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    checkpoint.commit()
    assert producer.calls.count("commit_transaction") == 2
    assert producer.calls.count("send_offsets_to_transaction") == 1
    assert changelog(broker) == [(b"a", b"1", "committed")]
    assert dict(task.stores["counts"].iter_prefix(b"")) == {b"a": b"1"}


def test_a_send_offsets_timeout_aborts_the_batch_rather_than_sending_again(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    # The coordinator is away (a broker restart): Kafka Streams aborts and redoes the batch;
    # repeating the call after the broker returned hung librdkafka here (#5456).
    producer.failures["send_offsets_to_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    with pytest.raises(CheckpointAborted):
        checkpoint.commit()
    assert producer.calls.count("send_offsets_to_transaction") == 1
    assert producer.calls[-1] == "abort_transaction"
    assert changelog(broker) == [(b"a", b"1", "aborted")]
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}


def test_an_abort_that_times_out_leaves_the_transaction_unresolved(
    producer: FakeProducer, consumer: FakeConsumer
) -> None:
    producer.failures["send_offsets_to_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    producer.failures["abort_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)]
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    txn = task.txns["counts"]
    with pytest.raises(TransactionUnresolved):
        checkpoint.commit()
    assert txn.status is TransactionStatus.FAILED
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}


def test_a_transactional_call_that_hangs_is_given_up(
    producer: FakeProducer, consumer: FakeConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint_module, "TXN_CALL_TIMEOUT_S", 0.05)
    monkeypatch.setattr(checkpoint_module, "HUNG_GRACE_S", 0.05)
    producer.hangs.add("send_offsets_to_transaction")
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    try:
        with pytest.raises(TransactionUnresolved, match="send offsets did not return"):
            checkpoint.commit()
    finally:
        producer.released.set()
    assert "commit_transaction" not in producer.calls
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}


# A call that never returns, given up; then the interpreter exits as the worker does.
_HUNG_AT_EXIT = """
import threading
from streamalloc.errors import TransactionUnresolved
from streamalloc.runtime import checkpoint
checkpoint.HUNG_GRACE_S = 0.05
calls = checkpoint.TxnCalls()
try:
    calls.run("send offsets", threading.Event().wait, 0.05)
except TransactionUnresolved:
    print("given up", flush=True)
calls.close()
"""


def test_a_transactional_call_hung_for_good_does_not_keep_the_process_from_exiting() -> None:
    # librdkafka#5456: send_offsets_to_transaction may never return; a worker asked to stop
    # must still exit, not wait at interpreter exit for the hung thread until SIGKILL.
    done = subprocess.run(  # TimeoutExpired: the process waited for the hung thread
        [sys.executable, "-c", _HUNG_AT_EXIT], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "given up"), done.stderr


def test_a_fatal_error_that_is_not_a_fence_leaves_the_transaction_unresolved(
    producer: FakeProducer, consumer: FakeConsumer
) -> None:
    producer.failures["commit_transaction"] = [error(KafkaError.INVALID_TXN_STATE, fatal=True)]
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    with pytest.raises(TransactionUnresolved):
        checkpoint.commit()
    assert "abort_transaction" not in producer.calls


def test_a_fence_raised_out_of_a_delivery_callback_in_flush_is_producer_fenced(
    producer: FakeProducer, consumer: FakeConsumer
) -> None:
    # confluent-kafka sets the fatal error as the pending exception, then calls the next
    # delivery callback, which Python reports as a SystemError caused by it.
    def fenced_then_callback() -> None:
        try:
            raise KafkaException(error(KafkaError._FENCED, fatal=True))
        except KafkaException as exc:
            raise SystemError("<function _delivered> returned a result with an exception set") from exc

    producer.on_flush = fenced_then_callback
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    with pytest.raises(ProducerFenced):
        checkpoint.commit()
    assert "commit_transaction" not in producer.calls
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}


def test_an_abortable_error_aborts_and_leaves_the_stores_untouched(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    producer.failures["commit_transaction"] = [error(KafkaError.INVALID_TXN_STATE, abortable=True)]
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    txn = task.txns["counts"]
    with pytest.raises(CheckpointAborted) as raised:
        checkpoint.commit()
    assert raised.value.too_large is None
    assert producer.calls[-1] == "abort_transaction"
    assert changelog(broker) == [(b"a", b"1", "aborted")]
    assert txn.status is TransactionStatus.FAILED
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}
    assert ("app", IN, 0) not in broker.committed


def test_a_retriable_error_that_does_not_clear_aborts(producer: FakeProducer, consumer: FakeConsumer) -> None:
    producer.failures["commit_transaction"] = [error(KafkaError._TIMED_OUT, retriable=True)] * ATTEMPTS
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    with pytest.raises(CheckpointAborted):
        checkpoint.commit()
    assert producer.calls.count("commit_transaction") == ATTEMPTS
    assert producer.calls[-1] == "abort_transaction"


def test_a_fatal_error_raises_producer_fenced_without_an_abort(
    producer: FakeProducer, consumer: FakeConsumer
) -> None:
    producer.failures["commit_transaction"] = [error(KafkaError._FENCED, fatal=True)]
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    txn = task.txns["counts"]
    with pytest.raises(ProducerFenced):
        checkpoint.commit()
    assert "abort_transaction" not in producer.calls
    assert txn.status is TransactionStatus.FAILED
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}
    checkpoint.abort()  # the worker's cleanup after a failure: a no-op now
    assert "abort_transaction" not in producer.calls


def test_a_group_that_moved_on_raises_task_migrated(producer: FakeProducer, consumer: FakeConsumer) -> None:
    producer.failures["send_offsets_to_transaction"] = [error(KafkaError.ILLEGAL_GENERATION, abortable=True)]
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    with pytest.raises(TaskMigrated):
        checkpoint.commit()
    assert producer.calls[-1] == "abort_transaction"


def test_a_changelog_record_too_large_aborts_and_says_so(
    producer: FakeProducer, consumer: FakeConsumer
) -> None:
    checkpoint, task = batch(producer, consumer, {b"a": b"x" * 2_000_000})
    with pytest.raises(CheckpointAborted) as raised:
        checkpoint.commit()
    assert raised.value.too_large is not None
    assert "too large" in raised.value.reason and CHANGELOG in raised.value.reason
    assert producer.calls[-1] == "abort_transaction"
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}


def test_an_output_the_broker_refuses_as_too_large_aborts_and_says_so(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    broker.max_message_bytes[OUT] = 10
    checkpoint, _ = batch(producer, consumer, {b"a": b"1"})
    producer.produce(OUT, b"x" * 100, b"a")
    with pytest.raises(CheckpointAborted) as raised:
        checkpoint.commit()
    assert raised.value.too_large is not None
    assert producer.calls[-1] == "abort_transaction"


def test_a_refused_record_that_fails_the_changelog_produce_aborts_and_says_why(
    broker: FakeBroker, producer: FakeProducer, consumer: FakeConsumer
) -> None:
    broker.max_message_bytes[OUT] = 10
    broker.refuses_at_once = True  # librdkafka refuses the changelog's produce afterwards
    checkpoint, task = batch(producer, consumer, {b"a": b"1"})
    producer.produce(OUT, b"x" * 100, b"a")
    with pytest.raises(CheckpointAborted) as raised:
        checkpoint.commit()
    assert raised.value.too_large is not None
    assert producer.calls[-1] == "abort_transaction"
    assert dict(task.stores["counts"].iter_prefix(b"")) == {}
