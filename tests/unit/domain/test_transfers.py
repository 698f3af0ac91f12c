"""Transfers between locations (domain/transfers.py): shipped from free stock, in transit, received."""

from __future__ import annotations

from typing import Any

from streamalloc.domain import (
    AllocationEvent,
    Channel,
    InventoryRejected,
    ReceiveTransfer,
    ShipTransfer,
    StockChanged,
    apply,
    reasons,
)
from streamalloc.domain.views import availability

from ._builders import NOW, SKU, allocate, eid, expect, online, pick, stocked, tables

T = tables(online("A"), online("B"), channels=(Channel(channel_id="web", backorder_limit=5),))
HOUR = 3_600_000


def ship(qty: int = 3, source: str = "A", destination: str | None = "B", **kw: Any) -> ShipTransfer:
    kw.setdefault("event_id", eid())
    kw.setdefault("transfer_id", "t1")
    kw.setdefault("occurred_at", NOW - 5)
    return ShipTransfer(sku=SKU, location=source, qty=qty, destination=destination, eta=NOW + HOUR, **kw)


def arrive(qty: int = 3, location: str = "B", transfer_id: str | None = "t1", **kw: Any) -> ReceiveTransfer:
    kw.setdefault("event_id", eid())
    return ReceiveTransfer(
        occurred_at=NOW - 5, sku=SKU, location=location, qty=qty, transfer_id=transfer_id, **kw
    )


def changes(decision: Any) -> list[StockChanged]:
    return [e for e in decision if isinstance(e, StockChanged)]


def refused(decision: Any) -> str:
    assert len(decision) == 1 and isinstance(decision[0], InventoryRejected), decision
    return str(decision[0].reason)


def test_a_shipment_takes_free_units_from_the_source_and_puts_them_in_transit_to_the_destination() -> None:
    state = stocked(A=5)

    decision = apply(state, ship(3), T, NOW)

    assert state.balances["A"].on_hand == 2
    assert state.balances["B"].on_hand == 0
    assert state.in_transit("B") == 3 and state.in_transit("A") == 0
    source, destination = changes(decision)
    assert (source.location, source.reason, source.on_hand_delta, source.on_hand) == (
        "A",
        "transfer_shipped",
        -3,
        2,
    )
    to = destination
    assert (to.location, to.reason, to.in_transit_delta, to.in_transit) == ("B", "in_transit", 3, 3)
    assert source.transfer_id == destination.transfer_id == "t1"
    assert source.event_id != destination.event_id


def test_a_shipment_never_takes_units_promised_to_order_lines() -> None:
    state = stocked(A=5)
    apply(state, allocate(qty=2, location="A"), T, NOW)
    apply(state, allocate(order="o2", qty=1, location="A"), T, NOW)
    apply(state, pick(order="o2", qty=1), T, NOW)

    assert refused(apply(state, ship(3), T, NOW)) == reasons.INSUFFICIENT_FREE_STOCK
    assert state.balances["A"].on_hand == 5 and state.in_transit("B") == 0

    apply(state, ship(2), T, NOW)  # what is free may go
    assert state.balances["A"].on_hand == 3 == state.balances["A"].allocated + state.balances["A"].picked


def test_a_shipment_needs_a_destination_other_than_its_source_and_a_positive_qty() -> None:
    state = stocked(A=5)
    assert refused(apply(state, ship(destination=None), T, NOW)) == reasons.DESTINATION_REQUIRED
    assert refused(apply(state, ship(destination="A"), T, NOW)) == reasons.DESTINATION_REQUIRED
    assert refused(apply(state, ship(0), T, NOW)) == reasons.INVALID_QUANTITY
    assert refused(apply(state, ship(lot="lot-1"), T, NOW)) == reasons.LOT_NOT_TRANSFERABLE
    assert state.balances["A"].on_hand == 5


def test_in_transit_units_count_as_incoming_for_a_backorder() -> None:
    state = stocked(A=3)
    apply(state, ship(3), T, NOW)  # nothing is sellable now, 3 are on their way to B

    decision = apply(state, allocate(qty=2), T, NOW)

    (event,) = decision
    assert isinstance(event, AllocationEvent)
    assert (event.type, event.reason, event.qty) == ("backordered", reasons.INCOMING, 2)
    # never beyond what is coming
    (over,) = apply(state, allocate(order="o2", qty=2), T, NOW)
    assert isinstance(over, AllocationEvent) and over.type == "rejected"


