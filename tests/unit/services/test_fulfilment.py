"""routing's requests per (order, location), built from the domain's order state."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.domain._builders import NOW, SKU, allocate, amend, online, stocked, tables

from streamalloc.domain import AmendRequested, Channel, Command, OrderState, SkuState, apply, orders
from streamalloc.domain.events import AllocationEvent, OrderAccepted
from streamalloc.domain.orders import OrderEvent
from streamalloc.services.fulfilment import (
    Published,
    changed_requests,
    finished,
    pick_lines,
    published_requests,
)


def event(n: int, kind: str, line: str, qty: int, location: str | None, lot: str | None = None,
          reason: str | None = None) -> AllocationEvent:  # fmt: skip
    return AllocationEvent(
        event_id=f"e{n}", cause_event_id=f"c{n}", type=kind, order_id="o1", line_id=line,  # type: ignore[arg-type]
        sku=f"SKU-{line}", channel="web", qty=qty, location=location, lot=lot, reason=reason, decided_at=n,
    )  # fmt: skip


class Router:
    """Feeds events through the domain and the request builder, as the service does."""

    def __init__(self) -> None:
        self.order = OrderState()
        self.published: Published = {}

    def feed(self, e: OrderEvent) -> list[tuple[str, str, int, list[tuple[str, str | None, int]]]]:
        orders.apply(self.order, e)
        at = getattr(e, "decided_at", 0) or e.occurred_at  # as the service takes it
        requests, self.published = changed_requests("o1", self.order, self.published, e.event_id, at)
        return [(r.location, r.status, r.revision, [(x[0], x[2], x[3]) for x in r.lines]) for r in requests]


def test_a_split_order_yields_one_request_per_location() -> None:
    r = Router()
    assert r.feed(event(1, "allocated", "1", 2, "WH1")) == [("WH1", "open", 1, [("1", None, 2)])]
    assert r.feed(event(2, "allocated", "2", 1, "WH2", "LOT-A")) == [("WH2", "open", 1, [("2", "LOT-A", 1)])]
    assert r.feed(event(3, "allocated", "3", 4, "WH1")) == [
        ("WH1", "open", 2, [("1", None, 2), ("3", None, 4)])
    ]


def test_a_release_updates_the_request_and_cancels_it_when_nothing_remains() -> None:
    r = Router()
    r.feed(event(1, "allocated", "1", 2, "WH1"))
    r.feed(event(2, "allocated", "2", 1, "WH1"))
    assert r.feed(event(3, "released", "1", 2, "WH1", reason="cancelled")) == [
        ("WH1", "open", 3, [("2", None, 1)])
    ]
    assert r.feed(event(4, "released", "2", 1, "WH1", reason="cancelled")) == [("WH1", "cancelled", 4, [])]


def test_a_reallocation_moves_the_line_to_the_other_locations_request() -> None:
    r = Router()
    r.feed(event(1, "allocated", "1", 3, "WH1"))
    assert r.feed(event(2, "released", "1", 3, "WH1", reason="reallocated")) == [("WH1", "cancelled", 2, [])]
    assert r.feed(event(3, "reallocated", "1", 3, "WH2")) == [("WH2", "open", 1, [("1", None, 3)])]


def test_picked_units_are_marked_and_a_shipped_request_is_fulfilled() -> None:
    r = Router()
    r.feed(event(1, "allocated", "1", 2, "WH1"))
    r.feed(event(2, "picked", "1", 2, "WH1"))
    assert r.published["WH1"][1] == (("1", "SKU-1", None, 2, 2),)
    assert r.feed(event(3, "fulfilled", "1", 2, "WH1")) == [("WH1", "fulfilled", 3, [])]


def test_a_repeated_event_changes_nothing_and_republishing_gives_the_same_ids() -> None:
    r = Router()
    first = event(1, "allocated", "1", 2, "WH1")
    r.feed(first)
    before = published_requests("o1", r.order, r.published)
    assert r.feed(first) == []
    again = published_requests("o1", r.order, r.published)
    assert [x.as_record() for x in again] == [x.as_record() for x in before]
    assert again[0].event_id == "e1:o1:WH1:r1" and again[0].request_id == "o1:WH1"


def test_rejected_and_backordered_lines_make_no_request() -> None:
    r = Router()
    assert r.feed(event(1, "rejected", "1", 2, None, reason="insufficient_stock")) == []
    assert r.feed(event(2, "backordered", "2", 2, None, reason="incoming")) == []


def test_a_held_cart_line_makes_no_request_until_it_is_confirmed() -> None:
    r = Router()
    assert r.feed(event(1, "held", "1", 2, "WH1")) == []
    assert r.feed(event(2, "extended", "1", 2, None)) == []
    assert r.feed(event(3, "confirmed", "1", 2, "WH1")) == [("WH1", "open", 1, [("1", None, 2)])]


def test_an_ack_of_the_current_revision_picks_the_soft_units_and_an_old_one_nothing() -> None:
    r = Router()
    r.feed(event(1, "allocated", "1", 2, "WH1", "LOT-A"))
    r.feed(event(2, "allocated", "2", 3, "WH1"))
    r.feed(event(3, "picked", "2", 1, "WH1"))
    revision = r.published["WH1"][0]
    assert pick_lines(r.published, "WH1", revision) == [("1", "SKU-1", "LOT-A", 2), ("2", "SKU-2", None, 2)]
    assert pick_lines(r.published, "WH1", revision - 1) == []
    assert pick_lines(r.published, "WH2", 1) == []


def accepted(lines: int) -> OrderAccepted:
    return OrderAccepted(event_id="e0", cause_event_id="c0", order_id="o1", channel="web",
                         line_count=lines, qty=lines, ship_complete=False, occurred_at=0)  # fmt: skip


def test_an_order_is_finished_once_every_request_is_closed_and_no_line_can_open_one() -> None:
    r = Router()
    orders.apply(r.order, accepted(2))
    r.feed(event(1, "allocated", "1", 2, "WH1"))
    assert not finished(r.order, r.published)
    r.feed(event(2, "backordered", "2", 1, None, reason="incoming"))
    r.feed(event(3, "released", "1", 2, "WH1", reason="cancelled"))
    assert r.published["WH1"][1] == ()
    assert not finished(r.order, r.published)  # line 2 waits: WH1 may see it, as revision 3
    r.feed(event(4, "released", "2", 1, None, reason="cancelled"))
    assert finished(r.order, r.published)


def test_a_shipped_order_and_a_rejected_one_are_finished_a_half_decided_one_is_not() -> None:
    shipped = Router()
    orders.apply(shipped.order, accepted(1))
    shipped.feed(event(1, "allocated", "1", 2, "WH1"))
    shipped.feed(event(2, "fulfilled", "1", 2, "WH1"))
    assert finished(shipped.order, shipped.published)
    rejected = Router()
    orders.apply(rejected.order, accepted(2))
    placement = {"cause_event_id": "c0"}  # rejections the placement caused decide their lines
    rejected.feed(replace(event(1, "rejected", "1", 2, None, reason="insufficient_stock"), **placement))
    assert not finished(rejected.order, rejected.published)  # line 2 not decided yet
    rejected.feed(replace(event(2, "rejected", "2", 2, None, reason="insufficient_stock"), **placement))
    assert finished(rejected.order, rejected.published)


def test_a_late_event_about_a_forgotten_order_holding_nothing_is_finished_at_once() -> None:
    late = Router()
    late.feed(event(9, "returned", "1", 1, "WH1"))
    assert finished(late.order, late.published)
    waiting = Router()
    waiting.feed(event(9, "backordered", "1", 1, None, reason="incoming"))
    assert not finished(waiting.order, waiting.published)


# ---------------------------------------------------------------- order edits
#
# An `amended` order event reaches routing as intake's `amend_requested` per line, then the
# allocator's decision (domain/amend.py): `amended` with the line's new quantity, and the
# units moved (`released` reason `amended`, or `allocated`). The decisions here are the
# domain's own, fed to routing as they come on `allocations`.

EDIT_TABLES = tables(
    online("A", priority=10), online("B", priority=5), channels=(Channel(channel_id="web", allow_split=True),)
)


def decided(state: SkuState, command: Command) -> list[AllocationEvent]:
    return [e for e in apply(state, command, EDIT_TABLES, NOW) if isinstance(e, AllocationEvent)]


def edit(line: str, qty: int, line_count: int) -> AmendRequested:
    return AmendRequested.of("edit-1", "o1", "web", line, SKU, qty, line_count, NOW)


def placed(r: Router, state: SkuState, *lines: tuple[str, int]) -> None:
    r.feed(replace(accepted(len(lines)), cause_event_id="place-1"))
    for line, qty in lines:
        for e in decided(state, allocate(line=line, qty=qty, event_id="place-1")):
            r.feed(e)


def test_an_edit_to_fewer_units_lowers_the_pick_quantity_at_that_location() -> None:
    r, state = Router(), stocked(A=10)
    placed(r, state, ("1", 5))
    assert r.published["A"][:2] == (1, (("1", SKU, None, 5, 0),))

    assert r.feed(edit("1", 2, 1)) == []  # intake's word: nothing moved yet
    events = decided(state, amend(qty=2, event_id="edit-1"))
    assert [(e.type, e.qty, e.location, e.reason) for e in events] == [
        ("amended", 2, None, None),
        ("released", 3, "A", "amended"),
    ]
    sent = [request for e in events for request in r.feed(e)]
    assert sent == [("A", "open", 2, [("1", None, 2)])]  # one new revision, of the 2 units left
    assert r.published["A"][:2] == (2, (("1", SKU, None, 2, 0),))


def test_an_edit_to_more_units_raises_the_pick_quantity_where_the_line_holds_them() -> None:
    r, state = Router(), stocked(A=10)
    placed(r, state, ("1", 2))
    r.feed(edit("1", 5, 1))
    events = decided(state, amend(qty=5, event_id="edit-1"))
    assert [(e.type, e.qty, e.location) for e in events] == [("amended", 5, None), ("allocated", 3, "A")]
    sent = [request for e in events for request in r.feed(e)]
    assert sent == [("A", "open", 2, [("1", None, 5)])]  # the line's 5 units, once


def test_extra_units_allocated_at_another_location_add_a_pick_there() -> None:
    r, state = Router(), stocked(A=3, B=10)
    placed(r, state, ("1", 3))
    r.feed(edit("1", 7, 1))
    events = decided(state, amend(qty=7, event_id="edit-1"))
    assert [(e.type, e.qty, e.location) for e in events] == [("amended", 7, None), ("allocated", 4, "B")]
    sent = [request for e in events for request in r.feed(e)]
    assert sent == [("B", "open", 1, [("1", None, 4)])]  # A's request stands as it was
    assert r.published["A"][:2] == (1, (("1", SKU, None, 3, 0),))


def test_a_line_an_edit_leaves_out_leaves_the_request_and_a_repeat_of_the_edit_changes_nothing() -> None:
    r, state = Router(), stocked(A=10)
    placed(r, state, ("1", 2), ("2", 1))
    assert [x[0] for x in r.published["A"][1]] == ["1", "2"]
    # the edit lists line 1 only: the order's rules (the order stage's) release line 2
    _, releases = orders.apply(r.order, edit("1", 2, 1))
    assert [(x.line_id, x.reason) for x in releases] == [("2", "amended")]
    events = decided(state, amend(qty=2, event_id="edit-1")) + decided(state, releases[0])
    assert [(e.type, e.line_id, e.qty, e.reason) for e in events] == [
        ("amended", "1", 2, None),
        ("released", "2", 1, "amended"),
    ]
    sent = [request for e in events for request in r.feed(e)]
    assert sent == [("A", "open", 3, [("1", None, 2)])]
    assert [request for e in events for request in r.feed(e)] == []  # at-least-once: a repeat
