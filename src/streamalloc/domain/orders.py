"""Orders: what is known of one order from the events about it, and the order's two rules.

The order stage (keyed by order id) and the offline replay both follow an order with
`apply(order, event) -> (order, releases)`, over the events on `allocations` in their
order (all in domain/events.py): `OrderAccepted` (intake saw the order placed: its line
count and ship-complete), `CancelRequested` (a whole-order cancellation, which intake
cannot split into lines) and every `AllocationEvent` about one of its lines. `apply`
updates the state in place, as `domain.apply` does a SKU's, and returns the releases the
order's rules ask for:

- **ship-complete**: when the allocation of a line of a ship-complete order is rejected,
  every other line that holds units or waits for them is released (reason
  `ship_complete_failed`), and so is any line that starts to hold or wait later;
- **whole-order cancel**: every line that holds units or waits is released (reason
  `cancelled`), and so is any line that starts to hold or wait later;
- **order edit** (`AmendRequested`, one per line an `amended` order event lists): once every
  line of the edit is seen, the order has that many lines, and each line it no longer lists
  that holds units, waits or is undecided is released (reason `amended`); a line rejected or
  released before is simply dropped. A listed line whose SKU changed is released at its old
  SKU the same way and starts again, undecided, at the new one (events about its old SKU
  are then left out). The allocator decides the listed lines' quantities (domain/amend.py);
  its `amended` event gives a line its new quantity. A line that left the order (released
  with reason `amended` and nothing left) is no longer part of its status.

A refused later command (a pick, fulfilment, return or release the line's books do not
allow) is a `rejected` event too, but it leaves the line as it was and fails nothing: only
a rejection the order's placement caused (the cause of one of its `accepted` events)
decides a line. When no `accepted` was seen (an order stage record from before placements
were kept) a rejection decides an undecided line unless its reason is `unknown_line`. An
event applied again (the same id: a crash on the embedded broker can repeat one) changes
nothing.

An order also keeps its history: every event applied, with the `source` it came from (an
opaque name of the batch that wrote it). `retract(order, sources)` takes back the events of
sources that turn out never to have happened (the embedded broker can show a crashed
worker's batch that never committed; its successor redoes that input and may decide other
things, under other ids): the order is followed again from the rest of its history. An
order decoded without its history (a store record from before it was kept) has `history`
None and cannot be taken back.

Each line's units are followed per location and lot from its events, as the allocator's
books move them: `allocated` and `reallocated` add soft units; `picked` turns soft units
there hard (those of another lot at the location when the pick moved them to its lot) and
adds the rest hard (a pick at another location, after a `released` with reason
`reallocated` where they were); `released` takes units away, soft first; `fulfilled`
takes them away hard first and counts them shipped; `returned` counts returned units;
`backordered` and `rejected` hold nothing. So a line's status and units are the SKU
state's (`SkuState.get_line`) once all events of a decision are applied (a property test
checks it): `picked` when every unit it holds is hard, `fulfilled` once it holds nothing
and shipped, `returned` once every shipped unit came back, `released` once a release left
it nothing. A `released` with reason `reallocated` is not final (the units move on), nor
is one that leaves the line units elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, assert_never

from streamalloc.domain import reasons
from streamalloc.domain.commands import ReleaseLine
from streamalloc.domain.events import AllocationEvent, AmendRequested, CancelRequested, OrderAccepted

OrderLineStatus = Literal[
    "pending",  # no decision yet (maybe refused commands: the SKU's `unplaced`)
    "allocated",  # holds soft units (maybe some hard too)
    "picked",  # every unit it holds is hard
    "fulfilled",  # shipped everything it held
    "returned",  # every shipped unit came back
    "released",  # gave its units back
    "rejected",  # its allocation was refused; `reason` says why
    "backordered",  # waits for units
    "partially_allocated",  # holds some of its units and waits for the rest (allow_partial)
    "held",  # holds soft units for a cart (a checkout hold), until confirmed or expired
]
OrderStatus = Literal[
    "allocated", "partially_allocated", "backordered", "rejected", "cancelled", "fulfilled", "held"
]

PENDING: Final = "pending"
#: Lines a cancel or a failed ship-complete releases: they hold units, or wait for them.
HOLDING: Final[frozenset[str]] = frozenset(
    {"allocated", "picked", "backordered", "partially_allocated", "held"}
)
#: Lines on their SKU's waitlist: holding nothing, or some of their units.
WAITING: Final[frozenset[str]] = frozenset({"backordered", "partially_allocated"})

#: Reasons of a release that make a line cancelled, not rejected, in the order's status: the
#: channel let it go (a cancel, or a cart whose checkout hold expired).
_CANCELLING: Final[frozenset[str]] = frozenset({reasons.CANCELLED, reasons.HOLD_EXPIRED})

UnitsKey = tuple[str, str | None]
"""(location, lot) of units a line holds or shipped."""


OrderEvent = AllocationEvent | OrderAccepted | CancelRequested | AmendRequested
"""What an order is followed from: the events on `allocations` (domain/events.py)."""


# ---------------------------------------------------------------- state


class Units(NamedTuple):
    """What a line holds and shipped at one location and lot (replaced on change)."""

    soft: int = 0
    hard: int = 0
    shipped: int = 0


@dataclass(slots=True)
class OrderLine:
    """One line of an order, as its events tell it."""

    sku: str
    qty: int = 0  # as ordered, as far as the events tell (at least what it held and shipped)
    status: OrderLineStatus = PENDING
    reason: str | None = None  # why it was rejected, released or backordered
    units: dict[UnitsKey, Units] = field(default_factory=dict)
    returned: int = 0

    @property
    def held(self) -> int:
        """Units held, soft and hard: what the order status reports as allocated."""
        return sum(u.soft + u.hard for u in self.units.values())

    @property
    def soft(self) -> int:
        return sum(u.soft for u in self.units.values())

    @property
    def shipped(self) -> int:
        return sum(u.shipped for u in self.units.values())

    @property
    def seen(self) -> int:
        """Units held or shipped: never more than the line ordered."""
        total = 0
        for soft, hard, shipped in self.units.values():
            total += soft + hard + shipped
        return total

    def held_at(self) -> tuple[tuple[str, int], ...]:
        """Units held or shipped, per location (in location order; none where it has none)."""
        per: dict[str, int] = {}
        for (location, _), u in self.units.items():
            n = u.soft + u.hard + u.shipped
            if n:
                per[location] = per.get(location, 0) + n
        return tuple(sorted(per.items()))


HistoryEntry = tuple[OrderEvent, str]
"""An event an order applied and its `source` (see `retract`)."""


class History:
    """Every event an order applied, in order, each with its source (see `retract`).

    A store may hand over the entries it kept in a form of its own, with the function that
    makes an entry of one (`stored`, `expand`): they are expanded only when read, which only
    `retract` does. Most orders are never retracted, so their kept entries go back to the
    store as they came (`entries`) and only the events applied since are converted.
    """

    __slots__ = ("_added", "_expand", "_stored")

    def __init__(
        self,
        added: Iterable[HistoryEntry] = (),
        *,
        stored: tuple[Any, ...] = (),
        expand: Callable[[Any], HistoryEntry] | None = None,
    ) -> None:
        if stored and expand is None:
            raise ValueError("stored entries need the function that expands them")
        self._stored = stored
        self._expand = expand
        self._added: list[HistoryEntry] = list(added)

    def append(self, entry: HistoryEntry) -> None:
        self._added.append(entry)

    def __iter__(self) -> Iterator[HistoryEntry]:
        if self._stored and self._expand is not None:
            yield from map(self._expand, self._stored)
        yield from self._added

    def __len__(self) -> int:
        return len(self._stored) + len(self._added)

    def __bool__(self) -> bool:
        return bool(self._stored or self._added)

    def last(self) -> HistoryEntry | None:
        if self._added:
            return self._added[-1]
        if self._stored and self._expand is not None:
            return self._expand(self._stored[-1])
        return None

    def entries(self, compact: Callable[[HistoryEntry], Any]) -> tuple[Any, ...]:
        """The entries in the store's form: those it handed over as they came, the rest made
        by `compact` (the inverse of the store's `expand`)."""
        return self._stored + tuple(map(compact, self._added))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return list(self) == list(other)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for

    def __repr__(self) -> str:
        return f"History({list(self)!r})"


@dataclass(slots=True)
class OrderState:
    """Everything known of one order; changed in place by `apply`."""

    channel: str = ""
    line_count: int | None = None  # None until `accepted` is seen
    ship_complete: bool = False
    placements: tuple[str, ...] = ()  # cause ids of its `accepted` events (its placed order events)
    cancelled: bool = False
    ship_failed: bool = False
    decided_at: int = 0  # of the latest event
    lines: dict[str, OrderLine] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)  # ids of the events applied: a repeat is a no-op
    #: every event applied, in order, with its source (see `retract`); None: not known
    history: History | None = field(default_factory=History)
    #: the edit being seen: its cause id and the lines it listed so far (see `AmendRequested`)
    amending: tuple[str, tuple[str, ...]] | None = None


