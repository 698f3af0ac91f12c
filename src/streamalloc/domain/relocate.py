"""Moving soft allocations the engine can no longer stand by, and letting reservations expire.

- **A location goes offline or stale** (`sweep`): every soft allocation there moves to
  other usable locations where stock allows (`released` with reason `reallocated` where
  it was, then `reallocated` where it went); else the line waits (backorder or waitlist,
  by its channel's rules); else it is released with the location's reason. Hard
  allocations (picked) stay: a pick task exists; the availability record reports them at
  risk. Then the waitlist is served, so a location coming back online fills waiting
  lines before its stock shows as available.
- **A count or adjustment leaves fewer units than are held** (`shed`): the excess soft
  allocations there, newest first, move the same way (reason `count_shortage`). Hard
  ones cannot move; if they alone exceed on_hand, the books show it and the next count
  settles it.
- **A reservation expires** (`expire`): the line's soft units are released (reason
  `expired`, or `hold_expired` for a checkout hold); picked units stay.

All three are decided from the state alone, so running one again changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamalloc.domain import reasons
from streamalloc.domain.allocate import Choice, choose_locations, choose_partial, pool_bounds
from streamalloc.domain.events import DUPLICATE, REALLOCATED, RELEASED, Decision, Event, allocation_event
from streamalloc.domain.holds import place, unhold
from streamalloc.domain.model import HELD, WAITING, LinePart, LineState, SkuState
from streamalloc.domain.tables import Channel, Location, Tables
from streamalloc.domain.waitlist import dequeue, enqueue, serve, wait_more, wait_reason


def sweep(state: SkuState, tables: Tables, cause: str, occurred_at: int, now: int) -> Decision:
    """Move soft allocations off unusable locations, then serve the waitlist."""
    events: list[Event] = []
    unusable = {
        loc for loc, balance in state.balances.items() if balance.allocated > 0 and loc not in tables.online
    }
    if unusable:
        why = {
            loc: reasons.LOCATION_STALE if tables.status(loc) == "stale" else reasons.LOCATION_OFFLINE
            for loc in sorted(unusable)
        }
        for _, line in sorted(_holding_lines(state), key=lambda found: found[0]):
            if _soft_at(line, unusable):
                # All of a line's unusable locations at once: one placement of everything moved.
                events += _move(state, line, why, tables, tables.online, cause, occurred_at, now)
    events += serve(state, tables, cause, occurred_at, now)
    return Decision(events)


def shed(
    state: SkuState, location: str, tables: Tables, cause: str, occurred_at: int, now: int
) -> list[Event]:
    """Move soft allocations off `location` until what it holds fits its on_hand."""
    balance = state.balances.get(location)
    if balance is None:
        return []
    excess = balance.allocated + balance.picked - balance.on_hand
    if excess <= 0 or balance.allocated == 0:
        return []
    here = {location}
    candidates = [line for _, line in _holding_lines(state) if _soft_at(line, here)]
    candidates.sort(key=lambda line: (-line.decided_at, line.order_id, line.line_id))  # newest first
    elsewhere = {lid: loc for lid, loc in tables.online.items() if lid != location}
    events: list[Event] = []
    for line in candidates:
        if excess <= 0:
            break
        soft = sum(p.allocated for p in line.parts if p.location == location)
        events += _move(
            state, line, {location: reasons.COUNT_SHORTAGE}, tables, elsewhere, cause, occurred_at, now
        )
        excess -= soft
    return events


def expire(state: SkuState, key: tuple[str, str], due: int, tables: Tables, cause: str, now: int) -> Decision:
    """Release the soft units of a line whose reservation expired at `due` (if it still holds)."""
    line = state.get_line(key)
    if line is None or line.expires_at != due or line.allocated == 0 or due > now:
        return DUPLICATE
    own = state.edit_line(line)
    why = reasons.HOLD_EXPIRED if own.status == HELD else reasons.EXPIRED  # a cart's hold, or a reservation
    events: list[Event] = []
    parts: list[LinePart] = []
    for part in own.parts:
        if part.allocated:
            unhold(state, own, part, part.allocated, 0)
            events.append(
                allocation_event(
                    cause, RELEASED, own.order_id, own.line_id, state.sku, own.channel, part.allocated,
                    part.location, part.lot, why, due, now,
                )
            )  # fmt: skip
            part = LinePart(part.location, 0, part.picked, part.fulfilled, part.lot)  # noqa: PLW2901
        parts.append(part)
    own.parts = tuple(p for p in parts if p.allocated or p.picked or p.fulfilled)
    own.expires_at = None
    if own.status in WAITING:  # the reservation lapsed: a partial line stops waiting too
        dequeue(state, own.order_id, own.line_id)
    if own.held == 0:
        own.status = "released"
        own.reason = why
    else:
        own.status = "picked"
    events += serve(state, tables, cause, due, now)
    return Decision(events)


# ---------------------------------------------------------------- helpers


def _move(
    state: SkuState,
    line: LineState,
    why: Mapping[str, str],
    tables: Tables,
    usable: Mapping[str, Location],
    cause: str,
    occurred_at: int,
    now: int,
) -> list[Event]:
    """Move the line's soft units at the locations of `why` (location -> reason) elsewhere,
    or let the line wait, or release them with their location's reason."""
    own = state.edit_line(line)
    moved: dict[str, tuple[int, set[str | None]]] = {}  # location -> (soft units, their lots)
    kept: list[LinePart] = []
    for part in own.parts:
        if part.location in why and part.allocated:
            unhold(state, own, part, part.allocated, 0)
            units, lots = moved.get(part.location, (0, set()))
            lots.add(part.lot)
            moved[part.location] = (units + part.allocated, lots)
            part = LinePart(part.location, 0, part.picked, part.fulfilled, part.lot)  # noqa: PLW2901
        if part.allocated or part.picked or part.fulfilled:
            kept.append(part)
    own.parts = tuple(kept)
    soft = sum(units for units, _ in moved.values())
    if soft == 0:
        return []

    def released(reason: str | None = None) -> list[Event]:
        """One release per location the units left (reason: the location's own by default)."""
        return [
            _released(
                state, own, units, location, next(iter(lots)) if len(lots) == 1 else None,
                reason or why[location], cause, occurred_at, now,
            )
            for location, (units, lots) in moved.items()
        ]  # fmt: skip

    channel = tables.channel(own.channel)
    bounds = pool_bounds(state.balances, state.book, tables, channel, now)
    choice: Choice | str | None = choose_locations(
        state.balances, usable, channel, soft, None, None, now, bounds
    )
    held = own.status == HELD  # a cart's hold moves whole or goes: it never waits (checkout.py)
    if choice in reasons.SHORT and channel.allow_partial and not held:
        # What can move moves; the rest waits (waitlist.py, partial allocation).
        choice = choose_partial(state.balances, usable, channel, soft, None, None, now, bounds)
    if choice is not None and not isinstance(choice, str):
        events = released(reasons.REALLOCATED)
        events += place(
            state, own, choice, tables.lot_policy_of(channel), REALLOCATED, cause, occurred_at, now,
            reason=why[next(iter(moved))],
        )  # fmt: skip
        rest = soft - sum(n for _, n in choice)
        if rest:
            events.append(_wait(state, own, channel, rest, cause, occurred_at, now))
        return events
    if own.status in WAITING:  # it waits already: these units join what it waits for
        return [*released(reasons.REALLOCATED), _wait(state, own, channel, soft, cause, occurred_at, now)]
    may_wait = (own.held == 0 or channel.allow_partial) and not held
    waits = wait_reason(state, channel, soft) if may_wait else None
    if waits is not None:
        return [
            *released(reasons.REALLOCATED),
            enqueue(
                state, own, channel, waits, priority=0, region=None, location=None, lot=None,
                ttl_s=None, occurred_at=occurred_at, cause=cause, now=now, qty=soft,
            ),
        ]  # fmt: skip
    if own.held == 0:
        own.status = "released"
        own.reason = why[next(iter(moved))]
    return released()


