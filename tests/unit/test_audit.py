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


# ------------------------------------------------ the new allocation semantics


def event(
    kind: str,
    cause: str,
    line_id: str,
    qty: int,
    location: str | None = "WH",
    *,
    order_id: str = "A",
    reason: str | None = None,
    event_id: str | None = None,
    at: int = 0,
) -> dict[str, Any]:
    """An allocation event; its id names the cause, line, type and location, as the engine's do."""
    return {
        "event_id": event_id or f"{cause}:{line_id}:{kind}:{location}",
        "cause_event_id": cause,
        "type": kind,
        "order_id": order_id,
        "line_id": line_id,
        "sku": "S",
        "channel": "web",
        "qty": qty,
        "location": location,
        "reason": reason,
        "decided_at": at,
    }


def stock(event_id: str, qty: int, location: str = "WH", kind: str = "received") -> dict[str, Any]:
    return {**receipt(event_id, qty), "type": kind, "location": location}


def rows(*balances: tuple[str, int, int, int]) -> dict[str, Any]:
    """One availability record of SKU S: (location, on_hand, allocated, picked) per location."""
    return {
        "sku": "S",
        "locations": [
            {
                "location": loc,
                "on_hand": on,
                "allocated": al,
                "picked": pk,
                "quality_control": 0,
                "damaged": 0,
            }
            for loc, on, al, pk in balances
        ],
    }


def test_a_backorder_filled_by_a_receipt_passes_and_counts_as_a_fill() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("e1", 5, kind="expected"), stock("r1", 2)],
        [
            event("backordered", "o1", "1", 2, None, reason="incoming"),
            event("allocated", "r1", "1", 2),  # filled by the receipt, not by the placement
        ],
        [snapshot(0, 0), snapshot(2, 2)],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 1 and report.waitlist_fills == 1
    assert report.per_channel["web"]["backordered"] == 1
    assert report.per_channel["web"]["waitlist fills"] == 1


def test_a_split_fill_is_one_fill() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 3))],
        [stock("r1", 2), stock("r2", 1, "ST")],
        [
            event("backordered", "o1", "1", 3, None, reason="waitlisted"),
            event("allocated", "r2", "1", 2),
            event("allocated", "r2", "1", 1, "ST"),
        ],
        [rows(("WH", 2, 2, 0), ("ST", 1, 1, 0))],
    )
    assert report.ok, report.breaches
    assert report.waitlist_fills == 1


def test_units_given_to_a_line_that_was_not_backordered_are_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("c1", "A", kind="cancelled")],
        [stock("r1", 4)],
        [
            event("allocated", "o1", "1", 2),
            event("released", "c1", "1", 2, reason="cancelled"),
            event("allocated", "r1", "1", 2),  # a receipt hands units to a cancelled line
        ],
        [snapshot(4, 2)],
    )
    assert any("neither its placement nor after a backorder" in b for b in report.breaches)
    assert any("cancelled line ('A', '1') still holds 2" in b for b in report.breaches)


def test_a_split_allocation_is_one_decision() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 3))],
        [stock("r1", 2), stock("r2", 1, "ST")],
        [event("allocated", "o1", "1", 2), event("allocated", "o1", "1", 1, "ST")],
        [rows(("WH", 2, 2, 0), ("ST", 1, 1, 0))],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 1


def test_a_second_allocation_from_the_placement_at_the_same_location_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 4))],
        [stock("r1", 4)],
        [
            event("allocated", "o1", "1", 2, event_id="o1:1:allocated"),
            event("allocated", "o1", "1", 2, event_id="o1:1:allocated:again"),
        ],
        [snapshot(4, 4)],
    )
    assert any("2 first decisions" in b for b in report.breaches)


def test_a_placement_decision_after_the_line_moved_on_is_a_breach() -> None:
    # Another location, so not caught as a repeat at one location: it comes after a pick.
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("p1", "A", ("1", "S", 1), kind="picked")],
        [stock("r1", 2), stock("r2", 2, "ST")],
        [
            event("allocated", "o1", "1", 1, event_id="o1:1:allocated"),
            event("picked", "p1", "1", 1),
            event("allocated", "o1", "1", 1, "ST", event_id="o1:1:allocated:ST"),
        ],
        [rows(("WH", 2, 0, 1), ("ST", 2, 1, 0))],
    )
    assert any("2 first decisions" in b for b in report.breaches)


