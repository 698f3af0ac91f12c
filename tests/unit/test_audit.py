"""The audit finds each kind of breach from events alone, and passes a clean history."""

from __future__ import annotations

from typing import Any

from streamalloc.audit import audit


def order(event_id: str, order_id: str, *lines: tuple[str, str, int], kind: str = "placed") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "order_id": order_id,
        "channel": "web",
        "lines": [{"line_id": lid, "sku": sku, "qty": qty} for lid, sku, qty in lines],
    }


def decision(
    cause: str, kind: str, order_id: str, line_id: str, qty: int, location: str | None = "WH"
) -> dict[str, Any]:
    return {
        "event_id": f"{cause}:{line_id}:{kind}",
        "cause_event_id": cause,
        "type": kind,
        "order_id": order_id,
        "line_id": line_id,
        "sku": "S",
        "channel": "web",
        "qty": qty,
        "location": location,
        "reason": "insufficient_stock" if kind == "rejected" else None,
    }


def receipt(event_id: str, qty: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "received",
        "sku": "S",
        "location": "WH",
        "qty": qty,
        "result": None,
    }


def snapshot(on_hand: int, allocated: int, picked: int = 0) -> dict[str, Any]:
    row = {
        "location": "WH",
        "on_hand": on_hand,
        "allocated": allocated,
        "picked": picked,
        "quality_control": 0,
        "damaged": 0,
    }
    return {"sku": "S", "locations": [row]}


def test_a_clean_history_passes() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("o2", "B", ("1", "S", 2))],
        [receipt("r1", 3)],
        [decision("o1", "allocated", "A", "1", 2), decision("o2", "rejected", "B", "1", 2, None)],
        [snapshot(3, 2)],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 2 and report.oversold_units == 0


def test_an_oversold_snapshot_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 4))],
        [receipt("r1", 3)],
        [decision("o1", "allocated", "A", "1", 4)],
        [snapshot(3, 4)],
    )
    assert not report.ok
    assert report.oversold_units == 1
    assert any("promised beyond on_hand" in b for b in report.breaches)


def test_an_allocation_without_a_known_cause_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 1))],
        [receipt("r1", 3)],
        [decision("ghost", "allocated", "A", "1", 1)],
        [snapshot(3, 1)],
    )
    assert any("unknown cause ghost" in b for b in report.breaches)


def test_two_first_decisions_for_one_line_is_a_breach() -> None:
    events = [decision("o1", "allocated", "A", "1", 1), {**decision("o1", "rejected", "A", "1", 1, None)}]
    report = audit([order("o1", "A", ("1", "S", 1))], [receipt("r1", 3)], events, [snapshot(3, 1)])
    assert any("2 first decisions" in b for b in report.breaches)


def test_a_cancelled_line_still_holding_units_is_a_breach() -> None:
    orders = [order("o1", "A", ("1", "S", 1)), order("c1", "A", kind="cancelled")]
    report = audit(orders, [receipt("r1", 3)], [decision("o1", "allocated", "A", "1", 1)], [snapshot(3, 1)])
    assert any("cancelled line ('A', '1') still holds 1" in b for b in report.breaches)


def test_final_balances_must_match_the_last_availability_record() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 1))],
        [receipt("r1", 3)],
        [decision("o1", "allocated", "A", "1", 1)],
        [snapshot(5, 1)],
    )
    assert any("on_hand=5, the events give 3" in b for b in report.breaches)


def test_repeats_of_the_same_event_id_are_counted_not_breaches() -> None:
    allocated = decision("o1", "allocated", "A", "1", 1)
    report = audit(
        [order("o1", "A", ("1", "S", 1))],
        [receipt("r1", 3), receipt("r1", 3)],
        [allocated, allocated],
        [snapshot(3, 1)],
    )
    assert report.ok, report.breaches
    assert report.repeats == 2


def test_a_placed_line_without_decision_is_a_breach() -> None:
    report = audit([order("o1", "A", ("1", "S", 1))], [receipt("r1", 3)], [], [snapshot(3, 0)])
    assert any("has no decision" in b for b in report.breaches)