# ---------------------------------------------------------------- the rules


def apply(
    order: OrderState, event: OrderEvent, source: str = ""
) -> tuple[OrderState, tuple[ReleaseLine, ...]]:
    """Follow `event` in `order` (in place); the releases the order's rules ask for.

    An event already applied (the same id: a repeat, which a crash on the embedded broker
    can cause) changes nothing and asks for nothing. `source` names where the event came
    from, for `retract`.
    """
    if event.event_id in order.applied:
        return order, ()
    order.applied.add(event.event_id)
    if order.history is not None:
        order.history.append((event, source))
    order.channel = order.channel or event.channel
    match event:
        case AllocationEvent():
            order.decided_at = max(order.decided_at, event.decided_at)
            return order, _follow_line(order, event)
        case OrderAccepted():
            order.decided_at = max(order.decided_at, event.occurred_at)
            if event.cause_event_id not in order.placements:
                order.placements += (event.cause_event_id,)
            if order.line_count is None:  # the first placement's (a repeat with another id adds none)
                order.line_count = event.line_count
                order.ship_complete = event.ship_complete
            if order.ship_complete and not order.ship_failed and _any_rejected(order):
                return order, _fail_ship_complete(order, event, None)
            return order, ()
        case CancelRequested():
            order.decided_at = max(order.decided_at, event.occurred_at)
            order.cancelled = True
            return order, tuple(
                _release(order, event, line_id, line, reasons.CANCELLED)
                for line_id, line in order.lines.items()
                if line.status in HOLDING
            )
        case AmendRequested():
            order.decided_at = max(order.decided_at, event.occurred_at)
            return order, _amend(order, event)
        case _:
            assert_never(event)