def test_a_backorder_and_an_allocation_from_the_placement_are_two_decisions() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2)],
        [event("backordered", "o1", "1", 2, None, reason="incoming"), event("allocated", "o1", "1", 2)],
        [snapshot(2, 2)],
    )
    assert any("2 first decisions" in b for b in report.breaches)


OFFLINE = "locations:WH:7"  # the locations-table record that took WH offline


def test_a_reallocation_after_a_location_went_offline_passes_with_matching_balances() -> None:
    history = [
        event("allocated", "o1", "1", 2),
        event("released", OFFLINE, "1", 2, reason="reallocated"),
        event("reallocated", OFFLINE, "1", 2, "ST"),
    ]
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2), stock("r2", 3, "ST")],
        history,
        [rows(("WH", 2, 2, 0), ("ST", 3, 0, 0)), rows(("WH", 2, 0, 0), ("ST", 3, 2, 0))],
    )
    assert report.ok, report.breaches
    assert report.reallocations == 1 and report.waitlist_fills == 0 and report.lines_decided == 1

    stale = audit(  # the record still shows the units at the offline location
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2), stock("r2", 3, "ST")],
        history,
        [rows(("WH", 2, 2, 0), ("ST", 3, 2, 0))],
    )
    assert any("WH: last availability has allocated=2, the events give 0" in b for b in stale.breaches)


def test_a_line_backordered_again_after_its_location_went_offline_can_be_filled_later() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2), stock("r2", 2, "ST")],
        [
            event("allocated", "o1", "1", 2),
            event("released", OFFLINE, "1", 2, reason="reallocated"),
            event("backordered", OFFLINE, "1", 2, None, reason="incoming"),
            event("allocated", "r2", "1", 2, "ST"),
        ],
        [rows(("WH", 2, 0, 0), ("ST", 2, 2, 0))],
    )
    assert report.ok, report.breaches
    assert report.waitlist_fills == 1 and report.lines_decided == 1


def test_a_release_for_reallocation_that_nothing_follows_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2))],
        [stock("r1", 2)],
        [event("allocated", "o1", "1", 2), event("released", OFFLINE, "1", 2, reason="reallocated")],
        [snapshot(2, 0)],
    )
    assert any("released for reallocation and nothing followed" in b for b in report.breaches)


def test_a_reallocation_without_a_release_before_it_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("p1", "A", ("1", "S", 1), kind="picked")],
        [stock("r1", 2), stock("r2", 2, "ST")],
        [
            event("allocated", "o1", "1", 1),
            event("picked", "p1", "1", 1),
            event("reallocated", OFFLINE, "1", 1, "ST"),
        ],
        [rows(("WH", 2, 0, 1), ("ST", 2, 1, 0))],
    )
    assert any("neither its placement nor after a backorder or a release" in b for b in report.breaches)


def test_a_pick_at_another_location_moves_the_units_there() -> None:
    pick = order("p1", "A", ("1", "S", 2), kind="picked")
    report = audit(
        [order("o1", "A", ("1", "S", 2)), pick],
        [stock("r1", 2), stock("r2", 2, "ST")],
        [
            event("allocated", "o1", "1", 2),
            event("released", "p1", "1", 2, reason="reallocated"),
            event("picked", "p1", "1", 2, "ST"),  # hard units taken directly at ST
        ],
        [rows(("WH", 2, 0, 0), ("ST", 2, 0, 2))],
    )
    assert report.ok, report.breaches


