"""The engine's promises, checked through a running worker process against a real broker.

One worker (`python -m streamalloc worker`) serves the whole module: the tables are
published before it starts, and each test keeps to its own SKUs and order ids, so the tests
are independent of each other and of their order. Every wait is for a decision the test
caused (an allocation event, the availability that event's transaction wrote), never a
sleep; what is asserted comes after.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import (
    LOCATION,
    EngineUnderTest,
    Ids,
    location_row,
    now_ms,
    of_type,
)
from tests.integration.helpers import processes

from streamalloc.broker.process import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def http_port() -> int:
    """The worker's HTTP port (its /metrics)."""
    return free_port()


@pytest.fixture(scope="module")
def engine(
    kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory, http_port: int
) -> Iterator[EngineUnderTest]:
    tmp: Path = tmp_path_factory.mktemp("engine")
    under_test = EngineUnderTest(kafka_broker.settings(state_dir=tmp / "state"), tmp)
    with processes() as running:
        try:
            under_test.prepare()
            worker = under_test.start(http_port=http_port)
            running.append(worker)
            yield under_test
            code = worker.terminate()
            assert code == 0, f"worker exited with {code} on SIGTERM:\n{worker.log()[-4000:]}"
        finally:
            under_test.close()


@pytest.fixture(autouse=True)
def _worker_survives(engine: EngineUnderTest) -> Iterator[None]:
    yield
    worker = engine.worker
    assert worker is not None and worker.alive(), (
        f"the worker died:\n{worker.log()[-4000:] if worker else ''}"
    )


def line(line_id: str, sku: str, qty: int, **fields: Any) -> dict[str, Any]:
    return {"line_id": line_id, "sku": sku, "qty": qty, **fields}


def stock(engine: EngineUnderTest, ids: Ids, sku: str, qty: int, type_: str = "received") -> dict[str, Any]:
    """Put `qty` units of `sku` on hand at the location and wait until the engine has them."""
    event = engine.inventory(ids.event(f"{type_}-{sku}"), type_, sku, qty)
    engine.send_inventory(event)
    availability = engine.wait_stock(sku, event["event_id"])
    assert availability["totals"]["on_hand"] == qty
    return availability


def balances(availability: dict[str, Any]) -> dict[str, Any]:
    """What an availability record says about stock, without its ids and time."""
    return {"totals": availability["totals"], "locations": availability["locations"]}


def decided(events: list[dict[str, Any]], line_ids: set[str]) -> bool:
    return {e["line_id"] for e in of_type(events, "allocated", "rejected")} >= line_ids


# ---------------------------------------------------------------- 1. the race


@pytest.mark.smoke
def test_two_channels_racing_for_the_last_unit_one_is_allocated_one_rejected(engine: EngineUnderTest) -> None:
    ids = Ids("race")
    sku = ids.sku()
    stock(engine, ids, sku, 1)

    at = now_ms()
    web = engine.order(
        ids.event("web"), "placed", ids.order("web"), [line("1", sku, 1)], channel="web", occurred_at=at
    )
    shop = engine.order(
        ids.event("store"), "placed", ids.order("store"), [line("1", sku, 1)], channel="store", occurred_at=at
    )
    engine.send_orders(web, shop)  # one flush: both orders are in flight at once

    outcomes = {
        order["channel"]: engine.wait_events(order["order_id"], lambda evs: decided(evs, {"1"}), "a decision")
        for order in (web, shop)
    }
    decisions = {channel: of_type(events, "allocated", "rejected") for channel, events in outcomes.items()}
    assert all(len(d) == 1 for d in decisions.values()), decisions
    by_type = {d[0]["type"]: d[0] for d in decisions.values()}
    assert set(by_type) == {"allocated", "rejected"}, decisions
    won, lost = by_type["allocated"], by_type["rejected"]
    assert (won["sku"], won["qty"], won["location"]) == (sku, 1, LOCATION)
    assert (lost["sku"], lost["reason"]) == (sku, "insufficient_stock")
    assert {won["channel"], lost["channel"]} == {"web", "store"}

    after = engine.settled_availability(sku)
    assert after["totals"]["available"] == 0
    assert (after["totals"]["on_hand"], after["totals"]["allocated"]) == (1, 1)
    assert {c["channel"]: c["ats"] for c in after["channels"]} == {"web": 0, "store": 0}


# ---------------------------------------------------------------- 2. cancel


