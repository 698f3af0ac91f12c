"""Inventory commands: receive, adjust, count, expect, inspect.

Every change of on_hand, quality_control, damaged or incoming emits a `StockChanged`
naming its cause; an event that changes nothing emits `InventoryRejected` with a reason.
Each inventory event id is recorded when decided (applied or rejected), so the same
event again is a duplicate: nothing changes, nothing is emitted.

Decisions taken here:

- An adjustment that would take on_hand below zero is rejected (`negative_on_hand`),
  not clamped: a silent clamp would hide an upstream error, a rejection shows it.
- An adjustment or a count that leaves fewer units than are held at the location moves
  the excess soft allocations elsewhere, or lets them wait, or releases them
  (relocate.shed): never an oversell. Hard allocations cannot move.
- A count reports the difference, even when it is zero (the count happened).
- An event with a lot changes that lot too: a receipt creates it (received at the event's
  time, expiring at the lot's `expires_at`), an adjustment or a count moves its on_hand.
- A receipt draws down the location's incoming units (what was expected has arrived).
- Every change that can free units (a receipt, an adjustment or count up, a passed
  inspection) serves the waitlist before it returns (waitlist.py).
- An inspection of more than is in quality_control is rejected
  (`exceeds_quality_control`), not clamped, for the same reason as an adjustment.
- `Expect` records incoming units, which backorders are accepted against, and its purchase
  order (`po_id`, else the event id) with its ETA in the SKU's book. The same purchase
  order sent again replaces its qty and ETA (incoming moves by the difference, reported
  even when zero): that is how an ETA moves. At another location it is refused
  (`location_mismatch`). A receipt draws the location's purchase orders down with its
  incoming, earliest ETA first. Backorders are promised dates from these (promises.py).
- Inventory events are accepted at any location, known to the tables or not.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.commands import FAIL, PASS, Adjust, Count, Expect, Inspect, InventoryCommand, Receive
from streamalloc.domain.events import (
    DUPLICATE,
    Decision,
    InventoryEventType,
    inventory_rejected,
    stock_changed,
)
from streamalloc.domain.model import LocationBalance, Lot, SkuState, Supply
from streamalloc.domain.relocate import shed
from streamalloc.domain.tables import Tables
from streamalloc.domain.waitlist import serve


def receive(state: SkuState, cmd: Receive, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty <= 0:
        return _reject(state, cmd, "received", reasons.INVALID_QUANTITY, now)
    balance = state.balances.get(cmd.location)
    arrived = min(cmd.qty, balance.incoming) if balance is not None else 0
    if cmd.lot is not None:
        lot = _lot(state.edit_balance(cmd.location), cmd.lot, cmd.occurred_at)
        lot.on_hand += cmd.qty
        if cmd.expires_at is not None:
            lot.expires_at = cmd.expires_at
    if arrived and state.book.expected:
        _draw_expected(state, cmd.location, arrived)
    decision = _change(state, cmd, cmd.reason or "received", on_hand=cmd.qty, incoming=-arrived, now=now)
    return _then_serve(state, cmd, decision, tables, now)


def adjust(state: SkuState, cmd: Adjust, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty == 0:
        return _reject(state, cmd, "adjusted", reasons.INVALID_QUANTITY, now)
    if not cmd.reason:
        return _reject(state, cmd, "adjusted", reasons.REASON_REQUIRED, now)
    balance = state.balances.get(cmd.location)
    if (balance.on_hand if balance is not None else 0) + cmd.qty < 0:
        return _reject(state, cmd, "adjusted", reasons.NEGATIVE_ON_HAND, now)
    if cmd.lot is not None:
        lot = _lot(state.edit_balance(cmd.location), cmd.lot, cmd.occurred_at)
        lot.on_hand = max(0, lot.on_hand + cmd.qty)
    decision = _change(state, cmd, cmd.reason, on_hand=cmd.qty, now=now)
    return _settle(state, cmd, decision, tables, now, up=cmd.qty > 0)


def count(state: SkuState, cmd: Count, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty < 0:
        return _reject(state, cmd, "counted", reasons.INVALID_QUANTITY, now)
    balance = state.balances.get(cmd.location)
    if cmd.lot is not None:
        # A count of one lot: that lot has qty now; the location changes by the difference.
        lot = _lot(state.edit_balance(cmd.location), cmd.lot, cmd.occurred_at)
        difference = cmd.qty - lot.on_hand
        lot.on_hand = cmd.qty
    else:
        difference = cmd.qty - (balance.on_hand if balance is not None else 0)
    decision = _change(state, cmd, cmd.reason or "counted", on_hand=difference, now=now)
    return _settle(state, cmd, decision, tables, now, up=difference > 0)


def expect(state: SkuState, cmd: Expect, tables: Tables, now: int) -> Decision:
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty <= 0:
        return _reject(state, cmd, "expected", reasons.INVALID_QUANTITY, now)
    before = state.book.expected.get(cmd.order)
    if before is not None and before.location != cmd.location:
        return _reject(state, cmd, "expected", reasons.LOCATION_MISMATCH, now)
    state.edit_book().expected[cmd.order] = Supply(cmd.location, cmd.qty, cmd.eta)
    return _change(state, cmd, "expected", incoming=cmd.qty - (before.qty if before else 0), now=now)


def inspect(state: SkuState, cmd: Inspect, tables: Tables, now: int) -> Decision:
    """Units leave quality_control: to on_hand on pass, to damaged on fail."""
    if state.has_applied(cmd.event_id):
        return DUPLICATE
    state.record_applied(cmd.event_id)
    if cmd.qty <= 0:
        return _reject(state, cmd, "inspected", reasons.INVALID_QUANTITY, now)
    if cmd.result not in (PASS, FAIL):
        return _reject(state, cmd, "inspected", reasons.INVALID_RESULT, now)
    balance = state.balances.get(cmd.location)
    if cmd.qty > (balance.quality_control if balance is not None else 0):
        return _reject(state, cmd, "inspected", reasons.EXCEEDS_QUALITY_CONTROL, now)
    if cmd.result == PASS:
        if cmd.lot is not None and balance is not None and balance.lots and cmd.lot in balance.lots:
            state.edit_balance(cmd.location)
            balance.lots[cmd.lot].on_hand += cmd.qty
        decision = _change(
            state, cmd, "inspection_passed", on_hand=cmd.qty, quality_control=-cmd.qty, now=now
        )
        return _then_serve(state, cmd, decision, tables, now)
    return _change(state, cmd, "inspection_failed", quality_control=-cmd.qty, damaged=cmd.qty, now=now)


def _draw_expected(state: SkuState, location: str, arrived: int) -> None:
    """`arrived` units of what was expected at `location` came: its purchase orders, earliest first."""
    expected = state.edit_book().expected
    here = sorted(
        (key for key, s in expected.items() if s.location == location),
        key=lambda key: (expected[key].eta is None, expected[key].eta or 0, key),
    )
    for key in here:
        if arrived <= 0:
            break
        supply = expected[key]
        taken = min(arrived, supply.qty)
        arrived -= taken
        if taken == supply.qty:
            del expected[key]
        else:
            expected[key] = supply._replace(qty=supply.qty - taken)


def _lot(balance: LocationBalance, lot_id: str, received_at: int) -> Lot:
    """The lot at this location, created (received now, no expiry) if new."""
    if balance.lots is None:
        balance.lots = {}
    lot = balance.lots.get(lot_id)
    if lot is None:
        lot = balance.lots[lot_id] = Lot(0, 0, received_at, None)
    return lot


def _then_serve(
    state: SkuState, cmd: InventoryCommand, decision: Decision, tables: Tables, now: int
) -> Decision:
    """Units came free: the waitlist is served before anyone else sees them."""
    if not state.waiting:
        return decision
    return Decision((*decision, *serve(state, tables, cmd.event_id, cmd.occurred_at, now)))


def _settle(
    state: SkuState, cmd: InventoryCommand, decision: Decision, tables: Tables, now: int, *, up: bool
) -> Decision:
    """After on_hand moved: serve the waitlist if it went up, shed held units if it went down."""
    if up:
        return _then_serve(state, cmd, decision, tables, now)
    moved = shed(state, cmd.location, tables, cmd.event_id, cmd.occurred_at, now)
    return Decision((*decision, *moved)) if moved else decision


def _change(
    state: SkuState,
    cmd: InventoryCommand,
    reason: str,
    *,
    on_hand: int = 0,
    quality_control: int = 0,
    damaged: int = 0,
    incoming: int = 0,
    now: int,
) -> Decision:
    """Apply the deltas at the command's location and report them."""
    balance = state.edit_balance(cmd.location)
    balance.on_hand += on_hand
    balance.quality_control += quality_control
    balance.damaged += damaged
    balance.incoming += incoming
    after = (balance.on_hand, balance.quality_control, balance.damaged, balance.incoming)
    changed = stock_changed(
        cmd.event_id, state.sku, cmd.location, reason, on_hand, quality_control, damaged, incoming, after,
        cmd.lot, None, None, cmd.occurred_at, now, in_transit=state.in_transit(cmd.location),
    )  # fmt: skip
    return Decision((changed,))


def _reject(
    state: SkuState, cmd: InventoryCommand, type_: InventoryEventType, reason: str, now: int
) -> Decision:
    rejected = inventory_rejected(
        cmd.event_id, type_, state.sku, cmd.location, cmd.qty, reason, cmd.occurred_at, now
    )
    return Decision((rejected,))