def test_a_backorder_at_the_destination_is_served_when_the_transfer_arrives() -> None:
    state = stocked(A=3)
    apply(state, ship(3), T, NOW)
    apply(state, allocate(qty=2, location="B"), T, NOW)  # a store pickup at B, backordered

    decision = apply(state, arrive(3), T, NOW + 10)

    received = changes(decision)
    assert [(c.reason, c.on_hand_delta, c.in_transit_delta, c.in_transit) for c in received] == [
        ("transfer_received", 3, -3, 0)
    ]
    filled = [e for e in decision if isinstance(e, AllocationEvent)]
    assert [(e.type, e.location, e.qty) for e in filled] == [("allocated", "B", 2)]
    assert state.balances["B"].on_hand == 3 and state.balances["B"].allocated == 2
    assert not state.book.transfers and not state.waiting


def test_a_short_receipt_writes_the_shortfall_off_as_lost_in_transit() -> None:
    state = stocked(A=5)
    apply(state, ship(4), T, NOW)

    decision = apply(state, arrive(3), T, NOW)

    got, lost = changes(decision)
    assert (got.reason, got.on_hand_delta, got.in_transit_delta, got.in_transit) == (
        "transfer_received",
        3,
        -3,
        1,
    )
    assert (lost.reason, lost.on_hand_delta, lost.in_transit_delta, lost.in_transit) == (
        "lost_in_transit",
        0,
        -1,
        0,
    )
    assert lost.transfer_id == "t1" and lost.event_id != got.event_id
    # every unit is on hand, in transit or lost
    on_hand = sum(b.on_hand for b in state.balances.values())
    assert on_hand + state.book.in_transit() + 1 == 5


def test_a_receipt_of_nothing_closes_a_transfer_that_was_lost_whole() -> None:
    state = stocked(A=5)
    apply(state, ship(2), T, NOW)

    (lost,) = changes(apply(state, arrive(0), T, NOW))

    assert (lost.reason, lost.in_transit_delta) == ("lost_in_transit", -2)
    assert state.in_transit("B") == 0 and state.balances["B"].on_hand == 0


def test_a_second_receipt_of_the_same_transfer_is_refused_and_the_same_event_is_a_no_op() -> None:
    state = stocked(A=5)
    apply(state, ship(3), T, NOW)
    first = arrive(3)
    apply(state, first, T, NOW)

    assert apply(state, first, T, NOW).duplicate
    assert refused(apply(state, arrive(3), T, NOW)) == reasons.TRANSFER_ALREADY_RECEIVED
    assert refused(apply(state, ship(1), T, NOW)) == reasons.DUPLICATE_TRANSFER  # the id was used
    assert state.balances["B"].on_hand == 3 and state.balances["A"].on_hand == 2


def test_a_receipt_must_name_a_shipped_transfer_at_its_destination_and_no_more_than_it_carries() -> None:
    state = stocked(A=5)
    apply(state, ship(3), T, NOW)
    assert refused(apply(state, arrive(3, transfer_id="nope"), T, NOW)) == reasons.UNKNOWN_TRANSFER
    assert refused(apply(state, arrive(3, transfer_id=None), T, NOW)) == reasons.UNKNOWN_TRANSFER
    assert refused(apply(state, arrive(3, location="A"), T, NOW)) == reasons.LOCATION_MISMATCH
    assert refused(apply(state, arrive(4), T, NOW)) == reasons.EXCEEDS_IN_TRANSIT
    assert refused(apply(state, ship(1), T, NOW)) == reasons.DUPLICATE_TRANSFER  # still open
    assert state.in_transit("B") == 3


def test_a_transfer_without_an_id_is_named_by_its_shipment() -> None:
    state = stocked(A=5)
    shipment = ship(2, transfer_id=None, event_id="ship-7")
    apply(state, shipment, T, NOW)
    assert list(state.book.transfers) == ["ship-7"]
    apply(state, arrive(2, transfer_id="ship-7"), T, NOW)
    assert state.balances["B"].on_hand == 2


def test_availability_shows_what_is_in_transit_and_how_long_the_oldest_transfer_has_travelled() -> None:
    state = stocked(A=10)
    apply(state, ship(2, occurred_at=NOW - 3 * HOUR), T, NOW)
    apply(state, ship(1, transfer_id="t2", occurred_at=NOW - HOUR), T, NOW)
    apply(state, expect("B", 4), T, NOW)

    view = availability(state, T, NOW)

    rows = {row.location_id: row for row in view.locations}
    assert (rows["B"].in_transit, rows["B"].oldest_transfer_age_s) == (3, 3 * 3600.0)
    assert (rows["A"].in_transit, rows["A"].oldest_transfer_age_s) == (0, 0.0)
    assert rows["B"].incoming == 4  # expected receipts stay apart
    assert (view.in_transit, view.oldest_transfer_age_s) == (3, 3 * 3600.0)
    # a transfer that never arrives keeps ageing
    assert availability(state, T, NOW + HOUR).oldest_transfer_age_s == 4 * 3600.0
    apply(state, arrive(2), T, NOW)
    assert availability(state, T, NOW).oldest_transfer_age_s == 3600.0
