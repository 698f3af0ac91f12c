"""One run of the history through the domain, with the order stage's rules and the allocator's timers."""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from streamalloc.domain import (
    AllocateLine,
    AllocationEvent,
    Command,
    Decision,
    ExpireLine,
    LineState,
    ReleaseLine,
    SkuState,
    Tables,
    apply,
    contend,
    reasons,
)
from streamalloc.domain.model import UNPLACED
from streamalloc.replay.history import InventoryStep, OrderStep, Step
from streamalloc.stages.order_stage import HOLDING, LineView, OrderView

#: Line decisions always shown, even at zero, so tables and JSON keep their columns.
CORE_TYPES: Final = ("allocated", "rejected", "backordered", "released")
PENDING: Final = "pending"
#: Line statuses whose reason is part of the outcome.
_WITH_REASON: Final = frozenset({"rejected", "released", "backordered"})
CANCELLED: Final = "cancelled"
#: How often (in history steps) a run reports progress.
PROGRESS_EVERY: Final = 1000

# ---------------------------------------------------------------- one run

Key = tuple[str, ...]
"""A figure: ("lines", type), ("units", type), ("reason", type, reason), ("split",), ("orders", status)."""

SPLIT: Final[Key] = ("split",)


@dataclass(slots=True)
class _Line:
    """What the replay knows of one order line: the domain's view after its last event."""

    sku: str
    qty: int
    status: str = PENDING
    reason: str | None = None
    held: tuple[tuple[str, int], ...] = ()  # (location, units held or shipped there)

    def outcome(self) -> LineOutcome:
        return LineOutcome(self.status, self.reason, self.held)


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


@dataclass(slots=True)
class _Order:
    channel: str
    ship_complete: bool = False
    line_count: int | None = None
    cancelled: bool = False
    ship_failed: bool = False
    lines: dict[str, _Line] = field(default_factory=dict)

    def status(self) -> str:
        """The order stage's status (see `OrderView.status`); `open` while it has none."""
        view = OrderView(
            self.channel,
            self.line_count,
            self.ship_complete,
            self.cancelled,
            self.ship_failed,
            0,
            {
                line_id: LineView(line.sku, line.qty, sum(q for _, q in line.held), line.status, line.reason)
                for line_id, line in self.lines.items()
            },
        )
        return view.status() or "open"


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


class _Run:
    """The history through the domain under one set of tables, with the order stage's rules
    and the allocator's reservation timers."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.states: dict[str, SkuState] = {}
        self.orders: dict[str, _Order] = {}
        self.figures: dict[str, Counter[Key]] = {}
        # (due, sku, order_id, line_id): a line's reservation expiry, as the allocator's
        # timer index holds it; a moot one (picked, released, moved) is refused by the domain
        self.timers: list[tuple[int, str, str, str]] = []
        self._timer_set: set[tuple[int, str, str, str]] = set()

    def step(self, step: Step) -> None:
        now = step.occurred_at
        self.expire(now)
        if isinstance(step, InventoryStep):
            self._decide([step.command], now)
            return
        order = self._order(step.order_id, step.channel)
        if step.type == "placed":
            order.ship_complete = step.ship_complete
            order.line_count = len(step.commands)
            for command in step.commands:
                if isinstance(command, AllocateLine):
                    order.lines.setdefault(command.line_id, _Line(command.sku, command.qty))
        elif step.whole_order_cancel:
            order.cancelled = True
            cause = f"{step.event_id}:cancel_requested"
            releases = [
                self._release(step.order_id, cause, order, line_id, line, CANCELLED, now)
                for line_id, line in order.lines.items()
                if line.status in HOLDING
            ]
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

    def _order(self, order_id: str, channel: str) -> _Order:
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = _Order(channel)
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
            if decision:
                pending.extend(self._record(decision, state, now))

    def _schedule(self, due: int, sku: str, line: LineState) -> None:
        """The line's expiry timer, while it holds soft units (as the allocator keeps them)."""
        timer = (due, sku, line.order_id, line.line_id)
        if timer not in self._timer_set:
            self._timer_set.add(timer)
            heapq.heappush(self.timers, timer)

    def _record(self, decision: Decision, state: SkuState, now: int) -> list[ReleaseLine]:
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
            return self._follow(event, state, now)
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
            for release in self._follow(event, state, now):
                if (release.order_id, release.line_id) not in released:
                    released.add((release.order_id, release.line_id))
                    releases.append(release)
        return releases

    def _figures(self, channel: str) -> Counter[Key]:
        figures = self.figures.get(channel)
        if figures is None:
            figures = self.figures[channel] = Counter()
        return figures

    def _follow(self, event: AllocationEvent, state: SkuState, now: int) -> list[ReleaseLine]:
        """Take the line's status from the domain; the releases the order stage would send."""
        order = self._order(event.order_id, event.channel)
        line = order.lines.get(event.line_id)
        if line is None:
            line = order.lines[event.line_id] = _Line(event.sku, event.qty)
        was = line.status
        truth = state.get_line((event.order_id, event.line_id))
        if truth is not None and truth.status != UNPLACED:
            held: dict[str, int] = {}
            for part in truth.parts:
                units = part.allocated + part.picked + part.fulfilled
                if units:
                    held[part.location] = held.get(part.location, 0) + units
            line.status, line.qty, line.held = truth.status, truth.qty, tuple(sorted(held.items()))
            if truth.expires_at is not None and truth.allocated > 0:
                self._schedule(truth.expires_at, state.sku, truth)
            if line.status not in _WITH_REASON:
                line.reason = None
            elif truth.reason is not None or event.type == line.status:
                line.reason = truth.reason or event.reason  # (a release records its reason on the event)
        kind = event.type
        if kind == "rejected" and line.status == "rejected" and was != "rejected":
            # The line's own allocation failed (a refused pick or return leaves its status).
            if order.ship_complete and not order.ship_failed:
                order.ship_failed = True
                return [
                    self._release(
                        event.order_id,
                        event.event_id,
                        order,
                        other_id,
                        other,
                        reasons.SHIP_COMPLETE_FAILED,
                        now,
                    )  # fmt: skip
                    for other_id, other in order.lines.items()
                    if other_id != event.line_id and other.status in HOLDING
                ]
        elif (
            kind in ("allocated", "backordered")
            and line.status in HOLDING
            and (order.cancelled or order.ship_failed)
        ):
            reason = CANCELLED if order.cancelled else reasons.SHIP_COMPLETE_FAILED
            return [self._release(event.order_id, event.event_id, order, event.line_id, line, reason, now)]
        return []

    @staticmethod
    def _release(
        order_id: str, cause: str, order: _Order, line_id: str, line: _Line, reason: str, now: int
    ) -> ReleaseLine:
        """The release the order stage sends; its cause is the event it reacted to."""
        return ReleaseLine(
            event_id=cause,
            occurred_at=now,
            order_id=order_id,
            line_id=line_id,
            sku=line.sku,
            channel=order.channel,
            reason=reason,
        )

    def result(self) -> RunResult:
        outcomes: dict[str, OrderOutcome] = {}
        for order_id, order in self.orders.items():
            status = order.status()
            self._figures(order.channel)["orders", status] += 1
            lines = {line_id: line.outcome() for line_id, line in order.lines.items()}
            outcomes[order_id] = OrderOutcome(order.channel, status, lines)
        return RunResult(self.figures, outcomes)


def run(steps: Sequence[Step], tables: Tables, on_progress: Callable[[int], None] | None = None) -> RunResult:
    """The history through the domain under `tables`; `on_progress(steps done)` now and then."""
    replay = _Run(tables)
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
