"""Two runs of one history compared: figures per channel and the orders whose outcome changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streamalloc.domain import Tables
from streamalloc.domain.replenishment import ReplenishmentPolicy
from streamalloc.replay.history import Step
from streamalloc.replay.run import CORE_TYPES, PARTIAL, PLACED, SERVED, SPLIT, Key, RunResult, run

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
    #: With replenishment in the what-if: (transfers shipped, units); None without it.
    replenished: tuple[int, int] | None = None

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

    def service_level(self, run: Literal["baseline", "what_if"], channel: str | None = None) -> float | None:
        """Lines allocated in full at their first decision, of the lines placed (None: none)."""
        figures = self.figures(run, channel)
        return figures[SERVED] / figures[PLACED] if figures[PLACED] else None

    def stockout_rate(self, run: Literal["baseline", "what_if"], channel: str | None = None) -> float | None:
        """Lines not allocated in full at their first decision, of the lines placed (None: none)."""
        served = self.service_level(run, channel)
        return None if served is None else 1 - served

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
                "service_level": {
                    "baseline": self.service_level("baseline", channel),
                    "what_if": self.service_level("what_if", channel),
                },
                "stockout_rate": {
                    "baseline": self.stockout_rate("baseline", channel),
                    "what_if": self.stockout_rate("what_if", channel),
                },
                "orders_changed": self.changed_in(channel),
            }

        return {
            "channels": {channel: entry(channel) for channel in self.channels},
            "total": entry(None),
            "orders_changed": len(self.changed),
            **(
                {"replenishment": {"transfers": self.replenished[0], "units": self.replenished[1]}}
                if self.replenished is not None
                else {}
            ),
            "examples": [c.as_json() for c in self.changed[:examples]],
        }


def compare(
    steps: Sequence[Step],
    baseline: Tables,
    what_if: Tables,
    on_progress: Callable[[int], None] | None = None,
    replenish: ReplenishmentPolicy | None = None,
) -> Comparison:
    """Run the history under both tables and compare; progress counts steps over both runs.

    With `replenish`, the what-if run also ships the transfers replenishment recommends.
    """
    total = len(steps)

    def second(done: int) -> None:
        if on_progress is not None:
            on_progress(total + done)

    before = run(steps, baseline, on_progress)
    after = run(steps, what_if, second, replenish)
    replenished = None if replenish is None else (after.transfers, after.transferred_units)
    return Comparison(before.figures, after.figures, changed_orders(before, after), replenished)


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
    keys: set[Key] = (
        {("lines", t) for t in CORE_TYPES}
        | {("units", t) for t in CORE_TYPES}
        | {SPLIT, PARTIAL, PLACED, SERVED}
    )
    for f in figures:
        keys.update(f)
    return sorted(keys)


def _nested(figures: Mapping[Key, int], keys: Iterable[Key]) -> dict[str, Any]:
    """Flat figures as JSON: {lines: {type: n}, units: {...}, reasons: {type: {reason: n}}, split,
    partial, placed, served, orders}."""
    out: dict[str, Any] = {
        "lines": {}, "units": {}, "reasons": {}, "split": 0, "partial": 0, "placed": 0, "served": 0,
        "orders": {},
    }  # fmt: skip
    for key in keys:
        value = figures.get(key, 0)
        if key == SPLIT:
            out["split"] = value
        elif key == PARTIAL:
            out["partial"] = value
        elif key in (PLACED, SERVED):
            out[key[0]] = value
        elif key[0] == "reason":
            out["reasons"].setdefault(key[1], {})[key[2]] = value
        else:
            out[key[0]][key[1]] = value
    return out
