"""The state of one SKU, laid out as the store keeps it.

The allocator's store holds one record per (sku, location) balance, one per order line
and one per applied inventory event id, never one blob per SKU, so a write does not grow
with the number of lines a SKU has seen. `SkuState` is built from those records:

    SkuState(sku, balances={location_id: LocationBalance}, lines=<Mapping>, applied_events=<Container>)

- `balances` is loaded whole (a SKU has a handful of locations). The state takes
  ownership of these objects and updates them in place.
- `lines` is any `Mapping[LineKey, LineState]` and is only read, through `.get(key)`,
  when a command names that line: the stage backs it with its store so a SKU with
  100,000 closed lines loads none of them. The state never writes to it and never mutates
  an object it returned; a line it changes is copied into the state's own overlay first.
- `applied_events` is any `Container[str]` of inventory event ids already decided (only
  `in` is used); the stage backs it with one store record per id. (Order-line command
  ids are remembered on their line record instead.)

`apply` mutates the state in place (no copy per command: this is the hot path). Every
change marks what it touched; `take_changes()` hands the stage exactly the balances,
lines and event ids to write back, once per batch. `copy()` gives an independent state,
for tests and for a caller that wants to keep a before-image.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

LineKey = tuple[str, str]
"""(order_id, line_id)."""

LineStatus = Literal[
    "allocated",  # holds soft units (maybe some picked too)
    "picked",  # every unit it holds is hard
    "fulfilled",  # shipped everything it held
    "returned",  # every shipped unit came back
    "released",  # gave its units back (cancel, expiry, ship-complete failure)
    "rejected",  # never got units; `reason` says why
    "backordered",  # waits on the SKU's waitlist for units (against incoming, or opted in)
    "partially_allocated",  # holds some of its units and waits on the waitlist for the rest
    "held",  # holds soft units for a cart (checkout hold) until `expires_at` or a confirm
    "unplaced",  # not placed yet: only remembers the ids of commands refused as unknown_line
]
UNPLACED: Final = "unplaced"
HELD: Final = "held"
#: Statuses of a line on its SKU's waitlist: holding nothing, or some of its units.
WAITING: Final[frozenset[str]] = frozenset({"backordered", "partially_allocated"})

_EMPTY: Final[frozenset[str]] = frozenset()
_NO_LINES: Final[Mapping[LineKey, LineState]] = {}


@dataclass(slots=True)
class Lot:
    """Units of one lot (batch) at one location: received when, expiring when.

    `held` counts the units of open order lines counted against this lot (soft and hard);
    its free units are `on_hand - held`. An expired lot's free units are never available.
    """

    on_hand: int = 0
    held: int = 0
    received_at: int = 0
    expires_at: int | None = None

    def copy(self) -> Lot:
        return Lot(self.on_hand, self.held, self.received_at, self.expires_at)

    def expired(self, now: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def free(self) -> int:
        return max(0, self.on_hand - self.held)


@dataclass(slots=True)
class LocationBalance:
    """Units of one SKU at one location, by bucket. Safety stock is the location's (tables).

    `held_ms` is the sum, over the units open lines hold here (soft and hard), of the time
    each was allocated: the average age of open allocations is `now - held_ms / held`, kept
    exact in O(1) per change. `lots` is None for a SKU that is not lot-tracked here (the hot
    path then never looks at lots); units outside every lot are `on_hand - sum(lot.on_hand)`.
    """

    on_hand: int = 0
    allocated: int = 0  # soft
    picked: int = 0  # hard
    quality_control: int = 0
    damaged: int = 0
    incoming: int = 0  # expected receipts
    held_ms: int = field(default=0, compare=False)  # derived bookkeeping
    lots: dict[str, Lot] | None = None

    def copy(self) -> LocationBalance:
        return LocationBalance(
            self.on_hand,
            self.allocated,
            self.picked,
            self.quality_control,
            self.damaged,
            self.incoming,
            self.held_ms,
            None if self.lots is None else {k: lot.copy() for k, lot in self.lots.items()},
        )

    def expired_free(self, now: int) -> int:
        """Free units of expired lots here: on hand, promised to nobody, never sellable."""
        if not self.lots:
            return 0
        return sum(lot.free for lot in self.lots.values() if lot.expired(now))

    def sellable(self, safety_stock: int, now: int) -> int:
        """`available`, less the free units of expired lots (floored at 0)."""
        free = self.on_hand - self.allocated - self.picked - safety_stock
        if self.lots:
            free -= self.expired_free(now)
        return max(0, free)

    def age_ms(self, now: int) -> int:
        """Average age of the units open lines hold here (0 when none are held)."""
        held = self.allocated + self.picked
        return now - self.held_ms // held if held > 0 else 0

    @property
    def units(self) -> int:
        """Physical units here in any bucket: on_hand + quality_control + damaged."""
        return self.on_hand + self.quality_control + self.damaged

    def available(self, safety_stock: int) -> int:
        """on_hand - allocated - picked - safety_stock, floored at 0 (online locations only)."""
        return max(0, self.on_hand - self.allocated - self.picked - safety_stock)


class LinePart(NamedTuple):
    """What one order line holds and has shipped at one location.

    Immutable (a change replaces it), so copying a line shares its parts; a tuple, so
    making one is cheap on the allocation hot path.
    """

    location: str
    allocated: int = 0  # soft units held here
    picked: int = 0  # hard units held here
    fulfilled: int = 0  # units shipped from here
    lot: str | None = None


@dataclass(slots=True)
class LineState:
    """Everything this SKU knows about one order line.

    `parts` is one entry per location (one unless the channel allows splits), which is
    what makes a release exact: it gives back each part's soft and hard units where they
    were taken. `applied` lists the cause event ids already applied to the line, so a
    repeated pick, fulfil, release or return changes nothing.
    """

    order_id: str
    line_id: str
    channel: str
    qty: int  # as ordered
    status: LineStatus
    parts: tuple[LinePart, ...] = ()
    returned: int = 0
    reason: str | None = None  # why it was rejected, backordered or released
    applied: list[str] = field(default_factory=list)
    decided_at: int = 0  # when it was (last) allocated, rejected or backordered
    expires_at: int | None = None  # its soft units are released then unless picked

    def copy(self) -> LineState:
        return LineState(
            self.order_id,
            self.line_id,
            self.channel,
            self.qty,
            self.status,
            self.parts,
            self.returned,
            self.reason,
            list(self.applied),
            self.decided_at,
            self.expires_at,
        )

    @property
    def key(self) -> LineKey:
        return (self.order_id, self.line_id)

    @property
    def location(self) -> str | None:
        """The (first) location the line was allocated at; None when it never was."""
        return self.parts[0].location if self.parts else None

    @property
    def lot(self) -> str | None:
        return self.parts[0].lot if self.parts else None

    @property
    def allocated(self) -> int:
        """Soft units held, over all parts."""
        return sum(p.allocated for p in self.parts)

    @property
    def picked(self) -> int:
        """Hard units held, over all parts."""
        return sum(p.picked for p in self.parts)

    @property
    def held(self) -> int:
        """Units held (soft and hard): what a release gives back."""
        return sum(p.allocated + p.picked for p in self.parts)

    @property
    def fulfilled(self) -> int:
        return sum(p.fulfilled for p in self.parts)


class WaitEntry(NamedTuple):
    """A line waiting on its SKU's waitlist: everything needed to allocate it later."""

    order_id: str
    line_id: str
    channel: str
    qty: int
    priority: int  # the order's
    channel_priority: int  # the channel's, when the line started waiting
    seq: int  # arrival order on this SKU's waitlist
    reason: str  # incoming (a backorder against expected stock) or waitlisted (opted in)
    region: str | None = None
    location: str | None = None
    lot: str | None = None
    ttl_s: int | None = None
    occurred_at: int = 0
    promised_at: int | None = None  # the date last promised to it (a backorder: promises.py)

    @property
    def rank(self) -> tuple[int, int, int]:
        """Order priority first, then channel priority (both higher first), then arrival."""
        return (-self.priority, -self.channel_priority, self.seq)


