"""The order stage takes back what a batch that never committed decided (embedded broker).

Both cases were seen in `streamalloc demo --crash-at 0.4` (run kept on a live broker): the
allocator's task was killed mid-batch, the broker showed that batch's events, and the next
incarnation redid its input and decided otherwise, under other event ids. The order stage
had followed both; the audit (which leaves the void batch out, runtime/lineage.py) found
its last order-status wrong.
"""

from __future__ import annotations

import marshal
from typing import Any

from tests.unit.stages._inputs import ALLOCATIONS, ORDER_STATUS, REQUESTS, SETTINGS, allocation, decoded

from streamalloc.runtime.lineage import encode_batch
from streamalloc.runtime.live_lineage import LiveBatches, source_of
from streamalloc.stages.order_stage import LINEAGE_KEY, STORE, OrderStage, decode_order
from streamalloc.testing import Output, StageHarness

REQ, INV = ("r.allocation-requests", 2), ("r.inventory", 2)
#: allocator:2's first incarnation: a committed batch, then the one killed mid-way (leaked)
COMMITTED = encode_batch("allocator:2", 1, {REQ: 0, INV: 0}, {REQ: 0, INV: 0})
LEAKED = encode_batch("allocator:2", 1, {REQ: 0, INV: 0}, {REQ: 180, INV: 7})
#: its next incarnation opened where the leaked batch started: it redid that input
REDONE = encode_batch("allocator:2", 2, {REQ: 180, INV: 7}, {REQ: 180, INV: 7})
INTAKE = encode_batch("intake:3", 1, {("r.orders", 3): 0}, {("r.orders", 3): 0})


def statuses(outputs: list[Output]) -> list[tuple[str, list[tuple[str, str, int]]]]:
    found = []
    for output in outputs:
        if output.topic == ORDER_STATUS:
            status = decoded(ORDER_STATUS, output.value)
            found.append(
                (
                    status["status"],
                    [(line["line_id"], line["status"], line["allocated"]) for line in status["lines"]],
                )
            )
    return found


def test_a_redone_rejection_replaces_the_leaked_backorder() -> None:
    # marketplace-113: backordered (waitlisted) in the leaked batch, rejected channel_not_allowed
    # when redone; the rejection used to count as a refused command on a decided line
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("m113:accepted", "accepted", "m113", qty=0, line_count=1)
    harness.feed(ALLOCATIONS, [(b"m113", accepted)], batch=INTAKE)
    backordered = allocation("m113:1:backordered", "backordered", "m113", "1", reason="waitlisted")
    assert statuses(harness.feed(ALLOCATIONS, [(b"m113", backordered)], batch=LEAKED)) == [
        ("backordered", [("1", "backordered", 0)])
    ]
    rejected = allocation("m113:1:rejected", "rejected", "m113", "1", reason="channel_not_allowed")
    assert statuses(harness.feed(ALLOCATIONS, [(b"m113", rejected)], batch=REDONE)) == [
        ("rejected", [("1", "rejected", 0)])
    ]


def test_a_fill_redone_from_another_cause_is_held_once() -> None:
    # marketplace-43 line 3: a backordered line filled in the leaked batch (from a cancelled
    # order's release), filled again from an expiry when redone, then shipped: the stage
    # counted two units held and published it allocated with 1 unit left
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("m43:accepted", "accepted", "m43", qty=0, line_count=1)
    harness.feed(ALLOCATIONS, [(b"m43", accepted)], batch=INTAKE)
    backordered = allocation("m43:1:backordered", "backordered", "m43", "1", reason="waitlisted")
    harness.feed(ALLOCATIONS, [(b"m43", backordered)], batch=COMMITTED)
    leaked_fill = allocation(
        "cancel-110:m43:1:allocated:WH", "allocated", "m43", "1", location="WH", cause_event_id="cancel-110"
    )
    harness.feed(ALLOCATIONS, [(b"m43", leaked_fill)], batch=LEAKED)
    fill = allocation(
        "clock:expiry:m35:m43:1:allocated:WH",
        "allocated",
        "m43",
        "1",
        location="WH",
        cause_event_id="clock:expiry:m35",
    )
    assert statuses(harness.feed(ALLOCATIONS, [(b"m43", fill)], batch=REDONE)) == [
        ("allocated", [("1", "allocated", 1)])
    ]
    picked = allocation("p:m43:1:picked:WH", "picked", "m43", "1", location="WH", cause_event_id="p")
    shipped = allocation("f:m43:1:fulfilled:WH", "fulfilled", "m43", "1", location="WH", cause_event_id="f")
    later = encode_batch("allocator:2", 2, {REQ: 180, INV: 7}, {REQ: 452, INV: 15})
    assert statuses(harness.feed(ALLOCATIONS, [(b"m43", picked), (b"m43", shipped)], batch=later)) == [
        ("fulfilled", [("1", "fulfilled", 0)])
    ]


