"""Checkout holds: units held for a cart while the shopper pays, then confirmed or let go.

- **hold** (`HoldLine`, order event `held`): the line takes its units now, as an allocation
  would (same location choice, pools, allow-list), and holds them until its time to live
  passes: the event's, else its channel's `hold_ttl_s`. All or nothing and never waiting: a
  hold short of stock is rejected (`insufficient_stock`; `protected_for_priority` when the
  units are there but kept for higher-priority channels), whatever the channel's waitlist,
  backorder or partial settings say, since a cart wants units that are there now. The
  line's status is `held`; its events are `held`, one per location and lot.
- **confirm** (`ConfirmLine`, `confirmed`): the held line becomes an order line with the
  same units (status `allocated`, one `confirmed` event per part). The hold's expiry goes;
  the confirming event's `reservation_ttl_s`, when set, starts the order line's own
  reservation, as for `placed`.
- **extend** (`ExtendHold`, `extended`): the hold lives `ttl_s` (else the channel's
  `hold_ttl_s`) from now; one `extended` event with the units held.
- **expiry**: the allocator's reservation timers (`relocate.expire`), the same as for a
  placed line's `reservation_ttl_s`: the held units are released with reason
  `hold_expired` and go to the waitlist first. An extension or a confirm moves or clears
  `expires_at`, so the timer set for the old time is refused when it fires.

Idempotence, as for every line command (lines.py): a hold of a line this SKU has decided is
a duplicate, whatever its id; a confirm or extend records its cause id on the line, so the
same event again changes nothing. A confirm or extend of a line that is not on hold (never
held, confirmed already under another id, released, expired) is rejected (`not_held`,
`hold_expired` when its hold lapsed), which leaves the line as it was. A held line cannot
be picked or shipped before it is confirmed (`on_hold`, lines.py); it can be cancelled.
"""

from __future__ import annotations

from streamalloc.domain import reasons
from streamalloc.domain.allocate import NO_BOUNDS, Choice, choose_locations, pool_bounds
from streamalloc.domain.commands import ConfirmLine, ExtendHold, HoldLine
from streamalloc.domain.events import (
    CONFIRMED,
    DUPLICATE,
    EXTENDED,
    HELD,
    REJECTED,
    Decision,
    allocation_event,
)
from streamalloc.domain.holds import place
from streamalloc.domain.lines import edit_line, line_event, reject, seen_line
from streamalloc.domain.model import HELD as HELD_STATUS
from streamalloc.domain.model import UNPLACED, LineState, SkuState
from streamalloc.domain.tables import Tables


def hold_line(state: SkuState, cmd: HoldLine, tables: Tables, now: int) -> Decision:
    """Hold the cart line's units at the best location(s) until its TTL passes; else reject it."""
    key = (cmd.order_id, cmd.line_id)
    seen = state.get_line(key)
    if seen is None:
        applied = [cmd.event_id]
    elif seen.status == UNPLACED:
        applied = [*seen.applied, cmd.event_id]
    else:
        return DUPLICATE
    channel = tables.channels.get(cmd.channel)
    ttl_s = cmd.ttl_s if cmd.ttl_s is not None or channel is None else channel.hold_ttl_s
    choice: Choice | str
    if channel is None:
        choice = reasons.UNKNOWN_CHANNEL
    elif cmd.qty <= 0:
        choice = reasons.INVALID_QUANTITY
    elif ttl_s is None or ttl_s <= 0:
        choice = reasons.INVALID_TTL
    elif not state.balances:
        choice = reasons.UNKNOWN_SKU
    else:
        bounds = (
            pool_bounds(state.balances, state.book, tables, channel, now) if tables.bounded else NO_BOUNDS
        )
        choice = choose_locations(
            state.balances, tables.online, channel, cmd.qty, cmd.region, cmd.location, now, bounds
        )
    line = LineState(cmd.order_id, cmd.line_id, cmd.channel, cmd.qty, HELD_STATUS, (), 0, None, applied, now)
    state.add_line(key, line)
    if isinstance(choice, str) or channel is None or ttl_s is None:
        line.status = "rejected"
        line.reason = choice if isinstance(choice, str) else reasons.UNKNOWN_CHANNEL
        rejected = allocation_event(
            cmd.event_id, REJECTED, cmd.order_id, cmd.line_id, state.sku, cmd.channel, cmd.qty,
            cmd.location, cmd.lot, line.reason, cmd.occurred_at, now,
        )  # fmt: skip
        return Decision((rejected,))
    line.expires_at = now + ttl_s * 1000
    policy = tables.lot_policy_of(channel)
    return Decision(place(state, line, choice, policy, HELD, cmd.event_id, cmd.occurred_at, now, lot=cmd.lot))


def confirm_line(state: SkuState, cmd: ConfirmLine, tables: Tables, now: int) -> Decision:
    """The held line becomes an order line: the same units, the hold's expiry gone."""
    line = _held(state, cmd, now)
    if isinstance(line, Decision):
        return line
    own = edit_line(state, line, cmd)
    own.status = "allocated"
    own.expires_at = None if cmd.reservation_ttl_s is None else now + cmd.reservation_ttl_s * 1000
    return Decision(
        [
            line_event(state, cmd, own, CONFIRMED, part.allocated, part.location, part.lot, None, now)
            for part in own.parts
            if part.allocated
        ]
    )


def extend_hold(state: SkuState, cmd: ExtendHold, tables: Tables, now: int) -> Decision:
    """The held line's hold lives `ttl_s` (else the channel's `hold_ttl_s`) from now."""
    line = _held(state, cmd, now)
    if isinstance(line, Decision):
        return line
    ttl_s = cmd.ttl_s if cmd.ttl_s is not None else tables.channel(line.channel).hold_ttl_s
    if ttl_s <= 0:
        return reject(state, cmd, line, reasons.INVALID_TTL, line.allocated, None, None, now)
    own = edit_line(state, line, cmd)
    own.expires_at = now + ttl_s * 1000
    return Decision((line_event(state, cmd, own, EXTENDED, own.allocated, None, None, None, now),))


def _held(state: SkuState, cmd: ConfirmLine | ExtendHold, now: int) -> LineState | Decision:
    """The held line `cmd` names; else DUPLICATE (applied already) or its rejection."""
    line = seen_line(state, cmd)
    if isinstance(line, Decision):
        return line
    if line is None or line.status == UNPLACED:
        return reject(state, cmd, line, reasons.UNKNOWN_LINE, 0, None, None, now)
    if line.status != HELD_STATUS or line.expires_at is None or line.expires_at <= now:
        # A hold past its time whose timer has not fired yet is as good as expired: the timer
        # releases it next, and a confirm now must not keep units the shop was told are free.
        expired = line.reason == reasons.HOLD_EXPIRED or line.status == HELD_STATUS
        why = reasons.HOLD_EXPIRED if expired else reasons.NOT_HELD
        return reject(state, cmd, line, why, line.held, None, None, now)
    return line