def test_an_expiry_release_passes_and_leaves_picked_units_held() -> None:
    allocated = event("allocated", "o1", "1", 3)
    pick = order("p1", "A", ("1", "S", 1), kind="picked")
    report = audit(
        [order("o1", "A", ("1", "S", 3)), pick],
        [stock("r1", 3)],
        [
            allocated,
            event("picked", "p1", "1", 1),
            event("released", allocated["event_id"], "1", 2, reason="expired"),  # its soft units only
        ],
        [snapshot(3, 0, 1)],
    )
    assert report.ok, report.breaches
    assert report.kpis.aging.open_lines == 1


def test_a_cancel_releases_soft_then_hard_units() -> None:
    report = audit(
        [
            order("o1", "A", ("1", "S", 3)),
            order("p1", "A", ("1", "S", 1), kind="picked"),
            order("c1", "A", kind="cancelled"),
        ],
        [stock("r1", 3)],
        [
            event("allocated", "o1", "1", 3),
            event("picked", "p1", "1", 1),
            event("released", "c1", "1", 3, reason="cancelled"),
        ],
        [snapshot(3, 0, 0)],
    )
    assert report.ok, report.breaches


def test_a_release_of_more_than_the_line_holds_there_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("c1", "A", kind="cancelled")],
        [stock("r1", 2)],
        [event("allocated", "o1", "1", 2), event("released", "c1", "1", 3, reason="cancelled")],
        [snapshot(2, 0)],
    )
    assert any("gives back 3 unit(s) of line ('A', '1') at WH, which holds 2" in b for b in report.breaches)


def test_causes_may_be_inventory_events_table_records_or_the_clock() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 1)), order("o2", "B", ("1", "S", 1)), order("o3", "C", ("1", "S", 1))],
        [stock("r1", 3)],
        [
            event("backordered", "o1", "1", 1, None, reason="incoming"),
            event("allocated", "r1", "1", 1),  # an inventory event
            event("allocated", "o2", "1", 1, order_id="B"),
            event("released", "clock:1700000000000", "1", 1, order_id="B", reason="location_stale"),
            event("allocated", "o3", "1", 1, order_id="C"),
            event("released", "locations:WH:12", "1", 1, order_id="C", reason="location_offline"),
        ],
        [snapshot(3, 1)],
    )
    assert report.ok, report.breaches


def test_a_cause_that_exists_nowhere_is_a_breach() -> None:
    causes = ("nowhere", "locations:", "locations:WH", "clock:", "refused")
    history = [event("allocated", "o1", "1", 1)]
    history += [
        event("released", cause, "1", 0, None, reason="cancelled", event_id=f"x{i}")
        for i, cause in enumerate(causes)
    ]
    report = audit(
        [order("o1", "A", ("1", "S", 1))],
        [stock("r1", 3), stock("refused", 1)],
        history,
        [snapshot(3, 1)],
        refused_inventory_ids=["refused"],
    )
    unknown = sorted(b.rsplit(" ", 1)[1] for b in report.breaches if "unknown cause" in b)
    assert unknown == sorted(causes)


def test_a_split_over_lots_at_one_location_is_one_decision() -> None:
    parts = [
        {**event("allocated", "o1", "1", 1), "event_id": "o1:1:allocated:WH:L1", "lot": "L1"},
        {**event("allocated", "o1", "1", 1), "event_id": "o1:1:allocated:WH:L2", "lot": "L2"},
    ]
    report = audit([order("o1", "A", ("1", "S", 2))], [stock("r1", 2)], parts, [snapshot(2, 2)])
    assert report.ok, report.breaches
    assert report.kpis.service_level.served_first == 1


def test_the_report_counts_what_each_policy_did() -> None:
    inspected = {**stock("q1", 1, kind="inspected"), "result": "pass"}
    failed = {**stock("q2", 1, kind="inspected"), "result": "fail"}
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("o2", "B", ("1", "S", 1))],
        [stock("r1", 3)],
        [
            {**event("allocated", "o1", "1", 2), "lot": "L-SOON"},
            event("allocated", "o2", "1", 1, order_id="B"),
            event("released", OFFLINE, "1", 2, reason="reallocated"),
            event("reallocated", OFFLINE, "1", 2, "ST"),
            event("released", "clock:expiry:B:1:9", "1", 1, order_id="B", reason="expired"),
        ],
        [],
    )
    assert report.released_by_reason == {"expired": 1}
    assert report.units_by_lot == {"L-SOON": 2, "": 3}  # the reallocation's units too
    assert report.engine_decisions == {
        ("locations", "released"): 1,
        ("locations", "reallocated"): 1,
        ("clock", "released"): 1,
    }
    report = audit([], [stock("r1", 2), inspected, failed], [], [])
    assert report.inspected == {"pass": 1, "fail": 1}


