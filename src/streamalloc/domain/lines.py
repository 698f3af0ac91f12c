"""Order-line commands: allocate, release, pick, fulfil, return.

Idempotence (docs/exactly-once.md). A line is decided once: a second `AllocateLine` for a line
this SKU has decided, whatever its event id, is a duplicate: nothing changes and nothing
is emitted (the first decision was published in the same transaction that stored the
line). Every later command records its cause event id on the line, applied or refused, so
the same release, pick, fulfil or return again is a duplicate too; a release of a line
already released is one whatever its id.

A command for a line not yet placed is refused (`unknown_line`) and remembered on an
`unplaced` line record, which holds only those ids. `AllocateLine` still decides such a
line (keeping the ids), so a refused pick that arrives again after the placement is a
duplicate rather than a pick. A return is the exception: see `return_line`.

Validation order, so a reason is always the first thing wrong: duplicate, then (for an
allocation) the channel, which must be in the channels table (`unknown_channel`), then
quantity, then what the line or the stock allows.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.allocate import NO_BOUNDS, Choice, choose_locations, choose_partial, pool_bounds
from streamalloc.domain.commands import (
    AllocateLine,
    AmendLine,
    ConfirmLine,
    ExtendHold,
    FulfilLine,
    PickLine,
    ReleaseLine,
    ReturnLine,
)
from streamalloc.domain.events import (
    ALLOCATED,
    DUPLICATE,
    FULFILLED,
    PICKED,
    REJECTED,
    RELEASED,
    RETURNED,
    AllocationEventType,
    Decision,
    Event,
    allocation_event,
    stock_changed,
)
from streamalloc.domain.holds import add_part, harden, hold, move_lot, place, ship, unhold
from streamalloc.domain.model import (
    HELD,
    UNPLACED,
    WAITING,
    LinePart,
    LineState,
    LocationBalance,
    Lot,
    SkuState,
)
from streamalloc.domain.tables import DEFAULT_CHANNEL, Tables
from streamalloc.domain.waitlist import dequeue, enqueue, serve, wait_reason

_LineCommand = ReleaseLine | PickLine | FulfilLine | ReturnLine | ConfirmLine | ExtendHold | AmendLine


def allocate_line(state: SkuState, cmd: AllocateLine, tables: Tables, now: int) -> Decision:
    """Promise the line's units at the best location(s); else let it wait, or reject it."""
    key = (cmd.order_id, cmd.line_id)
    seen = state.get_line(key)
    if seen is None:
        applied = [cmd.event_id]
    elif seen.status == UNPLACED:
        applied = [*seen.applied, cmd.event_id]
    else:
        return DUPLICATE
    qty = cmd.qty
    rest = 0  # units of a partial allocation left to wait
    channel = tables.channels.get(cmd.channel)
    if channel is None:  # no policy to decide under: rejected, never allocated under defaults
        channel = DEFAULT_CHANNEL  # (for the type checker: a rejection needs no policy)
        choice: Choice | str = reasons.UNKNOWN_CHANNEL
    elif qty <= 0:
        choice = reasons.INVALID_QUANTITY
    elif not state.balances:
        choice = reasons.UNKNOWN_SKU
    else:
        bounds = (
            pool_bounds(state.balances, state.book, tables, channel, now) if tables.bounded else NO_BOUNDS
        )
        choice = choose_locations(
            state.balances, tables.online, channel, qty, cmd.region, cmd.location, now, bounds
        )
        if channel.allow_partial and choice in reasons.SHORT:
            partial = choose_partial(
                state.balances, tables.online, channel, qty, cmd.region, cmd.location, now, bounds
            )
            if partial is not None:  # else nothing is there: the whole line waits (below)
                choice = partial
                rest = qty - sum(n for _, n in partial)

    line = LineState(cmd.order_id, cmd.line_id, cmd.channel, qty, "allocated", (), 0, None, applied, now)
    state.add_line(key, line)
    if isinstance(choice, str):
        waits = wait_reason(state, channel, qty) if choice in reasons.SHORT else None
        if waits is not None:
            backordered = enqueue(
                state, line, channel, waits, priority=cmd.priority, region=cmd.region,
                location=cmd.location, lot=cmd.lot, ttl_s=cmd.reservation_ttl_s,
                occurred_at=cmd.occurred_at, cause=cmd.event_id, now=now,
            )  # fmt: skip
            return Decision((backordered,))
        line.status = "rejected"
        line.reason = choice
        rejected = allocation_event(
            cmd.event_id, REJECTED, cmd.order_id, cmd.line_id, state.sku, cmd.channel, qty,
            cmd.location, cmd.lot, choice, cmd.occurred_at, now,
        )  # fmt: skip
        return Decision((rejected,))

    if cmd.reservation_ttl_s is not None:
        line.expires_at = now + cmd.reservation_ttl_s * 1000
    events = place(
        state, line, choice, tables.lot_policy_of(channel), ALLOCATED, cmd.event_id,
        cmd.occurred_at, now, lot=cmd.lot,
    )  # fmt: skip
    if rest:  # a partial allocation: the rest waits (waitlist.py)
        events.append(
            enqueue(
                state, line, channel, wait_reason(state, channel, rest) or reasons.WAITLISTED,
                priority=cmd.priority, region=cmd.region, location=cmd.location, lot=cmd.lot,
                ttl_s=cmd.reservation_ttl_s, occurred_at=cmd.occurred_at, cause=cmd.event_id, now=now,
                qty=rest,
            )
        )  # fmt: skip
    return Decision(events)


