"""One run of the history through the domain, with the order's rules and the allocator's timers."""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from streamalloc.domain import (
    AllocateLine,
    AllocationEvent,
    AmendLine,
    AmendRequested,
    CancelRequested,
    Command,
    Decision,
    ExpireLine,
    HoldLine,
    LineState,
    OrderAccepted,
    OrderState,
    ReceiveTransfer,
    ReleaseLine,
    ShipTransfer,
    SkuState,
    Tables,
    apply,
    contend,
    orders,
)
from streamalloc.domain.events import StockChanged
from streamalloc.domain.replenishment import DemandRate, ReplenishmentPolicy, Supply, observe, recommend
from streamalloc.replay.history import InventoryStep, OrderStep, Step

#: Line decisions always shown, even at zero, so tables and JSON keep their columns.
CORE_TYPES: Final = ("allocated", "rejected", "backordered", "released")
#: An order's status while it has none (`domain.orders.status`): not every line decided.
OPEN: Final = "open"
#: How often (in history steps) a run reports progress.
PROGRESS_EVERY: Final = 1000

# ---------------------------------------------------------------- one run

Key = tuple[str, ...]
"""A figure: ("lines", type), ("units", type), ("reason", type, reason), ("split",),
("partial",), ("placed",), ("served",), ("orders", status)."""

SPLIT: Final[Key] = ("split",)
#: Lines a decision allocated in part, leaving the rest waiting (channel `allow_partial`).
PARTIAL: Final[Key] = ("partial",)
#: Lines placed (or held for a cart) and decided, and of those the ones allocated in full at
#: that first decision: the channel's cycle service level, as the audit's KPIs count it.
PLACED: Final[Key] = ("placed",)
SERVED: Final[Key] = ("served",)


