"""The partition and transaction contract, run on the in-memory and the RocksDB store alike."""

from __future__ import annotations

import pytest

from streamalloc.errors import StateError
from streamalloc.runtime.state import (
    PartitionStatus,
    Store,
    StorePartition,
    TransactionStatus,
    encode_key,
    prefix_of,
)

from ._helpers import contents, seeded, status

# ---------------------------------------------------------------------- transactions


def test_new_partition_is_registered_empty_and_untrusted(part: StorePartition) -> None:
    assert part.status is PartitionStatus.REGISTERED
    assert part.store_name == "counts" and part.partition == 0
    assert part.checkpoint_offset is None and part.needs_full_restore
    assert part.get(b"a") is None
    assert contents(part) == {}


def test_transaction_reads_its_own_writes_and_leaves_the_partition_alone(part: StorePartition) -> None:
    seeded(part, {b"a": b"1", b"b": b"2"})
    txn = part.begin()
    assert txn.status is TransactionStatus.STARTED
    assert txn.get(b"a") == b"1"  # from the partition
    txn.set(b"a", b"10")
    txn.set(b"c", b"3")
    txn.delete(b"b")
    assert (txn.get(b"a"), txn.get(b"b"), txn.get(b"c"), txn.get(b"zz")) == (b"10", None, b"3", None)
    txn.set(b"b", b"back")
    assert txn.get(b"b") == b"back"
    assert contents(part) == {b"a": b"1", b"b": b"2"}  # nothing before flush


