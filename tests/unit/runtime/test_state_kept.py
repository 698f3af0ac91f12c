"""runtime.state.kept: values kept between transactions are served only while the store
partition changed by nothing but completed flushes of the transactions they served."""

from __future__ import annotations

import pytest

from streamalloc.runtime.state import InMemoryStore, Kept, KeptByPartition, StorePartition


def _stored(part: StorePartition, **values: int) -> None:
    txn = part.begin()
    for key, value in values.items():
        txn.set(key.encode(), str(value).encode())
    txn.flush(None)


def _read(part: StorePartition, key: str) -> list[int]:
    """A value as a stage keeps it: decoded, and a mutable object changed in place."""
    data = part.get(key.encode())
    return [int(data)] if data is not None else []


def test_a_value_put_back_is_served_to_the_next_transaction() -> None:
    part = InMemoryStore("s").partition(0)
    _stored(part, a=5)
    first = part.begin()
    kept: Kept[list[int]] = Kept(first, 10)
    value = kept.take("a") or _read(part, "a")
    value[0] = 7  # the stage changes it in place, writes it, puts it back
    first.set(b"a", b"7")
    kept.put("a", value)
    first.flush(None)

    kept.serve(part.begin())
    assert kept.take("a") is value


@pytest.mark.parametrize("writer", ["aborted", "restore", "wipe", "another transaction"])
def test_kept_values_are_dropped_when_the_store_may_hold_something_else(writer: str) -> None:
    part = InMemoryStore("s").partition(0)
    _stored(part, a=5)
    first = part.begin()
    kept: Kept[list[int]] = Kept(first, 10)
    value = _read(part, "a")
    value[0] = 7
    first.set(b"a", b"7")
    kept.put("a", value)
    if writer == "aborted":
        first.abort()  # the value changed in place; the store did not
    else:
        first.flush(None)
        if writer == "restore":
            part.apply_changelog([(b"a", b"2")])
        elif writer == "wipe":
            part.wipe()
        else:
            _stored(part, a=9)  # a transaction the kept values did not serve
    kept.serve(part.begin())
    assert len(kept) == 0
    assert kept.take("a") is None


def test_serving_the_same_transaction_again_keeps_everything() -> None:
    part = InMemoryStore("s").partition(0)
    txn = part.begin()
    kept: Kept[int] = Kept(txn, 10)
    kept.put("a", 1)
    kept.serve(txn)  # a second batch of one open transaction
    assert kept.take("a") == 1


def test_the_least_recently_used_value_goes_first_past_the_size() -> None:
    kept: Kept[int] = Kept(InMemoryStore("s").partition(0).begin(), 2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("a", kept.take("a") or 0)  # used again: now b is the least recently used
    kept.put("c", 3)
    assert len(kept) == 2
    assert (kept.take("b"), kept.take("a"), kept.take("c")) == (None, 1, 3)


def test_a_partition_opened_anew_gets_new_kept_values_and_a_closed_one_is_dropped() -> None:
    store = InMemoryStore("s")
    by_partition: KeptByPartition[int] = KeptByPartition(10)
    first = store.partition(0)
    kept = by_partition.serving(0, first.begin())
    kept.put("a", 1)
    other = by_partition.serving(1, store.partition(1).begin())
    other.put("b", 2)
    store.close_partition(1)  # revoked
    store.close_partition(0)
    again = by_partition.serving(0, store.partition(0).begin())  # assigned again: a new store partition
    assert again is not kept
    assert again.take("a") is None
    assert by_partition.serving(1, store.partition(1).begin()) is not other
