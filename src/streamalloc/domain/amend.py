"""Order edits (`AmendLine`, order event `amended`): a line's new quantity, in one decision.

Each line of an amended order comes here as the quantity it is now for. The whole change
is one decision, so no other command can take the units in between:

- **the same quantity**: no unit moves; the edit is recorded on the line all the same (an
  `amended` event with the quantity it has), so it cannot come back later as a change.
- **fewer units**: the line gives up what it waits for first (units it was never given),
  then soft units (`released`, reason `amended`, one per part, the last part first), which
  go to the waitlist at once. Picked (hard) and shipped units never go back: an edit below
  them is refused (`amend_below_picked`) and the line stays as it was.
- **more units**: a line that waits already waits for the extra too, in its place (while
  its channel lets it wait for the new total, else refused). A line that holds units takes
  the extra where it holds them (`allocated`); elsewhere only with `allow_split` (the line
  would ship from two locations), and at the location the line names only there. When the
  units are not there, the channel's rules decide as for a placement: with `allow_partial`
  it takes what is there and waits for the rest; a backorder or the waitlist lets the extra
  wait (`backordered`, the line `partially_allocated`); else the edit is refused
  (`insufficient_stock`, ...). What the line holds is never released to make room.
- **a line new to the order** (this SKU never placed it): placed, as `placed` would.

An edit that changes the quantity starts with an `amended` event whose qty is the line's
new quantity (the order stage follows it: domain/orders.py); the units move in the events
after it. A refusal is a `rejected` event that leaves the line as it was (quantity too).
An edit of a line that is closed (shipped, returned, released or rejected) is refused
(`line_closed`), of a cart's hold `on_hold`, of a quantity of zero or less
`invalid_quantity` (a line leaves the order by being left out of the edit: the order stage
releases it, reason `amended`).

Idempotence, as for every line command (lines.py): the edit's cause id is recorded on the
line, so the same edit again is a duplicate.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.allocate import (
    NO_BOUNDS,
    Bounds,
    Choice,
    choose_locations,
    choose_partial,
    pool_bounds,
)
from streamalloc.domain.commands import AllocateLine, AmendLine
from streamalloc.domain.events import ALLOCATED, AMENDED, RELEASED, Decision, Event
from streamalloc.domain.holds import place, unhold
from streamalloc.domain.lines import allocate_line, edit_line, line_event, reject, seen_line, settle
from streamalloc.domain.model import HELD, UNPLACED, WAITING, LinePart, LineState, SkuState
from streamalloc.domain.tables import Channel, Tables
from streamalloc.domain.waitlist import enqueue, serve, wait_less, wait_more, wait_reason

#: Statuses of a line an edit may change: it holds units or waits for them.
_OPEN = frozenset({"allocated", "picked", "backordered", "partially_allocated"})


def amend_line(state: SkuState, cmd: AmendLine, tables: Tables, now: int) -> Decision:
    """The line is now for `cmd.qty` units: release the difference, or allocate (or wait for)
    the extra, in this one decision (see the module doc)."""
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    if line is None or line.status == UNPLACED:
        return allocate_line(state, _placement(cmd), tables, now)
    qty = cmd.qty
    if qty <= 0:
        return reject(state, cmd, line, reasons.INVALID_QUANTITY, qty, None, None, now)
    if line.status == HELD:
        return reject(state, cmd, line, reasons.ON_HOLD, qty, None, None, now)
    if line.status not in _OPEN:
        return reject(state, cmd, line, reasons.LINE_CLOSED, qty, None, None, now)
    if qty == line.qty:  # recorded all the same, so it cannot come back later as a change
        own = edit_line(state, line, cmd)
        return Decision((line_event(state, cmd, own, AMENDED, qty, None, None, None, now),))
    entry = state.book.entry(line.order_id, line.line_id) if line.status in WAITING else None
    waiting = entry.qty if entry is not None else 0
    change = qty - (line.held + line.fulfilled + waiting)
    if change < 0:
        if qty < line.picked + line.fulfilled:
            return reject(state, cmd, line, reasons.AMEND_BELOW_PICKED, qty, None, None, now)
        return _less(state, cmd, line, waiting, -change, tables, now)
    if change > 0:
        return _more(state, cmd, line, waiting, change, tables, now)
    own = edit_line(state, line, cmd)  # (it had fewer units than ordered: a count took some)
    own.qty = qty
    return Decision((line_event(state, cmd, own, AMENDED, qty, None, None, None, now),))


def _less(
    state: SkuState, cmd: AmendLine, line: LineState, waiting: int, excess: int, tables: Tables, now: int
) -> Decision:
    """Give up `excess` units: those waited for first, then soft ones (the caller checked
    that picked and shipped units are not needed)."""
    own = edit_line(state, line, cmd)
    own.qty = cmd.qty
    events: list[Event] = [line_event(state, cmd, own, AMENDED, cmd.qty, None, None, None, now)]
    unwait = min(waiting, excess)
    excess -= unwait
    if unwait and unwait < waiting:
        events.append(wait_less(state, own, waiting - unwait, cmd.event_id, cmd.occurred_at, now))
        return Decision(events)
    if unwait:  # it waits no more
        _stop_waiting(state, own)
    if excess:
        parts: list[LinePart] = []
        for part in reversed(own.parts):
            give = min(part.allocated, excess)
            if give:
                excess -= give
                unhold(state, own, part, give, 0)
                events.append(
                    line_event(state, cmd, own, RELEASED, give, part.location, part.lot, reasons.AMENDED, now)
                )
                part = LinePart(part.location, part.allocated - give, part.picked, part.fulfilled, part.lot)  # noqa: PLW2901 - as it is now
            if part.allocated or part.picked or part.fulfilled:
                parts.append(part)
        own.parts = tuple(reversed(parts))
        settle(own)
        events += serve(state, tables, cmd.event_id, cmd.occurred_at, now)
    return Decision(events)


def _stop_waiting(state: SkuState, own: LineState) -> None:
    book = state.edit_book()
    book.waitlist = [e for e in book.waitlist if e.order_id != own.order_id or e.line_id != own.line_id]
    own.status, own.reason = "allocated", None
    settle(own)


def _more(
    state: SkuState, cmd: AmendLine, line: LineState, waiting: int, extra: int, tables: Tables, now: int
) -> Decision:
    """Take `extra` more units where the line may, or let them wait, or refuse the edit."""
    channel = tables.channels.get(line.channel)
    if channel is None:
        return reject(state, cmd, line, reasons.UNKNOWN_CHANNEL, cmd.qty, None, None, now)
    if line.status in WAITING:  # the extra waits with the rest, in the line's place
        if not _may_wait_more(state, channel, waiting, extra):
            return reject(state, cmd, line, reasons.INSUFFICIENT_STOCK, cmd.qty, None, None, now)
        own = edit_line(state, line, cmd)
        own.qty = cmd.qty
        return Decision(
            (
                line_event(state, cmd, own, AMENDED, cmd.qty, None, None, None, now),
                wait_more(state, own, channel, extra, cmd.event_id, cmd.occurred_at, now),
            )
        )
    where = cmd.location or (None if channel.allow_split else line.location)
    bounds = pool_bounds(state.balances, state.book, tables, channel, now) if tables.bounded else NO_BOUNDS
    choice = _choose(state, tables, channel, extra, cmd.region, cmd.location, line.location, now, bounds)
    rest = 0
    if isinstance(choice, str) and choice in reasons.SHORT and channel.allow_partial:
        partial = choose_partial(
            state.balances, tables.online, channel, extra, cmd.region, where, now, bounds
        )
        if partial is not None:
            choice = partial
            rest = extra - sum(n for _, n in partial)
    waits = None
    if isinstance(choice, str):
        waits = wait_reason(state, channel, extra) if choice in reasons.SHORT else None
        if waits is None:
            return reject(state, cmd, line, choice, cmd.qty, where, cmd.lot, now)
        rest = extra
    own = edit_line(state, line, cmd)
    own.qty = cmd.qty
    events: list[Event] = [line_event(state, cmd, own, AMENDED, cmd.qty, None, None, None, now)]
    if not isinstance(choice, str):
        policy = tables.lot_policy_of(channel)
        events += place(
            state, own, choice, policy, ALLOCATED, cmd.event_id, cmd.occurred_at, now, lot=cmd.lot
        )
        settle(own)
    if rest:
        reason = waits or wait_reason(state, channel, rest) or reasons.WAITLISTED
        events.append(
            enqueue(
                state, own, channel, reason, priority=cmd.priority, region=cmd.region, location=where,
                lot=cmd.lot, ttl_s=cmd.reservation_ttl_s, occurred_at=cmd.occurred_at, cause=cmd.event_id,
                now=now, qty=rest,
            )
        )  # fmt: skip
    return Decision(events)


def _choose(
    state: SkuState,
    tables: Tables,
    channel: Channel,
    extra: int,
    region: str | None,
    named: str | None,
    held_at: str | None,
    now: int,
    bounds: Bounds,
) -> Choice | str:
    """Where the extra units come from: the location the line names, else where it holds
    units, else (with `allow_split` only) wherever the allocation policy says."""
    if named is not None or held_at is None:
        return choose_locations(state.balances, tables.online, channel, extra, region, named, now, bounds)
    choice = choose_locations(state.balances, tables.online, channel, extra, region, held_at, now, bounds)
    if isinstance(choice, str) and channel.allow_split:
        return choose_locations(state.balances, tables.online, channel, extra, region, None, now, bounds)
    return choice


def _may_wait_more(state: SkuState, channel: Channel, waiting: int, extra: int) -> bool:
    """Whether a waiting line may wait for `extra` more units: its channel lets lines wait, or
    its backorder (limit and incoming stock) covers the new total."""
    if channel.waitlist or channel.allow_partial:
        return True
    total = waiting + extra
    incoming = sum(b.incoming for b in state.balances.values())
    return total <= channel.backorder_limit and state.book.backordered() + extra <= incoming


def _placement(cmd: AmendLine) -> AllocateLine:
    """The placement of a line the edit adds to the order."""
    return AllocateLine(
        event_id=cmd.event_id, occurred_at=cmd.occurred_at, order_id=cmd.order_id, line_id=cmd.line_id,
        sku=cmd.sku, qty=cmd.qty, channel=cmd.channel, location=cmd.location, lot=cmd.lot,
        priority=cmd.priority, region=cmd.region, ship_complete=cmd.ship_complete,
        reservation_ttl_s=cmd.reservation_ttl_s,
    )  # fmt: skip