class Supply(NamedTuple):
    """An expected receipt (a purchase order) still to arrive: `qty` units at `location` by `eta`."""

    location: str
    qty: int
    eta: int | None = None


class Transfer(NamedTuple):
    """An open transfer: `qty` units shipped from `source`, in transit to `destination`."""

    source: str
    destination: str
    qty: int
    shipped_at: int  # when it was shipped (the shipment's occurred_at)
    eta: int | None = None


@dataclass(slots=True)
class SkuBook:
    """The SKU-wide record: units each channel's open lines hold, the waitlist, open transfers.

    One record per SKU, next to its balances. `channel_held` is what channel pools are
    measured against; the waitlist is kept in rank order (see `WaitEntry.rank`);
    `transfers` are the transfers shipped and not yet received, by transfer id (a received
    one leaves the book; its id is remembered among the applied event ids, transfers.py);
    `expected` the expected receipts still to arrive, by purchase order, with their ETAs
    (inventory.py): what backorders are promised dates from (promises.py).
    """

    channel_held: dict[str, int] = field(default_factory=dict)
    waitlist: list[WaitEntry] = field(default_factory=list)
    seq: int = 0
    transfers: dict[str, Transfer] = field(default_factory=dict)
    expected: dict[str, Supply] = field(default_factory=dict)

    def copy(self) -> SkuBook:
        return SkuBook(
            dict(self.channel_held), list(self.waitlist), self.seq, dict(self.transfers), dict(self.expected)
        )

    def in_transit(self, destination: str | None = None) -> int:
        """Units of open transfers on their way to `destination` (or anywhere)."""
        return sum(
            t.qty for t in self.transfers.values() if destination is None or t.destination == destination
        )

    def entry(self, order_id: str, line_id: str) -> WaitEntry | None:
        """The line's entry on the waitlist, if it waits."""
        for e in self.waitlist:
            if e.order_id == order_id and e.line_id == line_id:
                return e
        return None

    def backordered(self, channel: str | None = None) -> int:
        """Units waiting against incoming stock (for `channel`, or every channel)."""
        return sum(
            e.qty
            for e in self.waitlist
            if e.reason == "incoming" and (channel is None or e.channel == channel)
        )


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What to write back: the live objects, to encode before the next command."""

    balances: dict[str, LocationBalance]
    lines: dict[LineKey, LineState]
    applied_events: tuple[str, ...]
    book: SkuBook | None = None  # the SKU-wide record, when it changed
    new_locations: tuple[str, ...] = ()  # locations this SKU has a balance at for the first time

    def __bool__(self) -> bool:
        return bool(self.balances or self.lines or self.applied_events or self.book is not None)


class SkuState:
    """One SKU's balances per location, its order lines, and its applied inventory events."""

    __slots__ = (
        "sku",
        "balances",
        "_base_lines",
        "_lines",
        "_base_events",
        "_events",
        "_new_events",
        "_dirty_balances",
        "_dirty_lines",
        "_book",
        "_dirty_book",
        "_new_balances",
    )

    def __init__(
        self,
        sku: str,
        balances: Mapping[str, LocationBalance] | None = None,
        lines: Mapping[LineKey, LineState] | None = None,
        applied_events: Container[str] | None = None,
        book: SkuBook | None = None,
    ) -> None:
        self.sku = sku
        self.balances: dict[str, LocationBalance] = dict(balances) if balances else {}
        self._base_lines: Mapping[LineKey, LineState] = lines if lines is not None else _NO_LINES
        self._lines: dict[LineKey, LineState] = {}  # owned: changed (or copied to change)
        self._base_events: Container[str] = applied_events if applied_events is not None else _EMPTY
        self._events: set[str] = set()
        self._new_events: list[str] = []
        self._dirty_balances: set[str] = set()
        self._dirty_lines: set[LineKey] = set()
        self._book = book
        self._dirty_book = False
        self._new_balances: list[str] = []

    def __repr__(self) -> str:
        return f"SkuState({self.sku!r}, balances={self.balances!r}, changed_lines={len(self._lines)})"

    # ------------------------------------------------------------ lines

    @property
    def lines(self) -> Mapping[LineKey, LineState]:
        """Every line, the state's own over the loaded ones (iterating reads the whole base)."""
        return _LinesView(self._lines, self._base_lines)

    def get_line(self, key: LineKey) -> LineState | None:
        """The line, for reading only (it may belong to the `lines` mapping)."""
        line = self._lines.get(key)
        if line is None:
            line = self._base_lines.get(key)
        return line

    def edit_line(self, line: LineState) -> LineState:
        """The state's own copy of `line` (from `get_line`), marked changed."""
        key = (line.order_id, line.line_id)
        owned = self._lines.get(key)
        if owned is None:
            owned = line.copy()
            self._lines[key] = owned
        # Marked every time: a line owned since an earlier batch was written back clean.
        self._dirty_lines.add(key)
        return owned

    def add_line(self, key: LineKey, line: LineState) -> None:
        """Record a line this SKU has not seen before under its `key`, marked changed."""
        self._lines[key] = line
        self._dirty_lines.add(key)

    # ------------------------------------------------------------ balances

    def edit_balance(self, location_id: str) -> LocationBalance:
        """The balance at `location_id`, created empty if new, marked changed."""
        balance = self.balances.get(location_id)
        if balance is None:
            balance = self.balances[location_id] = LocationBalance()
            self._new_balances.append(location_id)
        self._dirty_balances.add(location_id)
        return balance

    # ------------------------------------------------------------ the SKU-wide book

    @property
    def book(self) -> SkuBook:
        """The SKU-wide record, for reading (empty when the SKU has none)."""
        if self._book is None:
            self._book = SkuBook()
        return self._book

    def edit_book(self) -> SkuBook:
        """The SKU-wide record, marked changed."""
        self._dirty_book = True
        return self.book

    @property
    def waiting(self) -> bool:
        """Whether any line waits on this SKU's waitlist (cheap: the hot path asks it)."""
        return self._book is not None and bool(self._book.waitlist)

    def in_transit(self, destination: str) -> int:
        """Units of open transfers on their way to `destination` (cheap when there are none)."""
        book = self._book
        return book.in_transit(destination) if book is not None and book.transfers else 0

    @property
    def known(self) -> bool:
        """Whether any inventory event ever reached this SKU (it has a balance somewhere)."""
        return bool(self.balances)

    # ------------------------------------------------------------ applied event ids

    def has_applied(self, event_id: str) -> bool:
        return event_id in self._events or event_id in self._base_events

    def record_applied(self, event_id: str) -> None:
        self._events.add(event_id)
        self._new_events.append(event_id)

    # ------------------------------------------------------------ write-back

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty_balances or self._dirty_lines or self._new_events or self._dirty_book)

    def take_changes(self) -> StateChanges:
        """What changed since the last call (or since construction); then marks all clean.

        The lines stay cached in the state, so a later command in the same batch sees them
        even though the store will only have them once the transaction commits.
        """
        changes = StateChanges(
            balances={loc: self.balances[loc] for loc in self._dirty_balances},
            lines={key: self._lines[key] for key in self._dirty_lines},
            applied_events=tuple(self._new_events),
            book=self._book if self._dirty_book else None,
            new_locations=tuple(self._new_balances),
        )
        self._dirty_balances = set()
        self._dirty_lines = set()
        self._new_events = []
        self._dirty_book = False
        self._new_balances = []
        return changes

    def copy(self) -> SkuState:
        """An independent state: balances and own lines copied, the read-only bases shared."""
        other = SkuState(
            self.sku,
            lines=self._base_lines,
            applied_events=self._base_events,
            book=None if self._book is None else self._book.copy(),
        )
        other._dirty_book = self._dirty_book
        other._new_balances = list(self._new_balances)
        other.balances = {loc: b.copy() for loc, b in self.balances.items()}
        other._lines = {key: line.copy() for key, line in self._lines.items()}
        other._events = set(self._events)
        other._new_events = list(self._new_events)
        other._dirty_balances = set(self._dirty_balances)
        other._dirty_lines = set(self._dirty_lines)
        return other


class _LinesView(Mapping[LineKey, LineState]):
    """Own lines over base lines, read-only."""

    __slots__ = ("_own", "_base")

    def __init__(self, own: dict[LineKey, LineState], base: Mapping[LineKey, LineState]) -> None:
        self._own = own
        self._base = base

    def __getitem__(self, key: LineKey) -> LineState:
        line = self._own.get(key)
        if line is not None:
            return line
        return self._base[key]

    def __iter__(self) -> Iterator[LineKey]:
        yield from self._own
        for key in self._base:
            if key not in self._own:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)