def release_line(state: SkuState, cmd: ReleaseLine, tables: Tables, now: int) -> Decision:
    """Give back everything the line holds, soft and hard, at each location it took from.

    A line that never held units (rejected, or waiting) is marked released with a
    `released` event of qty 0, so the order stage hears about every cancelled line. A
    shipped line cannot be released (`already_fulfilled`): its units have left; a
    returned line holding nothing has nothing to release (a duplicate). Units freed go to
    the waitlist first.
    """
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    if line is None or line.status == UNPLACED:
        return reject(state, cmd, line, reasons.UNKNOWN_LINE, 0, None, None, now)
    if line.status == "released" or (line.status == "returned" and line.held == 0):
        # Nothing to give back. A returned line may have been released before its return,
        # and a release that was a duplicate then must stay one now (it was never recorded).
        return DUPLICATE
    if line.held == 0 and line.fulfilled > 0 and line.status not in WAITING:
        return reject(state, cmd, line, reasons.ALREADY_FULFILLED, 0, None, None, now)

    own = edit_line(state, line, cmd)
    if own.status in WAITING:  # (a partial line that shipped what it held still waits: it goes)
        dequeue(state, own.order_id, own.line_id)
    events: list[Event] = []
    parts: list[LinePart] = []
    for part in own.parts:
        qty = part.allocated + part.picked
        if qty:
            unhold(state, own, part, part.allocated, part.picked)
            events.append(
                line_event(state, cmd, own, RELEASED, qty, part.location, part.lot, cmd.reason, now)
            )
            part = LinePart(part.location, 0, 0, part.fulfilled, part.lot)  # noqa: PLW2901 - as it is now
        parts.append(part)
    own.parts = tuple(parts)
    own.status = "released"
    if not events:
        events.append(line_event(state, cmd, own, RELEASED, 0, None, None, cmd.reason, now))
    else:
        events += serve(state, tables, cmd.event_id, cmd.occurred_at, now)
    return Decision(events)