class LineOutcome(NamedTuple):
    """Where a line ended up: its status, the reason, and the units it holds (or shipped) where."""

    status: str
    reason: str | None
    held: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        """In a few words: `allocated WH-EAST:2`, `rejected (insufficient_stock)`."""
        text = self.status
        if self.held:
            text += " " + "+".join(f"{loc}:{qty}" for loc, qty in self.held)
        if self.reason is not None:
            text += f" ({self.reason})"
        return text


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """Where an order ended up in one run: its status and each line's outcome."""

    channel: str
    status: str
    lines: dict[str, LineOutcome]


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run's figures per channel and every order's outcome."""

    figures: dict[str, Counter[Key]]
    orders: dict[str, OrderOutcome]
    #: Transfers replenishment recommended and the run shipped, and their units (0 without it).
    transfers: int = 0
    transferred_units: int = 0


class _Run:
    """The history through the domain under one set of tables, with the order's rules
    (`domain.orders`) and the allocator's reservation timers."""

    def __init__(self, tables: Tables, replenish: ReplenishmentPolicy | None = None) -> None:
        self.tables = tables
        self.replenish = replenish
        self.rates: dict[tuple[str, str], DemandRate] = {}
        # (due, sku, transfer_id, destination, qty): a recommended transfer's receipt
        self.receipts: list[tuple[int, str, str, str, int]] = []
        self.touched: set[str] = set()  # SKUs decided on in the current step
        self.transfers = 0
        self.transferred_units = 0
        self.states: dict[str, SkuState] = {}
        self.orders: dict[str, OrderState] = {}
        self.figures: dict[str, Counter[Key]] = {}
        # (due, sku, order_id, line_id): a line's reservation expiry, as the allocator's
        # timer index holds it; a moot one (picked, released, moved) is refused by the domain
        self.timers: list[tuple[int, str, str, str]] = []
        self._timer_set: set[tuple[int, str, str, str]] = set()

    def step(self, step: Step) -> None:
        if self.replenish is None:
            self._step(step)
            return
        self.touched.clear()
        self._step(step)
        cause = step.command.event_id if isinstance(step, InventoryStep) else step.event_id
        for sku in sorted(self.touched):
            self._replenish(sku, cause, step.occurred_at)

    def _step(self, step: Step) -> None:
        now = step.occurred_at
        self.receive(now)
        self.expire(now)
        if isinstance(step, InventoryStep):
            self._decide([step.command], now)
            return
        order = self._order(step.order_id)
        if step.type == "placed" or step.type == "held":  # intake accepts a cart's hold too
            qty = sum(c.qty for c in step.commands if isinstance(c, AllocateLine | HoldLine))
            accepted = OrderAccepted.of(
                step.event_id, step.order_id, step.channel, len(step.commands), qty, step.ship_complete, now
            )
            _, releases = orders.apply(order, accepted)
            self._decide([*step.commands, *releases], now)
            return
        if step.type == "amended":  # intake tells the order stage the edit's lines, one by one
            asked: list[ReleaseLine] = []
            for c in step.commands:
                if isinstance(c, AmendLine):
                    request = AmendRequested.of(
                        step.event_id,
                        step.order_id,
                        step.channel,
                        c.line_id,
                        c.sku,
                        c.qty,
                        len(step.commands),
                        now,
                    )
                    asked += orders.apply(order, request)[1]
            self._decide([*step.commands, *asked], now)
            return
        if step.whole_order_cancel:
            cancel = CancelRequested.of(step.event_id, step.order_id, step.channel, now)
            _, releases = orders.apply(order, cancel)
            self._decide(releases, now)
            return
        self._decide(list(step.commands), now)

    def expire(self, until: int) -> None:
        """Fire every reservation timer due by `until`, in due order, each decided when due
        (the allocator's punctuation does this on the wall clock)."""
        timers = self.timers
        while timers and timers[0][0] <= until:
            timer = heapq.heappop(timers)
            self._timer_set.discard(timer)
            due, sku, order_id, line_id = timer
            self._decide([ExpireLine.due(sku, order_id, line_id, due)], due)

    def receive(self, until: int) -> None:
        """Receive every recommended transfer due by `until`, in due order, in full."""
        receipts = self.receipts
        while receipts and receipts[0][0] <= until:
            due, sku, transfer_id, destination, qty = heapq.heappop(receipts)
            receipt = ReceiveTransfer(
                event_id=f"{transfer_id}:received", occurred_at=due, sku=sku, location=destination,
                qty=qty, transfer_id=transfer_id,
            )  # fmt: skip
            self._decide([receipt], due)

    def _replenish(self, sku: str, cause: str, now: int) -> None:
        """Ship what replenishment recommends for `sku` now, received after the lead time:
        the recommendations applied as if someone shipped each one at once."""
        policy, state = self.replenish, self.states.get(sku)
        if policy is None or state is None:
            return
        locations = self.tables.locations
        supply = {
            loc: Supply(balance.available(locations[loc].safety_stock), state.in_transit(loc))
            for loc, balance in state.balances.items()
            if loc in locations and locations[loc].online
        }
        rates = {loc: rate for loc in supply if (rate := self.rates.get((sku, loc))) is not None}
        for rec in recommend(sku, supply, rates, policy, now, cause):
            eta = now + rec.lead_time_s * 1000
            ship = ShipTransfer(
                event_id=rec.recommendation_id, occurred_at=now, sku=sku, location=rec.from_location,
                qty=rec.qty, destination=rec.to_location, transfer_id=rec.recommendation_id, eta=eta,
            )  # fmt: skip
            decision = apply(state, ship, self.tables, now)
            if any(type(event) is StockChanged and event.reason == "transfer_shipped" for event in decision):
                self.transfers += 1
                self.transferred_units += rec.qty
                heapq.heappush(self.receipts, (eta, sku, rec.recommendation_id, rec.to_location, rec.qty))

    def _order(self, order_id: str) -> OrderState:
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = OrderState()
        return order

    def _decide(self, commands: Sequence[Command], now: int) -> None:
        """Apply `commands` in turn, then the releases they cause (and those the releases cause).

        The engine's releases travel through the order stage and back, so every line of one
        order event is decided before any release it causes: a FIFO keeps that order.
        """
        pending = deque(commands)
        while pending:
            command = pending.popleft()
            state = self.states.get(command.sku)
            if state is None:
                state = self.states[command.sku] = SkuState(command.sku)
            decision = apply(state, command, self.tables, now)
            if self.replenish is not None:
                self._demand(decision, command.sku, now, self.replenish)
            if decision:
                if isinstance(command, AllocateLine | HoldLine):
                    self._served(command, decision)
                pending.extend(self._record(decision, state))

    def _demand(self, decision: Decision, sku: str, now: int, policy: ReplenishmentPolicy) -> None:
        """Feed the demand rates with the units a decision allocated, per location."""
        self.touched.add(sku)
        for event in decision:
            if type(event) is AllocationEvent and event.type == "allocated" and event.location is not None:
                key = (sku, event.location)
                self.rates[key] = observe(self.rates.get(key), event.qty, now, policy)

    def _served(self, command: AllocateLine | HoldLine, decision: Decision) -> None:
        """Count a placement decided, and whether it got every unit it asked for at once."""
        figures = self._figures(command.channel)
        figures[PLACED] += 1
        got = sum(e.qty for e in decision if type(e) is AllocationEvent and e.type in ("allocated", "held"))
        if 0 < command.qty <= got:
            figures[SERVED] += 1

    def _schedule(self, due: int, sku: str, line: LineState) -> None:
        """The line's expiry timer, while it holds soft units (as the allocator keeps them)."""
        timer = (due, sku, line.order_id, line.line_id)
        if timer not in self._timer_set:
            self._timer_set.add(timer)
            heapq.heappush(self.timers, timer)

    def _record(self, decision: Decision, state: SkuState) -> list[ReleaseLine]:
        """Count a decision's allocation events and follow its lines; the releases it causes."""
        if len(decision) == 1:  # most decisions: one event about one line
            event = decision[0]
            if type(event) is not AllocationEvent:
                return []  # a stock change or an inventory rejection: not a line's outcome
            kind, figures = event.type, self._figures(event.channel)
            figures["units", kind] += event.qty
            figures["lines", kind] += 1
            if event.reason is not None:
                figures["reason", kind, event.reason] += 1
            return list(self._follow(event, state))
        # (order_id, line_id, type) -> locations of its events, for one count per line
        seen: dict[tuple[str, str, str], set[str | None]] = {}
        releases: list[ReleaseLine] = []
        released: set[tuple[str, str]] = set()
        for event in decision:
            if type(event) is not AllocationEvent:
                continue
            kind, figures = event.type, self._figures(event.channel)
            figures["units", kind] += event.qty
            key = (event.order_id, event.line_id, kind)
            locations = seen.get(key)
            if locations is None:
                seen[key] = {event.location}
                figures["lines", kind] += 1
                if event.reason is not None:
                    figures["reason", kind, event.reason] += 1
            elif event.location not in locations:
                if kind == "allocated" and len(locations) == 1:
                    figures[SPLIT] += 1
                locations.add(event.location)
            if kind == "backordered" and (event.order_id, event.line_id, "allocated") in seen:
                figures[PARTIAL] += 1  # allocated what was there, the rest waits
            for release in self._follow(event, state):
                if (release.order_id, release.line_id) not in released:
                    released.add((release.order_id, release.line_id))
                    releases.append(release)
        return releases

    def _figures(self, channel: str) -> Counter[Key]:
        figures = self.figures.get(channel)
        if figures is None:
            figures = self.figures[channel] = Counter()
        return figures

    def _follow(self, event: AllocationEvent, state: SkuState) -> tuple[ReleaseLine, ...]:
        """Follow the event in its order (`domain.orders`): the releases the order's rules send.

        Also keeps the line's expiry timer, as the allocator does, while it holds soft units.
        """
        _, releases = orders.apply(self._order(event.order_id), event)
        truth = state.get_line((event.order_id, event.line_id))
        if truth is not None and truth.expires_at is not None and truth.allocated > 0:
            self._schedule(truth.expires_at, state.sku, truth)
        return releases

    def result(self) -> RunResult:
        outcomes: dict[str, OrderOutcome] = {}
        for order_id, order in self.orders.items():
            status = orders.status(order) or OPEN
            self._figures(order.channel)["orders", status] += 1
            lines = {
                line_id: LineOutcome(line.status, line.reason, line.held_at())
                for line_id, line in order.lines.items()
            }
            outcomes[order_id] = OrderOutcome(order.channel, status, lines)
        return RunResult(self.figures, outcomes, self.transfers, self.transferred_units)


def run(
    steps: Sequence[Step],
    tables: Tables,
    on_progress: Callable[[int], None] | None = None,
    replenish: ReplenishmentPolicy | None = None,
) -> RunResult:
    """The history through the domain under `tables`; `on_progress(steps done)` now and then.

    With `replenish`, after each step the recommendations for the SKUs it decided on are
    shipped at once (transfer id: the recommendation's) and received in full after the
    destination's lead time, before any later step.
    """
    replay = _Run(tables, replenish)
    done = 0
    for step in contend(steps, _request_of, tables):
        replay.step(step)
        done += 1
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(done)
    if on_progress is not None:
        on_progress(done)
    return replay.result()


def _request_of(step: Step) -> object:
    """What contends for stock in a step: a placed order, by its first line (every line of
    an order has its priority and channel); anything else keeps its place."""
    if isinstance(step, OrderStep) and step.type == "placed" and step.commands:
        return step.commands[0]
    return step
