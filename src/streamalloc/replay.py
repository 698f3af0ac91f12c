"""What-if replay: a recorded order and inventory history through the domain core, offline.

The same history runs twice, once under the baseline tables and once under the baseline
overlaid with a policy file, and the two outcomes are compared per channel. Nothing here
reads Kafka: `commands/replay.py` reads the inputs (files or topics) and hands over plain
records.

How the offline run stands in for the engine, and why:

- **Order of events**: orders and inventory merged by `occurred_at`; on a tie inventory
  first, then input order. The engine applies a SKU's inputs in timestamp order too, and
  a receipt stamped with the same millisecond as an order is taken to have been there.
- **Decision time**: each event's `occurred_at` is `now`, so time-based policies decide as
  they would have at that moment, not at replay time.
- **Orders become commands exactly as intake makes them** (`stages.intake.line_requests`,
  then the allocator's `request_command`), and every command, whatever its type, goes
  through `domain.apply`: a command or an event type the domain adds later is replayed and
  counted without a change here.
- **The order stage's two rules are replicated** (small, and they change outcomes): when
  the allocation of a line of a ship-complete order fails (the line is rejected before it
  ever held units), the order's other lines that hold units are released with reason
  `ship_complete_failed`, as is any line of it allocated later; a whole-order cancellation
  (a `cancelled` event listing no lines) releases every line that holds units, and any
  line allocated later. A refused pick, fulfilment or return does not fail a ship-complete
  order: its line still holds its units. Releases are applied after the event's own
  commands (the engine sends them through the order stage, so an order's lines are all
  decided first) and before the next event.
- **Counting** is by decision: for each event type, a line counts once per decision that
  emitted that type for it (a line split over two locations is one allocated line and one
  `split`), and its units are the sum of the events' qty. Rejections and releases are also
  counted by reason. Orders are counted by their final status, as the order stage defines
  it (`OrderView.status`).
- **Reservations expire** as the allocator's timers make them: a line holding soft units
  with an expiry gets a timer, and every timer due by an event's time fires before that
  event (`ExpireLine`, decided when due). Timers still pending when the history ends do
  not fire: the outcome is the one at the last event.
- **Line status comes from the domain** (the line's state after the decision), so a line
  moved to another location, partly expired or filled from the waitlist reads as the
  engine's books have it.
- **Simultaneous requests**: where a channel sets `priority_window_ms`, a placed order is
  replayed ahead of earlier ones of such channels that it outranks within their window
  (`domain.contention`), as if the engine had decided them in one batch; the engine can
  only do so for requests that reach it together, so the replay shows the policy at its
  fullest.
- **Not replayed**: a location going stale (the runtime judges it from the wall clock of
  its inventory feed) and table changes during the history: each run has one set of
  tables, so no sweep is ever needed.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from streamalloc.domain import (
    AllocateLine,
    AllocationEvent,
    Channel,
    Command,
    Decision,
    ExpireLine,
    LineState,
    Location,
    ReleaseLine,
    SkuState,
    Tables,
    apply,
    contend,
    reasons,
)
from streamalloc.domain.model import UNPLACED
from streamalloc.errors import ValidationError
from streamalloc.stages.allocator import inventory_command, request_command
from streamalloc.stages.intake import check_order, line_requests
from streamalloc.stages.order_stage import HOLDING, LineView, OrderView
from streamalloc.stages.tables import channel_of, location_of

#: Every channel's figures summed, under this name in the comparison.
TOTAL: Final = "*"
#: Line decisions always shown, even at zero, so tables and JSON keep their columns.
CORE_TYPES: Final = ("allocated", "rejected", "backordered", "released")
PENDING: Final = "pending"
#: Line statuses whose reason is part of the outcome.
_WITH_REASON: Final = frozenset({"rejected", "released", "backordered"})
CANCELLED: Final = "cancelled"
#: How often (in history steps) a run reports progress.
PROGRESS_EVERY: Final = 1000

# ---------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class OrderStep:
    """One order event, with the per-line commands intake would have made of it."""

    occurred_at: int
    event_id: str
    type: str
    order_id: str
    channel: str
    ship_complete: bool
    commands: tuple[Command, ...]

    @property
    def whole_order_cancel(self) -> bool:
        return self.type == "cancelled" and not self.commands


@dataclass(frozen=True, slots=True)
class InventoryStep:
    """One inventory event as its domain command."""

    occurred_at: int
    command: Command


Step = OrderStep | InventoryStep


def order_step(order: Mapping[str, Any]) -> OrderStep:
    """A decoded order event (topic shape, defaults filled) as a history step.

    Refuses, with ValidationError, what intake would send to the dead-letter topic.
    """
    check_order(order)
    commands = tuple(request_command(request) for request in line_requests(dict(order)))
    return OrderStep(
        occurred_at=order["occurred_at"],
        event_id=order["event_id"],
        type=order["type"],
        order_id=order["order_id"],
        channel=order["channel"],
        ship_complete=order["ship_complete"],
        commands=commands,
    )


def inventory_step(event: Mapping[str, Any]) -> InventoryStep:
    """A decoded inventory event as a history step (ValidationError as the allocator refuses it)."""
    return InventoryStep(occurred_at=event["occurred_at"], command=inventory_command(dict(event)))


def history(orders: Iterable[OrderStep], inventory: Iterable[InventoryStep]) -> list[Step]:
    """Both inputs merged by occurred_at; on a tie inventory first, then input order."""
    merged: list[Step] = [*inventory, *orders]
    merged.sort(key=lambda step: (step.occurred_at, type(step) is OrderStep))  # stable: input order
    return merged


# ---------------------------------------------------------------- tables

TableKind = Literal["location", "channel"]


def table_kind(record: Mapping[str, Any]) -> TableKind:
    """Whether a table record is a location (has location_id) or a channel (has channel_id)."""
    has_location, has_channel = "location_id" in record, "channel_id" in record
    if has_location == has_channel:
        raise ValidationError(
            "a table record has either location_id (a location) or channel_id (a channel)"
            + (", not both" if has_location else "")
        )
    return "location" if has_location else "channel"


@dataclass(frozen=True, slots=True)
class TableRecords:
    """Location and channel records by id, as decoded from the tables; later records win."""

    locations: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    channels: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> TableKind:
        """Add (or replace) one record; ValidationError if the domain cannot read it."""
        kind = table_kind(record)
        try:
            if kind == "location":
                location_of(record)
                self.locations[record["location_id"]] = record
            else:
                channel_of(record)
                self.channels[record["channel_id"]] = record
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a valid {kind} record: {exc!r}") from exc
        return kind

    def overlay(self, policy: TableRecords) -> TableRecords:
        """These records with `policy`'s on top: a policy record replaces the whole record,
        as publishing it to the compacted topic would."""
        return TableRecords({**self.locations, **policy.locations}, {**self.channels, **policy.channels})

    def tables(self) -> Tables:
        locations: dict[str, Location] = {k: location_of(v) for k, v in self.locations.items()}
        channels: dict[str, Channel] = {k: channel_of(v) for k, v in self.channels.items()}
        return Tables(locations=locations, channels=channels)

    def __len__(self) -> int:
        return len(self.locations) + len(self.channels)


def policy_changes(baseline: TableRecords, policy: TableRecords) -> list[str]:
    """What the policy changes in the baseline, one line per record, e.g.
    `channel store: pool_share 0.2 -> 0.5`."""
    changes: list[str] = []
    for kind, base, new in (
        ("location", baseline.locations, policy.locations),
        ("channel", baseline.channels, policy.channels),
    ):
        for key in sorted(new):
            record, before = new[key], base.get(key)
            if before is None:
                changes.append(f"{kind} {key}: added")
                continue
            fields = [
                f"{name} {_show(before.get(name))} -> {_show(record.get(name))}"
                for name in sorted(set(before) | set(record))
                if before.get(name) != record.get(name)
            ]
            changes.append(f"{kind} {key}: " + (", ".join(fields) if fields else "unchanged"))
    return changes


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


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
            command = ExpireLine(
                event_id=f"clock:expiry:{order_id}:{line_id}:{due}",
                occurred_at=due,
                order_id=order_id,
                line_id=line_id,
                sku=sku,
            )
            self._decide([command], due)

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


# ---------------------------------------------------------------- the comparison


@dataclass(frozen=True, slots=True)
class ChangedOrder:
    """An order whose outcome differs: its status in each run and the lines that differ."""

    order_id: str
    channel: str
    baseline: str
    what_if: str
    lines: tuple[tuple[str, str, str], ...]  # (line_id, baseline outcome, what-if outcome)

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "channel": self.channel,
            "baseline": self.baseline,
            "what_if": self.what_if,
            "lines": [{"line_id": i, "baseline": b, "what_if": w} for i, b, w in self.lines],
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two runs of one history: figures per channel (and in total) and the orders that changed."""

    baseline: dict[str, Counter[Key]]
    what_if: dict[str, Counter[Key]]
    changed: list[ChangedOrder]  # in history order (when each order was first seen)

    @property
    def channels(self) -> list[str]:
        return sorted(set(self.baseline) | set(self.what_if))

    def figures(self, run: Literal["baseline", "what_if"], channel: str | None = None) -> Counter[Key]:
        """One run's figures for a channel, or summed over every channel (None)."""
        runs = self.baseline if run == "baseline" else self.what_if
        if channel is not None:
            return runs.get(channel, Counter())
        total: Counter[Key] = Counter()
        for figures in runs.values():
            total.update(figures)
        return total

    def difference(self, channel: str | None = None) -> dict[Key, int]:
        """What-if minus baseline, for every figure either run has (zeros included)."""
        before, after = self.figures("baseline", channel), self.figures("what_if", channel)
        return {key: after[key] - before[key] for key in _keys(before, after)}

    def changed_in(self, channel: str | None = None) -> int:
        return sum(1 for c in self.changed if channel is None or c.channel == channel)

    def as_json(self, examples: int = 10) -> dict[str, Any]:
        """The comparison for scripts: figures per channel and in total, and example orders."""

        def entry(channel: str | None) -> dict[str, Any]:
            before, after = self.figures("baseline", channel), self.figures("what_if", channel)
            return {
                "baseline": _nested(before, _keys(before, after)),
                "what_if": _nested(after, _keys(before, after)),
                "difference": _nested(self.difference(channel), _keys(before, after)),
                "orders_changed": self.changed_in(channel),
            }

        return {
            "channels": {channel: entry(channel) for channel in self.channels},
            "total": entry(None),
            "orders_changed": len(self.changed),
            "examples": [c.as_json() for c in self.changed[:examples]],
        }


