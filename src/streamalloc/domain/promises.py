"""Promise dates: when a line backordered against incoming stock can expect its units.

The incoming units, expected receipts (`SkuBook.expected`, by purchase order) and transfers
in transit (`SkuBook.transfers`), are lined up by ETA, earliest first, those without one
last (with them the incoming units the book does not track: expected before purchase
orders were). The lines backordered against them (reason `incoming`), in waitlist rank
order, are counted against that line-up in turn: a line's promised date is the ETA of the
last units it is counted against, None when any of them has none (or they do not cover
it). A waitlisted line is promised nothing.

When a decision may move promises, every waiting line's is worked out again and each that
moved is published: the `backordered` event the decision gave the line carries it, or a
`backordered` restating what the line waits for, with its new `promised_at`. That is after
every inventory decision that changed stock (an ETA moved: a purchase order sent again
with a new one, a transfer shipped again under its id; supply came or went) and after
any decision that made a line wait (a placement, a sweep, an expiry: it may rank ahead of
others). The other lines of the order a line command is about are restated at the next
such decision instead: for a placement their restatement would carry the placement's
cause, as their own first decision did. A cancel or a fill that makes no line wait only
ever brings promises earlier, so they are left until the next change of supply too.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.events import (
    BACKORDERED,
    AllocationEvent,
    Decision,
    Event,
    allocation_event,
    build_event,
)
from streamalloc.domain.model import LineKey, SkuState


def supplies(state: SkuState) -> list[tuple[int | None, int]]:
    """(eta, units) of everything on its way to the SKU, earliest first, no ETA last."""
    book = state.book
    rows = [(s.eta, s.qty) for s in book.expected.values()]
    rows += [(t.eta, t.qty) for t in book.transfers.values()]
    untracked = sum(b.incoming for b in state.balances.values()) - sum(s.qty for s in book.expected.values())
    if untracked > 0:
        rows.append((None, untracked))
    rows.sort(key=lambda row: (row[0] is None, row[0] or 0))
    return rows


def promises(state: SkuState) -> dict[LineKey, int | None]:
    """The promised date of every line backordered against incoming stock (see the module doc)."""
    rows = supplies(state)
    at, left = 0, rows[0][1] if rows else 0
    promised: dict[LineKey, int | None] = {}
    for entry in state.book.waitlist:
        if entry.reason != reasons.INCOMING:
            continue
        need, eta = entry.qty, None
        while need > 0 and at < len(rows):
            taken = min(need, left)
            need -= taken
            left -= taken
            eta = rows[at][0]
            if left == 0:
                at += 1
                left = rows[at][1] if at < len(rows) else 0
        promised[(entry.order_id, entry.line_id)] = eta if need == 0 else None
    return promised


def restate(
    state: SkuState, decision: Decision, cause: str, occurred_at: int, now: int, *, placing: str | None = None
) -> Decision:
    """`decision` with every waiting line's promise up to date (see the module doc).

    `placing` is the order of a line being placed: its other lines are not restated.
    """
    promised = promises(state)
    book = state.book
    moved = {
        key: promised.get(key)
        for e in book.waitlist
        if promised.get(key := (e.order_id, e.line_id)) != e.promised_at
        and (placing is None or e.order_id != placing or _decided_here(decision, key))
    }
    if moved:
        state.edit_book().waitlist = [
            e._replace(promised_at=moved[(e.order_id, e.line_id)]) if (e.order_id, e.line_id) in moved else e
            for e in book.waitlist
        ]
    events: list[Event] = []
    told: set[LineKey] = set()
    for event in decision:
        if isinstance(event, AllocationEvent) and event.type == BACKORDERED:
            key = (event.order_id, event.line_id)
            entry = state.book.entry(*key)
            if entry is not None and entry.promised_at != event.promised_at:
                event = _promising(event, entry.promised_at)  # noqa: PLW2901
            told.add(key)
        events.append(event)
    for entry in state.book.waitlist:
        key = (entry.order_id, entry.line_id)
        if key in moved and key not in told:
            line = state.get_line(key)
            channel = line.channel if line is not None else entry.channel
            restated = allocation_event(
                cause, BACKORDERED, entry.order_id, entry.line_id, state.sku, channel, entry.qty, None,
                entry.lot, entry.reason, occurred_at, now,
            )  # fmt: skip
            events.append(_promising(restated, entry.promised_at))
    return Decision(events)


def _decided_here(decision: Decision, key: LineKey) -> bool:
    return any(isinstance(e, AllocationEvent) and (e.order_id, e.line_id) == key for e in decision)


def _promising(event: AllocationEvent, promised_at: int | None) -> AllocationEvent:
    """The same event, promising the line for `promised_at`."""
    return build_event(AllocationEvent, {**event.__dict__, "promised_at": promised_at})
