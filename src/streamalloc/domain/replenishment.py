"""Replenishment: a demand rate per (SKU, location), and the transfers that keep cover above target.

Pure and deterministic: nothing here ships anything. A recommendation becomes stock in
motion only when someone publishes a `transfer_shipped` inventory event for it, so the
allocator stays the single writer of the books. Decisions taken here:

- **Demand rate**: an exponentially decaying count of allocated units. The count decays
  by half every `half_life_s` and the rate is `ln 2 / half_life_s` times it, so a steady
  demand of r units/s reads as r once the history is a few half-lives long. Updates are
  O(1) per decision and need only the last update time; an update older than the last
  adds its units undecayed (a late record is not thrown away, nor made to count twice).
- **Target**: a location should cover its lead time plus a safety cover, at its own
  rate: `target = ceil(rate * (lead_time_s + safety_cover_s))` units. Its cover is its
  supply (available plus in transit towards it) over its rate; a location with no demand
  has infinite cover and a target of 0.
- **Short locations** (supply below target) are served most urgent first (earliest
  projected stockout, then location id), each up to its target.
- **Sources** are ranked by cover in excess of their own target (infinite for no demand;
  on a tie the larger excess in units, then location id), and give at most their excess
  (`available - target`): a source is never left below its target, and units already in
  transit towards it are never counted as its own to give.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: Milliseconds per second: rates are per second, times are epoch milliseconds.
_MS = 1000


@dataclass(frozen=True, slots=True)
class ReplenishmentPolicy:
    """How rates are estimated and how much cover each location should keep.

    `lead_times` overrides `lead_time_s` per location (the time a transfer takes to reach it).
    The defaults are the settings' (`Settings.replenish_*`), so none are repeated here.
    """

    half_life_s: float
    lead_time_s: int
    safety_cover_s: int
    lead_times: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        if self.lead_time_s < 0 or self.safety_cover_s < 0 or any(v < 0 for v in self.lead_times.values()):
            raise ValueError("lead times and safety cover must not be negative")

    def lead_time(self, location: str) -> int:
        return self.lead_times.get(location, self.lead_time_s)

    @property
    def decay(self) -> float:
        """The decay constant (per second) of the demand count."""
        return math.log(2) / self.half_life_s


class DemandRate(NamedTuple):
    """A decayed count of allocated units (`mass`) as of `at` (epoch ms)."""

    mass: float
    at: int

    def rate(self, now: int, policy: ReplenishmentPolicy) -> float:
        """Units per second as of `now` (no decay backwards: before `at` it reads as at `at`)."""
        elapsed = max(0, now - self.at) / _MS
        return policy.decay * self.mass * math.exp(-policy.decay * elapsed)


def observe(previous: DemandRate | None, units: int, at: int, policy: ReplenishmentPolicy) -> DemandRate:
    """The rate after `units` were allocated at `at` (epoch ms)."""
    if previous is None:
        return DemandRate(float(units), at)
    if at <= previous.at:  # late: count it, keep the clock
        return DemandRate(previous.mass + units, previous.at)
    elapsed = (at - previous.at) / _MS
    return DemandRate(previous.mass * math.exp(-policy.decay * elapsed) + units, at)


class Supply(NamedTuple):
    """One location's units of a SKU: available to allocate now, and on their way to it."""

    available: int
    in_transit: int = 0


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Move `qty` units of `sku` from `from_location` to `to_location`, and why."""

    recommendation_id: str
    sku: str
    from_location: str
    to_location: str
    qty: int
    projected_stockout_at: int  # epoch ms the destination runs out at its current rate
    lead_time_s: int  # the destination's
    safety_stock: int  # units of the destination's safety cover at its rate
    demand_rate: float  # the destination's, units per second
    decided_at: int

    def as_record(self) -> dict[str, Any]:
        """The record of topic `transfer-recommendations` (schemas/transfer_recommendation.avsc)."""
        return {
            "recommendation_id": self.recommendation_id,
            "sku": self.sku,
            "from_location": self.from_location,
            "to_location": self.to_location,
            "qty": self.qty,
            "projected_stockout_at": self.projected_stockout_at,
            "lead_time_s": self.lead_time_s,
            "safety_stock": self.safety_stock,
            "demand_rate": self.demand_rate,
            "decided_at": self.decided_at,
        }


def recommendation_id(sku: str, from_location: str, to_location: str, cause: str) -> str:
    """Deterministic from its cause: the same input decided again names the same recommendation."""
    return f"rec:{cause}:{sku}:{from_location}:{to_location}"


def target(rate: float, lead_time_s: int, policy: ReplenishmentPolicy) -> int:
    """Units a location should have to cover its lead time and safety cover at `rate`."""
    return math.ceil(rate * (lead_time_s + policy.safety_cover_s) - 1e-9) if rate > 0 else 0


def recommend(
    sku: str,
    supply: Mapping[str, Supply],
    rates: Mapping[str, DemandRate],
    policy: ReplenishmentPolicy,
    now: int,
    cause: str,
) -> list[Recommendation]:
    """The transfers that bring every short location of `sku` up to its target, as far as
    other locations' excess allows; in the order they were decided."""
    per_second = {loc: rates[loc].rate(now, policy) if loc in rates else 0.0 for loc in supply}
    targets = {loc: target(per_second[loc], policy.lead_time(loc), policy) for loc in supply}
    short = sorted(
        (
            (_stockout_at(s.available, per_second[loc], now), loc)
            for loc, s in supply.items()
            if s.available + s.in_transit < targets[loc]
        ),
    )
    if not short:
        return []
    excess = {loc: s.available - targets[loc] for loc, s in supply.items() if s.available > targets[loc]}
    out: list[Recommendation] = []
    for stockout_at, destination in short:
        need = targets[destination] - supply[destination].available - supply[destination].in_transit
        rate = per_second[destination]
        for source in sorted(
            (loc for loc in excess if loc != destination and excess[loc] > 0),
            key=lambda loc: (
                -_cover_excess(supply[loc].available, per_second[loc], targets[loc]),
                -excess[loc],
                loc,
            ),
        ):
            qty = min(need, excess[source])
            excess[source] -= qty
            need -= qty
            out.append(
                Recommendation(
                    recommendation_id(sku, source, destination, cause),
                    sku,
                    source,
                    destination,
                    qty,
                    stockout_at,
                    policy.lead_time(destination),
                    math.ceil(rate * policy.safety_cover_s - 1e-9),
                    rate,
                    now,
                )
            )
            if need <= 0:
                break
    return out


def _stockout_at(available: int, rate: float, now: int) -> int:
    return now + math.floor(available / rate * _MS) if rate > 0 else now


def _cover_excess(available: int, rate: float, target_units: int) -> float:
    """Seconds of cover beyond the target (infinite with no demand)."""
    return (available - target_units) / rate if rate > 0 else math.inf


def repeats(previous: tuple[int, int] | None, qty: int, now: int, window_ms: int) -> bool:
    """Whether a recommendation of `qty` for the same (sku, from, to) as the last one
    (`previous`: its qty and when it was published) only says it again: the same quantity
    within the dedup window."""
    return previous is not None and previous[0] == qty and now - previous[1] < window_ms
