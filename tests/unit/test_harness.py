"""The in-memory harness runs a stage's whole path as the worker does: process, then
`before_commit` for the partition, then commit; and wall-clock punctuation in fake time,
where a punctuation that returns True commits with its `before_commit` and one that
returns False leaves nothing behind."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streamalloc.errors import ProcessingError, ValidationError
from streamalloc.runtime.stage import BaseStage, PartitionContext, Record
from streamalloc.testing import ManualClock, StageHarness


class _Tally(BaseStage):
    """Counts records per key; `before_commit` reports each batch's keys once; punctuation
    writes a tick per partition (or, if told to, only pretends it did nothing)."""

    name = "tally"
    stores: Sequence[str] = ("tally",)
    punctuate_interval_ms: int | None = 1000

    def __init__(self) -> None:
        self.touched: dict[int, set[bytes]] = {}
        self.ticks: list[tuple[int, int]] = []  # (partition, now_ms)
        self.punctuation_says: bool = True
        self.emit_when_idle = False

    def topics(self) -> Sequence[str]:
        return ["in"]

    def decode(self, topic: str, key: bytes | None, value: bytes | None) -> bytes:
        if key is None:
            raise ValidationError("a tallied record needs a key")
        return value or b""

    def process(self, ctx: PartitionContext, records: list[Record]) -> None:
        txn = ctx.stores["tally"]
        for record in records:
            assert record.key is not None
            count = int(txn.get(record.key) or b"0") + 1
            txn.set(record.key, b"%d" % count)
            ctx.emit("counted", record.key, b"%d" % count)
            self.touched.setdefault(ctx.partition, set()).add(record.key)

    def before_commit(self, ctx: PartitionContext) -> None:
        keys = self.touched.pop(ctx.partition, set())
        ctx.emit("summary", None, b",".join(sorted(keys)), ctx.partition)

    def punctuate(self, ctx: PartitionContext, now_ms: int) -> bool:
        self.ticks.append((ctx.partition, now_ms))
        ctx.stores["tally"].set(b"#tick", b"%d" % now_ms)
        if self.emit_when_idle:
            ctx.emit("tick", None, b"%d" % now_ms)
        if self.punctuation_says:
            self.touched.setdefault(ctx.partition, set()).add(b"#tick")
        return self.punctuation_says


def test_feed_runs_before_commit_once_for_the_batch_after_process() -> None:
    harness = StageHarness(_Tally())
    outputs = harness.feed("in", [(b"a", b""), (b"b", b""), (b"a", b"")])
    assert [(o.topic, o.key, o.value) for o in outputs] == [
        ("counted", b"a", b"1"),
        ("counted", b"b", b"1"),
        ("counted", b"a", b"2"),
        ("summary", None, b"a,b"),
    ]
    assert harness.outputs == outputs


def test_before_commit_runs_for_the_fed_partition_only() -> None:
    stage = _Tally()
    harness = StageHarness(stage)
    harness.feed("in", [(b"a", b"")], partition=0)
    outputs = harness.feed("in", [(b"c", b"")], partition=3)
    assert [(o.topic, o.value, o.partition) for o in outputs if o.topic == "summary"] == [
        ("summary", b"c", 3)
    ]


def test_a_batch_that_fails_to_commit_drops_its_before_commit_output_and_state() -> None:
    harness = StageHarness(_Tally())
    harness.feed("in", [(b"a", b"")])
    emitted = harness.feed("in", [(b"a", b"")], commit=False)
    assert ("summary", b"a") in [(o.topic, o.value) for o in emitted]  # it ran, then the batch aborted
    assert [o.value for o in harness.outputs if o.topic == "summary"] == [b"a"]
    assert harness.store("tally").get(b"a") == b"1"


def test_a_batch_of_only_bad_records_still_commits_like_the_worker() -> None:
    harness = StageHarness(_Tally())
    outputs = harness.feed("in", [(None, b"x")])
    assert [d.error for d in harness.dead_letters] == ["a tallied record needs a key"]
    assert [(o.topic, o.value) for o in outputs] == [("summary", b"")]


def test_the_first_punctuation_is_due_at_once_then_once_per_interval() -> None:
    stage = _Tally()
    harness = StageHarness(stage, clock=ManualClock(5_000))
    harness.advance(0)
    harness.advance(999)
    assert stage.ticks == [(0, 5_000)]
    harness.advance(1)
    assert stage.ticks == [(0, 5_000), (0, 6_000)]
    harness.advance(10_000)  # ten intervals missed: one punctuation, not ten (as the worker)
    harness.advance(999)
    assert stage.ticks == [(0, 5_000), (0, 6_000), (0, 16_000)]


def test_a_punctuation_that_returns_true_commits_its_state_and_runs_before_commit() -> None:
    harness = StageHarness(_Tally(), clock=ManualClock(7))
    outputs = harness.advance(0)
    assert [(o.topic, o.value) for o in outputs] == [("summary", b"#tick")]
    assert harness.outputs == outputs
    assert harness.store("tally").get(b"#tick") == b"7"


def test_a_punctuation_that_returns_false_leaves_no_state_behind() -> None:
    stage = _Tally()
    stage.punctuation_says = False
    harness = StageHarness(stage)
    assert harness.advance(0) == []
    assert stage.ticks == [(0, 0)]
    assert harness.store("tally").get(b"#tick") is None


def test_a_punctuation_that_emits_but_returns_false_is_an_error() -> None:
    stage = _Tally()
    stage.punctuation_says, stage.emit_when_idle = False, True
    harness = StageHarness(stage)
    with pytest.raises(ProcessingError, match="returned False"):
        harness.advance(0)
    assert harness.outputs == []


def test_every_partition_the_harness_owns_punctuates_each_on_its_own_schedule() -> None:
    stage = _Tally()
    harness = StageHarness(stage, partitions=(0, 1))
    harness.advance(500)
    harness.feed("in", [(b"a", b"")], partition=2)  # assigned now, at 500: due at once
    harness.advance(0)
    harness.advance(500)
    assert stage.ticks == [(0, 500), (1, 500), (2, 500)]
    harness.advance(500)
    assert stage.ticks[3:] == [(0, 1_500), (1, 1_500), (2, 1_500)]


def test_fed_records_carry_the_fake_time_unless_given_one() -> None:
    seen: list[int] = []

    class _Stamps(_Tally):
        def process(self, ctx: PartitionContext, records: list[Record]) -> None:
            seen.extend(record.timestamp_ms for record in records)

    harness = StageHarness(_Stamps(), clock=ManualClock(42))
    harness.feed("in", [(b"a", b"")])
    harness.feed("in", [(b"a", b"")], timestamp_ms=7)
    assert seen == [42, 7]


def test_time_moves_only_forward() -> None:
    harness = StageHarness(_Tally())
    with pytest.raises(ValueError, match="forward"):
        harness.advance(-1)