def pick_line(state: SkuState, cmd: PickLine, tables: Tables, now: int) -> Decision:
    """Turn `qty` soft units of the line into hard ones: a pick task exists (hard allocation).

    Where the line holds soft units at the named location (or anywhere, when none is
    named), they become hard there, counted against the lot the pick names (which must
    have the free, unexpired units) or the one they were allocated from. A pick at a
    location where the line holds nothing moves the allocation there when that location
    has the units available (`released` reason `reallocated` where they were, `picked`
    where they are now); else it is rejected.
    """
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    if line is not None and line.status == HELD:  # a cart's hold: confirmed first (checkout.py)
        return reject(state, cmd, line, reasons.ON_HOLD, qty, cmd.location, cmd.lot, now)
    reason = _check(line, cmd.location, qty, soft_only=True)
    if reason == reasons.LOCATION_MISMATCH and line is not None and cmd.location is not None:
        return _pick_elsewhere(state, cmd, line, cmd.location, tables, now)
    if reason is not None or line is None:  # (_check refuses a line that is None)
        return reject(state, cmd, line, reason or reasons.UNKNOWN_LINE, qty, cmd.location, cmd.lot, now)

    if cmd.lot is not None:
        for part in line.parts:
            if part.allocated and part.lot != cmd.lot and (cmd.location in (None, part.location)):
                balance = state.balances.get(part.location)
                if balance is not None and balance.lots and not _lot_has(balance.lots, cmd.lot, qty, now):
                    return reject(state, cmd, line, reasons.LOT_UNAVAILABLE, qty, part.location, cmd.lot, now)
                break

    own = edit_line(state, line, cmd)
    picked: dict[tuple[str, str | None], int] = {}  # one event per (location, lot) picked
    parts: list[LinePart] = []
    remaining = qty
    for part in own.parts:
        if remaining and part.allocated and (cmd.location is None or part.location == cmd.location):
            move = min(part.allocated, remaining)
            remaining -= move
            lot = part.lot
            if cmd.lot is not None and cmd.lot != part.lot:
                lot = cmd.lot if move_lot(state, part, cmd.lot, move, now) or part.lot is None else part.lot
            harden(state, part, move)
            if lot == part.lot:
                add_part(
                    parts,
                    LinePart(part.location, part.allocated - move, part.picked + move, part.fulfilled, lot),
                )
            else:  # the picked units now count against another lot: a part of their own
                if part.allocated > move or part.picked or part.fulfilled:
                    add_part(
                        parts,
                        LinePart(part.location, part.allocated - move, part.picked, part.fulfilled, part.lot),
                    )
                add_part(parts, LinePart(part.location, 0, move, 0, lot))
            picked[(part.location, lot)] = picked.get((part.location, lot), 0) + move
        else:
            add_part(parts, part)
    own.parts = tuple(parts)
    settle(own)
    return Decision(
        [
            line_event(state, cmd, own, PICKED, n, location, lot, None, now)
            for (location, lot), n in picked.items()
        ]
    )


def fulfil_line(state: SkuState, cmd: FulfilLine, tables: Tables, now: int) -> Decision:
    """Ship `qty` units of the line: picked units first, then soft ones; they leave on_hand.

    A shipment the books did not cover (on_hand written down below what was allocated)
    can take on_hand below zero: the units did leave, available floors at zero, and the
    next count corrects the books.
    """
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    if line is not None and line.status == HELD:  # a cart's hold: confirmed first (checkout.py)
        return reject(state, cmd, line, reasons.ON_HOLD, qty, cmd.location, None, now)
    reason = _check(line, cmd.location, qty, soft_only=False)
    if reason is not None or line is None:  # (_check refuses a line that is None)
        return reject(state, cmd, line, reason or reasons.UNKNOWN_LINE, qty, cmd.location, None, now)

    own = edit_line(state, line, cmd)
    events: list[Event] = []
    parts: list[LinePart] = []
    remaining = qty
    for part in own.parts:
        if remaining and (cmd.location is None or part.location == cmd.location):
            hard = min(part.picked, remaining)
            soft = min(part.allocated, remaining - hard)
            take = hard + soft
            if take:
                remaining -= take
                balance = ship(state, own, part, soft, hard)
                part = LinePart(  # noqa: PLW2901 - the part as it is now
                    part.location, part.allocated - soft, part.picked - hard, part.fulfilled + take, part.lot
                )
                events.append(
                    line_event(state, cmd, own, FULFILLED, take, part.location, part.lot, None, now)
                )
                events.append(
                    _line_stock(state, cmd, part.location, balance, FULFILLED, -take, 0, part.lot, now)
                )
        parts.append(part)
    own.parts = tuple(parts)
    settle(own)
    return Decision(events)


