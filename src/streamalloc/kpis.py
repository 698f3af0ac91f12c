"""Key figures of an allocation run, from the same topics the audit reads.

- cycle service level: the share of placed lines allocated in full at their first
  decision. The first decision is the first `allocated`, `rejected` or `backordered` the
  line's own placement caused; in full means that decision's `allocated` events sum to the
  line's qty. A backorder filled later, or a line reallocated later, does not count as
  served at the first decision. Overall and per channel; a placed line with no decision
  counts as not served.
- stockout rate: the share of online SKU-locations (per-location `status` == online) with
  available == 0 in the last availability record of each SKU. The snapshot variant is the
  same share over the online rows of every availability snapshot (each committed snapshot
  weighs the same, whatever time it stood for).
- inventory turnover: units depleted (the qty of `fulfilled` events) over the average
  on_hand, which is, per SKU, the mean of totals.on_hand over its availability snapshots,
  summed over SKUs. A snapshot is published once per commit that changed the SKU, so this
  is an average over changes, not over wall-clock time: cheap, exact from the topic alone,
  and close to the time average when activity is steady.
- open-allocation aging: for each line still holding units (soft or hard) at the end of
  the stream, the end of the stream (the latest `decided_at` of any allocation event)
  less the `decided_at` of the last event that gave the line units; count, mean, p95
  (nearest rank) and max, in seconds.

Where an availability record's totals carry `allocation_age_s` (the engine's own average
age of open allocated units), the unit-weighted mean over the SKUs' last records is given
alongside; nothing here depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LineOutcome:
    """What the audit's replay learnt about one order line, as far as the KPIs need it."""

    channel: str
    qty: int
    placed: bool  # a placed order event names it (else: a line another system placed)
    first_decision: str | None  # allocated, rejected or backordered, caused by its placement
    first_allocated: int  # units the `allocated` events of that first decision gave
    held: int  # units it still holds (soft and hard) at the end of the stream
    held_since_ms: int | None  # decided_at of the last event that gave it units


@dataclass(frozen=True)
class ServiceLevel:
    placed: int = 0  # placed lines
    served_first: int = 0  # of which allocated in full at their first decision

    @property
    def rate(self) -> float | None:
        return self.served_first / self.placed if self.placed else None


@dataclass(frozen=True)
class AllocationAging:
    open_lines: int = 0  # lines still holding units at the end of the stream
    mean_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None


@dataclass(frozen=True)
class Kpis:
    service_level: ServiceLevel = field(default_factory=ServiceLevel)
    service_level_by_channel: Mapping[str, ServiceLevel] = field(default_factory=dict)
    sku_locations: int = 0  # online SKU-locations in the last record of each SKU
    stocked_out: int = 0  # of which with available == 0
    stockout_rate_snapshots: float | None = None  # the same share over every snapshot
    units_depleted: int = 0
    average_on_hand: float = 0.0
    aging: AllocationAging = field(default_factory=AllocationAging)
    engine_allocation_age_s: float | None = None  # from availability, when the engine gives it

    @property
    def stockout_rate(self) -> float | None:
        return self.stocked_out / self.sku_locations if self.sku_locations else None

    @property
    def inventory_turnover(self) -> float | None:
        return self.units_depleted / self.average_on_hand if self.average_on_hand > 0 else None

    def as_record(self) -> dict[str, Any]:
        """The KPIs as plain JSON-ready values, headline shares included."""
        aging = self.aging
        return {
            "cycle_service_level": self.service_level.rate,
            "cycle_service_level_by_channel": {c: s.rate for c, s in self.service_level_by_channel.items()},
            "lines_placed": self.service_level.placed,
            "lines_served_first": self.service_level.served_first,
            "stockout_rate": self.stockout_rate,
            "stockout_rate_snapshots": self.stockout_rate_snapshots,
            "sku_locations": self.sku_locations,
            "stocked_out": self.stocked_out,
            "inventory_turnover": self.inventory_turnover,
            "units_depleted": self.units_depleted,
            "average_on_hand": self.average_on_hand,
            "open_allocations": aging.open_lines,
            "open_allocation_age_mean_s": aging.mean_s,
            "open_allocation_age_p95_s": aging.p95_s,
            "open_allocation_age_max_s": aging.max_s,
            "engine_allocation_age_s": self.engine_allocation_age_s,
        }


