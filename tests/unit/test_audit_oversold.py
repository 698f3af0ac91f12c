"""The audit's one measure of oversold units: each place's worst excess, summed over places."""

from __future__ import annotations

from tests.unit.test_audit import event, order, rows, stock

from streamalloc.audit import audit


def test_oversold_units_count_each_places_worst_excess_once_summed_over_places() -> None:
    # line 1 holds 3 of 2 ordered over two events (its worst: 1 over); WH shows 1 unit over
    # in two snapshots, ST 2 over in one: 1 + 1 + 2 units oversold, each place once
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2), stock("r2", 1, "ST")],
        [event("allocated", "o1", "1", 3), event("picked", "p1", "1", 3)],
        [rows(("WH", 2, 3, 0), ("ST", 1, 3, 0)), rows(("WH", 2, 0, 3), ("ST", 1, 0, 0))],
    )
    assert not report.ok
    assert report.oversold_units == 4
    assert report.promised_beyond_on_hand == 2  # the largest at one location