def change(
    cause: str, on_hand_delta: int, on_hand: int, location: str = "WH", **fields: Any
) -> dict[str, Any]:
    """A stock-changes record of SKU S (quality control, damaged and incoming untouched)."""
    zero = {f"{b}{s}": 0 for b in ("quality_control", "damaged", "incoming") for s in ("", "_delta")}
    return {
        "event_id": f"{cause}:stock:{location}", "cause_event_id": cause, "sku": "S", "location": location,
        "reason": "x", "on_hand_delta": on_hand_delta, "on_hand": on_hand, "line_id": None, **zero, **fields,
    }  # fmt: skip


def test_the_ledger_settles_a_count_the_events_alone_cannot_check() -> None:
    inventory = [stock("r1", 5), {**stock("c1", 3, kind="counted")}]
    ledger = [change("r1", 5, 5), change("c1", -2, 3)]
    report = audit([], inventory, [], [snapshot(3, 0)], stock_changes=ledger)
    assert report.ok, report.breaches
    wrong = audit([], inventory, [], [snapshot(4, 0)], stock_changes=ledger)
    assert any("on_hand=4, the events give 3" in b for b in wrong.breaches), wrong.breaches


def test_a_ledger_change_that_does_not_add_up_or_is_missing_is_a_breach() -> None:
    inventory = [stock("r1", 5), stock("r2", 2)]
    skipped = audit([], inventory, [], [snapshot(7, 0)], stock_changes=[change("r1", 5, 5)])
    assert any("inventory event r2 was applied but has no stock change" in b for b in skipped.breaches)
    jumped = audit(
        [], inventory, [], [snapshot(7, 0)], stock_changes=[change("r1", 5, 5), change("r2", 2, 8)]
    )
    assert any("moved by its deltas" in b for b in jumped.breaches), jumped.breaches
    unknown = audit([], inventory[:1], [], [snapshot(5, 0)], stock_changes=[change("r9", 5, 5)])
    assert any("stock change r9:stock:WH has an unknown cause r9" in b for b in unknown.breaches)


def test_a_batch_is_punctuation_when_the_clock_or_a_table_caused_every_record() -> None:
    from streamalloc.commands.audit import punctuation_batches

    timer, sweep, mixed = b"timer", b"sweep", b"mixed"
    records = [
        (timer, {"cause_event_id": "clock:expiry:o1:1:5"}),
        (timer, {"cause_event_id": "clock:expiry:o1:1:5"}),
        (sweep, {"cause_event_id": "locations:WH-1:offline@7"}),
        (mixed, {"cause_event_id": "clock:expiry:o2:1:5"}),
        (mixed, {"cause_event_id": "order-17"}),  # an input event: the batch consumed input
        (None, {"cause_event_id": "clock:expiry:o3:1:5"}),
    ]
    assert punctuation_batches(records) == {timer, sweep}