def _pick_elsewhere(
    state: SkuState, cmd: PickLine, line: LineState, location: str, tables: Tables, now: int
) -> Decision:
    """The pick happened at a location the line holds nothing at: move the units there."""
    qty = cmd.qty
    if qty > line.allocated:
        return reject(state, cmd, line, reasons.EXCEEDS_ALLOCATION, qty, location, cmd.lot, now)
    loc = tables.online.get(location)
    if loc is None:
        return reject(state, cmd, line, reasons.LOCATION_UNAVAILABLE, qty, location, cmd.lot, now)
    balance = state.balances.get(location)
    if balance is None or balance.sellable(loc.safety_stock, now) < qty:
        return reject(state, cmd, line, reasons.INSUFFICIENT_STOCK, qty, location, cmd.lot, now)
    if cmd.lot is not None and balance.lots and not _lot_has(balance.lots, cmd.lot, qty, now):
        return reject(state, cmd, line, reasons.LOT_UNAVAILABLE, qty, location, cmd.lot, now)
    own = edit_line(state, line, cmd)
    events: list[Event] = []
    parts: list[LinePart] = []
    remaining = qty
    for part in own.parts:
        if remaining and part.allocated:
            move = min(part.allocated, remaining)
            remaining -= move
            unhold(state, own, part, move, 0)
            events.append(
                line_event(state, cmd, own, RELEASED, move, part.location, part.lot, reasons.REALLOCATED, now)
            )
            part = LinePart(part.location, part.allocated - move, part.picked, part.fulfilled, part.lot)  # noqa: PLW2901
        if part.allocated or part.picked or part.fulfilled:
            parts.append(part)
    policy = tables.lot_policy_of(tables.channel(own.channel))
    for part in hold(state, own, location, qty, policy, now, lot=cmd.lot, hard=True):
        add_part(parts, part)
        events.append(line_event(state, cmd, own, PICKED, part.picked, location, part.lot, None, now))
    own.parts = tuple(parts)
    settle(own)
    return Decision(events)


def _lot_has(lots: dict[str, Lot], lot_id: str, qty: int, now: int) -> bool:
    lot = lots.get(lot_id)
    return lot is not None and lot.free >= qty and not lot.expired(now)


def return_line(state: SkuState, cmd: ReturnLine, tables: Tables, now: int) -> Decision:
    """Returned units go into quality_control at a location, awaiting inspection.

    The location is the one named, else where the line shipped from. A known line takes
    back at most what it shipped and has not yet had returned. A line this SKU never saw
    (an order from before the engine, another system's shipment) is accepted when the
    return names a location: the units are physically there, refusing them would lose
    them from the books. It is recorded as a returned line, so a repeat is a duplicate.
    """
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    if qty <= 0:
        return reject(state, cmd, line, reasons.INVALID_QUANTITY, qty, cmd.location, cmd.lot, now)
    location = cmd.location
    if line is None or line.status == UNPLACED:
        if location is None:
            return reject(state, cmd, line, reasons.LOCATION_REQUIRED, qty, None, cmd.lot, now)
        applied = [cmd.event_id] if line is None else [*line.applied, cmd.event_id]
        own = LineState(cmd.order_id, cmd.line_id, cmd.channel, qty, "returned", (), qty, None, applied, now)
        state.add_line((cmd.order_id, cmd.line_id), own)
    else:
        shipped = line.fulfilled
        if shipped == 0:
            return reject(state, cmd, line, reasons.NOT_FULFILLED, qty, location, cmd.lot, now)
        if qty > shipped - line.returned:
            return reject(state, cmd, line, reasons.EXCEEDS_FULFILLED, qty, location, cmd.lot, now)
        if location is None:
            location = next(p.location for p in line.parts if p.fulfilled > 0)
        own = edit_line(state, line, cmd)
        own.returned += qty
        if own.returned >= shipped and own.held == 0 and own.status not in WAITING:
            own.status = "returned"
    balance = state.edit_balance(location)
    balance.quality_control += qty
    return Decision(
        (
            line_event(state, cmd, own, RETURNED, qty, location, cmd.lot, None, now),
            _line_stock(state, cmd, location, balance, RETURNED, 0, qty, cmd.lot, now),
        )
    )


