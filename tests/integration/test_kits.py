"""Kits through a running worker against a real broker: a kit line is its components' lines,
all allocated together or none kept (intake expands it; the order stage's ship-complete
releases the components already allocated when one is rejected)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import LOCATION, EngineUnderTest, Ids, of_type

pytestmark = pytest.mark.slow

TAG = uuid.uuid4().hex[:6]
DESK, TOP, LEG = f"KIT-{TAG}-DESK", f"SKU-{TAG}-TOP", f"SKU-{TAG}-LEG"
CHAIR, SEAT, WHEEL = f"KIT-{TAG}-CHAIR", f"SKU-{TAG}-SEAT", f"SKU-{TAG}-WHEEL"
KITS = [
    {"kit_sku": DESK, "components": [{"sku": TOP, "qty": 1}, {"sku": LEG, "qty": 4}]},
    {"kit_sku": CHAIR, "components": [{"sku": SEAT, "qty": 1}, {"sku": WHEEL, "qty": 5}]},
]


@pytest.fixture(scope="module")
def engine(kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineUnderTest]:
    tmp = tmp_path_factory.mktemp("kits")
    under_test = EngineUnderTest(kafka_broker.settings(state_dir=tmp / "state"), tmp)
    try:
        under_test.prepare()
        under_test.publish("kits", *KITS)  # before the worker starts: it reads the table first
        under_test.start()
        yield under_test
        worker = under_test.worker
        assert worker is not None
        assert worker.terminate() == 0, worker.log()[-4000:]
    finally:
        under_test.close()


def stock(engine: EngineUnderTest, ids: Ids, sku: str, qty: int, type_: str = "received") -> None:
    event = engine.inventory(ids.event(f"{type_}-{sku}"), type_, sku, qty)
    engine.send_inventory(event)
    engine.wait_stock(sku, event["event_id"])


def line(line_id: str, sku: str, qty: int) -> dict[str, Any]:
    return {"line_id": line_id, "sku": sku, "qty": qty}


def final_statuses(engine: EngineUnderTest, order_id: str, lines: dict[str, str]) -> list[str]:
    """Wait for an order status whose lines are `lines`; return every status published."""

    def seen() -> bool:
        return any(
            {row["line_id"]: row["status"] for row in status["lines"]} == lines
            for status in engine.statuses(order_id)
        )

    engine.wait(seen, f"an order status of {order_id} with lines {lines}")
    return [status["status"] for status in engine.settled_statuses(order_id)]


def test_a_kit_order_allocates_every_component_and_the_order_is_allocated(engine: EngineUnderTest) -> None:
    ids = Ids("kit-whole")
    stock(engine, ids, TOP, 3)
    stock(engine, ids, LEG, 10)
    order_id = ids.order("1")
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, [line("1", DESK, 2)]))

    events = engine.wait_events(
        order_id, lambda evs: len(of_type(evs, "allocated")) == 2, "both components allocated"
    )
    assert of_type(events, "accepted")[0]["ship_complete"] is True
    allocated = sorted(
        (e["line_id"], e["sku"], e["qty"], e["location"]) for e in of_type(events, "allocated")
    )
    assert allocated == [(f"1/{LEG}", LEG, 8, LOCATION), (f"1/{TOP}", TOP, 2, LOCATION)]
    published = final_statuses(engine, order_id, {f"1/{TOP}": "allocated", f"1/{LEG}": "allocated"})
    assert published[-1] == "allocated", published


def test_a_kit_short_of_one_component_releases_the_others(engine: EngineUnderTest) -> None:
    ids = Ids("kit-short")
    stock(engine, ids, SEAT, 5)
    stock(engine, ids, WHEEL, 4)  # one chair takes 5 wheels
    order_id = ids.order("1")
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, [line("1", CHAIR, 1)]))

    def settled(evs: list[dict[str, Any]]) -> bool:
        return bool(of_type(evs, "rejected")) and bool(of_type(evs, "released"))

    events = engine.wait_events(order_id, settled, "the wheels rejected and the seat released")
    decisions = sorted((e["line_id"], e["type"], e["reason"]) for e in events if e["type"] != "accepted")
    assert decisions == [
        (f"1/{SEAT}", "allocated", None),
        (f"1/{SEAT}", "released", "ship_complete_failed"),
        (f"1/{WHEEL}", "rejected", "insufficient_stock"),
    ], events
    published = final_statuses(engine, order_id, {f"1/{SEAT}": "released", f"1/{WHEEL}": "rejected"})
    assert published and set(published) == {"rejected"}, published
    seat = engine.settled_availability(SEAT)["totals"]
    assert (seat["on_hand"], seat["allocated"]) == (5, 0)