def test_a_transaction_reads_each_key_from_the_partition_once(
    part: StorePartition, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(part, {b"a": b"1"})
    reads: list[bytes] = []
    reader = part._point_reader()

    def counted(key: bytes) -> bytes | None:
        reads.append(key)
        return reader(key)

    monkeypatch.setattr(part, "_point_reader", lambda: counted)
    txn = part.begin()
    assert [txn.get(b"a"), txn.get(b"a"), txn.get(b"none"), txn.get(b"none")] == [b"1", b"1", None, None]
    assert reads == [b"a", b"none"]
    txn.set(b"a", b"2")
    txn.delete(b"none")
    txn.set(b"none", b"3")
    assert [txn.get(b"a"), txn.get(b"none")] == [b"2", b"3"]  # its own writes, not what it read
    assert reads == [b"a", b"none"]
    txn.flush(None)
    assert part.begin().get(b"a") == b"2"


def test_iter_prefix_merges_partition_and_transaction_sorted_honouring_deletes(part: StorePartition) -> None:
    seeded(part, {b"s\x00a": b"1", b"s\x00c": b"3", b"s\x00e": b"5", b"t\x00a": b"x", b"s": b"bal"})
    txn = part.begin()
    txn.set(b"s\x00b", b"2")  # between partition keys
    txn.set(b"s\x00c", b"33")  # overrides
    txn.delete(b"s\x00e")  # hides
    txn.set(b"s\x00f", b"6")  # after the last partition key
    txn.set(b"s\x00\x00", b"0")  # before the first
    txn.set(b"t\x00b", b"y")  # other prefix
    txn.delete(b"s\x00zz")  # delete of a key that never existed
    assert list(txn.iter_prefix(b"s\x00")) == [
        (b"s\x00\x00", b"0"),
        (b"s\x00a", b"1"),
        (b"s\x00b", b"2"),
        (b"s\x00c", b"33"),
        (b"s\x00f", b"6"),
    ]
    assert [k for k, _ in txn.iter_prefix(b"")] == sorted(
        [b"s", b"s\x00\x00", b"s\x00a", b"s\x00b", b"s\x00c", b"s\x00f", b"t\x00a", b"t\x00b"]
    )
    assert list(txn.iter_prefix(b"u")) == []


def test_iter_prefix_after_each_new_key_stays_sorted(part: StorePartition) -> None:
    # Exercises the incremental sorted index of changed keys (small and large catch-ups).
    seeded(part, {b"k%03d" % i: b"p" for i in range(0, 100, 3)})
    txn = part.begin()
    expected = {b"k%03d" % i: b"p" for i in range(0, 100, 3)}
    order = [(i * 37) % 100 for i in range(100)]
    for n, i in enumerate(order):
        txn.set(b"k%03d" % i, b"t")
        expected[b"k%03d" % i] = b"t"
        if n % 7 == 0 or n > 90:
            assert list(txn.iter_prefix(b"k")) == sorted(expected.items())
    assert list(txn.iter_prefix(b"k05")) == [(b"k%03d" % i, b"t") for i in range(50, 60)]


def test_iter_prefix_over_many_changes_with_gaps_of_all_sizes(part: StorePartition) -> None:
    # Scans after a few new keys (sorted in one by one) and after hundreds (re-sorted in
    # one go), with deletes among them: each gives the overlay, sorted.
    seeded(part, {b"k%04d" % i: b"p" for i in range(0, 2000, 5)})
    txn = part.begin()
    expected = {b"k%04d" % i: b"p" for i in range(0, 2000, 5)}
    order = [(i * 7919) % 2000 for i in range(2000)]
    for n, i in enumerate(order):
        key = b"k%04d" % i
        if n % 11 == 0:
            txn.delete(key)
            expected.pop(key, None)
        else:
            txn.set(key, b"t%d" % n)
            expected[key] = b"t%d" % n
        if n % 97 == 0 or n in (300, 301, 700):  # gaps of up to ~400 new keys between scans
            prefix = b"k%02d" % (i // 100)
            assert list(txn.iter_prefix(prefix)) == sorted(
                (k, v) for k, v in expected.items() if k.startswith(prefix)
            )
    assert list(txn.iter_prefix(b"k")) == sorted(expected.items())


def test_prefix_scan_does_not_spill_into_a_longer_sibling(part: StorePartition) -> None:
    part.write_batch(
        {
            encode_key("sku-1"): b"balance",
            encode_key("sku-1", "alloc", "o1"): b"2",
            encode_key("sku-10", "alloc", "o2"): b"5",
            encode_key("sku-2", "alloc", "o3"): b"7",
        }
    )
    txn = part.begin()
    txn.set(encode_key("sku-1", "alloc", "o4"), b"1")
    txn.set(encode_key("sku-10", "alloc", "o5"), b"1")
    keys = [k for k, _ in txn.iter_prefix(prefix_of("sku-1", "alloc"))]
    assert keys == [encode_key("sku-1", "alloc", "o1"), encode_key("sku-1", "alloc", "o4")]
    assert [k for k, _ in part.iter_prefix(prefix_of("sku-1"))] == [encode_key("sku-1", "alloc", "o1")]


def test_prefix_of_0xff_bytes_has_no_upper_bound_and_still_stops(part: StorePartition) -> None:
    part.write_batch({b"\xfe": b"1", b"\xff": b"2", b"\xff\xff": b"3", b"\xff\xff\x00": b"4"})
    assert [k for k, _ in part.iter_prefix(b"\xff\xff")] == [b"\xff\xff", b"\xff\xff\x00"]
    assert [k for k, _ in part.iter_prefix(b"\xfe")] == [b"\xfe"]
    txn = part.begin()
    txn.set(b"\xff\xff\xff", b"5")
    txn.delete(b"\xff\xff")
    assert [k for k, _ in txn.iter_prefix(b"\xff")] == [b"\xff", b"\xff\xff\x00", b"\xff\xff\xff"]


def test_partition_scan_is_a_snapshot_at_call_time(part: StorePartition) -> None:
    part.write_batch({b"a": b"1", b"b": b"2"})
    scan = part.iter_prefix(b"")
    part.write_batch({b"a": b"changed", b"b": None, b"c": b"new"})
    assert list(scan) == [(b"a", b"1"), (b"b", b"2")]


def test_changes_are_coalesced_per_key_last_write_wins(part: StorePartition) -> None:
    seeded(part, {b"gone": b"x"})
    txn = part.begin()
    txn.set(b"a", b"1")
    txn.set(b"a", b"2")
    txn.set(b"b", b"1")
    txn.delete(b"b")
    txn.delete(b"gone")
    txn.delete(b"c")
    txn.set(b"c", b"3")
    assert dict(txn.changes) == {b"a": b"2", b"b": None, b"gone": None, b"c": b"3"}


def test_abort_leaves_the_partition_untouched(part: StorePartition) -> None:
    seeded(part, {b"a": b"1"}, offset=7)
    txn = part.begin()
    txn.set(b"a", b"2")
    txn.delete(b"a")
    txn.set(b"b", b"3")
    txn.abort()
    assert txn.status is TransactionStatus.FAILED
    assert contents(part) == {b"a": b"1"}
    assert part.checkpoint_offset == 7
    txn.abort()  # a second abort is harmless (rollback paths may repeat it)


def test_prepare_then_flush_applies_the_batch_and_checkpoint(part: StorePartition) -> None:
    seeded(part, {b"a": b"1", b"b": b"2"}, offset=5)
    txn = part.begin()
    txn.set(b"a", b"11")
    txn.delete(b"b")
    txn.set(b"c", b"3")
    changes = txn.prepare()
    assert txn.status is TransactionStatus.PREPARED
    assert dict(changes) == {b"a": b"11", b"b": None, b"c": b"3"}
    assert contents(part) == {b"a": b"1", b"b": b"2"}  # prepared is still not applied
    assert txn.get(b"a") == b"11"  # reads still work
    with pytest.raises(StateError):
        txn.set(b"d", b"4")
    with pytest.raises(StateError):
        txn.delete(b"a")
    txn.flush(changelog_offset=8)
    assert status(txn) is TransactionStatus.COMPLETE
    assert contents(part) == {b"a": b"11", b"c": b"3"}
    assert part.checkpoint_offset == 8 and not part.needs_full_restore


def test_flush_straight_from_started_and_without_offset(part: StorePartition) -> None:
    seeded(part, {}, offset=3)
    txn = part.begin()
    txn.set(b"a", b"1")
    txn.flush(None)
    assert contents(part) == {b"a": b"1"}
    assert part.checkpoint_offset == 3  # no changelog records, no new checkpoint
    empty = part.begin()
    empty.flush(4)
    assert empty.status is TransactionStatus.COMPLETE and part.checkpoint_offset == 4


@pytest.mark.parametrize("ending", ["flush", "abort"])
def test_a_finished_transaction_refuses_use(part: StorePartition, ending: str) -> None:
    txn = part.begin()
    txn.set(b"a", b"1")
    if ending == "flush":
        txn.flush(1)
    else:
        txn.abort()
    for use in (
        lambda: txn.get(b"a"),
        lambda: txn.get(b"other"),
        lambda: txn.set(b"a", b"2"),
        lambda: txn.delete(b"a"),
        lambda: txn.iter_prefix(b""),
        lambda: txn.changes,
        txn.prepare,
        lambda: txn.flush(2),
    ):
        with pytest.raises(StateError):
            use()
    if ending == "flush":
        with pytest.raises(StateError):
            txn.abort()  # the changes were applied: aborting now would be a lie
    assert part.checkpoint_offset == (1 if ending == "flush" else None)


def test_prepare_twice_is_illegal(part: StorePartition) -> None:
    txn = part.begin()
    txn.prepare()
    with pytest.raises(StateError):
        txn.prepare()


def test_a_failed_flush_is_atomic_and_fails_the_transaction(part: StorePartition) -> None:
    seeded(part, {b"a": b"1"}, offset=4)
    txn = part.begin()
    txn.set(b"a", b"2")
    txn.set(b"b", "not bytes")  # type: ignore[arg-type]
    txn.prepare()
    with pytest.raises(TypeError):
        txn.flush(9)
    assert txn.status is TransactionStatus.FAILED
    assert contents(part) == {b"a": b"1"}
    assert part.checkpoint_offset == 4


def test_write_batch_is_all_or_nothing(part: StorePartition) -> None:
    part.write_batch({b"a": b"1"})
    with pytest.raises(TypeError):
        part.write_batch({b"b": b"2", "c": b"3", b"a": None})  # type: ignore[dict-item]
    assert contents(part) == {b"a": b"1"}


# ---------------------------------------------------------------------- partition lifecycle


def test_restore_lifecycle_and_illegal_transitions(part: StorePartition) -> None:
    part.mark_restoring()
    assert part.status is PartitionStatus.RESTORING
    with pytest.raises(StateError):
        part.begin()  # processing before the restore finished would read stale state
    with pytest.raises(StateError):
        part.mark_restoring()
    part.mark_active()
    assert status(part) is PartitionStatus.ACTIVE
    for illegal in (part.mark_restoring, part.mark_active, part.wipe):
        with pytest.raises(StateError):
            illegal()
    part.begin().abort()
    part.close()
    assert status(part) is PartitionStatus.CLOSED
    part.close()  # idempotent: revocation may close twice
    for illegal in (part.mark_restoring, part.mark_active):
        with pytest.raises(StateError):
            illegal()


def test_registered_may_go_straight_to_active(part: StorePartition) -> None:
    part.mark_active()
    assert part.status is PartitionStatus.ACTIVE


def test_a_closed_partition_refuses_everything(part: StorePartition) -> None:
    seeded(part, {b"a": b"1"})
    part.close()
    for use in (
        lambda: part.get(b"a"),
        lambda: part.iter_prefix(b""),
        lambda: part.write_batch({b"a": b"2"}),
        lambda: part.apply_changelog([(b"a", b"2")]),
        lambda: part.write_checkpoint(11),
        part.begin,
        part.wipe,
    ):
        with pytest.raises(StateError):
            use()


def test_a_transaction_outliving_its_partition_fails_cleanly(part: StorePartition) -> None:
    seeded(part, {b"a": b"1"})
    txn = part.begin()
    txn.set(b"b", b"2")
    part.close()
    assert txn.get(b"b") == b"2"  # its own buffer still answers
    with pytest.raises(StateError):
        txn.get(b"a")  # a partition read does not
    with pytest.raises(StateError):
        txn.flush(3)
    assert txn.status is TransactionStatus.FAILED


def test_wipe_drops_data_and_checkpoint(store: Store, part: StorePartition) -> None:
    seeded(part, {b"a": b"1", b"b": b"2"}, offset=12)
    part.wipe()
    assert contents(part) == {} and part.get(b"a") is None
    assert part.checkpoint_offset is None and part.needs_full_restore
    part.write_batch({b"c": b"3"})  # usable after the wipe
    store.close_partition(0)
    again = store.partition(0)
    assert contents(again) == {b"c": b"3"} and again.checkpoint_offset is None


def test_wipe_while_restoring_is_allowed(part: StorePartition) -> None:
    seeded(part, {b"a": b"1"})
    part.mark_restoring()
    part.wipe()
    assert contents(part) == {} and part.status is PartitionStatus.RESTORING


def test_reopen_after_close_sees_data_and_checkpoint(store: Store, part: StorePartition) -> None:
    seeded(part, {b"a": b"1"}, offset=3)
    txn = part.begin()
    txn.set(b"b", b"2")
    txn.flush(5)
    store.close_partition(0)
    assert part.status is PartitionStatus.CLOSED
    again = store.partition(0)
    assert again is not part and again.status is PartitionStatus.REGISTERED
    assert contents(again) == {b"a": b"1", b"b": b"2"}
    assert again.checkpoint_offset == 5 and not again.needs_full_restore


def test_data_without_a_checkpoint_is_untrusted(store: Store, part: StorePartition) -> None:
    part.write_batch({b"a": b"1"})  # e.g. a crash before the first checkpoint
    store.close_partition(0)
    again = store.partition(0)
    assert contents(again) == {b"a": b"1"}
    assert again.needs_full_restore
    again.wipe()
    assert contents(again) == {}


def test_apply_changelog_handles_tombstones_and_repeats_in_order(part: StorePartition) -> None:
    seeded(part, {b"old": b"x", b"keep": b"k"})
    part.mark_restoring()
    records: list[tuple[bytes, bytes | None]] = [
        (b"a", b"1"),
        (b"b", b"1"),
        (b"a", b"2"),
        (b"b", None),
        (b"old", None),
        (b"c", b"3"),
        (b"c", None),
        (b"c", b"4"),
    ]
    part.apply_changelog(iter(records))
    part.write_checkpoint(8)
    expected = {b"a": b"2", b"c": b"4", b"keep": b"k"}
    assert contents(part) == expected
    part.apply_changelog(records)  # replaying from an older checkpoint changes nothing
    assert contents(part) == expected
    part.apply_changelog([])
    part.mark_active()
    assert part.checkpoint_offset == 8
