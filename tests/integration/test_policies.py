"""Every allocation policy, through a running worker process against a real broker.

The domain tests (tests/unit/domain) pin each rule down with plain values; these check
that the running engine applies it end to end: tables read from the compacted topics,
commands through intake, decisions on `allocations`, balances on `availability`, stock
changes on `stock-changes`, timers and sweeps by punctuation. One worker serves the module
(`policy_engine`); each test keeps to its own SKUs and order ids, and the locations it
takes offline or lets go stale are its own. Channel pools fence units in every SKU, so they
run on an engine of their own (`pool_engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import TestBroker
from tests.integration.engine_helpers import EngineUnderTest, Ids, location_row, now_ms, of_type

pytestmark = pytest.mark.slow

DAY_MS = 86_400_000
LOCATIONS = [
    {"location_id": "P-EAST", "priority": 10, "region": "east"},
    {"location_id": "P-WEST", "priority": 5, "region": "west"},
    {"location_id": "P-BIG", "priority": 1, "region": "west"},
    {"location_id": "P-SAFE", "priority": 1, "safety_stock": 2},
    {"location_id": "P-FLAKY", "priority": 20, "region": "east"},  # taken offline by one test
    {"location_id": "P-STALE", "priority": 20, "freshness_limit_s": 3},  # left silent by one test
]
CHANNELS = [
    {"channel_id": "web", "priority": 10},
    {"channel_id": "store", "priority": 5},
    {"channel_id": "split", "priority": 5, "allow_split": True},
    {"channel_id": "guarded", "safety_stock": 1},
    {"channel_id": "backorders", "backorder_limit": 5},
    {"channel_id": "waits", "priority": 1, "waitlist": True},
    {"channel_id": "vip-waits", "priority": 9, "waitlist": True},
    {"channel_id": "fifo", "lot_policy": "FIFO"},
    {"channel_id": "lifo", "lot_policy": "LIFO"},
    {"channel_id": "yielding", "priority": 1, "priority_window_ms": 10_000},
    {"channel_id": "partial", "allow_partial": True},
    {"channel_id": "carts", "hold_ttl_s": 3},  # checkout holds live 3 s unless the event says
]


def _engine(
    kafka_broker: TestBroker, tmp: Path, locations: list[dict[str, Any]], channels: list[dict[str, Any]]
) -> Iterator[EngineUnderTest]:
    under_test = EngineUnderTest(kafka_broker.settings(state_dir=tmp / "state"), tmp, locations, channels)
    try:
        under_test.prepare()
        under_test.start()
        yield under_test
        worker = under_test.worker
        assert worker is not None
        code = worker.terminate()
        assert code == 0, f"worker exited with {code} on SIGTERM:\n{worker.log()[-4000:]}"
    finally:
        under_test.close()


@pytest.fixture(scope="module")
def policy_engine(
    kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineUnderTest]:
    yield from _engine(kafka_broker, tmp_path_factory.mktemp("policies"), LOCATIONS, CHANNELS)


@pytest.fixture
def engine(policy_engine: EngineUnderTest) -> Iterator[EngineUnderTest]:
    yield policy_engine
    worker = policy_engine.worker
    assert worker is not None and worker.alive(), (
        f"the worker died:\n{worker.log()[-4000:] if worker else ''}"
    )


# ---------------------------------------------------------------- helpers


def line(line_id: str, sku: str, qty: int, **fields: Any) -> dict[str, Any]:
    return {"line_id": line_id, "sku": sku, "qty": qty, **fields}


def inventory(
    engine: EngineUnderTest, ids: Ids, name: str, type_: str, sku: str, qty: int, location: str, **fields: Any
) -> dict[str, Any]:
    """Publish one inventory event and wait for the availability it caused; return that."""
    event = engine.inventory(ids.event(name), type_, sku, qty, location=location, **fields)
    engine.send_inventory(event)
    return engine.wait_stock(sku, event["event_id"])


def place(
    engine: EngineUnderTest,
    ids: Ids,
    name: str,
    lines: list[dict[str, Any]],
    channel: str = "web",
    **fields: Any,
) -> list[dict[str, Any]]:
    """Place an order and wait until each of its lines has a first decision; return its events."""
    order_id = ids.order(name)
    engine.send_orders(engine.order(ids.event(name), "placed", order_id, lines, channel=channel, **fields))
    wanted = {entry["line_id"] for entry in lines}
    return engine.wait_events(order_id, lambda evs: first_decided(evs) >= wanted, "every line decided")


def send(
    engine: EngineUnderTest, ids: Ids, name: str, type_: str, order: str, lines: list[dict[str, Any]]
) -> str:
    """Publish a later event of an order (picked, cancelled, fulfilled, returned); its event id."""
    event = engine.order(ids.event(name), type_, ids.order(order), lines)
    engine.send_orders(event)
    return str(event["event_id"])


def first_decided(events: list[dict[str, Any]]) -> set[str]:
    return {e["line_id"] for e in of_type(events, "allocated", "rejected", "backordered")}


def caused_by(events: list[dict[str, Any]], cause: str) -> list[tuple[str, int, str | None, str | None]]:
    """(type, qty, location, reason) of the events `cause` produced, in order."""
    return [(e["type"], e["qty"], e["location"], e["reason"]) for e in events if e["cause_event_id"] == cause]


def wait_caused(
    engine: EngineUnderTest, ids: Ids, order: str, cause: str, done: Callable[[list[Any]], bool]
) -> list[Any]:
    events = engine.wait_events(
        ids.order(order), lambda evs: done(caused_by(evs, cause)), f"events of {cause}"
    )
    return caused_by(events, cause)


def settled_row(engine: EngineUnderTest, sku: str, location: str) -> dict[str, Any]:
    return location_row(engine.settled_availability(sku), location)


def ats(availability: dict[str, Any]) -> dict[str, int]:
    return {c["channel"]: c["ats"] for c in availability["channels"]}


# ---------------------------------------------------------------- 1. hard allocation


def test_a_pick_elsewhere_moves_the_allocation_if_stock_allows_else_it_is_refused(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("pick-moves")
    sku = ids.sku()
    inventory(engine, ids, "east", "received", sku, 5, "P-EAST")
    inventory(engine, ids, "west", "received", sku, 5, "P-WEST")
    placed = place(engine, ids, "1", [line("1", sku, 2)])
    assert [(e["type"], e["location"]) for e in of_type(placed, "allocated")] == [("allocated", "P-EAST")]

    pick = send(engine, ids, "pick-1", "picked", "1", [line("1", sku, 2, location="P-WEST")])
    moved = wait_caused(engine, ids, "1", pick, lambda evs: any(e[0] == "picked" for e in evs))
    assert moved == [("released", 2, "P-EAST", "reallocated"), ("picked", 2, "P-WEST", None)]
    east, west = settled_row(engine, sku, "P-EAST"), settled_row(engine, sku, "P-WEST")
    assert (east["allocated"], east["picked"], east["available"]) == (0, 0, 5)
    assert (west["allocated"], west["picked"], west["available"]) == (0, 2, 3)

    place(engine, ids, "2", [line("1", sku, 4)])  # at P-EAST: 5 available there
    refused = send(engine, ids, "pick-2", "picked", "2", [line("1", sku, 4, location="P-WEST")])
    assert wait_caused(engine, ids, "2", refused, bool) == [("rejected", 4, "P-WEST", "insufficient_stock")]
    east = settled_row(engine, sku, "P-EAST")
    assert (east["allocated"], east["picked"]) == (4, 0), "a refused pick leaves the allocation where it was"


# ---------------------------------------------------------------- 2. lots


def test_lots_are_drawn_by_each_channels_rotation_and_an_expired_lot_never_is(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("lots")
    sku = ids.sku()
    now = now_ms()
    for n, (lot, expires_in) in enumerate(
        (("OLD", -DAY_MS), ("A", 30 * DAY_MS), ("B", 2 * DAY_MS), ("C", 60 * DAY_MS))
    ):
        # received in this order (OLD first); OLD expired yesterday
        inventory(
            engine, ids, f"lot-{lot}", "received", sku, 4, "P-EAST",
            occurred_at=now - 4000 + 1000 * n, lot={"lot_id": lot, "expires_at": now + expires_in},
        )  # fmt: skip
    lots = {}
    for channel in ("web", "fifo", "lifo"):  # web: the default, FEFO
        events = place(engine, ids, channel, [line("1", sku, 2)], channel=channel)
        lots[channel] = [(e["lot"], e["qty"]) for e in of_type(events, "allocated")]
    assert lots == {"web": [("B", 2)], "fifo": [("A", 2)], "lifo": [("C", 2)]}

    row = settled_row(engine, sku, "P-EAST")
    assert (row["on_hand"], row["allocated"], row["expired"], row["available"]) == (16, 6, 4, 6)
    too_many = place(engine, ids, "too-many", [line("1", sku, 7)])
    assert [(e["type"], e["reason"]) for e in of_type(too_many, "allocated", "rejected")] == [
        ("rejected", "insufficient_stock")
    ], "the expired lot's units are on hand but never allocated"

    pick = send(engine, ids, "pick-a", "picked", "web", [line("1", sku, 2, location="P-EAST", lot="A")])
    assert wait_caused(engine, ids, "web", pick, bool) == [("picked", 2, "P-EAST", None)]
    picked = [e for e in engine.allocations(ids.order("web")) if e["cause_event_id"] == pick]
    assert picked[0]["lot"] == "A", "the pick names the lot it took, and the units count against it"
    expired = send(
        engine, ids, "pick-old", "picked", "fifo", [line("1", sku, 2, location="P-EAST", lot="OLD")]
    )
    assert wait_caused(engine, ids, "fifo", expired, bool) == [("rejected", 2, "P-EAST", "lot_unavailable")]


# ---------------------------------------------------------------- 3. safety stock


def test_location_and_channel_safety_stock_are_held_back(engine: EngineUnderTest) -> None:
    ids = Ids("safety")
    sku = ids.sku()
    stocked = inventory(engine, ids, "recv", "received", sku, 10, "P-SAFE")
    row = location_row(stocked, "P-SAFE")
    assert (row["safety_stock"], row["available"]) == (2, 8)
    assert (ats(stocked)["web"], ats(stocked)["guarded"]) == (8, 7)

    decided = place(engine, ids, "g1", [line("1", sku, 8)], channel="guarded")
    assert [(e["type"], e["reason"]) for e in of_type(decided, "allocated", "rejected")] == [
        ("rejected", "insufficient_stock")
    ]
    assert of_type(place(engine, ids, "g2", [line("1", sku, 7)], channel="guarded"), "allocated")
    assert of_type(place(engine, ids, "w1", [line("1", sku, 2)]), "rejected")
    assert of_type(place(engine, ids, "w2", [line("1", sku, 1)]), "allocated")
    row = settled_row(engine, sku, "P-SAFE")
    assert (row["on_hand"], row["allocated"], row["available"]) == (10, 8, 0)


# ---------------------------------------------------------------- 4. channel pools


@pytest.fixture(scope="module")
def pool_engine(
    kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineUnderTest]:
    channels = [
        {"channel_id": "pooled", "pool_share": 0.5},
        {"channel_id": "small", "pool_share": 0.2},
        {"channel_id": "open"},
    ]
    yield from _engine(kafka_broker, tmp_path_factory.mktemp("pools"), LOCATIONS[:1], channels)


def test_a_channel_pool_is_fenced_from_the_others_and_re_divided_by_a_receipt(
    pool_engine: EngineUnderTest,
) -> None:
    engine, ids = pool_engine, Ids("pools")
    sku = ids.sku()
    stocked = inventory(engine, ids, "recv-1", "received", sku, 10, "P-EAST")
    assert ats(stocked) == {"pooled": 5, "small": 2, "open": 3}

    def outcome(name: str, channel: str, qty: int) -> str:
        events = place(engine, ids, name, [line("1", sku, qty)], channel=channel)
        return str(of_type(events, "allocated", "rejected")[0]["type"])

    assert outcome("o1", "open", 4) == "rejected"  # 3 are not fenced by a pool
    assert outcome("o2", "open", 3) == "allocated"
    assert outcome("o3", "open", 1) == "rejected"  # the rest is the pools'
    assert outcome("p1", "pooled", 5) == "allocated"
    assert outcome("p2", "pooled", 1) == "rejected"  # its pool is used up
    assert outcome("s1", "small", 2) == "allocated"
    assert engine.settled_availability(sku)["totals"]["available"] == 0

    restocked = inventory(engine, ids, "recv-2", "received", sku, 10, "P-EAST")
    # 20 sellable: pooled owns 10 (5 used), small 4 (2 used); open has what no pool fences
    assert ats(restocked) == {"pooled": 5, "small": 2, "open": 3}


# ---------------------------------------------------------------- 4b. protection levels


@pytest.fixture(scope="module")
def protection_engine(
    kafka_broker: TestBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineUnderTest]:
    # A protection level binds every lower channel in every SKU: an engine of its own.
    channels = [
        {"channel_id": "web", "priority": 10, "protected_units": 3},
        {"channel_id": "store", "priority": 5},
        {"channel_id": "waits", "priority": 1, "waitlist": True},
    ]
    yield from _engine(kafka_broker, tmp_path_factory.mktemp("protection"), LOCATIONS[:1], channels)


def test_a_protection_level_keeps_units_for_web_and_a_waiting_line_is_filled_above_it(
    protection_engine: EngineUnderTest,
) -> None:
    engine, ids = protection_engine, Ids("protection")
    sku = ids.sku()
    stocked = inventory(engine, ids, "recv-1", "received", sku, 8, "P-EAST")
    assert ats(stocked) == {"web": 8, "store": 5, "waits": 5}  # web's 3 kept from the others

    def first(name: str, channel: str, qty: int) -> tuple[str, str | None]:
        events = place(engine, ids, name, [line("1", sku, qty)], channel=channel)
        decided = of_type(events, "allocated", "rejected", "backordered")[0]
        return decided["type"], decided["reason"]

    assert first("s1", "store", 4) == ("allocated", None)
    assert first("s2", "store", 2) == ("rejected", "protected_for_priority")  # 4 left, 3 kept
    assert first("s3", "store", 9) == ("rejected", "insufficient_stock")  # not there at all
    assert first("q1", "waits", 2) == ("backordered", "waitlisted")  # waits instead
    assert first("w1", "web", 3) == ("allocated", None)  # the kept units are web's
    row = settled_row(engine, sku, "P-EAST")
    assert (row["on_hand"], row["allocated"], row["available"]) == (8, 7, 1)

    receipt = inventory(engine, ids, "recv-2", "received", sku, 4, "P-EAST")
    # 5 available, 3 kept for web: the waiting line gets its 2 in the receipt's decision
    assert wait_caused(engine, ids, "q1", receipt["cause_event_id"], bool) == [
        ("allocated", 2, "P-EAST", None)
    ]
    settled = engine.settled_availability(sku)
    assert (settled["totals"]["available"], settled["totals"]["waiting_lines"]) == (3, 0)
    assert ats(settled) == {"web": 3, "store": 0, "waits": 0}


# ---------------------------------------------------------------- 5. backorders


def test_backorders_are_accepted_up_to_the_incoming_units_and_the_limit_and_filled_on_receipt(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("backorders")
    sku = ids.sku()
    inventory(engine, ids, "recv", "received", sku, 1, "P-EAST")
    expected = inventory(engine, ids, "po", "expected", sku, 10, "P-EAST", eta=now_ms() + DAY_MS)
    assert location_row(expected, "P-EAST")["incoming"] == 10

    def decision(name: str, qty: int) -> tuple[str, str | None]:
        events = place(engine, ids, name, [line("1", sku, qty)], channel="backorders")
        first = of_type(events, "allocated", "rejected", "backordered")[0]
        return first["type"], first["reason"]

    assert decision("o1", 1) == ("allocated", None)
    assert decision("o2", 3) == ("backordered", "incoming")
    assert decision("o3", 6) == ("rejected", "insufficient_stock")  # beyond the channel's limit of 5
    assert decision("o4", 5) == ("backordered", "incoming")
    assert decision("o5", 3) == ("rejected", "insufficient_stock")  # 8 + 3 would exceed the 10 incoming
    waiting = engine.settled_availability(sku)["totals"]
    assert (waiting["backordered"], waiting["waiting_lines"], waiting["incoming"]) == (8, 2, 10)
    engine.wait(
        lambda: any(s["status"] == "backordered" for s in engine.statuses(ids.order("o2"))),
        "order-status backordered for o2",
    )

    arrived = inventory(engine, ids, "po-in", "received", sku, 10, "P-EAST")
    for order, qty in (("o2", 3), ("o4", 5)):
        filled = wait_caused(engine, ids, order, arrived["cause_event_id"], bool)
        assert filled == [("allocated", qty, "P-EAST", None)]
    totals = arrived["totals"]
    assert (totals["on_hand"], totals["allocated"], totals["available"]) == (11, 9, 2)
    assert (totals["backordered"], totals["waiting_lines"], totals["incoming"]) == (0, 0, 0)


def test_a_transfer_in_transit_backs_a_backorder_at_its_destination_and_fills_it_on_arrival(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("transfers")
    sku = ids.sku()
    transfer, eta = ids.event("transfer"), now_ms() + DAY_MS
    inventory(engine, ids, "recv", "received", sku, 4, "P-WEST")
    shipped = inventory(
        engine, ids, "ship", "transfer_shipped", sku, 4, "P-WEST", destination="P-EAST", transfer_id=transfer,
        eta=eta,
    )  # fmt: skip
    east, west = location_row(shipped, "P-EAST"), location_row(shipped, "P-WEST")
    assert (west["on_hand"], east["on_hand"], east["in_transit"], shipped["totals"]["available"]) == (
        0,
        0,
        4,
        0,
    )
    assert east["oldest_transfer_age_s"] >= 0 and shipped["totals"]["in_transit"] == 4

    # a store pickup at the destination, with nothing on hand anywhere: it waits on the transfer
    events = place(engine, ids, "o1", [line("1", sku, 3, location="P-EAST")], channel="backorders")
    first = of_type(events, "allocated", "rejected", "backordered")[0]
    assert (first["type"], first["reason"], first["promised_at"]) == ("backordered", "incoming", eta)
    web_atp = {c["channel"]: c["atp"] for c in engine.settled_availability(sku)["channels"]}["web"]
    assert web_atp == [{"until": eta, "units": 1}]  # 4 on their way, 3 of them promised

    # the transfer is late: shipped again under its id with a new ETA, the promise moves with it
    later = eta + DAY_MS
    moved = inventory(
        engine, ids, "late", "transfer_shipped", sku, 4, "P-WEST", destination="P-EAST", transfer_id=transfer,
        eta=later,
    )  # fmt: skip
    restated = wait_caused(engine, ids, "o1", moved["cause_event_id"], bool)
    assert restated == [("backordered", 3, None, "incoming")]
    [told] = [
        e for e in engine.allocations(ids.order("o1")) if e["cause_event_id"] == moved["cause_event_id"]
    ]
    assert told["promised_at"] == later
    assert location_row(moved, "P-EAST")["in_transit"] == 4  # nothing shipped twice

    arrived = inventory(engine, ids, "arrive", "transfer_received", sku, 3, "P-EAST", transfer_id=transfer)
    assert wait_caused(engine, ids, "o1", arrived["cause_event_id"], bool) == [
        ("allocated", 3, "P-EAST", None)
    ]
    east = location_row(arrived, "P-EAST")
    assert (east["on_hand"], east["allocated"], east["in_transit"], east["oldest_transfer_age_s"]) == (
        3,
        3,
        0,
        0.0,
    )
    assert arrived["totals"]["backordered"] == 0

    # the ledger has both legs of each step, under the transfer's id; the short unit is lost
    def legs() -> list[tuple[str, str, int, int]]:
        return [
            (c["location"], c["reason"], c["on_hand_delta"], c["in_transit_delta"])
            for c in engine.stock_changes(sku)
            if c["transfer_id"] == transfer
        ]

    engine.wait(lambda: len(legs()) == 5, "the transfer's five ledger entries")
    assert legs() == [
        ("P-WEST", "transfer_shipped", -4, 0),
        ("P-EAST", "in_transit", 0, 4),
        ("P-EAST", "transfer_eta_changed", 0, 0),
        ("P-EAST", "transfer_received", 3, -3),
        ("P-EAST", "lost_in_transit", 0, -1),
    ]


# ---------------------------------------------------------------- 6. the waitlist


def test_the_waitlist_fills_itself_in_priority_order_from_receipts_releases_and_inspections(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("waitlist")
    sku = ids.sku()
    inventory(engine, ids, "count", "counted", sku, 0, "P-EAST")  # a known SKU with nothing on hand
    for name, channel, priority in (("a", "waits", 0), ("b", "vip-waits", 0), ("c", "waits", 3)):
        events = place(engine, ids, name, [line("1", sku, 1)], channel=channel, priority=priority)
        assert [(e["type"], e["reason"]) for e in of_type(events, "backordered")] == [
            ("backordered", "waitlisted")
        ]
    assert of_type(place(engine, ids, "d", [line("1", sku, 1)]), "rejected"), "web does not wait"

    receipt = inventory(engine, ids, "recv", "received", sku, 2, "P-EAST")
    # order priority first (c), then channel priority (b over a); in the receipt's own decision
    for order in ("c", "b"):
        assert wait_caused(engine, ids, order, receipt["cause_event_id"], bool) == [
            ("allocated", 1, "P-EAST", None)
        ]
    totals = receipt["totals"]
    assert (totals["allocated"], totals["available"], totals["waiting_lines"]) == (2, 0, 1)

    cancel = send(engine, ids, "cancel-c", "cancelled", "c", [line("1", sku, 1)])
    assert wait_caused(engine, ids, "a", cancel, bool) == [("allocated", 1, "P-EAST", None)]
    assert engine.settled_availability(sku)["totals"]["available"] == 0

    place(engine, ids, "e", [line("1", sku, 1)], channel="waits")
    send(engine, ids, "rma", "returned", "legacy", [line("1", sku, 1, location="P-EAST")])
    engine.wait(
        lambda: any(location_row(a, "P-EAST")["quality_control"] == 1 for a in engine.availabilities(sku)),
        "the return in QC",
    )
    passed = inventory(engine, ids, "qc", "inspected", sku, 1, "P-EAST", result="pass")
    assert wait_caused(engine, ids, "e", passed["cause_event_id"], bool) == [("allocated", 1, "P-EAST", None)]
    assert (passed["totals"]["quality_control"], passed["totals"]["available"]) == (0, 0)


# ---------------------------------------------------------------- 7. reservation expiry


def test_an_unpicked_reservation_expires_and_a_picked_one_stays(engine: EngineUnderTest) -> None:
    ids = Ids("expiry")
    sku = ids.sku()
    inventory(engine, ids, "recv", "received", sku, 5, "P-EAST")
    place(engine, ids, "lapses", [line("1", sku, 2)], reservation_ttl_s=2)
    place(engine, ids, "picked", [line("1", sku, 1)], reservation_ttl_s=2)
    send(engine, ids, "pick", "picked", "picked", [line("1", sku, 1, location="P-EAST")])

    def expired(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == "released" and e["reason"] == "expired" for e in events)

    events = engine.wait_events(ids.order("lapses"), expired, "the reservation expired")
    release = of_type(events, "released")
    assert [(e["qty"], e["location"], e["reason"]) for e in release] == [(2, "P-EAST", "expired")]
    assert release[0]["cause_event_id"].startswith("clock:expiry:")
    after = engine.wait_stock(sku, release[0]["cause_event_id"])
    row = location_row(after, "P-EAST")
    assert (row["allocated"], row["picked"], row["available"]) == (0, 1, 4)
    assert row["allocation_age_s"] > 0, "the picked unit's age is part of the availability record"
    assert not of_type(engine.allocations(ids.order("picked")), "released")


def test_reservation_timers_survive_a_kill_and_a_rebalance(engine: EngineUnderTest) -> None:
    ids = Ids("timers")
    skus = [ids.sku(str(n)) for n in range(4)]  # spread over the partitions
    for n, sku in enumerate(skus):
        inventory(engine, ids, f"recv-{n}", "received", sku, 3, "P-EAST")
        place(engine, ids, f"o{n}", [line("1", sku, 1)], reservation_ttl_s=10)
    original = engine.worker
    assert original is not None
    original.kill9()  # its timers now exist only as committed state and changelog
    restarted = engine.start("worker-restarted", state="state")
    second = engine.start("worker-second", state="state-second")

    def owns_requests() -> bool:
        return any('"assigned"' in row and "allocation-requests[" in row for row in second.log().splitlines())

    engine.wait(owns_requests, "the second worker taking partitions", timeout_s=30)
    assert restarted.terminate() == 0  # leaves the group: the second worker takes every partition
    for n in range(len(skus)):
        events = engine.wait_events(
            ids.order(f"o{n}"),
            lambda evs: any(e["reason"] == "expired" for e in of_type(evs, "released")),
            "the reservation expired after the kill and the rebalance",
        )
        releases = {e["event_id"]: e for e in of_type(events, "released")}
        assert [(e["qty"], e["reason"]) for e in releases.values()] == [(1, "expired")], (
            "expired exactly once"
        )
    assert engine.worker is second  # it serves the rest of the module


# ---------------------------------------------------------------- 8. a location going offline


def test_a_location_going_offline_moves_or_releases_its_soft_allocations_and_coming_back_fills_the_waitlist(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("offline")
    sku = ids.sku()
    inventory(engine, ids, "east", "received", sku, 2, "P-EAST")
    inventory(engine, ids, "flaky", "received", sku, 6, "P-FLAKY")
    place(engine, ids, "1", [line("1", sku, 2)])
    place(engine, ids, "2", [line("1", sku, 1)])
    pick = send(engine, ids, "pick-2", "picked", "2", [line("1", sku, 1, location="P-FLAKY")])
    wait_caused(engine, ids, "2", pick, bool)
    place(engine, ids, "3", [line("1", sku, 2)], channel="waits")
    place(engine, ids, "4", [line("1", sku, 1)])
    row = settled_row(engine, sku, "P-FLAKY")
    assert (row["allocated"], row["picked"], row["available"]) == (5, 1, 0)

    flaky = next(loc for loc in LOCATIONS if loc["location_id"] == "P-FLAKY")
    engine.publish("locations", {**flaky, "status": "offline"})
    try:

        def swept(evs: list[dict[str, Any]]) -> bool:
            return any(e["cause_event_id"].startswith("locations:P-FLAKY:offline") for e in evs)

        moved = {n: engine.wait_events(ids.order(n), swept, "the offline sweep") for n in ("1", "3", "4")}
        cause = next(e["cause_event_id"] for e in moved["1"] if swept([e]))
        assert caused_by(moved["1"], cause) == [
            ("released", 2, "P-FLAKY", "reallocated"),
            ("reallocated", 2, "P-EAST", "location_offline"),
        ]
        assert caused_by(moved["3"], cause) == [
            ("released", 2, "P-FLAKY", "reallocated"),
            ("backordered", 2, None, "waitlisted"),
        ], "nowhere else has stock: its channel lets it wait"
        assert caused_by(moved["4"], cause) == [("released", 1, "P-FLAKY", "location_offline")]
        assert not caused_by(engine.allocations(ids.order("2")), cause), "a hard allocation stays"
        down = location_row(engine.wait_stock(sku, cause), "P-FLAKY")
        assert (down["status"], down["allocated"], down["picked"], down["at_risk"], down["available"]) == (
            "offline", 0, 1, 1, 0,
        )  # fmt: skip
        late = place(engine, ids, "5", [line("1", sku, 1)])
        assert [(e["type"], e["reason"]) for e in of_type(late, "allocated", "rejected")] == [
            ("rejected", "insufficient_stock")
        ]
    finally:
        engine.publish("locations", flaky)

    def filled(evs: list[dict[str, Any]]) -> bool:
        return any(e["cause_event_id"].startswith("locations:P-FLAKY:online") for e in evs)

    back = engine.wait_events(ids.order("3"), filled, "the waitlist served when the location came back")
    cause = next(e["cause_event_id"] for e in back if filled([e]))
    assert caused_by(back, cause) == [("allocated", 2, "P-FLAKY", None)]
    up = location_row(engine.wait_stock(sku, cause), "P-FLAKY")
    assert (up["status"], up["allocated"], up["picked"], up["at_risk"], up["available"]) == (
        "online",
        2,
        1,
        0,
        3,
    )


# ---------------------------------------------------------------- 9. a stale location


def test_a_location_whose_feed_goes_silent_is_stale_until_it_reports_again(engine: EngineUnderTest) -> None:
    ids = Ids("stale")
    sku = ids.sku()
    inventory(engine, ids, "east", "received", sku, 3, "P-EAST")
    inventory(engine, ids, "stale", "received", sku, 3, "P-STALE")
    placed = place(engine, ids, "1", [line("1", sku, 2)])
    assert [e["location"] for e in of_type(placed, "allocated")] == ["P-STALE"]

    def went_stale(evs: list[dict[str, Any]]) -> bool:
        return any(e["cause_event_id"].startswith("locations:P-STALE:stale") for e in evs)

    events = engine.wait_events(
        ids.order("1"),
        went_stale,
        "P-STALE going stale",
    )
    cause = next(e["cause_event_id"] for e in events if went_stale([e]))
    assert caused_by(events, cause) == [
        ("released", 2, "P-STALE", "reallocated"),
        ("reallocated", 2, "P-EAST", "location_stale"),
    ]
    stale = location_row(engine.wait_stock(sku, cause), "P-STALE")
    assert (stale["status"], stale["available"], stale["on_hand"]) == ("stale", 0, 3)

    event = engine.inventory(ids.event("heartbeat"), "counted", sku, 3, location="P-STALE")
    engine.send_inventory(event)
    engine.wait(
        lambda: any(
            a["cause_event_id"].startswith("locations:P-STALE:online") for a in engine.availabilities(sku)
        ),
        "P-STALE back online once it reported again",
    )
    row = settled_row(engine, sku, "P-STALE")
    assert (row["status"], row["available"]) == ("online", 3)


# ---------------------------------------------------------------- 10. simultaneous requests


@pytest.mark.parametrize(("first", "winner"), [("store", "store"), ("yielding", "web")])
def test_of_two_simultaneous_requests_arrival_wins_unless_the_first_channel_yields_to_priority(
    engine: EngineUnderTest, first: str, winner: str
) -> None:
    import json

    ids = Ids(f"contend-{first}")
    sku = ids.sku()
    inventory(engine, ids, "recv", "received", sku, 1, "P-EAST")
    at = now_ms()
    early = engine.order(
        ids.event("early"), "placed", ids.order("early"), [line("1", sku, 1)], channel=first, occurred_at=at
    )
    late = engine.order(
        ids.event("late"), "placed", ids.order("late"), [line("1", sku, 1)], channel="web", occurred_at=at + 5
    )
    # one partition, in this order, in one flush: the engine takes them in together
    engine.send_raw(
        engine.orders_topic,
        [(o["order_id"].encode(), json.dumps(o).encode()) for o in (early, late)],
        partition=0,
    )
    outcome = {}
    for order in (early, late):
        events = engine.wait_events(order["order_id"], lambda evs: bool(first_decided(evs)), "a decision")
        outcome[order["channel"]] = of_type(events, "allocated", "rejected")[0]["type"]
    assert outcome[winner] == "allocated"
    assert sorted(outcome.values()) == ["allocated", "rejected"]


# ---------------------------------------------------------------- 11. split


def test_a_splitting_channel_uses_the_fewest_locations_and_others_never_split(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("split")
    sku = ids.sku()
    for location, qty in (("P-EAST", 3), ("P-WEST", 4), ("P-BIG", 6)):
        inventory(engine, ids, location, "received", sku, qty, location)
    events = place(engine, ids, "1", [line("1", sku, 8)], channel="split")
    assert [(e["location"], e["qty"]) for e in of_type(events, "allocated")] == [("P-EAST", 3), ("P-BIG", 5)]
    web = place(engine, ids, "2", [line("1", sku, 5)])  # 4 and 1 are left: web does not split
    assert [(e["type"], e["reason"]) for e in of_type(web, "allocated", "rejected")] == [
        ("rejected", "insufficient_stock")
    ]
    one = place(engine, ids, "3", [line("1", sku, 4)], channel="split")
    assert [(e["location"], e["qty"]) for e in of_type(one, "allocated")] == [("P-WEST", 4)]
    engine.wait(
        lambda: any(s["status"] == "allocated" for s in engine.statuses(ids.order("1"))),
        "a split line's order reads allocated",
    )


# ---------------------------------------------------------------- 12. counts and adjustments


def test_a_count_below_what_is_held_moves_or_releases_soft_allocations_never_oversells(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("count")
    sku = ids.sku()
    inventory(engine, ids, "east", "received", sku, 5, "P-EAST")
    inventory(engine, ids, "west", "received", sku, 2, "P-WEST")
    place(engine, ids, "a", [line("1", sku, 2)])
    place(engine, ids, "b", [line("1", sku, 2)])
    place(engine, ids, "c", [line("1", sku, 1)])
    pick = send(engine, ids, "pick-c", "picked", "c", [line("1", sku, 1, location="P-EAST")])
    wait_caused(engine, ids, "c", pick, bool)

    counted = inventory(engine, ids, "cycle", "counted", sku, 2, "P-EAST", reason="cycle count")
    cause = counted["cause_event_id"]
    assert wait_caused(engine, ids, "b", cause, bool) == [
        ("released", 2, "P-EAST", "reallocated"),
        ("reallocated", 2, "P-WEST", "count_shortage"),
    ], "the newest soft allocation moves first"
    assert wait_caused(engine, ids, "a", cause, bool) == [("released", 2, "P-EAST", "count_shortage")]
    east, west = location_row(counted, "P-EAST"), location_row(counted, "P-WEST")
    assert (east["on_hand"], east["allocated"], east["picked"], east["available"]) == (2, 0, 1, 1)
    assert (west["on_hand"], west["allocated"], west["available"]) == (2, 2, 0)

    adjusted = inventory(engine, ids, "broken", "adjusted", sku, -1, "P-EAST", reason="damaged in handling")
    ledger = engine.stock_changes(sku)
    by_cause = {e["cause_event_id"]: e for e in ledger}
    count = by_cause[cause]
    assert (count["reason"], count["on_hand_delta"], count["on_hand"], count["location"]) == (
        "cycle count",
        -3,
        2,
        "P-EAST",
    )
    adjust = by_cause[adjusted["cause_event_id"]]
    assert (adjust["reason"], adjust["on_hand_delta"], adjust["on_hand"]) == ("damaged in handling", -1, 1)
    assert {e["cause_event_id"] for e in ledger} >= {
        ids.event(n) for n in ("east", "west", "cycle", "broken")
    }


# ---------------------------------------------------------------- 13. partial allocation


def test_a_partial_channel_allocates_what_is_there_and_the_waitlist_fills_the_rest(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("partial")
    sku = ids.sku()
    inventory(engine, ids, "west", "received", sku, 3, "P-WEST")

    def placed_in_part(order: str, qty: int) -> list[tuple[str, int, str | None, str | None]]:
        """Place a partial channel's line; its placement's line decisions, once the rest waits."""
        place(engine, ids, order, [line("1", sku, qty)], channel="partial")
        decided = wait_caused(
            engine, ids, order, ids.event(order), lambda evs: any(e[0] == "backordered" for e in evs)
        )
        return [e for e in decided if e[0] != "accepted"]

    assert placed_in_part("1", 5) == [
        ("allocated", 3, "P-WEST", None),
        ("backordered", 2, None, "waitlisted"),
    ]

    def line_status(order: str, status: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def done() -> bool:
            found[:] = [s for s in engine.statuses(ids.order(order)) if s["status"] == status]
            return bool(found)

        engine.wait(done, f"order-status {status} for {order}")
        return dict(found[-1]["lines"][0])

    row = line_status("1", "partially_allocated")
    assert (row["status"], row["qty"], row["allocated"]) == ("partially_allocated", 5, 3)

    first = inventory(engine, ids, "east-1", "received", sku, 1, "P-EAST")  # short of the rest
    assert wait_caused(engine, ids, "1", first["cause_event_id"], lambda evs: len(evs) == 2) == [
        ("allocated", 1, "P-EAST", None),
        ("backordered", 1, None, "waitlisted"),
    ]
    second = inventory(engine, ids, "east-2", "received", sku, 4, "P-EAST")
    assert wait_caused(engine, ids, "1", second["cause_event_id"], bool) == [("allocated", 1, "P-EAST", None)]
    row = line_status("1", "allocated")  # units from three decisions, at two locations
    assert (row["status"], row["qty"], row["allocated"]) == ("allocated", 5, 5)
    assert (second["totals"]["allocated"], second["totals"]["waiting_lines"]) == (5, 0)

    # 3 left at P-EAST: a line of 6 takes them and waits for 3; its cancel gives them back
    assert placed_in_part("2", 6) == [
        ("allocated", 3, "P-EAST", None),
        ("backordered", 3, None, "waitlisted"),
    ]
    cancel = send(engine, ids, "cancel-2", "cancelled", "2", [line("1", sku, 6)])
    assert wait_caused(engine, ids, "2", cancel, bool) == [("released", 3, "P-EAST", "cancelled")]
    line_status("2", "cancelled")
    east = settled_row(engine, sku, "P-EAST")
    assert (east["on_hand"], east["allocated"], east["available"]) == (5, 2, 3)
    assert engine.settled_availability(sku)["totals"]["waiting_lines"] == 0


# ---------------------------------------------------------------- 13b. checkout holds


def test_a_checkout_hold_confirmed_keeps_its_units_and_one_left_alone_expires(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("holds")
    sku = ids.sku()
    inventory(engine, ids, "recv", "received", sku, 6, "P-EAST")

    def cart_event(name: str, type_: str, cart: str, qty: int, **fields: Any) -> dict[str, Any]:
        lines = [line("1", sku, qty)]
        return engine.order(ids.event(name), type_, ids.order(cart), lines, "carts", **fields)

    def status_of(cart: str, status: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def done() -> bool:
            found[:] = [s for s in engine.statuses(ids.order(cart)) if s["status"] == status]
            return bool(found)

        engine.wait(done, f"order-status {status} for {cart}")
        return dict(found[-1]["lines"][0])

    def decided(cart: str, event: dict[str, Any]) -> list[tuple[str, int, str | None, str | None]]:
        """The line decisions `event` caused (intake's `accepted` of a held cart aside)."""

        def line_events(evs: list[Any]) -> list[Any]:
            return [e for e in evs if e[0] != "accepted"]

        return line_events(
            wait_caused(engine, ids, cart, event["event_id"], lambda evs: bool(line_events(evs)))
        )

    def expired(events: list[dict[str, Any]]) -> bool:
        return any(e["reason"] == "hold_expired" for e in of_type(events, "released"))

    # A cart held for 4 s, extended at once to 60 s while payment runs.
    held_at = now_ms()
    paid = cart_event("hold-paid", "held", "paid", 2, reservation_ttl_s=4)
    extended = cart_event("extend-paid", "extended", "paid", 2, reservation_ttl_s=60)
    engine.send_orders(paid, extended)
    assert decided("paid", paid) == [("held", 2, "P-EAST", None)]
    assert decided("paid", extended) == [("extended", 2, None, None)]
    row = status_of("paid", "held")
    assert (row["status"], row["allocated"]) == ("held", 2)
    # Another cart, held for 1 s and left alone.
    left = cart_event("hold-left", "held", "left", 1, reservation_ttl_s=1)
    engine.send_orders(left)
    assert decided("left", left) == [("held", 1, "P-EAST", None)]

    # Paid: confirmed, twice (a repeat with the same event id is a no-op).
    confirmed = cart_event("confirm-paid", "confirmed", "paid", 2)
    engine.send_orders(confirmed)
    assert decided("paid", confirmed) == [("confirmed", 2, "P-EAST", None)]
    engine.send_orders(confirmed)
    row = status_of("paid", "allocated")
    assert (row["status"], row["allocated"]) == ("allocated", 2)

    # The cart left alone expires by the allocator's reservation timer; its unit is free again,
    # and a confirm that comes too late is refused.
    [release] = of_type(engine.wait_events(ids.order("left"), expired, "the hold expired"), "released")
    assert (release["qty"], release["location"], release["reason"]) == (1, "P-EAST", "hold_expired")
    assert release["cause_event_id"].startswith("clock:expiry:")
    assert status_of("left", "cancelled")["status"] == "released"
    refused = cart_event("confirm-left", "confirmed", "left", 1)
    engine.send_orders(refused)
    assert decided("left", refused) == [("rejected", 0, None, "hold_expired")]

    # Once the paid cart's first deadline has passed, a hold on the channel's TTL (3 s) expires
    # too: timers fire in due order, so the paid cart's old one was moot. It kept its units.
    engine.wait(lambda: now_ms() > held_at + 4_000, "the paid cart's first deadline")
    late = cart_event("hold-late", "held", "late", 1)
    engine.send_orders(late)
    assert decided("late", late) == [("held", 1, "P-EAST", None)]
    engine.wait_events(ids.order("late"), expired, "the later hold expired")
    paid_events = engine.allocations(ids.order("paid"))
    assert not of_type(paid_events, "released")
    assert len(of_type(paid_events, "confirmed")) == 1, "the repeated confirm decided nothing"
    east = settled_row(engine, sku, "P-EAST")
    assert (east["on_hand"], east["allocated"], east["available"]) == (6, 2, 4)


# ---------------------------------------------------------------- 14. the audit and its KPIs


def test_the_audit_of_everything_above_passes_and_prints_the_kpis(engine: EngineUnderTest) -> None:
    from click.testing import CliRunner

    from streamalloc.cli import main

    s = engine.settings
    cluster = [
        "--bootstrap", str(s.bootstrap), "--prefix", s.topic_prefix, "--app-id", s.app_id,
        "--broker-profile", s.broker_profile,
    ]  # fmt: skip
    result = CliRunner().invoke(main, [*cluster, "audit"])
    assert result.exit_code == 0, result.output
    for kpi in ("cycle service level", "stockout rate", "inventory turnover", "open allocations"):
        assert kpi in result.output
    assert "audit passed" in result.output


# ---------------------------------------------------------------- 13c. order edits


def test_an_order_edit_allocates_more_releases_less_and_shows_in_the_order_status(
    engine: EngineUnderTest,
) -> None:
    ids = Ids("edits")
    a, b = ids.sku("A"), ids.sku("B")
    inventory(engine, ids, "recv-a", "received", a, 6, "P-EAST")
    inventory(engine, ids, "recv-b", "received", b, 5, "P-EAST")
    place(engine, ids, "order", [line("1", a, 2), line("2", b, 1)])
    order_id = ids.order("order")

    def edit(name: str, *lines: dict[str, Any]) -> dict[str, Any]:
        event = engine.order(ids.event(name), "amended", order_id, list(lines))
        engine.send_orders(event)
        return event

    def status_when(done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [s for s in engine.statuses(order_id) if done(s)]
            return bool(found)

        engine.wait(seen, what)
        assert found[-1]["status"] == "allocated", found[-1]
        return {row["line_id"]: row for row in found[-1]["lines"]}

    def rows(status: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int, str]]:
        return {k: (r["qty"], r["allocated"], r["status"]) for k, r in status.items()}

    # Up: line 1 from 2 to 5 (the extra 3 where it holds its units); line 2 left out; line 3 added.
    up = edit("up", line("1", a, 5), line("3", b, 2))
    decided = wait_caused(engine, ids, "order", up["event_id"], lambda evs: len(evs) >= 3)
    assert ("amended", 5, None, None) in decided and ("allocated", 3, "P-EAST", None) in decided
    assert ("allocated", 2, "P-EAST", None) in decided  # line 3, placed by the edit
    assert not any(kind == "released" for kind, *_ in decided)  # never released to allocate again
    left = engine.wait_events(
        order_id, lambda evs: any(e["reason"] == "amended" for e in of_type(evs, "released")), "line 2 left"
    )
    [gone] = [e for e in of_type(left, "released") if e["reason"] == "amended"]
    assert (gone["line_id"], gone["qty"], gone["sku"]) == ("2", 1, b)
    status = status_when(lambda s: any(r["line_id"] == "3" for r in s["lines"]), "the edit in the status")
    assert rows(status) == {
        "1": (5, 5, "allocated"),
        "2": (1, 0, "released"),
        "3": (2, 2, "allocated"),
    }

    # Down: line 1 from 5 to 1 releases 4 in the same decision; line 3 unchanged.
    down = edit("down", line("1", a, 1), line("3", b, 2))
    decided = wait_caused(engine, ids, "order", down["event_id"], lambda evs: len(evs) >= 3)
    assert ("amended", 1, None, None) in decided and ("released", 4, "P-EAST", "amended") in decided
    assert ("amended", 2, None, None) in decided  # the same qty: recorded, nothing moves
    status = status_when(lambda s: s["lines"][0]["qty"] == 1, "the smaller edit in the status")
    assert rows(status)["1"] == (1, 1, "allocated")
    assert settled_row(engine, a, "P-EAST")["allocated"] == 1

    # Too many: refused, the line keeps its units and qty; the same edit again changes nothing.
    greedy = edit("greedy", line("1", a, 20), line("3", b, 2))
    decided = wait_caused(engine, ids, "order", greedy["event_id"], lambda evs: len(evs) >= 2)
    assert ("rejected", 20, "P-EAST", "insufficient_stock") in decided

    def of_line_1(cause: str) -> list[dict[str, Any]]:
        """The allocator's decisions about line 1 (intake, stateless, repeats its amend_requested
        under the same id: the order stage takes it once)."""
        return [
            e
            for e in of_type(engine.allocations(order_id), "amended", "allocated", "released", "rejected")
            if e["cause_event_id"] == cause and e["line_id"] == "1"
        ]

    before = of_line_1(down["event_id"])
    engine.send_orders(down)
    # A later order of the SKU is decided after the repeat (one partition per SKU): it takes
    # the 5 units the edit freed, and the repeat decided nothing.
    late = place(engine, ids, "after", [line("1", a, 5)])
    assert [(e["type"], e["qty"]) for e in of_type(late, "allocated")] == [("allocated", 5)]
    assert of_line_1(down["event_id"]) == before
    assert settled_row(engine, a, "P-EAST")["allocated"] == 6  # 1 kept by the edited line, 5 later