@pytest.mark.parametrize("listed", [True, False], ids=["lines-listed", "whole-order"])
def test_cancel_releases_exactly_what_was_allocated(engine: EngineUnderTest, listed: bool) -> None:
    ids = Ids("cancel-lines" if listed else "cancel-order")
    sku_a, sku_b = ids.sku("A"), ids.sku("B")
    before = {sku_a: stock(engine, ids, sku_a, 10), sku_b: stock(engine, ids, sku_b, 5)}
    order_id = ids.order("1")
    lines = [line("1", sku_a, 3), line("2", sku_b, 2)]
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, lines))
    events = engine.wait_events(order_id, lambda evs: decided(evs, {"1", "2"}), "both lines decided")
    assert {e["line_id"]: e["qty"] for e in of_type(events, "allocated")} == {"1": 3, "2": 2}
    held = {sku: engine.settled_availability(sku)["totals"] for sku in (sku_a, sku_b)}
    assert (held[sku_a]["available"], held[sku_b]["available"]) == (7, 3)

    cancel = engine.order(ids.event("cancel"), "cancelled", order_id, lines if listed else [])
    engine.send_orders(cancel)
    events = engine.wait_events(
        order_id,
        lambda evs: {e["line_id"] for e in of_type(evs, "released")} >= {"1", "2"},
        "both lines released",
    )

    released = of_type(events, "released")
    assert sorted((e["line_id"], e["sku"], e["qty"], e["location"], e["reason"]) for e in released) == [
        ("1", sku_a, 3, LOCATION, "cancelled"),
        ("2", sku_b, 2, LOCATION, "cancelled"),
    ]
    for sku in (sku_a, sku_b):
        assert balances(engine.settled_availability(sku)) == balances(before[sku])

    def every_line_released() -> bool:
        return any(
            all(row["status"] == "released" for row in status["lines"])
            for status in engine.statuses(order_id)
        )

    engine.wait(every_line_released, f"an order status with every line of {order_id} released")
    assert engine.settled_statuses(order_id)[-1]["status"] == "cancelled"


# ---------------------------------------------------------------- 3. fulfil


def test_pick_then_fulfil_depletes_on_hand_and_clears_allocated_and_picked(engine: EngineUnderTest) -> None:
    ids = Ids("fulfil")
    sku = ids.sku()
    stock(engine, ids, sku, 10)
    order_id = ids.order("1")
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, [line("1", sku, 3)]))
    engine.wait_events(order_id, lambda evs: bool(of_type(evs, "allocated")), "allocated")

    picked = engine.order(ids.event("picked"), "picked", order_id, [line("1", sku, 3, location=LOCATION)])
    engine.send_orders(picked)
    events = engine.wait_events(order_id, lambda evs: bool(of_type(evs, "picked")), "picked")
    assert [(e["qty"], e["location"]) for e in of_type(events, "picked")] == [(3, LOCATION)]
    row = location_row(engine.wait_stock(sku, picked["event_id"]))
    assert (row["on_hand"], row["allocated"], row["picked"], row["available"]) == (10, 0, 3, 7)

    fulfilled = engine.order(
        ids.event("fulfilled"), "fulfilled", order_id, [line("1", sku, 3, location=LOCATION)]
    )
    engine.send_orders(fulfilled)
    events = engine.wait_events(order_id, lambda evs: bool(of_type(evs, "fulfilled")), "fulfilled")
    assert [(e["qty"], e["location"]) for e in of_type(events, "fulfilled")] == [(3, LOCATION)]
    row = location_row(engine.wait_stock(sku, fulfilled["event_id"]))
    assert (row["on_hand"], row["allocated"], row["picked"], row["available"]) == (7, 0, 0, 7)

    def shipped() -> bool:
        return any(all(row["status"] == "fulfilled" for row in s["lines"]) for s in engine.statuses(order_id))

    engine.wait(shipped, f"an order status with {order_id} shipped")
    assert engine.settled_statuses(order_id)[-1]["status"] == "fulfilled"


# ---------------------------------------------------------------- 4. returns