def retract(order: OrderState, sources: Container[str]) -> tuple[OrderState, tuple[ReleaseLine, ...]]:
    """`order` without the events that came from `sources`, and the releases it now asks for.

    Why: a batch the embedded broker showed although it never committed can have decided a
    line one way (backordered, or filled from one cause) while the batch that redid its input
    decided it another way (rejected, or filled from another cause), under other event ids.
    Applied on top of each other, the line would keep the first decision, or hold units twice.
    So the order is followed again, from an empty state, over the rest of its history (a new
    state: the old one is left as it was). The releases returned are those the order's rules
    ask for now and did not ask for before (a ship-complete order whose line is now rejected);
    those asked for before went out already, and a release is idempotent in the allocator
    anyway. Nothing changes when no event came from `sources` or the history is not known.
    """
    if order.history is None:
        return order, ()
    history = list(order.history)
    if not any(source in sources for _, source in history):
        return order, ()
    asked = {(r.event_id, r.line_id) for r in _fold(history)[1]}
    again, releases = _fold([(event, source) for event, source in history if source not in sources])
    return again, tuple(r for r in releases if (r.event_id, r.line_id) not in asked)


def _fold(history: Iterable[HistoryEntry]) -> tuple[OrderState, list[ReleaseLine]]:
    """The order its history gives, and every release its rules asked for on the way."""
    order = OrderState()
    releases: list[ReleaseLine] = []
    for event, source in history:
        releases += apply(order, event, source)[1]
    return order, releases