def compare(
    steps: Sequence[Step],
    baseline: Tables,
    what_if: Tables,
    on_progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Run the history under both tables and compare; progress counts steps over both runs."""
    total = len(steps)

    def second(done: int) -> None:
        if on_progress is not None:
            on_progress(total + done)

    before = run(steps, baseline, on_progress)
    after = run(steps, what_if, second)
    return Comparison(before.figures, after.figures, changed_orders(before, after))


def changed_orders(baseline: RunResult, what_if: RunResult) -> list[ChangedOrder]:
    """The orders whose status or any line's outcome differs between the runs, in history order
    (both runs see the same events, so the same orders, first seen in the same order)."""
    changed: list[ChangedOrder] = []
    for order_id, before in baseline.orders.items():
        after = what_if.orders.get(order_id)
        if after is None or (after.status == before.status and after.lines == before.lines):
            continue
        was, now = before.lines, after.lines
        lines = tuple(
            (line_id, str(was.get(line_id, "-")), str(now.get(line_id, "-")))
            for line_id in sorted(was.keys() | now.keys())
            if was.get(line_id) != now.get(line_id)
        )
        changed.append(ChangedOrder(order_id, before.channel, before.status, after.status, lines))
    return changed


def _keys(*figures: Mapping[Key, int]) -> list[Key]:
    """Every figure either has, plus the core line decisions, in a stable order."""
    keys: set[Key] = {("lines", t) for t in CORE_TYPES} | {("units", t) for t in CORE_TYPES} | {SPLIT}
    for f in figures:
        keys.update(f)
    return sorted(keys)


def _nested(figures: Mapping[Key, int], keys: Iterable[Key]) -> dict[str, Any]:
    """Flat figures as JSON: {lines: {type: n}, units: {...}, reasons: {type: {reason: n}}, split, orders}."""
    out: dict[str, Any] = {"lines": {}, "units": {}, "reasons": {}, "split": 0, "orders": {}}
    for key in keys:
        value = figures.get(key, 0)
        if key == SPLIT:
            out["split"] = value
        elif key[0] == "reason":
            out["reasons"].setdefault(key[1], {})[key[2]] = value
        else:
            out[key[0]][key[1]] = value
    return out
