"""Pure parts of the runtime: committed vs leaked changelog batches, punctuation scheduling,
the harness, the HTTP edge."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from streamalloc.api import HttpApi
from streamalloc.api.queries import AvailabilityRequest
from streamalloc.bench.counting import CountingStage
from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.changelog import BatchSource, RestoreJob, encode_src
from streamalloc.runtime.stage import BaseStage, PartitionContext
from streamalloc.runtime.state.memory import InMemoryStore
from streamalloc.runtime.task import Task
from streamalloc.testing import StageHarness


def _job(committed: dict[str, int]) -> RestoreJob:
    return RestoreJob(InMemoryStore("s").partition(0), "s-changelog", committed)


def _restore(job: RestoreJob, batches: list[tuple[bytes | None, list[bytes]]]) -> list[bytes]:
    """Offer each batch's keys in changelog order; return the keys that reach the store."""
    applied: list[bytes] = []
    offset = 0
    for header, keys in batches:
        for key in keys:
            applied += [k for k, _ in job.offer(offset, header, (key, b"v"))]
            offset += 1
    return applied + [k for k, _ in job.at_end()]


def test_src_header_names_each_input_range_of_the_batch() -> None:
    header = encode_src({("in", 0): 100, ("inv", 0): 7}, {("in", 0): 120, ("inv", 0): 7, ("new", 0): 3})
    assert BatchSource.parse(header).ranges == {"in:0": (100, 120), "inv:0": (7, 7), "new:0": (3, 3)}
    assert BatchSource.parse(b'{"in:0":120}').ranges == {"in:0": (120, 120)}  # end-only headers


def test_restore_applies_a_chain_of_committed_batches() -> None:
    first = encode_src({("in", 0): 0}, {("in", 0): 10})
    second = encode_src({("in", 0): 10}, {("in", 0): 25})
    job = _job({"in:0": 25})
    assert _restore(job, [(first, [b"a", b"b"]), (second, [b"c"])]) == [b"a", b"b", b"c"]
    assert job.skipped == 0


def test_restore_right_after_a_crash_skips_the_leaked_last_batch() -> None:
    committed = encode_src({("in", 0): 0}, {("in", 0): 10})
    leaked = encode_src({("in", 0): 10}, {("in", 0): 30})
    job = _job({"in:0": 10})
    assert _restore(job, [(committed, [b"a"]), (leaked, [b"x", b"y"])]) == [b"a"]
    assert job.skipped == 2


def test_restore_after_the_next_owner_committed_still_skips_the_leaked_batch() -> None:
    # The next owner redid the input from offset 10 and committed up to 40: the leaked
    # batch now ends before the committed offsets, but the batch after it starts inside it.
    committed = encode_src({("in", 0): 0}, {("in", 0): 10})
    leaked = encode_src({("in", 0): 10}, {("in", 0): 30})
    redone = encode_src({("in", 0): 10}, {("in", 0): 40})
    job = _job({"in:0": 40})
    assert _restore(job, [(committed, [b"a"]), (leaked, [b"x"]), (redone, [b"b"])]) == [b"a", b"b"]
    assert job.skipped == 1


def test_restore_compares_only_the_inputs_both_batches_name() -> None:
    leaked = encode_src({("in", 0): 10, ("inv", 0): 4}, {("in", 0): 30, ("inv", 0): 4})
    redone = encode_src({("in", 0): 10, ("inv", 0): 4}, {("in", 0): 12, ("inv", 0): 9})
    other = encode_src(
        {("in", 0): 12, ("inv", 0): 9, ("x", 0): 0}, {("in", 0): 15, ("inv", 0): 9, ("x", 0): 1}
    )
    job = _job({"in:0": 15, "inv:0": 9, "x:0": 1})
    assert _restore(job, [(leaked, [b"x"]), (redone, [b"a"]), (other, [b"b"])]) == [b"a", b"b"]


def test_restore_resumes_before_a_batch_it_still_holds() -> None:
    job = _job({"in:0": 10})
    job.offer(0, encode_src({("in", 0): 0}, {("in", 0): 5}), (b"a", b"v"))
    assert job.safe_offset == 0  # the batch is not settled yet
    settled = job.offer(1, encode_src({("in", 0): 5}, {("in", 0): 10}), (b"b", b"v"))
    assert settled == [(b"a", b"v")] and job.safe_offset == 1
    job.offer(2, None, (b"untagged", b"v"))
    assert job.safe_offset == 3