def status(order: OrderState) -> OrderStatus | None:
    """The order's status once every line has a decision, else None.

    The decided lines (not `pending`) must be at least the order's line count (lines only
    refused commands named are not counted). While releases this order's rules asked for
    are in flight (cancel, failed ship-complete) there is none either: a ship-complete
    order never reads as partially allocated, nor a cancelled one as allocated. A cancel
    that listed every line is a cancellation too, not a rejection; nor while a line an order
    edit left out is being released (a line that has left is not counted). Then, in this order:
    every line shipped (fulfilled, or returned since) is `fulfilled`; every line released
    or rejected, the order or a line cancelled, is `cancelled`; a line partially allocated
    (holding some units, waiting for the rest) makes it `partially_allocated`, or
    `backordered` for a ship-complete order, which cannot ship before every line is
    complete; a line waiting makes it `backordered`; and by the lines that hold or shipped
    units: all `allocated`, none `rejected`, some `partially_allocated`.
    """
    if order.line_count is None:
        return None
    decided = active = fulfilled = returned = waiting = partial = gone = held = 0
    cancelled = order.cancelled
    for line in order.lines.values():  # one pass: the order stage asks at every commit
        kind = line.status
        if line.reason == reasons.AMENDED and kind != "released" and kind != PENDING:
            return None  # an edit left it out: its release is in flight
        if kind == PENDING or (kind == "released" and line.reason == reasons.AMENDED):
            continue  # undecided, or no longer part of the order (an edit left it out)
        decided += 1
        if kind == "allocated" or kind == "picked":
            active += 1
        elif kind == "held":
            active += 1
            held += 1
        elif kind == "fulfilled":
            fulfilled += 1
        elif kind == "returned":
            returned += 1
        elif kind == "backordered":
            waiting += 1
        elif kind == "partially_allocated":
            partial += 1
        else:  # released or rejected
            gone += 1
            cancelled = cancelled or (kind == "released" and line.reason in _CANCELLING)
    if decided < order.line_count:
        return None
    if (order.cancelled or order.ship_failed) and active + waiting + partial:
        return None
    if fulfilled + returned == decided:
        return "fulfilled"
    if gone == decided and cancelled:
        return "cancelled"
    if partial:
        return "backordered" if order.ship_complete else "partially_allocated"
    if waiting:
        return "backordered"
    holding = active + fulfilled
    if held and held == holding == decided:
        return "held"
    if holding == decided:
        return "allocated"
    if holding == 0:
        return "rejected"
    return "partially_allocated"