def test_a_redone_ship_complete_rejection_releases_the_other_lines() -> None:
    # the leaked batch allocated line 2 of a ship-complete order; redone, it is rejected: the
    # order's rule now asks to release line 1, which the leaked decision had not asked for
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("o:accepted", "accepted", "o", qty=0, line_count=2, ship_complete=True)
    harness.feed(ALLOCATIONS, [(b"o", accepted)], batch=INTAKE)
    one = allocation("o:1:allocated:WH", "allocated", "o", "1", location="WH")
    harness.feed(ALLOCATIONS, [(b"o", one)], batch=COMMITTED)
    two = allocation("o:2:allocated:WH", "allocated", "o", "2", location="WH")
    outputs = harness.feed(ALLOCATIONS, [(b"o", two)], batch=LEAKED)
    assert [o for o in outputs if o.topic == REQUESTS] == []
    rejected = allocation("o:2:rejected", "rejected", "o", "2", reason="insufficient_stock")
    outputs = harness.feed(ALLOCATIONS, [(b"o", rejected)], batch=REDONE)
    releases = [decoded(REQUESTS, o.value) for o in outputs if o.topic == REQUESTS]
    assert [(r["command"], r["line_id"], r["reason"]) for r in releases] == [
        ("release", "1", "ship_complete_failed")
    ]


def test_a_record_of_a_batch_known_void_is_left_out() -> None:
    # a leaked batch's records may also reach the stage after the redo began (another order)
    harness = StageHarness(OrderStage(SETTINGS))
    for order in ("a", "b"):
        accepted = allocation(f"{order}:accepted", "accepted", order, qty=0, line_count=1)
        harness.feed(ALLOCATIONS, [(order.encode(), accepted)], batch=INTAKE)
    harness.feed(ALLOCATIONS, [(b"a", allocation("a:1:backordered", "backordered", "a", "1"))], batch=LEAKED)
    harness.feed(
        ALLOCATIONS, [(b"a", allocation("a:1:rejected", "rejected", "a", "1", reason="x"))], batch=REDONE
    )
    late = allocation("b:1:backordered", "backordered", "b", "1")
    assert statuses(harness.feed(ALLOCATIONS, [(b"b", late)], batch=LEAKED)) == []


def test_a_punctuation_batch_is_never_void() -> None:
    # an expiry timer's batch consumed nothing: the restore keeps it, and so does the audit
    harness = StageHarness(OrderStage(SETTINGS))
    accepted = allocation("e:accepted", "accepted", "e", qty=0, line_count=1)
    harness.feed(ALLOCATIONS, [(b"e", accepted)], batch=INTAKE)
    harness.feed(
        ALLOCATIONS,
        [(b"e", allocation("e:1:allocated:WH", "allocated", "e", "1", location="WH"))],
        batch=COMMITTED,
    )
    expired = allocation(
        "clock:expiry:e:1:released:WH", "released", "e", "1", location="WH", reason="expired",
        cause_event_id="clock:expiry:e:1",
    )  # fmt: skip
    harness.feed(ALLOCATIONS, [(b"e", expired)], batch=LEAKED)
    other = allocation("x:accepted", "accepted", "x", qty=0, line_count=1)
    harness.feed(ALLOCATIONS, [(b"x", other)], batch=REDONE)
    kept = harness.store(STORE).get(b"e")
    assert kept is not None
    assert decode_order(kept).lines["1"].status == "released"


def test_the_lineage_is_kept_between_commits_and_read_again_after_a_failed_one(monkeypatch: Any) -> None:
    """What the partition has seen of its writers' batches is decoded once, then carried from
    commit to commit; a commit that failed after `before_commit` left the store's record as
    it was, and the next batch reads that one, not what the failed batch saw."""
    loads: list[object] = []
    load = LiveBatches.load

    def counted(value: object) -> LiveBatches:
        loads.append(value)
        return load(value)

    monkeypatch.setattr(LiveBatches, "load", staticmethod(counted))
    harness = StageHarness(OrderStage(SETTINGS))
    for order in ("a", "b", "c"):
        accepted = allocation(f"{order}:accepted", "accepted", order, qty=0, line_count=1)
        harness.feed(ALLOCATIONS, [(order.encode(), accepted)], batch=INTAKE)
    assert loads == [], "the first batch found no record; the later ones took the value kept"
    harness.feed(
        ALLOCATIONS,
        [(b"a", allocation("a:1:backordered", "backordered", "a", "1"))],
        batch=LEAKED,
        commit=False,
    )
    stored = harness.store(STORE).get(LINEAGE_KEY)
    assert stored is not None
    harness.feed(
        ALLOCATIONS, [(b"b", allocation("b:1:rejected", "rejected", "b", "1", reason="x"))], batch=COMMITTED
    )
    assert len(loads) == 1, "read again from the store after the failed commit"
    assert loads[0] == marshal.loads(stored)  # noqa: S302 - the stage's own record
    assert all(entry[0] != source_of(LEAKED) for seen in loads[0][0].values() for entry in seen)
