"""The KPIs, each on a small hand-made history with its exact expected figures."""

from __future__ import annotations

from typing import Any

import pytest

from streamalloc.audit import audit
from streamalloc.kpis import LineOutcome, compute_kpis, kpi_rows


def placed(event_id: str, order_id: str, channel: str, *lines: tuple[str, int]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "placed",
        "order_id": order_id,
        "channel": channel,
        "lines": [{"line_id": lid, "sku": "S", "qty": qty} for lid, qty in lines],
    }


def event(
    kind: str,
    cause: str,
    order_id: str,
    qty: int,
    location: str | None = "WH",
    *,
    channel: str = "web",
    at: int = 0,
    reason: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": f"{cause}:{order_id}:{kind}:{location}",
        "cause_event_id": cause,
        "type": kind,
        "order_id": order_id,
        "line_id": "1",
        "sku": "S",
        "channel": channel,
        "qty": qty,
        "location": location,
        "reason": reason,
        "decided_at": at,
    }


def received(event_id: str, qty: int, location: str = "WH") -> dict[str, Any]:
    return {"event_id": event_id, "type": "received", "sku": "S", "location": location, "qty": qty}


def record(
    event_id: str, sku: str, *rows: tuple[str, int, int, int, str], age: float | None = None
) -> dict[str, Any]:
    """An availability record: (location, on_hand, allocated, picked, status) per location."""
    locations = [
        {
            "location": loc,
            "on_hand": on,
            "allocated": al,
            "picked": pk,
            "quality_control": 0,
            "damaged": 0,
            "safety_stock": 0,
            "available": 0 if status != "online" else max(0, on - al - pk),
            "status": status,
        }
        for loc, on, al, pk, status in rows
    ]
    totals: dict[str, Any] = {
        key: sum(row[key] for row in locations) for key in ("on_hand", "allocated", "picked", "available")
    }
    if age is not None:
        totals["allocation_age_s"] = age
    return {"event_id": event_id, "sku": sku, "totals": totals, "locations": locations}


def test_cycle_service_level_counts_lines_allocated_in_full_at_their_first_decision() -> None:
    orders = [
        placed("o1", "A", "web", ("1", 2)),  # split over two locations, in full: served
        placed("o2", "B", "web", ("1", 1)),  # rejected
        placed("o3", "C", "web", ("1", 3)),  # 2 of 3 at the first decision: not in full
        placed("o4", "D", "store", ("1", 1)),  # backordered, filled later: not served first
        placed("o5", "E", "store", ("1", 1)),  # in full
    ]
    report = audit(
        orders,
        [received("r1", 6), received("r2", 2, "ST"), received("r3", 1)],
        [
            event("allocated", "o1", "A", 1),
            event("allocated", "o1", "A", 1, "ST"),
            event("rejected", "o2", "B", 1, None, reason="insufficient_stock"),
            event("allocated", "o3", "C", 2),
            event("backordered", "o4", "D", 1, None, channel="store", reason="incoming"),
            event("allocated", "r3", "D", 1, channel="store"),
            event("allocated", "o5", "E", 1, "ST", channel="store"),
        ],
        [record("a1", "S", ("WH", 7, 4, 0, "online"), ("ST", 2, 2, 0, "online"))],
    )
    assert report.ok, report.breaches
    kpis = report.kpis
    assert (kpis.service_level.placed, kpis.service_level.served_first) == (5, 2)
    assert kpis.service_level.rate == pytest.approx(0.4)
    assert {c: (s.placed, s.served_first) for c, s in kpis.service_level_by_channel.items()} == {
        "store": (2, 1),
        "web": (3, 1),
    }


def test_a_placed_line_without_decision_counts_as_not_served() -> None:
    report = audit([placed("o1", "A", "web", ("1", 1))], [], [], [])
    assert (report.kpis.service_level.placed, report.kpis.service_level.served_first) == (1, 0)


def test_stockout_rate_takes_the_online_locations_of_each_skus_last_record() -> None:
    first = record("s1", "S", ("WH", 0, 0, 0, "online"), ("ST", 3, 0, 0, "online"))
    records = [
        first,
        first,  # a repeat of the same record counts once
        record("s2", "S", ("WH", 2, 0, 0, "online"), ("ST", 1, 1, 0, "online"), ("XX", 0, 0, 0, "offline")),
        record("t1", "T", ("WH", 4, 4, 0, "online")),
    ]
    kpis = compute_kpis([], records, units_depleted=0, end_ms=0)
    # last records: S at WH 2 available, at ST 0 (XX is offline: not counted); T at WH 0.
    assert (kpis.stocked_out, kpis.sku_locations) == (2, 3)
    assert kpis.stockout_rate == pytest.approx(2 / 3)
    # every snapshot's online rows: s1 WH 0, ST 3; s2 WH 2, ST 0; t1 WH 0.
    assert kpis.stockout_rate_snapshots == pytest.approx(3 / 5)


