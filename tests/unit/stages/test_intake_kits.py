"""Intake expands kit lines into their components' lines, all-or-nothing (ship-complete)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streamalloc.config import Settings
from streamalloc.domain import OrderAccepted
from streamalloc.domain.kits import Kit
from streamalloc.serialization import topic_serde
from streamalloc.stages.intake import IntakeStage
from streamalloc.stages.tables import KitsView, kit_of
from streamalloc.testing import StageHarness

SETTINGS = Settings()
ORDERS = SETTINGS.topic("orders")
REQUESTS = SETTINGS.topic("allocation-requests")
ALLOCATIONS = SETTINGS.topic("allocations")
T0 = 1_764_000_000_000
KITS: Mapping[str, Kit] = {"DESK-KIT": Kit("DESK-KIT", (("TOP", 1), ("LEG", 4)))}


def order(**fields: Any) -> dict[str, Any]:
    record = {
        "event_id": "e1",
        "type": "placed",
        "order_id": "o1",
        "channel": "web",
        "occurred_at": T0,
        "ship_complete": False,
        "lines": [
            {"line_id": "1", "sku": "DESK-KIT", "qty": 2, "lot": "L1"},
            {"line_id": "2", "sku": "LAMP", "qty": 1},
        ],
    }
    return {**record, **fields}


def decoded(topic: str, value: bytes | None) -> dict[str, Any]:
    assert value is not None
    return topic_serde(SETTINGS, topic).decode(value)


def feed(harness: StageHarness, event: dict[str, Any]) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    outputs = harness.feed(ORDERS, [(b"o1", json.dumps(event).encode())])
    return [(o.topic, o.key, decoded(o.topic, o.value)) for o in outputs]


def test_a_kit_line_becomes_a_request_per_component_and_the_order_ship_complete() -> None:
    outputs = feed(StageHarness(IntakeStage(SETTINGS, lambda: KITS)), order())
    assert outputs[0][:2] == (ALLOCATIONS, b"o1")
    assert outputs[0][2] == OrderAccepted.of("e1", "o1", "web", 3, 11, True, T0).as_record()
    requests = [(key, r["line_id"], r["sku"], r["qty"], r["lot"], r["ship_complete"], r["line_count"])
                for topic, key, r in outputs[1:] if topic == REQUESTS]  # fmt: skip
    assert requests == [
        (b"TOP", "1/TOP", "TOP", 2, None, True, 3),
        (b"LEG", "1/LEG", "LEG", 8, None, True, 3),
        (b"LAMP", "2", "LAMP", 1, None, True, 3),
    ]


def test_an_order_without_a_kit_line_is_left_as_it_was() -> None:
    plain = order(lines=[{"line_id": "2", "sku": "LAMP", "qty": 1}])
    with_kits = feed(StageHarness(IntakeStage(SETTINGS, lambda: KITS)), plain)
    assert with_kits == feed(StageHarness(IntakeStage(SETTINGS)), plain)
    assert with_kits[0][2]["ship_complete"] is False


def test_a_pick_and_a_cancel_of_the_kit_line_reach_each_component() -> None:
    harness = StageHarness(IntakeStage(SETTINGS, lambda: KITS))
    picked = order(
        event_id="e2", type="picked", lines=[{"line_id": "1", "sku": "DESK-KIT", "qty": 1, "location": "WH"}]
    )
    assert [(r["command"], r["line_id"], r["qty"], r["location"]) for _, _, r in feed(harness, picked)] == [
        ("pick", "1/TOP", 1, "WH"),
        ("pick", "1/LEG", 4, "WH"),
    ]  # fmt: skip
    cancelled = order(event_id="e3", type="cancelled", lines=[{"line_id": "1", "sku": "DESK-KIT", "qty": 2}])
    assert [(r["command"], r["line_id"], r["qty"]) for _, _, r in feed(harness, cancelled)] == [
        ("release", "1/TOP", 2),
        ("release", "1/LEG", 8),
    ]


class _Table:
    def __init__(self, rows: dict[str, Any]) -> None:
        self.rows, self.version = rows, 1


def test_the_kits_table_keeps_only_records_that_make_a_kit() -> None:
    table = _Table(
        {
            "K": {"kit_sku": "K", "components": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]},
            "OFF": {"kit_sku": "OFF", "components": [{"sku": "A", "qty": 1}], "active": False},
            "EMPTY": {"kit_sku": "EMPTY", "components": []},
            "ZERO": {"kit_sku": "ZERO", "components": [{"sku": "A", "qty": 0}]},
            "SELF": {"kit_sku": "SELF", "components": [{"sku": "SELF", "qty": 1}]},
            "TWICE": {"kit_sku": "TWICE", "components": [{"sku": "A", "qty": 1}, {"sku": "A", "qty": 1}]},
        }
    )
    view = KitsView(table)
    assert view() == {"K": Kit("K", (("A", 2), ("B", 1)))}
    table.rows = {}
    assert view() == {"K": Kit("K", (("A", 2), ("B", 1)))}  # cached until the table changes
    table.version += 1
    assert view() == {}
    assert kit_of({"kit_sku": "K", "components": [{"sku": "A", "qty": 1}], "active": True}) == Kit(
        "K", (("A", 1),)
    )