def _follow_line(order: OrderState, event: AllocationEvent) -> tuple[ReleaseLine, ...]:
    line = order.lines.get(event.line_id)
    if line is None:
        line = order.lines[event.line_id] = OrderLine(event.sku)
    elif line.sku != event.sku:
        return ()  # about the SKU an order edit moved the line from: released there
    was = line.status
    location, lot, qty = event.location, event.lot, event.qty
    match event.type:
        case "allocated" | "reallocated" | "held":
            if location is not None:
                _add(line, (location, lot), Units(qty, 0, 0))
            if event.type == "reallocated" and was in WAITING:  # moved units: it still waits
                line.status = "partially_allocated"
            elif event.type == "held" or (event.type == "reallocated" and was == "held"):
                line.status, line.reason = "held", None  # a cart's hold (moved, it stays one)
            else:  # (a fill short of the rest: a `backordered` follows)
                line.status, line.reason = "allocated", None
            line.qty = max(line.qty, line.seen)
        case "picked":
            if location is not None:
                _harden(line, location, lot, qty)
            if was in WAITING:
                line.status = "partially_allocated"
            else:
                line.status, line.reason = ("picked" if line.soft == 0 else "allocated"), None
            line.qty = max(line.qty, line.seen)
        case "fulfilled":
            if location is not None:
                _take(line, location, lot, qty, hard_first=True)
                _add(line, (location, lot), Units(0, 0, qty))
            if was in WAITING:
                line.status = "partially_allocated" if line.held else "backordered"
            elif line.held == 0:
                line.status, line.reason = "fulfilled", None
            else:
                line.status, line.reason = ("picked" if line.soft == 0 else "allocated"), None
        case "released":
            if location is not None:
                _take(line, location, lot, qty, hard_first=False)
            if event.reason == reasons.AMENDED and line.seen >= line.qty > 0:
                _settle(line, was)  # an edit to fewer units: the line keeps the rest
            elif event.reason != reasons.REALLOCATED:  # else not final: the units move on
                if line.held == 0:
                    line.status, line.reason = "released", event.reason
                elif event.reason == reasons.EXPIRED and line.soft == 0:
                    line.status, line.reason = "picked", None  # an expiry leaves the hard units
        case "returned":
            line.returned += qty
            if line.held == 0 and line.returned >= line.shipped and was not in WAITING:
                line.status, line.reason = "returned", None
        case "backordered":  # waits for `qty` units: all of them, or the rest of a partial line
            line.status = "partially_allocated" if line.held else "backordered"
            line.reason = event.reason
            line.qty = max(line.qty, line.seen + qty)
        case "confirmed":  # the hold is now the order line's: the same units
            if was == "held":
                line.status, line.reason = "allocated", None
        case "extended":  # a new time to live: nothing an order follows changes
            pass
        case "amended":  # an edit: the line is for `qty` units now (its units move in other events)
            line.qty = qty
            if was in WAITING and line.seen >= qty:  # it waited for units it no longer wants
                _settle(line, "allocated")
            return ()
        case "rejected":
            if was != PENDING or not _decides(order, event):
                return ()  # a refused command leaves the line as it was
            line.status, line.reason = "rejected", event.reason
        case _:
            assert_never(event.type)
    if was == PENDING:
        line.qty = max(line.qty, qty)

    if line.status == "rejected":  # (just decided: a refusal returned above)
        if order.ship_complete and not order.ship_failed:
            return _fail_ship_complete(order, event, event.line_id)
    elif (order.cancelled or order.ship_failed) and line.status in HOLDING and was not in HOLDING:
        reason = reasons.CANCELLED if order.cancelled else reasons.SHIP_COMPLETE_FAILED
        return (_release(order, event, event.line_id, line, reason),)
    return ()


def _amend(order: OrderState, event: AmendRequested) -> tuple[ReleaseLine, ...]:
    """Follow one line of an order edit; once the edit's every line is seen, release the
    lines it left out (see the module doc)."""
    cause = event.cause_event_id
    if cause not in order.placements:  # a line it adds is decided by its placement, as for `placed`
        order.placements += (cause,)
    listed = order.amending[1] if order.amending is not None and order.amending[0] == cause else ()
    if event.line_id not in listed:
        listed += (event.line_id,)
    order.amending = (cause, listed)
    releases: list[ReleaseLine] = []
    line = order.lines.get(event.line_id)
    if line is not None and line.sku != event.sku:  # the line moved to another SKU: out, then in
        if line.status in HOLDING or line.status == PENDING:
            releases.append(_release(order, event, event.line_id, line, reasons.AMENDED))
        line = None
    if line is None:
        order.lines[event.line_id] = OrderLine(event.sku, event.qty)
    if len(listed) >= event.line_count:
        order.amending = None
        order.line_count = event.line_count
        for line_id, other in order.lines.items():
            if line_id in listed:
                continue
            if other.status in HOLDING or other.status == PENDING:
                releases.append(_release(order, event, line_id, other, reasons.AMENDED))
                other.reason = reasons.AMENDED  # leaving: the order has no status until it has left
            elif other.status in ("released", "rejected"):
                other.status, other.reason = "released", reasons.AMENDED
    return tuple(releases)


def _decides(order: OrderState, event: AllocationEvent) -> bool:
    """Whether a rejection of an undecided line is its allocation decision (see module doc)."""
    if order.placements:
        return event.cause_event_id in order.placements
    return event.reason != reasons.UNKNOWN_LINE