def test_a_punctuation_the_restore_drops_is_named_by_writer_and_number() -> None:
    # Seen in demo --crash-at 0.4 (one run of 20): a worker was killed while its timers'
    # batch was open; the survivor took the partition over, restored up to that open
    # transaction and went on; the broker showed the batch only when the killed worker
    # restarted, before the survivor's batches, which were built without it. Every restore
    # drops it, so its fills never reached the state, but as a punctuation the audit kept
    # them beside the survivor's own fills of the same lines: "holds 2 of 1 ordered".
    from streamalloc.commands.audit import dropped_batches
    from streamalloc.runtime.changelog import encode_src

    tp = ("allocation-requests", 0)
    committed = encode_src({tp: 200}, {tp: 226}, base=10, writer=1, seq=5)
    leaked_timers = encode_src({tp: 226}, {tp: 226}, base=12, writer=1, seq=6)
    survivor = encode_src({tp: 226}, {tp: 240}, base=12, writer=2, seq=1)
    log = [(10, committed), (11, committed), (12, leaked_timers), (13, leaked_timers), (14, survivor)]
    assert dropped_batches("app-allocator-changelog", 0, log) == {(1, 6)}
    # Timers that committed are built on: the next batch's store had reached them.
    built_on = encode_src({tp: 226}, {tp: 240}, base=14, writer=2, seq=1)
    assert dropped_batches("app-allocator-changelog", 0, [*log[:4], (14, built_on)]) == set()
    # At the end of the changelog a punctuation is kept, as a restore then keeps it.
    assert dropped_batches("app-allocator-changelog", 0, log[:4]) == set()


# ------------------------------------------------ partial allocation (channel allow_partial)

PARTIAL = [  # 3 of 5 allocated at placement, the rest waits; two receipts fill it, 1 then 1
    event("allocated", "o1", "1", 3),
    event("backordered", "o1", "1", 2, None, reason="waitlisted"),
    event("allocated", "r2", "1", 1),
    event("backordered", "r2", "1", 1, None, reason="waitlisted"),
    event("allocated", "r3", "1", 1),
]


def test_a_partial_allocation_filled_over_two_receipts_passes() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 5))],
        [stock("r1", 3), stock("r2", 1), stock("r3", 1)],
        PARTIAL,
        [snapshot(3, 3), snapshot(5, 5)],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 1 and report.partial_allocations == 1 and report.waitlist_fills == 2
    assert report.per_channel["web"]["partially allocated"] == 1
    assert report.kpis.service_level.served_first == 0  # not in full at its first decision


def test_a_partial_line_holding_less_than_ordered_at_the_end_passes() -> None:
    report = audit([order("o1", "A", ("1", "S", 5))], [stock("r1", 3)], PARTIAL[:2], [snapshot(3, 3)])
    assert report.ok, report.breaches


def test_a_fill_beyond_what_a_partial_line_waits_for_is_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 5))],
        [stock("r1", 3), stock("r2", 3)],
        [*PARTIAL[:2], event("allocated", "r2", "1", 3)],  # waits for 2, gets 3
        [snapshot(6, 6)],
    )
    assert any("is filled with 3 unit(s) but waits for 2" in b for b in report.breaches), report.breaches
    assert any("holds 6 of 5 ordered" in b for b in report.breaches)


def test_a_partial_line_picked_in_part_can_still_be_filled() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 5)), order("p1", "A", ("1", "S", 3), kind="picked")],
        [stock("r1", 3), stock("r2", 2)],
        [*PARTIAL[:2], event("picked", "p1", "1", 3), event("allocated", "r2", "1", 2)],
        [snapshot(5, 2, 3)],
    )
    assert report.ok, report.breaches


def test_checkout_holds_are_decisions_that_hold_units_and_are_counted_confirmed_or_expired() -> None:
    """Cart A is held, extended and confirmed (its units stay); cart B is held and expires."""
    held_a, held_b = event("held", "h1", "1", 2), event("held", "h2", "1", 1, order_id="B")
    report = audit(
        [
            order("h1", "A", ("1", "S", 2), kind="held"),
            order("x1", "A", ("1", "S", 2), kind="extended"),
            order("c1", "A", ("1", "S", 2), kind="confirmed"),
            order("h2", "B", ("1", "S", 1), kind="held"),
        ],
        [stock("r1", 5)],
        [
            held_a,
            event("extended", "x1", "1", 2, None),
            event("confirmed", "c1", "1", 2),
            held_b,
            event("released", held_b["event_id"], "1", 1, order_id="B", reason="hold_expired"),
        ],
        [snapshot(5, 2)],
    )
    assert report.ok, report.breaches
    assert report.lines_placed == report.lines_decided == 2
    assert dict(report.holds) == {"held": 2, "extended": 1, "confirmed": 1, "expired": 1}
    assert report.released_by_reason["hold_expired"] == 1