def _wait(
    state: SkuState, line: LineState, channel: Channel, qty: int, cause: str, occurred_at: int, now: int
) -> Event:
    """`line` waits for `qty` units it held and could not keep: more if it waits already."""
    if line.status in WAITING:
        return wait_more(state, line, channel, qty, cause, occurred_at, now)
    reason = wait_reason(state, channel, qty) or reasons.WAITLISTED
    return enqueue(
        state, line, channel, reason, priority=0, region=None, location=None, lot=None,
        ttl_s=None, occurred_at=occurred_at, cause=cause, now=now, qty=qty,
    )  # fmt: skip


def _released(
    state: SkuState,
    line: LineState,
    qty: int,
    location: str,
    lot: str | None,
    reason: str,
    cause: str,
    occurred_at: int,
    now: int,
) -> Event:
    return allocation_event(
        cause, RELEASED, line.order_id, line.line_id, state.sku, line.channel, qty,
        location, lot, reason, occurred_at, now,
    )  # fmt: skip


def _holding_lines(state: SkuState) -> list[tuple[tuple[str, str], LineState]]:
    """Every line of the SKU that holds soft units (reads the whole line table: rare paths)."""
    lines = state.lines
    found = []
    for key in list(lines):
        line = state.get_line(key)
        if line is not None and line.allocated > 0:
            found.append((key, line))
    return found


def _soft_at(line: LineState, locations: set[str]) -> bool:
    return any(p.allocated and p.location in locations for p in line.parts)