# ---------------------------------------------------------------- helpers


def seen_line(state: SkuState, cmd: _LineCommand) -> LineState | Decision | None:
    """The line's record (maybe `unplaced`), None if none, DUPLICATE if `cmd` was applied."""
    line = state.get_line((cmd.order_id, cmd.line_id))
    if line is not None and cmd.event_id in line.applied:
        return DUPLICATE
    return line


def settle(line: LineState) -> None:
    """The line's status from what it holds after a pick or a shipment (it held units).

    A line that waits for more units (partially allocated) keeps waiting: it is
    `partially_allocated` while it holds units, `backordered` once it holds none.
    """
    if line.status in WAITING:
        line.status = "partially_allocated" if line.held else "backordered"
    elif line.held == 0:
        line.status = "fulfilled"
    else:
        line.status = "picked" if line.allocated == 0 else "allocated"


def edit_line(state: SkuState, line: LineState, cmd: _LineCommand) -> LineState:
    """The state's own copy of `line`, with `cmd` recorded as applied to it."""
    own = state.edit_line(line)
    own.applied.append(cmd.event_id)
    return own


def _check(line: LineState | None, location: str | None, qty: int, *, soft_only: bool) -> str | None:
    """Why the line cannot give `qty` units (soft ones, or soft and hard) at `location`."""
    if qty <= 0:
        return reasons.INVALID_QUANTITY
    if line is None or line.status == UNPLACED:
        return reasons.UNKNOWN_LINE
    total = line.allocated if soft_only else line.held
    if total == 0:
        if not soft_only and line.status in ("fulfilled", "returned"):
            return reasons.ALREADY_FULFILLED
        return reasons.NOT_ALLOCATED
    if location is not None:
        total = sum(
            p.allocated if soft_only else p.allocated + p.picked for p in line.parts if p.location == location
        )
        if total == 0:
            return reasons.LOCATION_MISMATCH
    if qty > total:
        return reasons.EXCEEDS_ALLOCATION
    return None


def reject(
    state: SkuState,
    cmd: _LineCommand,
    line: LineState | None,
    reason: str,
    qty: int,
    location: str | None,
    lot: str | None,
    now: int,
) -> Decision:
    """Emit `rejected` and record the cause id on the line (an `unplaced` one if it had none)."""
    if line is None:
        placeholder = LineState(cmd.order_id, cmd.line_id, cmd.channel, 0, UNPLACED, applied=[cmd.event_id])
        state.add_line((cmd.order_id, cmd.line_id), placeholder)
        channel = cmd.channel
    else:
        edit_line(state, line, cmd)
        channel = line.channel
    rejected = allocation_event(
        cmd.event_id, REJECTED, cmd.order_id, cmd.line_id, state.sku, channel, qty,
        location, lot, reason, cmd.occurred_at, now,
    )  # fmt: skip
    return Decision((rejected,))


def line_event(
    state: SkuState,
    cmd: _LineCommand,
    line: LineState,
    type_: AllocationEventType,
    qty: int,
    location: str | None,
    lot: str | None,
    reason: str | None,
    now: int,
) -> Event:
    return allocation_event(
        cmd.event_id, type_, cmd.order_id, cmd.line_id, state.sku, line.channel, qty,
        location, lot, reason, cmd.occurred_at, now,
    )  # fmt: skip


def _line_stock(
    state: SkuState,
    cmd: _LineCommand,
    location: str,
    balance: LocationBalance,
    reason: str,
    on_hand_delta: int,
    quality_control_delta: int,
    lot: str | None,
    now: int,
) -> Event:
    after = (balance.on_hand, balance.quality_control, balance.damaged, balance.incoming)
    return stock_changed(
        cmd.event_id, state.sku, location, reason, on_hand_delta, quality_control_delta, 0, 0, after,
        lot, cmd.order_id, cmd.line_id, cmd.occurred_at, now, in_transit=state.in_transit(location),
    )  # fmt: skip