def test_inventory_turnover_is_units_shipped_over_the_summed_average_on_hand_of_each_sku() -> None:
    records = [
        record("s1", "S", ("WH", 10, 0, 0, "online")),
        record("s2", "S", ("WH", 6, 0, 0, "online")),  # S averages 8
        record("t1", "T", ("WH", 4, 0, 0, "online")),  # T averages 4
    ]
    kpis = compute_kpis([], records, units_depleted=6, end_ms=0)
    assert kpis.average_on_hand == pytest.approx(12.0)
    assert kpis.inventory_turnover == pytest.approx(0.5)
    assert compute_kpis([], [], units_depleted=6, end_ms=0).inventory_turnover is None


def test_units_depleted_are_the_fulfilled_units_of_the_stream() -> None:
    orders = [
        placed("o1", "A", "web", ("1", 2)),
        {**placed("p1", "A", "web", ("1", 2)), "type": "picked"},
        {**placed("f1", "A", "web", ("1", 2)), "type": "fulfilled"},
    ]
    report = audit(
        orders,
        [received("r1", 4)],
        [event("allocated", "o1", "A", 2), event("picked", "p1", "A", 2), event("fulfilled", "f1", "A", 2)],
        [record("a1", "S", ("WH", 4, 2, 0, "online")), record("a2", "S", ("WH", 2, 0, 0, "online"))],
    )
    assert report.ok, report.breaches
    assert report.kpis.units_depleted == 2
    assert report.kpis.average_on_hand == pytest.approx(3.0)
    assert report.kpis.inventory_turnover == pytest.approx(2 / 3)


def test_open_allocation_aging_measures_lines_still_holding_units_at_the_end() -> None:
    orders = [
        placed("o1", "A", "web", ("1", 1)),  # allocated at 1 s, still held
        placed("o2", "B", "web", ("1", 1)),  # allocated at 3 s, picked at 5 s: still held since 3 s
        placed("o3", "C", "web", ("1", 1)),  # allocated at 2 s, shipped at 9 s: not open
        placed("o4", "D", "web", ("1", 1)),  # allocated at 1 s, moved to ST at 7 s: held since 7 s
        {**placed("p2", "B", "web", ("1", 1)), "type": "picked"},
        {**placed("f3", "C", "web", ("1", 1)), "type": "fulfilled"},
    ]
    offline = "locations:WH:3"
    report = audit(
        orders,
        [received("r1", 4), received("r2", 1, "ST")],
        [
            event("allocated", "o1", "A", 1, at=1000),
            event("allocated", "o2", "B", 1, at=3000),
            event("allocated", "o3", "C", 1, at=2000),
            event("allocated", "o4", "D", 1, at=1000),
            event("picked", "p2", "B", 1, at=5000),
            event("released", offline, "D", 1, reason="reallocated", at=7000),
            event("reallocated", offline, "D", 1, "ST", at=7000),
            event("fulfilled", "f3", "C", 1, at=9000),
        ],
        [record("a1", "S", ("WH", 3, 1, 1, "online"), ("ST", 1, 1, 0, "online"))],
    )
    assert report.ok, report.breaches
    aging = report.kpis.aging
    # end of the stream 9 s: ages 8 s (A), 6 s (B), 2 s (D)
    assert aging.open_lines == 3
    assert aging.mean_s == pytest.approx(16 / 3)
    assert aging.p95_s == pytest.approx(8.0)
    assert aging.max_s == pytest.approx(8.0)


def test_the_p95_age_is_the_nearest_rank() -> None:
    lines = [LineOutcome("web", 1, True, "allocated", 1, 1, 20_000 - s * 1000) for s in range(1, 21)]
    aging = compute_kpis(lines, [], units_depleted=0, end_ms=20_000).aging
    assert (aging.open_lines, aging.mean_s, aging.p95_s, aging.max_s) == (20, 10.5, 19.0, 20.0)


def test_the_engines_own_allocation_age_is_shown_only_when_it_gives_one() -> None:
    with_age = [
        record("s1", "S", ("WH", 5, 2, 1, "online"), age=10.0),
        record("t1", "T", ("WH", 5, 1, 0, "online"), age=20.0),
    ]
    assert compute_kpis([], with_age, units_depleted=0, end_ms=0).engine_allocation_age_s == pytest.approx(
        12.5
    )
    without = [record("s1", "S", ("WH", 5, 2, 1, "online"))]
    assert compute_kpis([], without, units_depleted=0, end_ms=0).engine_allocation_age_s is None


def test_the_kpi_rows_read_as_text() -> None:
    lines = [
        LineOutcome("web", 2, True, "allocated", 2, 2, 0),
        LineOutcome("web", 1, True, "rejected", 0, 0, None),
    ]
    kpis = compute_kpis(lines, [record("s1", "S", ("WH", 4, 2, 0, "online"))], units_depleted=2, end_ms=4000)
    text = {name.strip(): (value, detail) for name, value, detail in kpi_rows(kpis)}
    assert text["cycle service level"][0] == "50.0%"
    assert text["web"] == ("50.0%", "1 of 2")
    assert text["stockout rate"][0] == "0.0%"
    assert text["inventory turnover"][0] == "0.50"
    assert text["open allocations"] == ("1 line(s)", "age at the end: mean 4.0 s, p95 4.0 s, max 4.0 s")
    assert kpis.as_record()["cycle_service_level"] == 0.5