def test_returned_units_wait_in_quality_control_until_inspected(engine: EngineUnderTest) -> None:
    ids = Ids("returns")
    sku = ids.sku()
    stock(engine, ids, sku, 10)
    order_id = ids.order("1")
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, [line("1", sku, 3)]))
    engine.wait_events(order_id, lambda evs: bool(of_type(evs, "allocated")), "allocated")
    fulfilled = engine.order(
        ids.event("fulfilled"), "fulfilled", order_id, [line("1", sku, 3, location=LOCATION)]
    )
    engine.send_orders(fulfilled)
    shipped = location_row(engine.wait_stock(sku, fulfilled["event_id"]))
    assert (shipped["on_hand"], shipped["available"], shipped["quality_control"]) == (7, 7, 0)

    returned = engine.order(
        ids.event("returned"), "returned", order_id, [line("1", sku, 2, location=LOCATION)]
    )
    engine.send_orders(returned)
    events = engine.wait_events(order_id, lambda evs: bool(of_type(evs, "returned")), "returned")
    assert [(e["qty"], e["location"]) for e in of_type(events, "returned")] == [(2, LOCATION)]
    row = location_row(engine.wait_stock(sku, returned["event_id"]))
    assert (row["quality_control"], row["on_hand"], row["available"], row["damaged"]) == (2, 7, 7, 0)

    passed = engine.inventory(ids.event("pass"), "inspected", sku, 1, result="pass")
    engine.send_inventory(passed)
    row = location_row(engine.wait_stock(sku, passed["event_id"]))
    assert (row["quality_control"], row["on_hand"], row["available"], row["damaged"]) == (1, 8, 8, 0)

    failed = engine.inventory(ids.event("fail"), "inspected", sku, 1, result="fail")
    engine.send_inventory(failed)
    row = location_row(engine.wait_stock(sku, failed["event_id"]))
    assert (row["quality_control"], row["on_hand"], row["available"], row["damaged"]) == (0, 8, 8, 1)


# ---------------------------------------------------------------- 5. ship-complete


