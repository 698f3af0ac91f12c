"""Units an order line holds at a location: the one place that moves them in the books.

Every change of what a line holds goes through these functions, so the buckets that
depend on it move together: the balance's soft (`allocated`) or hard (`picked`) units,
its `held_ms` (for allocation aging), the lot's `held` count, and the SKU book's units per
channel (for channel pools). A line's `decided_at` is the time its units were allocated;
taking and giving back use the same time, so `held_ms` stays exact.
"""

from __future__ import annotations

from streamalloc.domain.allocate import Choice, choose_lots
from streamalloc.domain.events import AllocationEventType, Event, allocation_event
from streamalloc.domain.model import LinePart, LineState, LocationBalance, SkuState
from streamalloc.domain.tables import LotPolicy


def hold(
    state: SkuState,
    line: LineState,
    location: str,
    qty: int,
    policy: LotPolicy,
    now: int,
    *,
    lot: str | None = None,
    hard: bool = False,
) -> list[LinePart]:
    """Hold `qty` units at `location` for `line` (soft, or hard for a pick); one part per lot.

    The parts are returned, not added to the line: the caller decides where they go.
    """
    balance = state.edit_balance(location)
    parts: list[LinePart] = []
    for lot_id, take in choose_lots(balance, qty, policy, now, lot):
        if hard:
            balance.picked += take
        else:
            balance.allocated += take
        balance.held_ms += take * line.decided_at
        if lot_id is not None and balance.lots is not None and lot_id in balance.lots:
            balance.lots[lot_id].held += take
        parts.append(
            LinePart(location, 0, take, 0, lot_id) if hard else LinePart(location, take, 0, 0, lot_id)
        )
    _count(state, line.channel, qty)
    return parts


def place(
    state: SkuState,
    line: LineState,
    choice: Choice,
    policy: LotPolicy,
    type_: AllocationEventType,
    cause: str,
    occurred_at: int,
    now: int,
    *,
    lot: str | None = None,
    reason: str | None = None,
) -> list[Event]:
    """Hold the chosen units for `line` (the state's own copy) and say so, one event per part."""
    events: list[Event] = []
    parts = list(line.parts)
    for location_id, take in choice:
        for part in hold(state, line, location_id, take, policy, now, lot=lot):
            add_part(parts, part)
            events.append(
                allocation_event(
                    cause, type_, line.order_id, line.line_id, state.sku, line.channel, part.allocated,
                    location_id, part.lot, reason, occurred_at, now,
                )
            )  # fmt: skip
    line.parts = tuple(parts)
    return events


def add_part(parts: list[LinePart], new: LinePart) -> None:
    """Add `new` to a line's `parts`, into the part at the same location and lot if it has one.

    A line keeps one part per (location, lot), so its events (one per part) have unique ids
    and a release gives back each part exactly once.
    """
    for i, part in enumerate(parts):
        if part.location == new.location and part.lot == new.lot:
            parts[i] = LinePart(
                part.location,
                part.allocated + new.allocated,
                part.picked + new.picked,
                part.fulfilled + new.fulfilled,
                part.lot,
            )
            return
    parts.append(new)


def unhold(state: SkuState, line: LineState, part: LinePart, soft: int, hard: int) -> LocationBalance:
    """Give back `soft` and `hard` units of `part` (the part itself is the caller's to update)."""
    balance = state.edit_balance(part.location)
    balance.allocated -= soft
    balance.picked -= hard
    units = soft + hard
    balance.held_ms = max(0, balance.held_ms - units * line.decided_at)
    lots = balance.lots
    if part.lot is not None and lots is not None and part.lot in lots:
        lot = lots[part.lot]
        lot.held = max(0, lot.held - units)
    _count(state, line.channel, -units)
    return balance


def harden(state: SkuState, part: LinePart, qty: int) -> None:
    """`qty` soft units of `part` become hard (a pick where they were allocated)."""
    balance = state.edit_balance(part.location)
    balance.allocated -= qty
    balance.picked += qty


def ship(state: SkuState, line: LineState, part: LinePart, soft: int, hard: int) -> LocationBalance:
    """`soft` + `hard` units of `part` leave on_hand (and their lot)."""
    balance = unhold(state, line, part, soft, hard)
    units = soft + hard
    balance.on_hand -= units
    lots = balance.lots
    if part.lot is not None and lots is not None and part.lot in lots:
        lot = lots[part.lot]
        lot.on_hand = max(0, lot.on_hand - units)
    return balance


def move_lot(state: SkuState, part: LinePart, lot_id: str, qty: int, now: int) -> bool:
    """Count `qty` held units of `part` against lot `lot_id` instead; False if it cannot."""
    balance = state.balances.get(part.location)
    lots = balance.lots if balance is not None else None
    if lots is None or lot_id not in lots or lots[lot_id].free < qty or lots[lot_id].expired(now):
        return False
    balance = state.edit_balance(part.location)
    assert balance.lots is not None  # noqa: S101 - checked above; for the type checker
    balance.lots[lot_id].held += qty
    if part.lot is not None and part.lot in balance.lots:
        old = balance.lots[part.lot]
        old.held = max(0, old.held - qty)
    return True


def _count(state: SkuState, channel: str, units: int) -> None:
    held = state.edit_book().channel_held
    total = held.get(channel, 0) + units
    if total > 0:
        held[channel] = total
    else:
        held.pop(channel, None)
