"""Intake through the harness: typed records out, and empty ids refused like missing ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamalloc.config import Settings
from streamalloc.domain import AmendRequested, CancelRequested, OrderAccepted
from streamalloc.serialization import topic_serde
from streamalloc.stages.intake import IntakeStage
from streamalloc.stages.records import AllocationRequest
from streamalloc.stages.tables import channel_of
from streamalloc.testing import StageHarness

SETTINGS = Settings()
ORDERS = SETTINGS.topic("orders")
REQUESTS = SETTINGS.topic("allocation-requests")
ALLOCATIONS = SETTINGS.topic("allocations")
T0 = 1_764_000_000_000


def order(**fields: Any) -> dict[str, Any]:
    record = {
        "event_id": "e1",
        "type": "placed",
        "order_id": "o1",
        "channel": "web",
        "occurred_at": T0,
        "ship_complete": True,
        "lines": [
            {"line_id": "1", "sku": "A", "qty": 2},
            {"line_id": "2", "sku": "B", "qty": 1, "location": "WH"},
        ],
    }
    return {**record, **fields}


def decoded(topic: str, value: bytes | None) -> dict[str, Any]:
    assert value is not None
    return topic_serde(SETTINGS, topic).decode(value)


def test_a_placed_order_becomes_its_accepted_event_and_one_request_per_line() -> None:
    harness = StageHarness(IntakeStage(SETTINGS))
    outputs = harness.feed(ORDERS, [(b"o1", json.dumps(order()).encode())])
    assert [(o.topic, o.key) for o in outputs] == [(ALLOCATIONS, b"o1"), (REQUESTS, b"A"), (REQUESTS, b"B")]
    accepted = OrderAccepted.of("e1", "o1", "web", 2, 3, True, T0)
    assert decoded(ALLOCATIONS, outputs[0].value) == accepted.as_record()
    second = AllocationRequest(
        event_id="e1:2", cause_event_id="e1", command="allocate", order_id="o1", line_id="2", sku="B", qty=1,
        channel="web", location="WH", ship_complete=True, line_count=2, occurred_at=T0,
    )  # fmt: skip
    assert decoded(REQUESTS, outputs[2].value) == second.as_record()


def test_a_request_built_on_the_hot_path_equals_one_built_by_its_constructor() -> None:
    validated = topic_serde(SETTINGS, ORDERS).validate(order())
    fast = AllocationRequest.line(validated, validated["lines"][0], "allocate")
    assert fast == AllocationRequest(**fast.as_record())
    assert topic_serde(SETTINGS, REQUESTS).validate(fast.as_record()) == fast.as_record()


def test_a_held_cart_is_accepted_and_its_lines_become_holds_then_confirms_and_extensions() -> None:
    harness = StageHarness(IntakeStage(SETTINGS))
    held = order(type="held", reservation_ttl_s=300, ship_complete=False)
    outputs = harness.feed(ORDERS, [(b"o1", json.dumps(held).encode())])
    assert [(o.topic, o.key) for o in outputs] == [(ALLOCATIONS, b"o1"), (REQUESTS, b"A"), (REQUESTS, b"B")]
    assert (
        decoded(ALLOCATIONS, outputs[0].value)
        == OrderAccepted.of("e1", "o1", "web", 2, 3, False, T0).as_record()
    )
    request = decoded(REQUESTS, outputs[1].value)
    assert (request["command"], request["qty"], request["reservation_ttl_s"]) == ("hold", 2, 300)
    for kind, command in (("confirmed", "confirm"), ("extended", "extend")):
        later = order(event_id=f"e-{kind}", type=kind, ship_complete=False)
        outputs = harness.feed(ORDERS, [(b"o1", json.dumps(later).encode())])
        assert [(o.topic, decoded(REQUESTS, o.value)["command"]) for o in outputs] == [
            (REQUESTS, command)
        ] * 2


def test_a_channel_record_from_before_hold_ttl_s_reads_the_default_of_15_minutes() -> None:
    old = topic_serde(SETTINGS, SETTINGS.topic("channels")).validate({"channel_id": "web"})
    assert channel_of(old).hold_ttl_s == 900
    assert channel_of({**old, "hold_ttl_s": 60}).hold_ttl_s == 60


def test_a_channel_record_from_before_protected_units_protects_nothing() -> None:
    old = topic_serde(SETTINGS, SETTINGS.topic("channels")).validate({"channel_id": "web"})
    assert channel_of(old).protected_units == 0
    assert channel_of({**old, "protected_units": 4}).protected_units == 4
    assert channel_of({**old, "protected_units": -1}).protected_units == 0


def test_a_whole_order_cancel_becomes_a_cancel_request_for_the_order_stage() -> None:
    harness = StageHarness(IntakeStage(SETTINGS))
    cancel = order(event_id="e2", type="cancelled", lines=[])
    [output] = harness.feed(ORDERS, [(b"o1", json.dumps(cancel).encode())])
    assert decoded(ALLOCATIONS, output.value) == CancelRequested.of("e2", "o1", "web", T0).as_record()


def test_an_amended_order_becomes_an_amend_request_per_line_and_its_lines_for_the_order_stage() -> None:
    harness = StageHarness(IntakeStage(SETTINGS))
    edit = order(
        event_id="e3",
        type="amended",
        lines=[{"line_id": "1", "sku": "A", "qty": 5}, {"line_id": "3", "sku": "C", "qty": 1}],
    )
    outputs = harness.feed(ORDERS, [(b"o1", json.dumps(edit).encode())])
    assert [(o.topic, o.key) for o in outputs] == [
        (ALLOCATIONS, b"o1"),
        (ALLOCATIONS, b"o1"),
        (REQUESTS, b"A"),
        (REQUESTS, b"C"),
    ]
    assert [decoded(ALLOCATIONS, o.value) for o in outputs[:2]] == [
        AmendRequested.of("e3", "o1", "web", "1", "A", 5, 2, T0).as_record(),
        AmendRequested.of("e3", "o1", "web", "3", "C", 1, 2, T0).as_record(),
    ]
    first = AllocationRequest(
        event_id="e3:1", cause_event_id="e3", command="amend", order_id="o1", line_id="1", sku="A", qty=5,
        channel="web", ship_complete=True, line_count=2, occurred_at=T0,
    )  # fmt: skip
    assert decoded(REQUESTS, outputs[2].value) == first.as_record()
    # an edit lists the order's lines as they are now: none is not an edit (a cancel is)
    assert (
        harness.feed(ORDERS, [(b"o1", json.dumps(order(event_id="e4", type="amended", lines=[])).encode())])
        == []
    )
    [letter] = harness.dead_letters
    assert "needs at least one line" in letter.error


EMPTY = [
    (order(event_id=""), "event_id"),
    (order(order_id=""), "order_id"),
    (order(channel=""), "channel"),
    (order(lines=[{"line_id": "", "sku": "A", "qty": 1}]), "lines[0].line_id"),
    (
        order(lines=[{"line_id": "1", "sku": "A", "qty": 1}, {"line_id": "2", "sku": "", "qty": 1}]),
        "lines[1].sku",
    ),
]


@pytest.mark.parametrize(("event", "field"), EMPTY)
def test_an_empty_id_in_json_is_dead_lettered_naming_the_field(event: dict[str, Any], field: str) -> None:
    harness = StageHarness(IntakeStage(SETTINGS))
    assert harness.feed(ORDERS, [(b"o1", json.dumps(event).encode())]) == []
    [letter] = harness.dead_letters
    assert f"{field}: must not be empty" in letter.error


@pytest.mark.parametrize(("event", "field"), EMPTY)
def test_an_empty_id_in_avro_is_dead_lettered_naming_the_field(event: dict[str, Any], field: str) -> None:
    serde = topic_serde(SETTINGS, ORDERS)
    filled = serde.validate(order())  # the schema's defaults, then the empty field over them
    if "lines" in field:
        filled["lines"] = [{"location": None, "lot": None, **line} for line in event["lines"]]
    else:
        filled[field] = ""
    harness = StageHarness(IntakeStage(SETTINGS))
    assert harness.feed(ORDERS, [(b"o1", serde.encode(filled))]) == []
    [letter] = harness.dead_letters
    assert f"{field}: must not be empty" in letter.error