def test_ship_complete_order_with_a_line_out_of_stock_releases_the_other_line(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("ship-complete")
    in_stock, out_of_stock = ids.sku("IN"), ids.sku("OUT")
    before = stock(engine, ids, in_stock, 5)
    stock(engine, ids, out_of_stock, 0, type_="counted")  # a known SKU with nothing on hand
    order_id = ids.order("1")
    lines = [line("1", in_stock, 2), line("2", out_of_stock, 1)]
    engine.send_orders(engine.order(ids.event("placed"), "placed", order_id, lines, ship_complete=True))

    def settled(evs: list[dict[str, Any]]) -> bool:
        return bool(of_type(evs, "rejected")) and any(e["line_id"] == "1" for e in of_type(evs, "released"))

    events = engine.wait_events(order_id, settled, "line 2 rejected and line 1 released")
    decisions = [e for e in events if e["type"] != "accepted"]
    assert sorted((e["line_id"], e["type"]) for e in decisions) == [
        ("1", "allocated"),
        ("1", "released"),
        ("2", "rejected"),
    ], events
    by_line = {(e["line_id"], e["type"]): e for e in decisions}
    assert by_line[("2", "rejected")]["reason"] == "insufficient_stock"
    assert (by_line[("1", "allocated")]["qty"], by_line[("1", "allocated")]["location"]) == (2, LOCATION)
    release = by_line[("1", "released")]
    assert (release["qty"], release["location"], release["reason"]) == (2, LOCATION, "ship_complete_failed")
    assert balances(engine.settled_availability(in_stock)) == balances(before)

    def every_line_final() -> bool:
        return any(
            {row["line_id"]: row["status"] for row in status["lines"]} == {"1": "released", "2": "rejected"}
            for status in engine.statuses(order_id)
        )

    engine.wait(every_line_final, f"an order status with both lines of {order_id} final")
    published = [status["status"] for status in engine.settled_statuses(order_id)]
    # all or nothing: not even for a moment partially allocated, while line 1's release is in flight
    assert published and set(published) == {"rejected"}, published


# ---------------------------------------------------------------- 6. repeats


@pytest.mark.smoke
def test_a_repeated_order_event_is_decided_once(engine: EngineUnderTest) -> None:
    ids = Ids("repeat")
    sku = ids.sku()
    stock(engine, ids, sku, 10)
    late, batched, marker = ids.order("late"), ids.order("batched"), ids.order("marker")
    placed = engine.order(ids.event("late"), "placed", late, [line("1", sku, 2)])
    engine.send_orders(placed)
    engine.wait_events(late, lambda evs: bool(of_type(evs, "allocated")), "allocated")

    # The same event again once decided (a channel retrying), and another sent twice at once.
    twice = engine.order(ids.event("batched"), "placed", batched, [line("1", sku, 4)])
    engine.send_orders(placed, twice, twice)
    for order_id in (late, batched):
        engine.wait_events(order_id, lambda evs: len(of_type(evs, "accepted")) == 2, "both copies taken in")
    # Intake wrote the repeats' requests before this marker's, on the SKU's one partition:
    # once the marker is decided, so are they.
    engine.send_orders(engine.order(ids.event("marker"), "placed", marker, [line("1", sku, 1)]))
    engine.wait_events(marker, lambda evs: bool(of_type(evs, "allocated")), "the marker allocated")

    for order_id, qty in ((late, 2), (batched, 4)):
        events = engine.allocations(order_id)
        decisions = of_type(events, "allocated", "rejected", "released")
        assert [(e["type"], e["qty"]) for e in decisions] == [("allocated", qty)], events
        accepted = of_type(events, "accepted")
        assert len({e["event_id"] for e in accepted}) == 1, "a repeat carries the same event id"
    totals = engine.settled_availability(sku)["totals"]
    assert (totals["on_hand"], totals["allocated"], totals["available"]) == (10, 7, 3)


# ---------------------------------------------------------------- 7. dead letters


def test_malformed_orders_go_to_the_dead_letter_topic_and_valid_ones_around_them_are_decided(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("malformed")
    sku = ids.sku()
    stock(engine, ids, sku, 10)
    first = engine.order(ids.event("first"), "placed", ids.order("first"), [line("1", sku, 1)])
    last = engine.order(ids.event("last"), "placed", ids.order("last"), [line("1", sku, 2)])
    not_json = b'{"event_id": "' + ids.event("broken").encode() + b'", "type": "placed", "lines": ['
    no_order_id = {k: v for k, v in first.items() if k != "order_id"} | {"event_id": ids.event("no-id")}
    no_order_id_bytes = json.dumps(no_order_id).encode()
    bad_key = ids.order("broken").encode()
    # All on one partition, in this order: the bad records sit between two good ones.
    engine.send_raw(
        engine.orders_topic,
        [
            (first["order_id"].encode(), json.dumps(first).encode()),
            (bad_key, not_json),
            (None, no_order_id_bytes),
            (last["order_id"].encode(), json.dumps(last).encode()),
        ],
        partition=0,
    )

    for order in (first, last):
        events = engine.wait_events(order["order_id"], lambda evs: decided(evs, {"1"}), "a decision")
        assert [(e["type"], e["qty"]) for e in of_type(events, "allocated", "rejected")] == [
            ("allocated", order["lines"][0]["qty"])
        ]

    ours = {not_json, no_order_id_bytes}
    letters: list[dict[str, Any]] = []

    def both_dead_lettered() -> bool:
        letters[:] = [letter for letter in engine.dead_letters() if letter["value"] in ours]
        return len(letters) >= 2

    engine.wait(both_dead_lettered, "two dead letters")
    by_value = {letter["value"]: letter for letter in letters}
    assert len(letters) == 2, letters
    broken, missing = by_value[not_json], by_value[no_order_id_bytes]
    for letter in (broken, missing):
        assert (letter["source_topic"], letter["partition"]) == (engine.orders_topic, 0)
    assert missing["offset"] == broken["offset"] + 1
    assert broken["key"] == bad_key and missing["key"] is None
    assert "invalid JSON" in broken["error"], broken["error"]
    assert "order_id" in missing["error"], missing["error"]
    assert engine.settled_availability(sku)["totals"]["allocated"] == 3


# ---------------------------------------------------------------- 8. operations metrics


def test_the_worker_exports_lag_per_owned_partition_its_last_commit_and_location_staleness(
    engine: EngineUnderTest, http_port: int
) -> None:
    """The series the alert rules (deploy/prometheus/alerts.yml) rest on, from a real consumer."""
    ids = Ids("ops-metrics")
    sku = ids.sku()
    stock(engine, ids, sku, 5)
    url = f"http://127.0.0.1:{http_port}/metrics"
    lag_prefix = f'streamalloc_consumer_lag{{partition="0",topic="{engine.orders_topic}"}} '
    deadline = time.monotonic() + 30  # the statistics come every 5 s
    while True:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - a local worker
            text = response.read().decode()
        lines = text.splitlines()
        lags = [line for line in lines if line.startswith(lag_prefix)]
        if lags and float(lags[0].split()[-1]) == 0.0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert lags == [lag_prefix + "0.0"], [line for line in lines if "consumer_lag" in line]
    # the allocator's inputs have their series too, and only this engine's topics do
    lag_topics = {
        line.split('topic="')[1].split('"')[0]
        for line in lines
        if line.startswith("streamalloc_consumer_lag{")
    }
    assert engine.inventory_topic in lag_topics, lag_topics
    assert all(topic.startswith(engine.settings.topic_prefix) for topic in lag_topics), lag_topics
    [last_commit] = [line for line in lines if line.startswith("streamalloc_last_commit_timestamp_seconds ")]
    assert time.time() - float(last_commit.split()[-1]) < 120
    assert f'streamalloc_location_stale{{location="{LOCATION}"}} 0.0' in lines
    assert "streamalloc_restoring 0.0" in lines