def test_a_held_line_given_units_twice_by_its_hold_is_two_decisions() -> None:
    report = audit(
        [order("h1", "A", ("1", "S", 2), kind="held")],
        [stock("r1", 5)],
        [event("held", "h1", "1", 2), event("allocated", "h1", "1", 2)],
        [snapshot(5, 4)],
    )
    assert "line ('A', '1') has 2 first decisions" in report.breaches
    assert "line ('A', '1') holds 4 of 2 ordered" in report.breaches


def test_lines_refused_for_protection_are_counted_per_channel() -> None:
    refused = {**decision("o1", "rejected", "A", "1", 1, None), "reason": "protected_for_priority"}
    report = audit(
        [order("o1", "A", ("1", "S", 1)), order("o2", "B", ("1", "S", 1))],
        [receipt("r1", 1)],
        [refused, decision("o2", "rejected", "B", "1", 1, None)],
        [snapshot(1, 0)],
    )
    assert report.ok, report.breaches
    assert report.protected == {"web": 1}


def test_a_transfer_in_transit_is_neither_lost_nor_counted_twice_and_a_short_one_loses_the_rest() -> None:
    shipped = {**stock("s1", 3, "A", "transfer_shipped"), "destination": "B", "transfer_id": "t1"}
    arrived = {**stock("g1", 2, "B", "transfer_received"), "transfer_id": "t1"}
    inventory = [stock("r1", 5, "A"), shipped]

    def view(b_on_hand: int, in_transit: int) -> dict[str, Any]:
        record = rows(("A", 2, 0, 0), ("B", b_on_hand, 0, 0))
        record["locations"][1]["in_transit"] = in_transit
        return record

    leg = {"transfer_id": "t1"}
    ledger = [
        change("r1", 5, 5, "A"),
        change("s1", -3, 2, "A", reason="transfer_shipped", **leg),
        change("s1", 0, 0, "B", reason="in_transit", in_transit_delta=3, in_transit=3, **leg),
    ]
    travelling = audit([], inventory, [], [view(0, 3)], stock_changes=ledger)
    assert travelling.ok, travelling.breaches
    assert (travelling.transfers["shipped"], travelling.in_transit_units) == (1, 3)

    # in transit and on hand at the destination too: counted twice
    twice = audit([], inventory, [], [view(3, 3)], stock_changes=ledger)
    assert any("B: last availability has on_hand=3, the events give 0" in b for b in twice.breaches)
    # gone from transit without a receipt: lost unseen
    vanished = audit([], inventory, [], [view(0, 0)], stock_changes=ledger)
    assert any("in_transit=0, the events give 3" in b for b in vanished.breaches), vanished.breaches

    received = [
        *ledger,
        change("g1", 2, 2, "B", reason="transfer_received", in_transit_delta=-2, in_transit=1, **leg),
        {
            **change("g1", 0, 2, "B", reason="lost_in_transit", in_transit_delta=-1, in_transit=0, **leg),
            "event_id": "g1:lost:B",
        },
    ]
    done = audit([], [*inventory, arrived], [], [view(2, 0)], stock_changes=received)
    assert done.ok, done.breaches
    assert (done.transfers["received"], done.transfers["lost"], done.in_transit_units) == (1, 1, 0)
    # a line waiting on the transfer, filled by its receipt
    waited = [order("p1", "o1", ("1", "S", 2))]
    filled = [
        {**decision("p1", "backordered", "o1", "1", 2, None), "reason": "incoming"},
        {**decision("g1", "allocated", "o1", "1", 2, "B")},
    ]
    with_fill = audit(waited, [*inventory, arrived], filled, [], stock_changes=received)
    assert with_fill.transfers["fills"] == 1 and with_fill.waitlist_fills == 1, with_fill.breaches
    # a ledger that never writes the loss off keeps a unit in transit the events say is gone
    unwritten = audit([], [*inventory, arrived], [], [view(2, 0)], stock_changes=received[:-1])
    assert any("the ledger ends at in_transit=1, the events give 0" in b for b in unwritten.breaches)


