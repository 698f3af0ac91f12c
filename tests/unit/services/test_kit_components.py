"""A kit's ATS at its owner, from the components' ATS its readers tell it (kit_components.py)."""

from __future__ import annotations

import json

import pytest

from streamalloc.domain.kits import Kit
from streamalloc.errors import DeserializationError
from streamalloc.services.coalesce import AtsValue
from streamalloc.services.kit_components import ComponentAts, encode_entry, kit_values, merge, unpushed

DESK = Kit("KIT-DESK", (("TOP", 1), ("LEG", 4)))


def told(sku: str, as_of: int, **ats: int) -> ComponentAts:
    values = [
        AtsValue(channel, sku, n, as_of, f"cause-{as_of}", f"avail-{sku}-{as_of}")
        for channel, n in ats.items()
    ]
    component = ComponentAts.of(DESK.kit_sku, values)
    assert component is not None
    return component


def test_the_kit_is_the_whole_kits_its_components_make_per_channel() -> None:
    entry = merge(None, told("TOP", 1, web=3, store=1))
    entry = merge(entry, told("LEG", 2, web=10, store=8))
    assert entry is not None
    values = {v.channel: v for v in kit_values(DESK, entry)}
    assert {c: v.ats for c, v in values.items()} == {"store": 1, "web": 2}  # min(1, 8//4), min(3, 10//4)
    assert all(v.kit and v.sku == DESK.kit_sku for v in values.values())
    assert values["web"].availability_event_id == "avail-LEG-2"  # the record that moved it last


def test_a_component_never_told_counts_as_none() -> None:
    entry = merge(None, told("TOP", 1, web=3))
    assert entry is not None
    assert [(v.channel, v.ats) for v in kit_values(DESK, entry)] == [("web", 0)]


def test_a_channel_one_component_does_not_name_makes_no_kit() -> None:
    entry = merge(merge(None, told("TOP", 1, web=3, b2b=5)), told("LEG", 1, web=4))
    assert entry is not None
    assert {v.channel: v.ats for v in kit_values(DESK, entry)} == {"b2b": 0, "web": 1}


def test_a_late_record_of_a_former_reader_changes_nothing() -> None:
    entry = merge(merge(None, told("TOP", 5, web=1)), told("LEG", 5, web=40))
    assert entry is not None
    assert merge(entry, told("TOP", 4, web=9)) is None  # older than the held ATS
    newer = merge(entry, told("TOP", 6, web=9))
    assert newer is not None
    assert [v.ats for v in kit_values(DESK, newer)] == [9]
    again = merge(newer, told("TOP", 6, web=9))  # the same record told twice: taken, same result
    assert again is not None and [v.ats for v in kit_values(DESK, again)] == [9]


def test_an_entry_and_a_record_survive_their_encoding() -> None:
    component = told("TOP", 7, web=3)
    assert ComponentAts.decode(component.encode()) == component
    entry = merge(None, component)
    assert entry is not None
    entry["kit_ats"]["web"], entry["pushed"]["web"] = 0, None
    assert json.loads(encode_entry(entry)) == entry


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (None, "needs a value"),
        (b"not json", "not a kit component record"),
        (b'{"kit_sku": "K"}', "'ats'"),
        (
            b'{"kit_sku":"K","sku":"S","as_of":1,"cause_event_id":"c","availability_event_id":"a","ats":[1]}',
            "ats",
        ),
        (
            b'{"kit_sku":"K","sku":"S","as_of":"x","cause_event_id":"c","availability_event_id":"a","ats":{}}',
            "x",
        ),
    ],
)
def test_a_malformed_component_record_is_refused_with_what_is_wrong(data: bytes | None, says: str) -> None:
    with pytest.raises(DeserializationError, match=says):
        ComponentAts.decode(data)


def test_a_kit_ats_computed_and_not_pushed_is_found_again_after_a_restart() -> None:
    entry = merge(merge(None, told("TOP", 1, web=3, store=2)), told("LEG", 2, web=8, store=8))
    assert entry is not None
    entry["kit_ats"], entry["pushed"] = {"web": 2, "store": 2}, {"web": 1, "store": 2}
    [(value, pushed)] = unpushed(DESK.kit_sku, entry)
    assert (value.channel, value.sku, value.ats, value.kit, pushed) == ("web", DESK.kit_sku, 2, True, 1)
    assert value.availability_event_id == "avail-LEG-2"