# A punctuation that consumed nothing writes a batch with an empty input range: only the
# `base` of the batch after it (how far its writer's changelog had got) can judge it.
_IN = ("in", 0)


def test_src_header_carries_the_changelog_base_the_batch_began_at() -> None:
    source = BatchSource.parse(encode_src({_IN: 10}, {_IN: 10}, base=42, writer=7))
    assert source.ranges == {"in:0": (10, 10)} and source.base == 42
    assert BatchSource.parse(encode_src({_IN: 0}, {_IN: 10})).base is None  # earlier releases
    assert source.built_without(42) and not source.built_without(41)


def test_restore_keeps_a_punctuation_batch_the_next_writer_went_on_from() -> None:
    # offsets: a=0 | punctuation p=1 | next batch b=2, whose writer's changelog was at 2
    first = encode_src({_IN: 0}, {_IN: 10}, base=0)
    punctuation = encode_src({_IN: 10}, {_IN: 10}, base=1)
    after = encode_src({_IN: 10}, {_IN: 15}, base=2)
    job = _job({"in:0": 15})
    assert _restore(job, [(first, [b"a"]), (punctuation, [b"p"]), (after, [b"b"])]) == [b"a", b"p", b"b"]
    assert job.skipped == 0


def test_restore_drops_a_leaked_punctuation_batch_the_next_writer_never_saw() -> None:
    # offsets: a=0 | leaked punctuation x=1, y=2 | next owner's b=3, written from a changelog
    # that ended at 1: it never had x and y. Its input starts where the leak's (empty) range
    # ends, so the input ranges alone would keep the leak.
    first = encode_src({_IN: 0}, {_IN: 10}, base=0)
    leaked = encode_src({_IN: 10}, {_IN: 10}, base=1)
    redone = encode_src({_IN: 10}, {_IN: 12}, base=1)
    job = _job({"in:0": 12})
    assert _restore(job, [(first, [b"a"]), (leaked, [b"x", b"y"]), (redone, [b"b"])]) == [b"a", b"b"]
    assert job.skipped == 2
    assert not BatchSource.parse(leaked).overlapped_by(BatchSource.parse(redone))


def test_restore_tells_apart_punctuation_batches_of_two_owners_at_the_same_offsets() -> None:
    # offsets: committed punctuation p=0 | leaked punctuation x=1 | the next owner's
    # punctuation b=2: same input offsets, and the same base, since it had p and not x.
    committed = encode_src({_IN: 10}, {_IN: 10}, base=0, writer=1)
    leaked = encode_src({_IN: 10}, {_IN: 10}, base=1, writer=1)
    after = encode_src({_IN: 10}, {_IN: 10}, base=1, writer=2)
    job = _job({"in:0": 10})
    assert _restore(job, [(committed, [b"p"]), (leaked, [b"x"]), (after, [b"b"])]) == [b"p", b"b"]


def test_restore_keeps_a_punctuation_batch_at_the_end_of_the_changelog() -> None:
    # Committed or leaked, it looks the same there (same records, offsets unchanged): kept,
    # and the next batch's base then records that it was.
    first = encode_src({_IN: 0}, {_IN: 10}, base=0)
    punctuation = encode_src({_IN: 10}, {_IN: 10}, base=1)
    job = _job({"in:0": 10})
    assert _restore(job, [(first, [b"a"]), (punctuation, [b"p"])]) == [b"a", b"p"]


class _Ticking(BaseStage):
    name = "ticking"
    punctuate_interval_ms = 250


def test_a_task_punctuates_once_ready_then_at_most_once_per_interval() -> None:
    task = Task(_Ticking(), 0, restoring=1)
    assert not task.punctuation_due(100.0)  # restoring
    task.restoring = 0
    assert task.punctuation_due(100.0)  # due as soon as it is ready
    assert not task.punctuation_due(100.0) and not task.punctuation_due(100.249)
    assert task.punctuation_due(100.25)
    assert task.punctuation_due(101.0)  # late: fires once, missed intervals are not caught up
    assert not task.punctuation_due(101.1)


