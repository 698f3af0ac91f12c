"""The open reservations as the allocator's store keeps them (stages/state_codec.py): per
channel a count and the summed decided_at in one record, and per second decided a count for
the oldest, moved in the transaction that writes the lines, so nothing per line is held in
memory."""

from __future__ import annotations

from streamalloc.domain import LinePart, LineState, StateChanges
from streamalloc.runtime.observer import Reservations
from streamalloc.runtime.state import InMemoryStore, PartitionTransaction, StorePartition, prefix_of
from streamalloc.stages.state_codec import (
    encode_line,
    line_key,
    location_index_key,
    open_reservations,
    write_changes,
)


def _line(order_id: str, status: str, decided_at: int, channel: str = "web") -> LineState:
    parts = (LinePart("WH-1", 1 if status == "allocated" else 0, 1 if status == "picked" else 0),)
    return LineState(order_id, "1", channel, 1, status, parts, decided_at=decided_at)


def _write(txn: PartitionTransaction, *lines: LineState, sku: str = "SKU-A") -> None:
    changes = StateChanges({}, {(line.order_id, line.line_id): line for line in lines}, ())
    write_changes(sku, changes, txn)


def _committed(part: StorePartition, *lines: LineState, sku: str = "SKU-A") -> None:
    txn = part.begin()
    _write(txn, *lines, sku=sku)
    txn.flush(None)


def _read(part: StorePartition) -> dict[str, Reservations]:
    txn = part.begin()
    found, built = open_reservations(txn)
    assert not built and not txn.changes  # a store that has them: a read writes nothing
    return found


def _seconds(part: StorePartition) -> dict[str, int]:
    """The per-second counts: second -> open reservations decided in it (any channel)."""
    return {
        key.decode().split("\0")[2].lstrip("0") or "0": int(n) for key, n in part.iter_prefix(prefix_of("#r"))
    }


def test_lines_opening_and_closing_move_the_count_the_sum_and_the_oldest() -> None:
    part = InMemoryStore("allocator").partition(0)
    _committed(part, _line("o1", "allocated", 1_000), _line("o2", "allocated", 3_000))
    _committed(part, _line("o3", "allocated", 2_000, channel="store"), sku="SKU-B")
    assert _read(part) == {"web": Reservations(2, 1_000, 4_000), "store": Reservations(1, 2_000, 2_000)}
    _committed(part, _line("o1", "picked", 1_000))  # picked: no longer a reservation
    assert _read(part)["web"] == Reservations(1, 3_000, 3_000)
    _committed(part, _line("o3", "released", 2_000, channel="store"), sku="SKU-B")
    assert _read(part) == {"web": Reservations(1, 3_000, 3_000)}  # a channel with none is left out
    assert _seconds(part) == {"3": 1}


def test_the_oldest_is_to_the_second_and_the_sum_exact() -> None:
    part = InMemoryStore("allocator").partition(0)
    _committed(part, _line("o1", "allocated", 7_250), _line("o2", "allocated", 7_900))
    _committed(part, _line("o3", "allocated", 9_001))
    assert _read(part) == {"web": Reservations(3, 7_000, 24_151)}
    assert _seconds(part) == {"7": 2, "9": 1}
    _committed(part, _line("o2", "picked", 7_900))
    assert _read(part) == {"web": Reservations(2, 7_000, 16_251)}
    _committed(part, _line("o1", "released", 7_250))
    assert _read(part) == {"web": Reservations(1, 9_000, 9_001)}
    assert _seconds(part) == {"9": 1}


def test_many_lines_closing_around_an_old_one_keep_it_the_oldest_and_leave_no_index_behind() -> None:
    part = InMemoryStore("allocator").partition(0)
    _committed(part, _line("old", "allocated", 5_000))
    for i in range(200):
        _committed(part, _line(f"o{i}", "allocated", 10_000 + 500 * i))
        _committed(part, _line(f"o{i}", "picked", 10_000 + 500 * i))
    assert _read(part) == {"web": Reservations(1, 5_000, 5_000)}
    assert _seconds(part) == {"5": 1}


def test_a_line_decided_again_counts_once_at_its_new_time() -> None:
    part = InMemoryStore("allocator").partition(0)
    _committed(part, _line("o1", "allocated", 5_000), _line("o2", "allocated", 6_000))
    _committed(part, _line("o1", "allocated", 9_000))
    assert _read(part) == {"web": Reservations(2, 6_000, 15_000)}
    assert _seconds(part) == {"6": 1, "9": 1}


def test_a_line_changed_twice_in_one_transaction_moves_them_once() -> None:
    part = InMemoryStore("allocator").partition(0)
    txn = part.begin()
    _write(txn, _line("o1", "allocated", 5_000))
    _write(txn, _line("o1", "allocated", 5_000))  # (its applied ids changed, say)
    _write(txn, _line("o2", "allocated", 5_500))
    _write(txn, _line("o2", "picked", 5_500))
    txn.flush(None)
    assert _read(part) == {"web": Reservations(1, 5_000, 5_000)}
    assert _seconds(part) == {"5": 1}


def test_an_aborted_transaction_takes_its_moves_back_with_its_lines() -> None:
    part = InMemoryStore("allocator").partition(0)
    _committed(part, _line("o1", "allocated", 5_000))
    txn = part.begin()
    _write(txn, _line("o1", "picked", 5_000), _line("o2", "allocated", 8_000))
    assert open_reservations(txn)[0] == {"web": Reservations(1, 8_000, 8_000)}  # as it sees them
    txn.abort()
    assert _read(part) == {"web": Reservations(1, 5_000, 5_000)}
    assert _seconds(part) == {"5": 1}


def test_a_store_written_before_the_index_gets_it_built_once() -> None:
    part = InMemoryStore("allocator").partition(0)
    old = part.begin()  # lines as an older version wrote them: no "#r" keys, no totals record
    for sku, line in [
        ("SKU-A", _line("o1", "allocated", 4_000)),
        ("SKU-A", _line("o2", "picked", 1_000)),
        ("SKU-B", _line("o3", "allocated", 2_000)),
        ("SKU-B", _line("o4", "allocated", 3_000, channel="store")),
    ]:
        old.set(location_index_key("WH-1", sku), b"1")
        old.set(line_key(sku, line.order_id, line.line_id), encode_line(line))
    old.flush(None)

    txn = part.begin()
    found, built = open_reservations(txn)
    assert built  # it wrote: the caller must commit
    txn.flush(None)
    expected = {"web": Reservations(2, 2_000, 6_000), "store": Reservations(1, 3_000, 3_000)}
    assert found == expected and _read(part) == expected
    assert _seconds(part) == {"2": 1, "3": 1, "4": 1}


def test_the_first_write_to_a_store_without_the_index_builds_it_before_moving_it() -> None:
    part = InMemoryStore("allocator").partition(0)
    old = part.begin()
    old.set(location_index_key("WH-1", "SKU-A"), b"1")
    old.set(line_key("SKU-A", "o1", "1"), encode_line(_line("o1", "allocated", 4_000)))
    old.flush(None)
    _committed(part, _line("o1", "picked", 4_000), _line("o2", "allocated", 6_000))
    assert _read(part) == {"web": Reservations(1, 6_000, 6_000)}
    assert _seconds(part) == {"6": 1}
