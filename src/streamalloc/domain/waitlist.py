"""Backorders and the waitlist that fills itself.

A line that cannot be allocated now may wait instead of being rejected:

- as a **backorder** (`backordered`, reason `incoming`) when its channel's
  `backorder_limit` covers the line's qty and the SKU's expected incoming units cover it
  on top of every unit already backordered: never beyond what is coming;
- on the **waitlist** (`backordered`, reason `waitlisted`) when its channel opted in.

Waiting lines are kept per SKU in rank order: order priority, then channel priority (both
higher first), then arrival. Whenever units come free on the SKU (a receipt, a release,
an expiry, a passed inspection, a count or adjustment up, a location back online) the
decision that freed them serves the waitlist at once, in rank order, before it returns,
so the freed units are never available to anyone else first. A waiting line that does
not fit is passed over for lines behind it that do (first fit): a large line does not
block smaller ones; it keeps its place for the next units.
"""

from __future__ import annotations

from bisect import insort

from streamalloc.domain import reasons
from streamalloc.domain.allocate import choose_locations, pool_bounds
from streamalloc.domain.events import ALLOCATED, BACKORDERED, Event, allocation_event
from streamalloc.domain.holds import place
from streamalloc.domain.model import LineState, SkuState, WaitEntry
from streamalloc.domain.tables import Channel, Tables


def wait_reason(state: SkuState, channel: Channel, qty: int) -> str | None:
    """Why a line of `qty` that cannot be allocated may wait, or None if it may not."""
    if 0 < qty <= channel.backorder_limit:
        incoming = sum(b.incoming for b in state.balances.values())
        if state.book.backordered() + qty <= incoming:
            return reasons.INCOMING
    if channel.waitlist:
        return reasons.WAITLISTED
    return None


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
    line.status = "backordered"
    line.reason = reason
    line.decided_at = now
    return allocation_event(
        cause, BACKORDERED, line.order_id, line.line_id, state.sku, line.channel, qty,
        None, lot, reason, occurred_at, now,
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
        if line is None or line.status != "backordered":
            changed = True  # no longer waiting (cancelled): drop the entry
            continue
        channel = tables.channel(entry.channel)
        bounds = pool_bounds(state.balances, state.book, tables, channel, now)
        choice = choose_locations(
            state.balances, tables.online, channel, entry.qty, entry.region, entry.location, now, bounds
        )
        if isinstance(choice, str):
            kept.append(entry)
            continue
        own = state.edit_line(line)
        own.status = "allocated"
        own.reason = None
        own.decided_at = now
        own.expires_at = None if entry.ttl_s is None else now + entry.ttl_s * 1000
        events += place(
            state, own, choice, tables.lot_policy_of(channel), ALLOCATED, cause, occurred_at, now,
            lot=entry.lot,
        )  # fmt: skip
        changed = True
    if changed:
        state.edit_book().waitlist = kept
    return events


def _rank(entry: WaitEntry) -> tuple[int, int, int]:
    return entry.rank