def test_a_stage_punctuates_only_when_it_says_how_often() -> None:
    stage = CountingStage("in", "out")
    assert stage.punctuate_interval_ms is None
    assert not Task(stage, 0).punctuation_due(1e9)
    harness = StageHarness(stage)
    txns = {"counts": harness.store("counts").begin()}
    assert stage.punctuate(PartitionContext(0, txns, lambda *args: None), 0) is False


def test_harness_drives_the_counting_stage_with_exact_outputs_and_state() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    outputs = harness.feed("in", [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    assert [(o.key, o.value) for o in outputs] == [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")]
    assert harness.store("counts").get(b"a") == b"2"


def test_harness_abort_leaves_state_and_outputs_untouched() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    harness.feed("in", [(b"a", b"1")])
    harness.feed("in", [(b"a", b"1"), (b"a", b"1")], commit=False)
    assert harness.store("counts").get(b"a") == b"1"
    assert len(harness.outputs) == 1


def test_harness_dead_letters_bad_records_and_keeps_going() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    harness.feed("in", [(b"a", b"x1"), (None, b"1"), (b"a", b"5")])
    assert [d.offset for d in harness.dead_letters] == [0, 1]
    assert "digits" in harness.dead_letters[0].error
    assert harness.store("counts").get(b"a") == b"1"


def test_http_api_serves_health_readiness_metrics_and_availability() -> None:
    observer = PrometheusObserver()
    observer.on_commit(10, 3, 0.01)
    ready = {"value": False}

    def availability(request: AvailabilityRequest) -> tuple[int, dict[str, object]]:
        sku = request.sku
        return (200, {"sku": sku, "available": 4}) if sku == "SKU-1" else (404, {"error": "unknown sku"})

    api = HttpApi(
        "127.0.0.1", 0, registry=observer.registry, ready=lambda: ready["value"], availability=availability
    )
    api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        assert json.load(urllib.request.urlopen(f"{base}/health")) == {"status": "ok"}  # noqa: S310
        try:
            urllib.request.urlopen(f"{base}/ready")  # noqa: S310
            raise AssertionError("not ready yet, expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        ready["value"] = True
        assert json.load(urllib.request.urlopen(f"{base}/ready")) == {"ready": True}  # noqa: S310
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()  # noqa: S310
        assert "streamalloc_committed_records_total 10.0" in metrics
        assert json.load(urllib.request.urlopen(f"{base}/availability/SKU-1"))["available"] == 4  # noqa: S310
        try:
            urllib.request.urlopen(f"{base}/availability/NOPE")  # noqa: S310
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        api.stop()


def test_restore_names_the_batches_it_keeps_past_the_committed_offsets() -> None:
    # Seen in demo --crash-at 0.4 when a surviving worker took over a partition: two batches
    # it committed kept their records but lost their consumed offsets (the embedded broker),
    # so the next owner opened at 226. The chain keeps both (their successors start at their
    # ends); a leaked punctuation at the end is kept too. The new owner names them in its
    # `batch` headers so the audit and live readers keep their outputs (lineage.py).
    first = encode_src({_IN: 200}, {_IN: 226}, base=0, writer=1)
    second = encode_src({_IN: 226}, {_IN: 254}, base=1, writer=1)
    third = encode_src({_IN: 254}, {_IN: 338}, base=2, writer=1)
    job = _job({"in:0": 226})
    assert _restore(job, [(first, [b"a"]), (second, [b"b"]), (third, [b"c"])]) == [b"a", b"b"]
    assert job.kept == [(1, {"in:0": 226}, None)]  # the third, at the end, is not committed: dropped
    numbered = encode_src({_IN: 226}, {_IN: 254}, base=1, writer=1, seq=9)
    job = _job({"in:0": 226})
    assert _restore(job, [(first, [b"a"]), (numbered, [b"b"]), (third, [b"c"])]) == [b"a", b"b"]
    assert job.kept == [(1, {"in:0": 226}, 9)]
    punctuation = encode_src({_IN: 226}, {_IN: 226}, base=3, writer=1)
    job = _job({"in:0": 226})
    assert _restore(job, [(first, [b"a"]), (punctuation, [b"p"])]) == [b"a", b"p"]
    assert job.kept == [(1, {"in:0": 226}, None)]
