"""The global tables' rule, shared by the workers and the offline readers (`table_rows`): the
row id is the Kafka key, the last record per key wins, a tombstone deletes the row."""

from __future__ import annotations

from streamalloc.errors import DeserializationError
from streamalloc.runtime.global_tables import table_rows


def text(value: bytes) -> str:
    if value == b"bad":
        raise DeserializationError("not a record")
    return value.decode()


def test_a_tombstone_deletes_the_row_and_a_later_record_adds_it_back() -> None:
    assert table_rows([(b"A", b"1"), (b"B", b"1"), (b"A", None)], text) == ({"B": "1"}, 0)
    assert table_rows([(b"A", b"1"), (b"A", None), (b"A", b"2")], text) == ({"A": "2"}, 0)


def test_the_last_record_per_key_wins_and_a_tombstone_of_an_unknown_key_changes_nothing() -> None:
    assert table_rows([(b"A", b"1"), (b"Z", None), (b"A", b"2"), (b"B", b"3")], text) == (
        {"A": "2", "B": "3"},
        0,
    )


def test_a_keyless_record_is_no_row_and_one_that_does_not_decode_leaves_the_row_as_it_was() -> None:
    rows, bad = table_rows([(b"A", b"1"), (None, b"9"), (b"A", b"bad"), (None, None)], text)
    assert (rows, bad) == ({"A": "1"}, 1)
    # after a tombstone, an undecodable record does not bring the row back either
    assert table_rows([(b"A", b"1"), (b"A", None), (b"A", b"bad")], text) == ({}, 1)


def test_the_row_id_is_the_kafka_key_not_a_field_of_the_value() -> None:
    rows, _ = table_rows([(b"K1", b"value names K2")], text)
    assert rows == {"K1": "value names K2"}
