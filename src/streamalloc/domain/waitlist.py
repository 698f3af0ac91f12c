"""Backorders and the waitlist that fills itself.

A line that cannot be allocated now may wait instead of being rejected:

- as a **backorder** (`backordered`, reason `incoming`) when its channel's
  `backorder_limit` covers the line's qty and the SKU's incoming units (expected receipts
  and transfers in transit, `incoming_units`) cover it on top of every unit already
  backordered: never beyond what is coming;
- on the **waitlist** (`backordered`, reason `waitlisted`) when its channel opted in.

Waiting lines are kept per SKU in rank order: order priority, then channel priority (both
higher first), then arrival. Whenever units come free on the SKU (a receipt, a release,
an expiry, a passed inspection, a count or adjustment up, a location back online) the
decision that freed them serves the waitlist at once, in rank order, before it returns,
so the freed units are never available to anyone else first. A waiting line that does
not fit is passed over for lines behind it that do (first fit): a large line does not
block smaller ones; it keeps its place for the next units.

**Protection levels** (allocate.py). A line refused `protected_for_priority` waits as a
line short of stock does (a backorder within its channel's rules, else the waitlist where
its channel opted in); served from the waitlist it is bound by the same protection, so it
is filled once stock rises above what the higher-priority channels keep.

**Partial allocation** (channel `allow_partial`). A line its channel's stock cannot cover
takes what is available now (allocate.choose_partial) and waits for the rest: on the
waitlist for the units it lacks, as a backorder (reason `incoming`) when the channel's
backorder rules cover them, else waitlisted (`allow_partial` opts the rest in to wait).
Such a line is `partially_allocated` while it holds units and waits, `backordered` while
it waits holding none (nothing was available, or what it held has shipped). Its decision
emits the `allocated` events of what it took, then one `backordered` whose qty is what
it still waits for; every later decision that changes what it waits for (a fill short of
the rest, units it held that can neither move nor be released) ends with a `backordered`
giving the new figure. Served from the waitlist, such a line again takes what it can (a
line then holds units from several fills), keeping its place until it has everything.
A line's `decided_at` changes only while it holds nothing, since what it holds is
counted in `held_ms` at that time (holds.py). Releasing the line (a cancel) gives back
what it holds and takes it off the waitlist; so does an expiry of its reservation, for
the soft units it holds.
"""

from __future__ import annotations

from bisect import insort

from streamalloc.domain import reasons
from streamalloc.domain.allocate import choose_locations, choose_partial, pool_bounds
from streamalloc.domain.events import ALLOCATED, BACKORDERED, Event, allocation_event
from streamalloc.domain.holds import place
from streamalloc.domain.model import WAITING, LineState, SkuState, WaitEntry
from streamalloc.domain.tables import Channel, Tables


def wait_reason(state: SkuState, channel: Channel, qty: int) -> str | None:
    """Why a line of `qty` that cannot be allocated may wait, or None if it may not."""
    if 0 < qty <= channel.backorder_limit:
        if state.book.backordered() + qty <= incoming_units(state):
            return reasons.INCOMING
    if channel.waitlist or channel.allow_partial:
        return reasons.WAITLISTED
    return None


def incoming_units(state: SkuState) -> int:
    """Units on their way to the SKU: expected receipts and transfers in transit."""
    return sum(b.incoming for b in state.balances.values()) + state.book.in_transit()


def enqueue(
    state: SkuState,
    line: LineState,
    channel: Channel,
    reason: str,
    *,
    priority: int,
    region: str | None,
    location: str | None,
    lot: str | None,
    ttl_s: int | None,
    occurred_at: int,
    cause: str,
    now: int,
    qty: int | None = None,
) -> Event:
    """Put `line` (the state's own) on the waitlist for `qty` units (default: the line's)."""
    qty = line.qty if qty is None else qty
    book = state.edit_book()
    book.seq += 1
    entry = WaitEntry(
        line.order_id, line.line_id, line.channel, qty, priority, channel.priority, book.seq,
        reason, region, location, lot, ttl_s, occurred_at,
    )  # fmt: skip
    insort(book.waitlist, entry, key=_rank)
    return _waits(state, line, entry, cause, occurred_at, now)