def _settle(line: OrderLine, was: OrderLineStatus) -> None:
    """The status of a line that keeps units after an edit, from them (as lines.settle does)."""
    if was in WAITING and line.seen < line.qty:
        line.status = "partially_allocated" if line.held else "backordered"
    elif line.held == 0:
        line.status, line.reason = "fulfilled", None
    else:
        line.status, line.reason = ("picked" if line.soft == 0 else "allocated"), None


def _any_rejected(order: OrderState) -> bool:
    return any(line.status == "rejected" for line in order.lines.values())


def _fail_ship_complete(order: OrderState, cause: OrderEvent, failed: str | None) -> tuple[ReleaseLine, ...]:
    order.ship_failed = True
    return tuple(
        _release(order, cause, line_id, line, reasons.SHIP_COMPLETE_FAILED)
        for line_id, line in order.lines.items()
        if line_id != failed and line.status in HOLDING
    )


def _release(order: OrderState, cause: OrderEvent, line_id: str, line: OrderLine, reason: str) -> ReleaseLine:
    """The release of a line, caused by the event the rule reacted to."""
    return ReleaseLine(
        event_id=cause.event_id,
        occurred_at=cause.occurred_at,
        order_id=cause.order_id,
        line_id=line_id,
        sku=line.sku,
        channel=order.channel,
        reason=reason,
    )


def _add(line: OrderLine, key: UnitsKey, more: Units) -> None:
    units = line.units.get(key)
    if units is None:
        line.units[key] = more
    else:
        line.units[key] = Units(units.soft + more.soft, units.hard + more.hard, units.shipped + more.shipped)


def _put(line: OrderLine, key: UnitsKey, units: Units) -> None:
    """Set the units at `key`, dropping the entry when nothing is left (a lean store record)."""
    if units.soft or units.hard or units.shipped:
        line.units[key] = units
    else:
        line.units.pop(key, None)


def _at(line: OrderLine, location: str, lot: str | None) -> list[UnitsKey]:
    """The line's keys at `location`: (location, lot) first, then its other lots there."""
    keys = [(location, lot)] if (location, lot) in line.units else []
    keys += [key for key in line.units if key[0] == location and key[1] != lot]
    return keys


def _take(line: OrderLine, location: str, lot: str | None, qty: int, *, hard_first: bool) -> None:
    """Take `qty` held units at `location`, as the SKU's books do.

    A fulfilment (`hard_first`) names the part it shipped from: its (location, lot) first,
    hard units then soft ones there, then the location's other lots. A release gives back
    soft units across the location's lots before any hard one, `lot` first: a sweep or an
    expiry releases only soft units and names no lot when it took them from several, so a
    hard unit of the lot-less part must not go while a soft one of another lot is left.
    """
    keys = _at(line, location, lot)
    passes = (
        [(key, hard) for key in keys for hard in (True, False)]
        if hard_first
        else [(key, hard) for hard in (False, True) for key in keys]
    )
    for key, hard in passes:
        if qty <= 0:
            return
        units = line.units.get(key)
        if units is None:
            continue
        n = min(units.hard if hard else units.soft, qty)
        if n:
            qty -= n
            if hard:
                _put(line, key, Units(units.soft, units.hard - n, units.shipped))
            else:
                _put(line, key, Units(units.soft - n, units.hard, units.shipped))


def _harden(line: OrderLine, location: str, lot: str | None, qty: int) -> None:
    """`qty` units picked at (location, lot): soft units there turn hard, then those of other
    lots at the location (a pick that named a lot moves them to it), the rest are new."""
    for key in _at(line, location, lot):
        if qty <= 0:
            break
        units = line.units[key]
        move = min(units.soft, qty)
        if move:
            qty -= move
            _put(line, key, Units(units.soft - move, units.hard, units.shipped))
            _add(line, (location, lot), Units(hard=move))
    if qty > 0:
        _add(line, (location, lot), Units(hard=qty))
