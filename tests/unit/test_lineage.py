"""Telling a crashed worker's leaked batch from committed ones by the `batch` header."""

from __future__ import annotations

from streamalloc.runtime.lineage import Batch, batch_of, encode_batch, void_batches

REQ, INV = ("allocation-requests", 3), ("inventory", 3)


def _batch(inc: int, opened: dict[tuple[str, int], int], start: dict[tuple[str, int], int]) -> bytes:
    return encode_batch("allocator:3", inc, opened, start)


def test_header_round_trips() -> None:
    header = _batch(5, {REQ: 0, INV: 0}, {REQ: 10, INV: 2})
    assert Batch.parse(header) == Batch("allocator:3", 5, {"allocation-requests:3": 0, "inventory:3": 0},
                                        {"allocation-requests:3": 10, "inventory:3": 2})  # fmt: skip
    assert batch_of([("other", b"x"), ("batch", header)]) == header
    assert batch_of(None) is None


def test_committed_batches_of_one_owner_are_never_void() -> None:
    headers = [_batch(1, {REQ: 0, INV: 0}, {REQ: s, INV: 0}) for s in (0, 10, 25)]
    assert void_batches(headers) == set()


def test_the_last_batch_of_a_crashed_owner_is_void_once_its_successor_redid_it() -> None:
    committed = [
        _batch(1, {REQ: 0, INV: 0}, {REQ: 0, INV: 0}),
        _batch(1, {REQ: 0, INV: 0}, {REQ: 10, INV: 0}),
    ]
    leaked = _batch(1, {REQ: 0, INV: 0}, {REQ: 25, INV: 4})
    # The successor opened at the committed offsets, which are where the leaked batch began.
    successor = [
        _batch(2, {REQ: 25, INV: 4}, {REQ: 25, INV: 4}),
        _batch(2, {REQ: 25, INV: 4}, {REQ: 40, INV: 4}),
    ]
    assert void_batches([*committed, leaked, *successor]) == {leaked}
    assert void_batches([*committed, leaked]) == set()  # no successor yet: nothing says it leaked


def test_a_batch_that_read_only_one_input_is_not_mistaken_for_a_leak() -> None:
    # The last committed batch read requests only: it starts at the successor's inventory
    # opening offset, but before its requests opening offset.
    last = _batch(1, {REQ: 0, INV: 0}, {REQ: 10, INV: 4})
    successor = _batch(2, {REQ: 25, INV: 4}, {REQ: 25, INV: 4})
    assert void_batches([last, successor]) == set()


def test_an_earlier_owner_never_voids_a_later_one_and_tasks_are_judged_apart() -> None:
    first = _batch(1, {REQ: 0}, {REQ: 0})
    second = _batch(2, {REQ: 0}, {REQ: 0})  # both opened at 0: only the earlier can be void
    other_task = encode_batch(
        "allocator:4", 3, {("allocation-requests", 4): 0}, {("allocation-requests", 4): 0}
    )
    assert void_batches([first, second, other_task, b"not json"]) == {first}


def test_a_batch_that_consumed_no_input_is_kept_as_the_restore_keeps_it() -> None:
    # A timer fired (a punctuation) after the last batch that read input: it starts at the
    # committed offsets, where the successor opens, whether it committed or leaked. The
    # restore keeps such a batch, so the successor's state includes it; so does the reader.
    last = _batch(1, {REQ: 0, INV: 0}, {REQ: 0, INV: 0})
    timer = _batch(1, {REQ: 0, INV: 0}, {REQ: 25, INV: 4})
    leaked = _batch(1, {REQ: 0, INV: 0}, {REQ: 25, INV: 4, ("inventory", 9): 0})
    successor = _batch(2, {REQ: 25, INV: 4}, {REQ: 25, INV: 4})
    assert void_batches([last, timer, leaked, successor], punctuation={timer}) == {leaked}
    assert void_batches([last, timer, successor]) == {timer}  # by the offsets alone it looks leaked


def test_a_batch_the_next_owners_restore_kept_is_not_void() -> None:
    # The next owner opened at 226 (the broker lost the offsets of two committed batches) but
    # its restore kept their store changes: their outputs stand, as the engine's state does.
    # A batch it did not name (its restore dropped it) is void by the rule as before.
    from streamalloc.runtime.lineage import encode_batch as encode

    a226 = encode("allocator:0", 1, {("in", 0): 0}, {("in", 0): 226})
    a254 = encode("allocator:0", 1, {("in", 0): 0}, {("in", 0): 254})
    a338 = encode("allocator:0", 1, {("in", 0): 0}, {("in", 0): 338})
    kept = [(1, {"in:0": 226}, None), (1, {"in:0": 254}, None)]  # headers of earlier releases
    b = encode("allocator:0", 2, {("in", 0): 226}, {("in", 0): 226}, kept)
    assert void_batches([a226, a254, a338, b]) == {a338}
    plain = encode("allocator:0", 2, {("in", 0): 226}, {("in", 0): 226})
    assert void_batches([a226, a254, a338, plain]) == {a226, a254, a338}


def test_batches_that_start_at_the_same_offsets_are_told_apart_by_their_number() -> None:
    # An expiry timer fired and committed (it consumed nothing), then the next batch, which
    # read requests, started at the same offsets and leaked when its worker was killed. Without
    # a number the two had one header: the leaked batch's input records made it void, and the
    # committed releases of the timers went with it (demo --crash-at 0.4, order-status breaches).
    timers = encode_batch("allocator:3", 1, {REQ: 0}, {REQ: 25}, seq=7)
    leaked = encode_batch("allocator:3", 1, {REQ: 0}, {REQ: 25}, seq=8)
    successor = encode_batch("allocator:3", 2, {REQ: 25}, {REQ: 25}, seq=1)
    assert timers != leaked
    assert void_batches([timers, leaked, successor], punctuation={timers}) == {leaked}


def test_a_kept_batch_is_named_by_its_number_so_a_leak_at_the_same_start_stays_void() -> None:
    kept_timers = encode_batch("allocator:3", 1, {REQ: 0}, {REQ: 25}, seq=7)
    leaked = encode_batch("allocator:3", 1, {REQ: 0}, {REQ: 25}, seq=8)
    successor = encode_batch(
        "allocator:3", 2, {REQ: 25}, {REQ: 25}, [(1, {"allocation-requests:3": 25}, 7)], 1
    )
    assert Batch.parse(successor).kept == ((1, {"allocation-requests:3": 25}, 7),)
    assert void_batches([kept_timers, leaked, successor]) == {leaked}