def wait_more(
    state: SkuState, line: LineState, channel: Channel, qty: int, cause: str, occurred_at: int, now: int
) -> Event:
    """`line` (the state's own, already waiting) waits for `qty` more units, in its place.

    Its reason is decided again for the new total: a backorder stays one only while
    incoming stock covers it, else the line is waitlisted (it waits already).
    """
    book = state.edit_book()
    entry = book.entry(line.order_id, line.line_id)
    if entry is None:  # (a waiting line always has its entry; should it not, it gets one)
        reason = wait_reason(state, channel, qty) or reasons.WAITLISTED
        return enqueue(
            state, line, channel, reason, priority=0, region=None, location=None, lot=None,
            ttl_s=None, occurred_at=occurred_at, cause=cause, now=now, qty=qty,
        )  # fmt: skip
    book.waitlist.remove(entry)
    total = entry.qty + qty
    reason = wait_reason(state, channel, total) or reasons.WAITLISTED
    entry = entry._replace(qty=total, reason=reason)
    insort(book.waitlist, entry, key=_rank)
    return _waits(state, line, entry, cause, occurred_at, now)


def wait_less(state: SkuState, line: LineState, qty: int, cause: str, occurred_at: int, now: int) -> Event:
    """`line` (the state's own, waiting for more than `qty` units) now waits for `qty`, in its
    place and for the same reason (fewer units stay covered by what covered more)."""
    book = state.edit_book()
    entry = book.entry(line.order_id, line.line_id)
    if entry is None:  # (a waiting line always has its entry)
        raise ValueError(f"line {line.order_id}/{line.line_id} does not wait")
    book.waitlist[book.waitlist.index(entry)] = entry = entry._replace(qty=qty)
    return _waits(state, line, entry, cause, occurred_at, now)


def _waits(
    state: SkuState, line: LineState, entry: WaitEntry, cause: str, occurred_at: int, now: int
) -> Event:
    """Mark `line` waiting for `entry.qty` units; its `backordered` event."""
    line.status = "partially_allocated" if line.held else "backordered"
    line.reason = entry.reason
    if not line.held:
        line.decided_at = now
    return allocation_event(
        cause, BACKORDERED, line.order_id, line.line_id, state.sku, line.channel, entry.qty,
        None, entry.lot, entry.reason, occurred_at, now,
    )  # fmt: skip


def dequeue(state: SkuState, order_id: str, line_id: str) -> None:
    """Take a line off the waitlist (it was cancelled)."""
    if not state.waiting:
        return
    book = state.book
    kept = [e for e in book.waitlist if e.order_id != order_id or e.line_id != line_id]
    if len(kept) != len(book.waitlist):
        state.edit_book().waitlist = kept


def serve(state: SkuState, tables: Tables, cause: str, occurred_at: int, now: int) -> list[Event]:
    """Allocate to waiting lines, in rank order, whatever units are now available."""
    if not state.waiting:
        return []
    events: list[Event] = []
    kept: list[WaitEntry] = []
    changed = False
    for entry in state.book.waitlist:
        line = state.get_line((entry.order_id, entry.line_id))
        if line is None or line.status not in WAITING:
            changed = True  # no longer waiting (cancelled): drop the entry
            continue
        channel = tables.channel(entry.channel)
        bounds = pool_bounds(state.balances, state.book, tables, channel, now)
        choice = choose_locations(
            state.balances, tables.online, channel, entry.qty, entry.region, entry.location, now, bounds
        )
        if isinstance(choice, str):
            partial = (
                choose_partial(
                    state.balances, tables.online, channel, entry.qty, entry.region, entry.location, now,
                    bounds,
                )
                if channel.allow_partial and choice in reasons.SHORT
                else None
            )  # fmt: skip
            if partial is None:
                kept.append(entry)
                continue
            choice = partial
        own = state.edit_line(line)
        if not own.held:  # (what it holds is counted at its decided_at: see the module doc)
            own.decided_at = now
        own.status = "allocated"
        own.reason = None
        own.expires_at = None if entry.ttl_s is None else now + entry.ttl_s * 1000
        events += place(
            state, own, choice, tables.lot_policy_of(channel), ALLOCATED, cause, occurred_at, now,
            lot=entry.lot,
        )  # fmt: skip
        rest = entry.qty - sum(n for _, n in choice)
        if rest:  # a partial fill: the line keeps its place for the rest
            entry = entry._replace(qty=rest, reason=_rest_reason(state, channel, entry, rest))  # noqa: PLW2901
            kept.append(entry)
            events.append(_waits(state, own, entry, cause, occurred_at, now))
        changed = True
    if changed:
        state.edit_book().waitlist = kept
    return events


def _rest_reason(state: SkuState, channel: Channel, entry: WaitEntry, rest: int) -> str:
    """Why the rest of a partly filled line waits: still a backorder only while incoming stock
    covers it with every other backorder (the waitlist as it was before this serve, so at
    worst it counts units already filled), else waitlisted."""
    if entry.reason == reasons.INCOMING and rest <= channel.backorder_limit:
        if state.book.backordered() - entry.qty + rest <= incoming_units(state):
            return reasons.INCOMING
    return reasons.WAITLISTED


def _rank(entry: WaitEntry) -> tuple[int, int, int]:
    return entry.rank