def test_promised_dates_are_counted_and_a_restatement_is_no_second_decision() -> None:
    placed = [order("p1", "o1", ("1", "S", 2))]
    waits = {**decision("p1", "backordered", "o1", "1", 2, None), "reason": "incoming", "promised_at": 5}
    moved = {**decision("e2", "backordered", "o1", "1", 2, None), "reason": "incoming", "promised_at": 9}
    report = audit(placed, [stock("e2", 0, kind="expected")], [waits, moved], [])
    assert report.ok, report.breaches
    assert (report.promises["promised"], report.promises["restated"], report.lines_decided) == (2, 1, 1)


def test_an_order_edit_down_then_up_passes_and_holds_no_more_than_the_new_qty() -> None:
    report = audit(
        [
            order("o1", "A", ("1", "S", 3)),
            order("e1", "A", ("1", "S", 1), ("2", "S", 1), kind="amended"),  # line 2 added
            order("e2", "A", ("1", "S", 4), ("2", "S", 1), kind="amended"),
        ],
        [stock("r1", 6)],
        [
            event("allocated", "o1", "1", 3),
            event("amended", "e1", "1", 1, None),
            event("released", "e1", "1", 2, reason="amended"),
            event("allocated", "e1", "2", 1),  # placed by the edit
            event("amended", "e2", "1", 4, None),
            event("allocated", "e2", "1", 3),  # the extra units, under the edit's own cause
        ],
        [snapshot(6, 5)],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 2 and report.oversold_units == 0
    assert report.released_by_reason["amended"] == 1


def test_units_an_edit_did_not_ask_for_are_a_breach() -> None:
    report = audit(
        [order("o1", "A", ("1", "S", 3)), order("e1", "A", ("1", "S", 1), kind="amended")],
        [stock("r1", 6)],
        [
            event("allocated", "o1", "1", 3),
            event("amended", "e1", "1", 1, None),  # down to 1, but nothing released
            event("allocated", "r1", "1", 1),  # and a unit from a receipt, which no edit asked for
        ],
        [snapshot(6, 4)],
    )
    assert any("holds 4 of 1 ordered" in b for b in report.breaches)
    assert any("neither its placement nor after a backorder" in b for b in report.breaches)


def test_a_line_an_edit_moves_to_another_sku_is_followed_at_each() -> None:
    moved = {**event("allocated", "e1", "1", 2), "sku": "T"}
    report = audit(
        [order("o1", "A", ("1", "S", 2)), order("e1", "A", ("1", "T", 2), kind="amended")],
        [stock("r1", 3), {**stock("r2", 3), "sku": "T"}],
        [
            event("allocated", "o1", "1", 2),
            event("released", "e1:1:amend_requested", "1", 2, reason="amended"),
            moved,
        ],
        [snapshot(3, 0), {**snapshot(3, 2), "sku": "T"}],
        leaked_allocations=[{"event_id": "e1:1:amend_requested"}],
    )
    assert report.ok, report.breaches
    assert report.lines_decided == 2  # once at each SKU


def test_a_backorder_filled_by_its_promised_date_keeps_the_promise_and_one_filled_later_misses_it() -> None:
    placed = [order("p1", "o1", ("1", "S", 2), ("2", "S", 1))]
    promised = [
        {**decision("p1", "backordered", "o1", line, qty, None), "reason": "incoming", "promised_at": 1_000}
        for line, qty in (("1", 2), ("2", 1))
    ]
    fills = [
        {**decision("r1", "allocated", "o1", "1", 2), "decided_at": 1_000},  # on the date: kept
        {**decision("r2", "allocated", "o1", "2", 1), "decided_at": 1_001},  # a millisecond late
    ]
    report = audit(placed, [stock("r1", 2), stock("r2", 1)], [*promised, *fills], [])
    assert report.ok, report.breaches
    assert (report.promises["promised"], report.promises["kept"], report.promises["missed"]) == (2, 1, 1)
