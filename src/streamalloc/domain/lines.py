"""Order-line commands: allocate, release, pick, fulfil, return.

Idempotence (see DESIGN.md). A line is decided once: a second `AllocateLine` for a line
this SKU has decided, whatever its event id, is a duplicate: nothing changes and nothing
is emitted (the first decision was published in the same transaction that stored the
line). Every later command records its cause event id on the line, applied or refused, so
the same release, pick, fulfil or return again is a duplicate too; a release of a line
already released is one whatever its id.

A command for a line not yet placed is refused (`unknown_line`) and remembered on an
`unplaced` line record, which holds only those ids. `AllocateLine` still decides such a
line (keeping the ids), so a refused pick that arrives again after the placement is a
duplicate rather than a pick. A return is the exception: see `return_line`.

Validation order, so a reason is always the first thing wrong: duplicate, then quantity,
then what the line or the stock allows.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.allocate import choose_locations
from streamalloc.domain.commands import AllocateLine, FulfilLine, PickLine, ReleaseLine, ReturnLine
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
from streamalloc.domain.model import UNPLACED, LinePart, LineState, LocationBalance, SkuState
from streamalloc.domain.tables import DEFAULT_CHANNEL, Tables

_LineCommand = ReleaseLine | PickLine | FulfilLine | ReturnLine


def allocate_line(state: SkuState, cmd: AllocateLine, tables: Tables, now: int) -> Decision:
    """Promise the line's units at the best location(s), or reject it with a reason."""
    key = (cmd.order_id, cmd.line_id)
    seen = state.get_line(key)
    if seen is None:
        applied = [cmd.event_id]
    elif seen.status == UNPLACED:
        applied = [*seen.applied, cmd.event_id]
    else:
        return DUPLICATE
    qty = cmd.qty
    if qty <= 0:
        choice: tuple[tuple[str, int], ...] | str = reasons.INVALID_QUANTITY
    elif not state.balances:
        choice = reasons.UNKNOWN_SKU
    else:
        channel = tables.channels.get(cmd.channel) or DEFAULT_CHANNEL
        choice = choose_locations(state.balances, tables.online, channel, qty, cmd.region, cmd.location)

    if isinstance(choice, str):
        line = LineState(cmd.order_id, cmd.line_id, cmd.channel, qty, "rejected", (), 0, choice, applied, now)
        state.add_line(key, line)
        rejected = allocation_event(
            cmd.event_id, REJECTED, cmd.order_id, cmd.line_id, state.sku, cmd.channel, qty,
            cmd.location, cmd.lot, choice, cmd.occurred_at, now,
        )  # fmt: skip
        return Decision((rejected,))

    parts: list[LinePart] = []
    events: list[Event] = []
    for location_id, take in choice:
        state.edit_balance(location_id).allocated += take
        parts.append(LinePart(location_id, take, 0, 0, cmd.lot))
        events.append(
            allocation_event(
                cmd.event_id, ALLOCATED, cmd.order_id, cmd.line_id, state.sku, cmd.channel, take,
                location_id, cmd.lot, None, cmd.occurred_at, now,
            )
        )  # fmt: skip
    line = LineState(
        cmd.order_id, cmd.line_id, cmd.channel, qty, "allocated", tuple(parts), 0, None, applied, now
    )
    state.add_line(key, line)
    return Decision(events)


def release_line(state: SkuState, cmd: ReleaseLine, tables: Tables, now: int) -> Decision:
    """Give back everything the line holds, soft and hard, at each location it took from.

    A line that never held units (rejected) is marked released with a `released` event of
    qty 0, so the order stage hears about every cancelled line. A shipped line cannot be
    released (`already_fulfilled`): its units have left.
    """
    line = _seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    if line is None or line.status == UNPLACED:
        return _reject(state, cmd, line, reasons.UNKNOWN_LINE, 0, None, None, now)
    if line.status == "released":
        return DUPLICATE
    if line.held == 0 and (line.fulfilled > 0 or line.status == "returned"):
        return _reject(state, cmd, line, reasons.ALREADY_FULFILLED, 0, None, None, now)

    own = _edit(state, line, cmd)
    events: list[Event] = []
    parts: list[LinePart] = []
    for part in own.parts:
        qty = part.allocated + part.picked
        if qty:
            balance = state.edit_balance(part.location)
            balance.allocated -= part.allocated
            balance.picked -= part.picked
            events.append(
                _line_event(state, cmd, own, RELEASED, qty, part.location, part.lot, cmd.reason, now)
            )
            part = LinePart(part.location, 0, 0, part.fulfilled, part.lot)  # noqa: PLW2901 - as it is now
        parts.append(part)
    own.parts = tuple(parts)
    own.status = "released"
    if not events:
        events.append(_line_event(state, cmd, own, RELEASED, 0, None, None, cmd.reason, now))
    return Decision(events)


