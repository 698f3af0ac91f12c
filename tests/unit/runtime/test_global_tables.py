"""The global tables' rule, shared by the workers and the offline readers (`table_rows`): the
row id is the Kafka key, the last record per key wins, a tombstone deletes the row."""

from __future__ import annotations

from typing import Any

from streamalloc.config import Settings
from streamalloc.domain.kits import Kit
from streamalloc.errors import DeserializationError
from streamalloc.replay import TableRecords
from streamalloc.runtime.global_tables import table_rows
from streamalloc.serialization import topic_serde
from streamalloc.stages.tables import kits_of

SETTINGS = Settings()
KITS = topic_serde(SETTINGS, SETTINGS.topic("kits"))
CHANNELS = topic_serde(SETTINGS, SETTINGS.topic("channels"))


def text(value: bytes) -> str:
    if value == b"bad":
        raise DeserializationError("not a record")
    return value.decode()


def kit(sku: str, *components: tuple[str, int]) -> tuple[bytes, bytes]:
    """A `kits` record as `produce` writes it: keyed by its kit SKU, Avro-encoded."""
    record = KITS.validate({"kit_sku": sku, "components": [{"sku": s, "qty": q} for s, q in components]})
    return sku.encode(), KITS.encode(record)


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


def test_a_kit_deleted_by_a_tombstone_is_no_kit_and_is_one_again_once_republished() -> None:
    duo, trio = kit("KIT-DUO", ("A", 1), ("B", 2)), kit("KIT-TRIO", ("A", 3))
    deleted = [duo, trio, (b"KIT-DUO", None)]
    rows, _ = table_rows(deleted, KITS.decode)
    assert kits_of(rows) == {"KIT-TRIO": Kit("KIT-TRIO", (("A", 3),))}

    again = kit("KIT-DUO", ("A", 1), ("C", 1))
    rows, _ = table_rows([*deleted, again], KITS.decode)
    assert kits_of(rows) == {
        "KIT-DUO": Kit("KIT-DUO", (("A", 1), ("C", 1))),
        "KIT-TRIO": Kit("KIT-TRIO", (("A", 3),)),
    }


def test_the_replay_keeps_a_topic_row_under_its_kafka_key_and_a_file_line_under_its_id() -> None:
    record: dict[str, Any] = CHANNELS.validate({"channel_id": "web"})
    rows, _ = table_rows(
        [(b"web", CHANNELS.encode(record)), (b"store", CHANNELS.encode(record))], CHANNELS.decode
    )
    from_topic, from_file = TableRecords(), TableRecords()
    for key, row in rows.items():
        from_topic.add(row, key)
    from_file.add(record)
    assert set(from_topic.channels) == {"web", "store"}
    assert set(from_file.channels) == {"web"}
