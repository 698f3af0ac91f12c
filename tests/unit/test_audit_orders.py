"""The audit's order-status check: each order's last status against its events."""

from __future__ import annotations

from typing import Any

from tests.unit.test_audit import OFFLINE, event, order, rows, snapshot, stock

from streamalloc.audit import audit


def accepted(
    order_id: str = "A", cause: str = "o1", lines: int = 1, ship_complete: bool = False
) -> dict[str, Any]:
    """Intake's `accepted` on allocations."""
    return {
        "event_id": f"{cause}:accepted", "cause_event_id": cause, "type": "accepted", "order_id": order_id,
        "line_id": None, "sku": None, "channel": "web", "qty": 0, "location": None,
        "line_count": lines, "ship_complete": ship_complete,
    }  # fmt: skip


def status(value: str, *lines: tuple[str, str, int], order_id: str = "A", cause: str = "x") -> dict[str, Any]:
    """An order-status record: lines as (line_id, status, units allocated)."""
    return {
        "event_id": f"{cause}:status",
        "order_id": order_id,
        "status": value,
        "lines": [
            {"line_id": lid, "sku": "S", "qty": 2, "allocated": units, "status": st, "reason": None}
            for lid, st, units in lines
        ],
    }


MOVED = [  # line 1 of order A: allocated at WH, then moved to ST when WH went offline
    accepted(),
    event("allocated", "o1", "1", 2),
    event("released", OFFLINE, "1", 2, reason="reallocated"),
    event("reallocated", OFFLINE, "1", 2, "ST"),
]


def check(allocations: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> list[str]:
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2), stock("r2", 3, "ST")],
        allocations,
        [rows(("WH", 2, 0, 0), ("ST", 3, 2, 0))],
        order_statuses=statuses,
    )
    return report.breaches


def test_the_last_status_agrees_with_the_lines_after_a_reallocation() -> None:
    early = status("allocated", ("1", "allocated", 2), cause="o1:1:allocated:WH")
    assert check(MOVED, [early, status("allocated", ("1", "allocated", 2))]) == []


def test_a_status_that_reads_a_moved_line_as_released_is_a_breach() -> None:
    # what the order stage published before it followed `reallocated`
    breaches = check(MOVED, [status("rejected", ("1", "released", 0))])
    assert "order A: its last order-status says rejected, its events allocated" in breaches
    assert any(
        "order A line 1: its last order-status says released, its events allocated" in b for b in breaches
    )
    assert any(
        "says 0 unit(s) allocated, its events 2, the audit's replay of its units 2" in b for b in breaches
    )


def test_only_the_last_status_counts_and_a_decided_order_needs_one() -> None:
    stale = [status("allocated", ("1", "allocated", 2)), status("rejected", ("1", "released", 0))]
    assert "order A: its last order-status says rejected, its events allocated" in check(MOVED, stale)
    assert check(MOVED, []) == ["order A: its events give it status allocated, but it has no order-status"]


def test_an_order_with_an_undecided_line_has_no_status_yet() -> None:
    two_lines = [accepted(lines=2), event("allocated", "o1", "1", 2)]
    report = audit(
        [order("o1", "A", ("1", "S", 2))], [stock("r1", 2)], two_lines, [snapshot(2, 2)], order_statuses=[]
    )
    assert report.ok, report.breaches
    assert report.checked_orders == 1
    published = status("partially_allocated", ("1", "allocated", 2))
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2)],
        two_lines,
        [snapshot(2, 2)],
        order_statuses=[published],
    )
    assert any("its events give it no status" in b for b in report.breaches), report.breaches


def test_a_cancelled_order_agrees_once_its_release_is_applied() -> None:
    history = [
        accepted(),
        event("allocated", "o1", "1", 2),
        {**accepted(), "event_id": "c1:cancel_requested", "cause_event_id": "c1", "type": "cancel_requested",
         "line_count": None, "reason": "cancelled"},
        event("released", "c1:cancel_requested", "1", 2, reason="cancelled"),
    ]  # fmt: skip
    orders = [order("o1", "A", ("1", "S", 2)), order("c1", "A", kind="cancelled")]
    report = audit(
        orders,
        [stock("r1", 2)],
        history,
        [snapshot(2, 0)],
        order_statuses=[
            status("allocated", ("1", "allocated", 2)),
            status("cancelled", ("1", "released", 0)),
        ],
    )
    assert report.ok, report.breaches


def test_a_partially_allocated_order_agrees_with_its_per_line_units() -> None:
    history = [
        accepted(),
        event("allocated", "o1", "1", 1),
        event("backordered", "o1", "1", 1, None, reason="waitlisted"),
    ]
    published = status("partially_allocated", ("1", "partially_allocated", 1))
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 1)],
        history,
        [snapshot(1, 1)],
        order_statuses=[published],
    )
    assert report.ok, report.breaches
    wrong = status("allocated", ("1", "allocated", 1))
    report = audit(
        [order("o1", "A", ("1", "S", 2))], [stock("r1", 1)], history, [snapshot(1, 1)], order_statuses=[wrong]
    )
    assert "order A: its last order-status says allocated, its events partially_allocated" in report.breaches
