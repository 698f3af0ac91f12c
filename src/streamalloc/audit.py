"""Audit from the events alone: the engine's promises, checked against its own topics.

Input: decoded events of `orders*`, `inventory`, `allocations`, `availability` and
`dead-letter`, each topic in its partition order. Events about one order share a
partition of `allocations` (keyed by order_id), so each line's story is in order; each
availability record is a committed snapshot of one SKU.

Checks:
- oversold: no availability snapshot shows allocated + picked above on_hand anywhere, and
  no line ever holds more units than it ordered;
- traceable: every allocation event names a cause that exists (an order event, or, for
  releases the engine sent itself, an allocation event);
- one decision: every placed line has exactly one first decision (allocated, rejected or
  backordered), repeats of the same event id aside;
- cancelled lines released: every line of a cancelled order that held units has a release;
- balances: the final balances replayed from the events equal the last availability record.

The caller leaves out batches that never committed but that a broker showed anyway (a
crashed worker's last batch on the embedded broker, see runtime/lineage.py); their event
ids still count as known causes, since the engine may have reacted to them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FIRST_DECISIONS = frozenset({"allocated", "rejected", "backordered"})
BUCKETS = ("on_hand", "allocated", "picked", "quality_control", "damaged")


@dataclass
class _Line:
    order_id: str
    line_id: str
    sku: str
    channel: str
    qty: int = 0
    placed_by: str = ""  # event id of the placed order event
    soft: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # location -> units
    hard: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    decisions: set[str] = field(default_factory=set)  # causes of first decisions
    first: str | None = None  # allocated, rejected or backordered
    released: bool = False
    fulfilled: int = 0

    @property
    def held(self) -> int:
        return sum(self.soft.values()) + sum(self.hard.values())


@dataclass
class AuditReport:
    events: Counter[str] = field(default_factory=Counter)
    repeats: int = 0  # the same event id seen again (allowed: ids are deterministic)
    breaches: list[str] = field(default_factory=list)
    oversold_units: int = 0
    per_channel: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lines_placed: int = 0
    lines_decided: int = 0
    checked_skus: int = 0
    leaked_batches: int = 0  # batches a broker showed although they never committed, left out
    leaked_events: int = 0

    @property
    def ok(self) -> bool:
        return not self.breaches

    def breach(self, text: str) -> None:
        if len(self.breaches) < 1000:
            self.breaches.append(text)


def audit(
    orders: Iterable[Mapping[str, Any]],
    inventory: Iterable[Mapping[str, Any]],
    allocations: Iterable[Mapping[str, Any]],
    availability: Iterable[Mapping[str, Any]],
    refused_inventory_ids: Iterable[str] = (),
    *,
    leaked_allocations: Iterable[Mapping[str, Any]] = (),
) -> AuditReport:
    report = AuditReport()
    order_events: dict[str, Mapping[str, Any]] = {}
    placed_lines: dict[tuple[str, str], tuple[str, str, int, str]] = {}  # sku, channel, qty, cause
    cancelled: dict[str, set[str] | None] = {}  # order -> lines (None: whole order)
    for event in orders:
        if event["event_id"] in order_events:
            report.repeats += 1
            continue
        order_events[event["event_id"]] = event
        report.events[f"order.{event['type']}"] += 1
        if event["type"] == "placed":
            for line in event["lines"]:
                placed_lines[(event["order_id"], line["line_id"])] = (
                    line["sku"],
                    event["channel"],
                    line["qty"],
                    event["event_id"],
                )
                report.per_channel[event["channel"]]["placed"] += 1
        elif event["type"] == "cancelled":
            listed = {line["line_id"] for line in event["lines"]}
            already = cancelled.get(event["order_id"], set())
            cancelled[event["order_id"]] = None if not listed or already is None else already | listed
    report.lines_placed = len(placed_lines)

    leaked_ids = {event["event_id"] for event in leaked_allocations}
    lines, final = _replay_allocations(report, allocations, order_events, placed_lines, leaked_ids)
    _apply_inventory(final, inventory, set(refused_inventory_ids), report)
    for key, line in lines.items():
        if key in placed_lines:
            if len(line.decisions) > 1:
                report.breach(f"line {key} has {len(line.decisions)} first decisions")
            if line.decisions:
                report.lines_decided += 1
        order_cancel = cancelled.get(key[0], set())
        if (order_cancel is None or key[1] in (order_cancel or set())) and line.held and not line.released:
            report.breach(f"cancelled line {key} still holds {line.held} unit(s)")
    for key in placed_lines.keys() - lines.keys():
        report.breach(f"placed line {key} has no decision")
    _check_availability(report, availability, final)
    return report


def _replay_allocations(
    report: AuditReport,
    allocations: Iterable[Mapping[str, Any]],
    order_events: Mapping[str, Mapping[str, Any]],
    placed_lines: Mapping[tuple[str, str], tuple[str, str, int, str]],
    leaked_ids: set[str],
) -> tuple[dict[tuple[str, str], _Line], dict[tuple[str, str], Counter[str]]]:
    seen: set[str] = set()
    all_ids: set[str] = set(leaked_ids)
    events = list(allocations)
    for event in events:
        all_ids.add(event["event_id"])
    lines: dict[tuple[str, str], _Line] = {}
    final: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (sku, location) -> buckets
    for event in events:
        event_id = event["event_id"]
        if event_id in seen:
            report.repeats += 1
            continue
        seen.add(event_id)
        kind = event["type"]
        report.events[f"allocation.{kind}"] += 1
        cause = event["cause_event_id"]
        if cause not in order_events and cause not in all_ids:
            report.breach(f"{kind} {event_id} has an unknown cause {cause}")
        if event["line_id"] is None or event["sku"] is None:
            continue
        key = (event["order_id"], event["line_id"])
        line = lines.get(key)
        if line is None:
            unplaced = (event["sku"], event["channel"], event["qty"], "")
            sku, channel, qty, placed_by = placed_lines.get(key, unplaced)
            line = lines[key] = _Line(key[0], key[1], sku, channel, qty, placed_by)
        qty, location = event["qty"], event["location"]
        stats = report.per_channel[line.channel]
        if kind in FIRST_DECISIONS and cause == line.placed_by:
            # The decision about the placed line (a refused pick or release is not one);
            # a split allocation is several events with one cause: still one decision.
            line.decisions.add(event_id if kind != "allocated" else cause)
            if line.first is None:
                line.first = kind
                stats[kind if kind != "rejected" else f"rejected: {event['reason']}"] += 1
        if kind == "allocated":
            line.soft[location] += qty
            final[(line.sku, location)]["allocated"] += qty
            if line.held > line.qty:
                report.oversold_units += line.held - line.qty
                report.breach(f"line {key} holds {line.held} of {line.qty} ordered")
        elif kind == "rejected" and cause != line.placed_by:
            stats[f"command refused: {event['reason']}"] += 1
        elif kind == "picked":
            moved = min(qty, line.soft[location])
            line.soft[location] -= moved
            line.hard[location] += moved
            final[(line.sku, location)]["allocated"] -= moved
            final[(line.sku, location)]["picked"] += moved
        elif kind == "released":
            stats["released"] += 1
            line.released = True
            for bucket, held in (("allocated", line.soft), ("picked", line.hard)):
                for loc, units in held.items():
                    final[(line.sku, loc)][bucket] -= units
                held.clear()
        elif kind == "fulfilled":
            stats["fulfilled"] += 1
            left = qty
            for bucket, held in (("picked", line.hard), ("allocated", line.soft)):
                take = min(left, held[location])
                held[location] -= take
                final[(line.sku, location)][bucket] -= take
                left -= take
            final[(line.sku, location)]["on_hand"] -= qty
            line.fulfilled += qty
        elif kind == "returned":
            stats["returned"] += 1
            final[(line.sku, location)]["quality_control"] += qty
    return lines, final


def _apply_inventory(
    final: dict[tuple[str, str], Counter[str]],
    inventory: Iterable[Mapping[str, Any]],
    refused: set[str],
    report: AuditReport,
) -> None:
    seen: set[str] = set()
    for event in inventory:
        event_id = event["event_id"]
        if event_id in seen:
            report.repeats += 1
            continue
        seen.add(event_id)
        report.events[f"inventory.{event['type']}"] += 1
        if event_id in refused:
            continue
        buckets = final[(event["sku"], event["location"])]
        kind, qty = event["type"], event["qty"]
        if kind in ("received", "adjusted"):
            buckets["on_hand"] += qty
        elif kind == "counted":
            buckets["uncheckable"] = 1  # an absolute count depends on interleaving the events do not show
        elif kind == "inspected":
            buckets["quality_control"] -= qty
            buckets["on_hand" if event["result"] == "pass" else "damaged"] += qty


def _check_availability(
    report: AuditReport,
    availability: Iterable[Mapping[str, Any]],
    final: Mapping[tuple[str, str], Counter[str]],
) -> None:
    last: dict[str, Mapping[str, Any]] = {}
    for record in availability:
        last[record["sku"]] = record
        for row in record["locations"]:
            over = row["allocated"] + row["picked"] - row["on_hand"]
            if over > 0:
                report.oversold_units = max(report.oversold_units, over)
                report.breach(f"{record['sku']} at {row['location']}: {over} unit(s) promised beyond on_hand")
    report.checked_skus = len(last)
    for sku, record in last.items():
        for row in record["locations"]:
            expected = final.get((sku, row["location"]), Counter())
            if expected.get("uncheckable"):
                continue
            for bucket in BUCKETS:
                if row[bucket] != expected.get(bucket, 0):
                    report.breach(
                        f"{sku} at {row['location']}: last availability has {bucket}={row[bucket]}, "
                        f"the events give {expected.get(bucket, 0)}"
                    )
