"""A record whose outputs cannot be produced goes to dead-letter; its batch is decided; nothing stalls.

Over the fake broker: the stage's output, its changelog record, or a record the broker
refuses is too large. The batch is redone in parts until the record that fails alone is
dead-lettered in a transaction of its own, then the task is back to whole batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.unit.runtime.worker_fixtures import DEAD, IN, OUT, Cluster, Recorder, run_worker, settings

from streamalloc.errors import ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.runtime.worker import Worker

RECORDS = 40
BAD = 17
HUGE = 2_000_000  # over the producer's message.max.bytes


class Sizing(BaseStage):
    """Value `o<N>` emits N bytes; `s<N>` stores N bytes; `<N>` does both with few bytes."""

    name = "sizing"
    stores: Sequence[str] = ("sizes",)

    def topics(self) -> Sequence[str]:
        return [IN]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes:
        if not value:
            raise ValidationError("empty")
        return value

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        sizes = ctx.stores["sizes"]
        for record in records:
            value: bytes = record.value
            stored = int(value[1:]) if value.startswith(b"s") else 1
            out = int(value[1:]) if value.startswith(b"o") else 1
            assert record.key is not None
            sizes.set(record.key, b"s" * stored)
            ctx.emit(OUT, record.key, b"%d:" % record.offset + b"o" * out, ctx.partition)


def send(cluster: Cluster, bad_value: bytes) -> None:
    records = [(b"k%d" % i, bad_value if i == BAD else b"%d" % i) for i in range(RECORDS)]
    cluster.broker.produce_plain(IN, records)


def done(cluster: Cluster, worker: Worker) -> bool:
    """Every record committed, and the task back to whole batches."""
    return cluster.committed().get(0, 0) >= RECORDS and all(
        task.redo_until is None for task in worker.tasks.tasks.values()
    )


def check_outcome(cluster: Cluster, reason_says: str) -> None:
    letters = [value for _, _, _, value in cluster.broker.visible(DEAD)]
    assert len(letters) == 1, letters
    assert letters[0] is not None and letters[0].startswith(f"{IN}:0:{BAD}:".encode())
    assert b"too large" in letters[0] and reason_says.encode() in letters[0]
    outputs = [value for _, _, _, value in cluster.broker.visible(OUT)]
    offsets = [int(value.split(b":")[0]) for value in outputs if value is not None]
    assert offsets == [i for i in range(RECORDS) if i != BAD], "every other record decided exactly once"


def test_a_record_whose_output_is_too_large_is_dead_lettered_and_the_rest_decided(
    cluster: Cluster, tmp_path: Path
) -> None:
    send(cluster, b"o%d" % HUGE)
    observer = Recorder()
    held = run_worker(
        settings(tmp_path, commit_every=1_000, commit_interval_ms=20),
        [Sizing()],
        lambda w: done(cluster, w),
        observer=observer,
    )
    check_outcome(cluster, OUT)
    assert sorted(held["sizes"]) == sorted(b"k%d" % i for i in range(RECORDS) if i != BAD)
    # Found by halving: a few aborted parts, not one transaction per record.
    assert 1 <= len(observer.aborts) <= 1 + math.ceil(math.log2(RECORDS)), observer.aborts


def test_a_record_whose_state_is_too_large_for_the_changelog_is_dead_lettered(
    cluster: Cluster, tmp_path: Path
) -> None:
    send(cluster, b"s%d" % HUGE)
    held = run_worker(
        settings(tmp_path, commit_every=1_000, commit_interval_ms=20), [Sizing()], lambda w: done(cluster, w)
    )
    check_outcome(cluster, "app-sizes-changelog")
    assert b"k%d" % BAD not in held["sizes"]


@pytest.mark.parametrize(
    "at_once", [False, True], ids=["refused-at-the-commit", "refused-before-the-next-produce"]
)
def test_a_record_the_broker_refuses_as_too_large_is_dead_lettered(
    cluster: Cluster, tmp_path: Path, at_once: bool
) -> None:
    cluster.broker.max_message_bytes[OUT] = 5_000  # the topic takes less than the producer
    cluster.broker.refuses_at_once = at_once
    send(cluster, b"o10000")
    run_worker(
        settings(tmp_path, commit_every=1_000, commit_interval_ms=20), [Sizing()], lambda w: done(cluster, w)
    )
    check_outcome(cluster, "refused")


def test_after_the_dead_letter_the_task_is_back_to_whole_batches(cluster: Cluster, tmp_path: Path) -> None:
    send(cluster, b"o%d" % HUGE)
    observer = Recorder()
    run_worker(
        settings(tmp_path, commit_every=1_000, commit_interval_ms=20),
        [Sizing()],
        lambda w: done(cluster, w),
        observer=observer,
    )
    commits = observer.commits
    cluster.broker.produce_plain(IN, [(b"later%d" % i, b"1") for i in range(200)])
    run_worker(
        settings(tmp_path, commit_every=1_000, commit_interval_ms=20),
        [Sizing()],
        lambda _: cluster.committed().get(0, 0) >= RECORDS + 200,
        observer=observer,
    )
    assert observer.commits - commits <= 3  # one batch (or a few), not a transaction per record
