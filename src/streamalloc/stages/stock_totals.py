"""One allocator partition's stock summed over its SKUs, for the metrics (never for decisions).

Units per location and bucket, SKUs out of stock per location, ATS and SKUs out of stock per
channel, stocked SKUs, backordered units and waiting lines. Kept in memory, not in the store:
counted by one scan of the partition's store the first time they are needed after the
partition was (re)opened (or the channels table changed), then moved by the SKUs the
allocator publishes availability for (a SKU's old contribution out, its new one in).

Off the commit path: at a commit the allocator only notes each changed SKU's availability
view (built for the `availability` topic anyway); its punctuation folds what was noted into
the totals, so a SKU that changed in many commits is counted once per punctuation interval.

The open reservations per channel are not counted here: they are store records, moved by
every line write in its transaction (`state_codec.open_reservations`), read at each
punctuation. Nothing per order line is held in memory, however many lines are open.

What they lag behind: a punctuation interval; and a lot that expires makes units unsellable
without any event, so `available` counts them until their SKU next changes (as the
`availability` topic does). A batch that aborts after `before_commit` leaves its SKUs noted
as it left them until the batch is redone (the same input gives the same contribution).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from streamalloc.domain import SkuState
from streamalloc.domain.reasons import INCOMING, WAITLISTED
from streamalloc.domain.views import Availability
from streamalloc.runtime.observer import Reservations, StockSnapshot
from streamalloc.runtime.state import StorePartition

#: The buckets counted per location, as the availability view (and topic) names them.
BUCKETS: tuple[str, ...] = ("on_hand", "available", "allocated", "picked", "quality_control", "incoming")
#: Why lines wait on a SKU's waitlist: backordered against incoming stock, or waitlisted.
WAIT_REASONS: tuple[str, ...] = (INCOMING, WAITLISTED)

#: A SKU's share: ((location, units per bucket in BUCKETS order), ...), backordered units,
#: lines waiting per WAIT_REASONS, ((channel, ATS), ...) (empty for a SKU with no balance).
Contribution = tuple[
    tuple[tuple[str, tuple[int, ...]], ...], int, tuple[int, ...], tuple[tuple[str, int], ...]
]

_NOT_WAITING = (0, 0)
_NOTHING: Contribution = ((), 0, _NOT_WAITING, ())


def waiting(state: SkuState) -> tuple[int, ...]:
    """Lines on the SKU's waitlist per WAIT_REASONS."""
    waitlist = state.book.waitlist
    if not waitlist:
        return _NOT_WAITING
    incoming = sum(1 for entry in waitlist if entry.reason == INCOMING)
    return incoming, len(waitlist) - incoming


def contribution(view: Availability, lines_waiting: tuple[int, ...]) -> Contribution:
    """What one SKU adds to its partition's totals, from its availability view and `waiting`."""
    rows = tuple(
        (
            row.location_id,
            (row.on_hand, row.available, row.allocated, row.picked, row.quality_control, row.incoming),
        )
        for row in view.locations
    )
    # A SKU with no balance anywhere (an order for one never received) is no SKU a channel is
    # out of: it would count every SKU ever named by an order.
    ats = tuple(view.ats.items()) if rows else ()
    return rows, view.backordered, lines_waiting, ats


class StockTotals:
    """The totals of one open store partition (`store`): a reopened partition gets new ones."""

    def __init__(self, store: StorePartition, channels: frozenset[str] = frozenset()) -> None:
        """`channels`: those of the tables the views are counted with; when the table's change,
        the partition is counted anew (a SKU not changed since would miss a new channel)."""
        self.store = store
        self.channels = channels
        self._of: dict[str, Contribution] = {}  # SKU -> what it adds now
        self._noted: dict[str, tuple[Availability, tuple[int, ...]]] = {}  # SKU -> not yet folded
        self._units: dict[str, list[int]] = {}  # location -> units per bucket
        self._out_of_stock: dict[str, int] = {}  # location -> SKUs with nothing available there
        self._backordered = 0
        self._waiting = [0] * len(WAIT_REASONS)
        self._skus = 0  # SKUs with a balance somewhere
        # channel -> units it may sell; channel -> SKUs it can sell none of (a view counted with
        # other tables may name a channel these do not: defaultdicts take it, and fast)
        self._ats: defaultdict[str, int] = defaultdict(int, dict.fromkeys(channels, 0))
        self._out_by_channel: defaultdict[str, int] = defaultdict(int, dict.fromkeys(channels, 0))
        self._reservations: Mapping[str, Reservations] = {}  # channel -> as last read

    def update(self, sku: str, new: Contribution) -> bool:
        """Count `sku` as `new` from now on; False when that is what it was counted as."""
        old = self._of.get(sku, _NOTHING)
        if old == new:
            return False
        self._add(old, -1)
        self._add(new, 1)
        self._of[sku] = new
        return True

    def note(self, sku: str, view: Availability, state: SkuState) -> None:
        """Remember the SKU's latest view; `fold` counts it (the commit path only notes)."""
        self._noted[sku] = (view, waiting(state))

    def reserved(self, reservations: Mapping[str, Reservations]) -> bool:
        """Take the channels' open reservations as read from the store; False when unchanged."""
        if reservations == self._reservations:
            return False
        self._reservations = reservations
        return True

    def fold(self) -> bool:
        """Count what was noted since the last fold; False when no total moved."""
        changed = False
        if self._noted:
            update = self.update
            for sku, (view, lines_waiting) in self._noted.items():
                if update(sku, contribution(view, lines_waiting)):
                    changed = True
            self._noted.clear()
        return changed

    def _add(self, share: Contribution, sign: int) -> None:
        rows, backordered, waiting, ats = share
        for location, units in rows:
            totals = self._units.get(location)
            if totals is None:
                totals = self._units[location] = [0] * len(BUCKETS)
                self._out_of_stock[location] = 0
            for i, n in enumerate(units):
                totals[i] += sign * n
            if units[1] == 0:  # nothing available there
                self._out_of_stock[location] += sign
        self._backordered += sign * backordered
        for i, n in enumerate(waiting):
            self._waiting[i] += sign * n
        if ats:
            self._skus += sign
            by_channel, out = self._ats, self._out_by_channel
            for channel, n in ats:
                if n:
                    by_channel[channel] += sign * n
                else:
                    out[channel] += sign

    def snapshot(self) -> StockSnapshot:
        """The totals now, as an immutable value another thread (a scrape) may read."""
        return StockSnapshot(
            units={
                (location, bucket): units[i]
                for location, units in self._units.items()
                for i, bucket in enumerate(BUCKETS)
            },
            out_of_stock=dict(self._out_of_stock),
            backordered_units=self._backordered,
            waiting_lines=dict(zip(WAIT_REASONS, self._waiting, strict=True)),
            skus=self._skus,
            ats=dict(self._ats),
            out_of_stock_by_channel=dict(self._out_by_channel),
            reservations={
                **{channel: Reservations() for channel in self.channels},
                **self._reservations,
            },
        )