def compute_kpis(
    lines: Iterable[LineOutcome],
    availability: Iterable[Mapping[str, Any]],
    *,
    units_depleted: int,
    end_ms: int,
) -> Kpis:
    """The KPIs from the replayed lines and the availability records (topic order).

    `end_ms` is the end of the stream (the latest decided_at of an allocation event).
    Availability records repeated with the same event id count once.
    """
    placed: dict[str, list[int]] = {}  # channel -> [placed, served first]
    ages: list[float] = []
    for line in lines:
        if line.placed:
            counts = placed.setdefault(line.channel, [0, 0])
            counts[0] += 1
            if line.first_decision == "allocated" and line.first_allocated == line.qty:
                counts[1] += 1
        if line.held > 0 and line.held_since_ms is not None:
            ages.append(max(0, end_ms - line.held_since_ms) / 1000)
    by_channel = {channel: ServiceLevel(n, served) for channel, (n, served) in sorted(placed.items())}
    overall = ServiceLevel(
        sum(s.placed for s in by_channel.values()), sum(s.served_first for s in by_channel.values())
    )

    seen: set[str] = set()
    last: dict[str, Mapping[str, Any]] = {}
    on_hand: dict[str, list[int]] = {}  # sku -> [sum of totals.on_hand, snapshots]
    rows = out = 0
    for record in availability:
        event_id = record.get("event_id")
        if event_id is not None:
            if event_id in seen:
                continue
            seen.add(event_id)
        sku = record["sku"]
        last[sku] = record
        acc = on_hand.setdefault(sku, [0, 0])
        acc[0] += _totals(record)["on_hand"]
        acc[1] += 1
        for row in _online(record):
            rows += 1
            out += _available(row) == 0
    last_rows = [row for record in last.values() for row in _online(record)]

    return Kpis(
        service_level=overall,
        service_level_by_channel=by_channel,
        sku_locations=len(last_rows),
        stocked_out=sum(1 for row in last_rows if _available(row) == 0),
        stockout_rate_snapshots=out / rows if rows else None,
        units_depleted=units_depleted,
        average_on_hand=sum(total / n for total, n in on_hand.values()),
        aging=_aging(ages),
        engine_allocation_age_s=_engine_age(last.values()),
    )


def _aging(ages: list[float]) -> AllocationAging:
    if not ages:
        return AllocationAging()
    ages.sort()
    p95 = ages[max(0, math.ceil(0.95 * len(ages)) - 1)]  # nearest rank
    return AllocationAging(len(ages), sum(ages) / len(ages), p95, ages[-1])


def _online(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [row for row in record["locations"] if row.get("status", "online") == "online"]


def _available(row: Mapping[str, Any]) -> int:
    available = row.get("available")
    if available is None:
        held = int(row["allocated"]) + int(row["picked"]) + int(row.get("safety_stock", 0))
        return max(0, int(row["on_hand"]) - held)
    return int(available)


def _totals(record: Mapping[str, Any]) -> Mapping[str, Any]:
    totals: Mapping[str, Any] | None = record.get("totals")
    if totals is None:
        return {"on_hand": sum(row["on_hand"] for row in record["locations"])}
    return totals


def _engine_age(records: Iterable[Mapping[str, Any]]) -> float | None:
    """The unit-weighted mean of totals.allocation_age_s, if any record carries it."""
    weighted = units = 0.0
    found = False
    for record in records:
        totals = _totals(record)
        age = totals.get("allocation_age_s")
        if age is None:
            continue
        found = True
        held = totals.get("allocated", 0) + totals.get("picked", 0)
        weighted += age * held
        units += held
    if not found:
        return None
    return weighted / units if units else 0.0


def kpi_rows(kpis: Kpis) -> list[tuple[str, str, str]]:
    """The KPIs as (name, value, what it counts) rows of plain text, for a table or a log."""
    level = kpis.service_level
    rows = [
        (
            "cycle service level",
            _percent(level.rate),
            f"{level.served_first} of {level.placed} placed line(s) allocated in full at the first decision",
        )
    ]
    rows += [
        (f"  {channel}", _percent(s.rate), f"{s.served_first} of {s.placed}")
        for channel, s in kpis.service_level_by_channel.items()
    ]
    rows.append(
        (
            "stockout rate",
            _percent(kpis.stockout_rate),
            f"{kpis.stocked_out} of {kpis.sku_locations} online SKU-location(s) with nothing available "
            f"in the last snapshot; {_percent(kpis.stockout_rate_snapshots)} over all snapshots",
        )
    )
    turnover = kpis.inventory_turnover
    rows.append(
        (
            "inventory turnover",
            "n/a" if turnover is None else f"{turnover:.2f}",
            f"{kpis.units_depleted} unit(s) shipped / {kpis.average_on_hand:.1f} average on_hand",
        )
    )
    aging = kpis.aging
    detail = (
        "no line holds units at the end"
        if not aging.open_lines
        else f"age at the end: mean {aging.mean_s:.1f} s, p95 {aging.p95_s:.1f} s, max {aging.max_s:.1f} s"
    )
    if kpis.engine_allocation_age_s is not None:
        detail += f"; the engine's own average {kpis.engine_allocation_age_s:.1f} s"
    rows.append(("open allocations", f"{aging.open_lines} line(s)", detail))
    return rows


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"