def pick_line(state: SkuState, cmd: PickLine, tables: Tables, now: int) -> Decision:
    """Turn `qty` soft units of the line into hard ones where it holds them (lot recorded)."""
    line = _seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    reason = _check(line, cmd.location, qty, soft_only=True)
    if reason is not None or line is None:  # (_check refuses a line that is None)
        return _reject(state, cmd, line, reason or reasons.UNKNOWN_LINE, qty, cmd.location, cmd.lot, now)

    own = _edit(state, line, cmd)
    events: list[Event] = []
    parts: list[LinePart] = []
    remaining = qty
    for part in own.parts:
        if remaining and part.allocated and (cmd.location is None or part.location == cmd.location):
            move = min(part.allocated, remaining)
            remaining -= move
            lot = part.lot if cmd.lot is None else cmd.lot
            part = LinePart(part.location, part.allocated - move, part.picked + move, part.fulfilled, lot)  # noqa: PLW2901
            balance = state.edit_balance(part.location)
            balance.allocated -= move
            balance.picked += move
            events.append(_line_event(state, cmd, own, PICKED, move, part.location, lot, None, now))
        parts.append(part)
    own.parts = tuple(parts)
    own.status = "picked" if own.allocated == 0 else "allocated"
    return Decision(events)


def fulfil_line(state: SkuState, cmd: FulfilLine, tables: Tables, now: int) -> Decision:
    """Ship `qty` units of the line: picked units first, then soft ones; they leave on_hand.

    A shipment the books did not cover (on_hand written down below what was allocated)
    can take on_hand below zero: the units did leave, available floors at zero, and the
    next count corrects the books.
    """
    line = _seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    reason = _check(line, cmd.location, qty, soft_only=False)
    if reason is not None or line is None:  # (_check refuses a line that is None)
        return _reject(state, cmd, line, reason or reasons.UNKNOWN_LINE, qty, cmd.location, None, now)

    own = _edit(state, line, cmd)
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
                part = LinePart(  # noqa: PLW2901 - the part as it is now
                    part.location, part.allocated - soft, part.picked - hard, part.fulfilled + take, part.lot
                )
                balance = state.edit_balance(part.location)
                balance.picked -= hard
                balance.allocated -= soft
                balance.on_hand -= take
                events.append(
                    _line_event(state, cmd, own, FULFILLED, take, part.location, part.lot, None, now)
                )
                events.append(
                    _line_stock(state, cmd, part.location, balance, FULFILLED, -take, 0, part.lot, now)
                )
        parts.append(part)
    own.parts = tuple(parts)
    own.status = "fulfilled" if own.held == 0 else ("picked" if own.allocated == 0 else "allocated")
    return Decision(events)


def return_line(state: SkuState, cmd: ReturnLine, tables: Tables, now: int) -> Decision:
    """Returned units go into quality_control at a location, awaiting inspection.

    The location is the one named, else where the line shipped from. A known line takes
    back at most what it shipped and has not yet had returned. A line this SKU never saw
    (an order from before the engine, another system's shipment) is accepted when the
    return names a location: the units are physically there, refusing them would lose
    them from the books. It is recorded as a returned line, so a repeat is a duplicate.
    """
    line = _seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    qty = cmd.qty
    if qty <= 0:
        return _reject(state, cmd, line, reasons.INVALID_QUANTITY, qty, cmd.location, cmd.lot, now)
    location = cmd.location
    if line is None or line.status == UNPLACED:
        if location is None:
            return _reject(state, cmd, line, reasons.LOCATION_REQUIRED, qty, None, cmd.lot, now)
        applied = [cmd.event_id] if line is None else [*line.applied, cmd.event_id]
        own = LineState(cmd.order_id, cmd.line_id, cmd.channel, qty, "returned", (), qty, None, applied, now)
        state.add_line((cmd.order_id, cmd.line_id), own)
    else:
        shipped = line.fulfilled
        if shipped == 0:
            return _reject(state, cmd, line, reasons.NOT_FULFILLED, qty, location, cmd.lot, now)
        if qty > shipped - line.returned:
            return _reject(state, cmd, line, reasons.EXCEEDS_FULFILLED, qty, location, cmd.lot, now)
        if location is None:
            location = next(p.location for p in line.parts if p.fulfilled > 0)
        own = _edit(state, line, cmd)
        own.returned += qty
        if own.returned >= shipped and own.held == 0:
            own.status = "returned"
    balance = state.edit_balance(location)
    balance.quality_control += qty
    return Decision(
        (
            _line_event(state, cmd, own, RETURNED, qty, location, cmd.lot, None, now),
            _line_stock(state, cmd, location, balance, RETURNED, 0, qty, cmd.lot, now),
        )
    )


# ---------------------------------------------------------------- helpers


def _seen_line(state: SkuState, cmd: _LineCommand) -> LineState | Decision | None:
    """The line's record (maybe `unplaced`), None if none, DUPLICATE if `cmd` was applied."""
    line = state.get_line((cmd.order_id, cmd.line_id))
    if line is not None and cmd.event_id in line.applied:
        return DUPLICATE
    return line


def _edit(state: SkuState, line: LineState, cmd: _LineCommand) -> LineState:
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


def _reject(
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
        _edit(state, line, cmd)
        channel = line.channel
    rejected = allocation_event(
        cmd.event_id, REJECTED, cmd.order_id, cmd.line_id, state.sku, channel, qty,
        location, lot, reason, cmd.occurred_at, now,
    )  # fmt: skip
    return Decision((rejected,))


def _line_event(
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
        lot, cmd.order_id, cmd.line_id, cmd.occurred_at, now,
    )  # fmt: skip
