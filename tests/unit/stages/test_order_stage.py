"""The order stage through the harness: `order-status` from `before_commit`, once per order
per commit, and only once every line of the order has a decision."""

from __future__ import annotations

from tests.unit.stages._inputs import ALLOCATIONS, ORDER_STATUS, REQUESTS, SETTINGS, T0, allocation, decoded

from streamalloc.stages.order_stage import OrderStage
from streamalloc.testing import StageHarness


def test_status_goes_out_once_every_line_is_decided_once_per_commit() -> None:
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("o1:accepted", "accepted", "o1", qty=0, line_count=2)
    first = allocation("o1:1:allocated", "allocated", "o1", "1", qty=2, location="WH-1", decided_at=T0 + 1)
    assert harness.feed(ALLOCATIONS, [(b"o1", accepted), (b"o1", first)]) == []  # line 2 undecided

    second = allocation(
        "o1:2:rejected", "rejected", "o1", "2", reason="insufficient_stock", decided_at=T0 + 2
    )
    picked = allocation("o1:1:picked", "picked", "o1", "1", qty=2, location="WH-1", decided_at=T0 + 3)
    outputs = harness.feed(ALLOCATIONS, [(b"o1", second), (b"o1", picked)])
    assert [(o.topic, o.key) for o in outputs] == [(ORDER_STATUS, b"o1")]  # two events, one status
    status = decoded(ORDER_STATUS, outputs[0].value)
    assert (status["event_id"], status["status"], status["occurred_at"]) == (
        "o1:1:picked:status",
        "partially_allocated",
        T0 + 3,
    )
    assert [
        (line["line_id"], line["status"], line["allocated"], line["reason"]) for line in status["lines"]
    ] == [
        ("1", "picked", 2, None),
        ("2", "rejected", 0, "insufficient_stock"),
    ]


def test_a_ship_complete_order_with_a_rejected_line_releases_the_rest_before_any_status() -> None:
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("o1:accepted", "accepted", "o1", qty=0, line_count=2, ship_complete=True)
    allocated = allocation("o1:1:allocated", "allocated", "o1", "1", qty=1, location="WH-1")
    rejected = allocation("o1:2:rejected", "rejected", "o1", "2", reason="insufficient_stock")
    outputs = harness.feed(ALLOCATIONS, [(b"o1", accepted), (b"o1", allocated), (b"o1", rejected)])
    [release] = [decoded(REQUESTS, o.value) for o in outputs if o.topic == REQUESTS]
    assert (release["command"], release["line_id"], release["reason"]) == (
        "release",
        "1",
        "ship_complete_failed",
    )
    assert [o for o in outputs if o.topic == ORDER_STATUS] == []  # never "partially allocated"

    released = allocation(
        "o1:1:released", "released", "o1", "1", qty=1, location="WH-1", reason="ship_complete_failed"
    )  # the allocator releases a line's units where they are held
    [status] = [decoded(ORDER_STATUS, o.value) for o in harness.feed(ALLOCATIONS, [(b"o1", released)])]
    assert status["status"] == "rejected"
