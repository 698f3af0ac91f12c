"""The engine's outputs as it stands by them: what `read_committed` leaves out, on plain data."""

from __future__ import annotations

from typing import Any

from streamalloc.commands.audit import committed_outputs, punctuation_batches
from streamalloc.runtime.lineage import encode_batch, void_batches

REQ = ("allocation-requests", 3)


def _batch(inc: int, opened: int, start: int) -> bytes:
    return encode_batch("allocator:3", inc, {REQ: opened}, {REQ: start})


def _allocated(order_id: str, cause: str) -> dict[str, Any]:
    return {
        "event_id": f"{order_id}:allocated",
        "type": "allocated",
        "order_id": order_id,
        "cause_event_id": cause,
    }


def _availability(on_hand: int, cause: str) -> dict[str, Any]:
    return {"sku": "SKU-KIT-B", "totals": {"on_hand": on_hand}, "cause_event_id": cause}


def test_a_leaked_batch_is_left_out_of_every_output_and_counted() -> None:
    # Worker 1 committed a batch, then its next batch (order 1's allocation) leaked: its
    # successor opened where that batch began and gave the units to order 2 instead.
    committed, leaked = _batch(1, 0, 0), _batch(1, 0, 10)
    redone = _batch(2, 10, 10)
    allocations = [
        (committed, _allocated("o-0", "r-0")),
        (leaked, _allocated("o-1", "r-1")),
        (redone, _allocated("o-2", "r-2")),
        (None, _allocated("o-old", "r-old")),  # written before batch headers: nothing to judge
    ]
    availability = [
        (committed, _availability(5, "r-0")),
        (leaked, _availability(3, "r-1")),
        (redone, _availability(4, "r-2")),
    ]
    ledger = [(leaked, {"event_id": "s-1", "cause_event_id": "r-1"})]
    statuses = [
        (leaked, {"order_id": "o-1", "status": "allocated", "cause_event_id": "r-1"}),
        (redone, {"order_id": "o-2", "status": "allocated", "cause_event_id": "r-2"}),
    ]
    headers = [batch for batch, _ in allocations + availability + ledger + statuses if batch is not None]
    void = void_batches(headers)
    assert void == {leaked}

    outputs = committed_outputs(allocations, availability, ledger, statuses, void)

    assert [e["order_id"] for e in outputs.allocations] == ["o-0", "o-2", "o-old"]
    assert [r["totals"]["on_hand"] for r in outputs.availability] == [5, 4]  # the last one is the redo's
    assert outputs.stock_changes == ()
    assert [s["order_id"] for s in outputs.order_statuses] == ["o-2"]
    assert [e["order_id"] for e in outputs.leaked_allocations] == ["o-1"]
    assert (outputs.leaked_batches, outputs.leaked_events) == (1, 4)


def test_without_void_batches_every_event_stands_in_order() -> None:
    # Real Kafka, or a run where nothing leaked: the reader leaves nothing out.
    first, second = _batch(1, 0, 0), _batch(1, 0, 10)
    allocations = [(first, _allocated("o-1", "r-1")), (second, _allocated("o-2", "r-2"))]
    availability = [(first, _availability(5, "r-1")), (second, _availability(4, "r-2"))]

    outputs = committed_outputs(allocations, availability, [], [], set())

    assert outputs.allocations == tuple(event for _, event in allocations)
    assert outputs.availability == tuple(record for _, record in availability)
    assert outputs.leaked_allocations == ()
    assert (outputs.leaked_batches, outputs.leaked_events) == (0, 0)


def test_a_punctuation_at_the_successors_opening_stands() -> None:
    # A timer's batch consumed no input, so it starts where the successor opens whether it
    # committed or not; the restore keeps it, and so does the reader (read_committed's rule).
    last, timers = _batch(1, 0, 0), _batch(1, 0, 10)
    successor = _batch(2, 10, 10)
    allocations = [
        (last, _allocated("o-1", "r-1")),
        (timers, {**_allocated("o-1", "clock:expiry:o-1:1:5"), "type": "released"}),
        (successor, _allocated("o-2", "r-2")),
    ]
    punctuation = punctuation_batches(allocations)
    assert punctuation == {timers}
    void = void_batches([last, timers, successor], punctuation)

    outputs = committed_outputs(allocations, [], [], [], void)

    assert [e["type"] for e in outputs.allocations] == ["allocated", "released", "allocated"]
    assert outputs.leaked_batches == 0
