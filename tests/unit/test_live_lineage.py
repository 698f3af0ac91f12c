"""The `batch` header rule applied live (runtime/live_lineage.py), against `void_batches`."""

from __future__ import annotations

import marshal

from streamalloc.runtime.lineage import encode_batch, void_batches
from streamalloc.runtime.live_lineage import LiveBatches, source_of

IN = ("requests", 0)
FIRST = encode_batch("allocator:0", 1, {IN: 0}, {IN: 0})
SECOND = encode_batch("allocator:0", 1, {IN: 0}, {IN: 10})
LEAKED = encode_batch("allocator:0", 1, {IN: 0}, {IN: 30})
REDONE = encode_batch("allocator:0", 2, {IN: 30}, {IN: 30})
OTHER_TASK = encode_batch("allocator:1", 1, {("requests", 1): 0}, {("requests", 1): 0})


def test_the_leaked_batch_turns_void_at_the_first_record_of_the_incarnation_that_redid_it() -> None:
    live = LiveBatches()
    for header, key in ((FIRST, "a"), (SECOND, "b"), (LEAKED, "c"), (LEAKED, "d"), (OTHER_TASK, "e")):
        assert live.observe(header, key, False) == (source_of(header), {})
    assert live.observe(REDONE, "c", False) == (source_of(REDONE), {source_of(LEAKED): ["c", "d"]})
    # the audit, with the whole history, judges the same
    assert void_batches([FIRST, SECOND, LEAKED, OTHER_TASK, REDONE]) == {LEAKED}


def test_a_record_of_a_batch_known_void_is_left_out_and_untagged_records_stand() -> None:
    live = LiveBatches()
    live.observe(LEAKED, "c", False)
    live.observe(REDONE, "x", False)
    assert live.observe(LEAKED, "d", False) == (None, {})
    late = encode_batch("allocator:0", 1, {IN: 0}, {IN: 40})  # seen only after the redo began
    assert live.observe(late, "f", False) == (None, {})
    assert live.observe(None, "g", False) == ("", {})


def test_a_batch_of_timers_alone_is_never_void() -> None:
    live = LiveBatches()
    live.observe(LEAKED, "c", True)  # every record's cause is the clock or a table
    assert live.observe(REDONE, "c", False) == (source_of(REDONE), {})
    mixed = LiveBatches()
    mixed.observe(LEAKED, "c", True)
    mixed.observe(LEAKED, "d", False)
    assert mixed.observe(REDONE, "c", False)[1] == {source_of(LEAKED): ["c", "d"]}


def test_the_state_survives_a_dump_and_load_through_marshal() -> None:
    live = LiveBatches()
    live.observe(FIRST, "a", False)
    live.observe(LEAKED, "c", False)
    again = LiveBatches.load(marshal.loads(marshal.dumps(live.dump())))  # noqa: S302 - our own bytes
    assert again == live
    assert again.observe(REDONE, "z", False)[1] == {source_of(LEAKED): ["c"]}


def test_a_batchs_keys_survive_a_dump_and_load_whatever_they_hold() -> None:
    """The keys are stored joined; a key with the separator in it, or an empty one, too."""
    for keys in (["o1", "o2", "o3"], ["o\x00dd", "o2"], [""], ["", "o2"]):
        live = LiveBatches()
        for key in keys:
            live.observe(LEAKED, key, False)
        again = LiveBatches.load(marshal.loads(marshal.dumps(live.dump())))  # noqa: S302 - our own bytes
        assert again == live, keys
        assert again.observe(REDONE, "z", False)[1] == {source_of(LEAKED): keys}


def test_a_batch_the_next_owners_restore_kept_stands() -> None:
    live = LiveBatches()
    live.observe(LEAKED, "c", False)
    kept = encode_batch("allocator:0", 2, {IN: 30}, {IN: 30}, [(1, {"requests:0": 30}, None)])
    assert live.observe(kept, "c", False) == (source_of(kept), {})
    assert void_batches([FIRST, LEAKED, kept]) == set()


def test_a_committed_timer_batch_is_not_taken_back_with_a_leak_that_started_where_it_did() -> None:
    live = LiveBatches()
    timers = encode_batch("allocator:0", 1, {IN: 0}, {IN: 30}, seq=4)
    leaked = encode_batch("allocator:0", 1, {IN: 0}, {IN: 30}, seq=5)
    redone = encode_batch("allocator:0", 2, {IN: 30}, {IN: 30}, seq=1)
    live.observe(timers, "expired-order", True)
    live.observe(leaked, "new-order", False)
    assert live.observe(redone, "new-order", False)[1] == {source_of(leaked): ["new-order"]}


def test_state_dumped_by_an_earlier_release_loads() -> None:
    # seven fields a batch, kept batches without a number
    old = ({"allocator:0": [(source_of(LEAKED), 1, {"requests:0": 0}, {"requests:0": 30}, False, ["c"],
                             ((1, {"requests:0": 30}),))]}, [])  # fmt: skip
    live = LiveBatches.load(old)
    assert live.tasks["allocator:0"][0].batch.kept == ((1, {"requests:0": 30}, None),)
    assert live.tasks["allocator:0"][0].batch.seq is None


def test_a_run_of_one_batchs_records_is_judged_as_when_each_is_observed_afresh() -> None:
    """Records of one batch in a row take a short path; it must find what the full one does."""
    headers = [FIRST, FIRST, SECOND, LEAKED, bytes(LEAKED), LEAKED, OTHER_TASK, REDONE, REDONE, LEAKED]
    causes = [False, True, False, True, False, False, True, False, True, False]
    live = LiveBatches()
    afresh = LiveBatches()
    for i, (header, engine) in enumerate(zip(headers, causes, strict=True)):
        # a copy made through dump/load knows nothing of the record before: the full path
        afresh = LiveBatches.load(marshal.loads(marshal.dumps(afresh.dump())))  # noqa: S302 - our own bytes
        assert live.observe(header, f"k{i}", engine) == afresh.observe(header, f"k{i}", engine)
        assert live == afresh
