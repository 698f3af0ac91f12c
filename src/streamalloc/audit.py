"""Audit from the events alone: the engine's promises, checked against its own topics.

Input: decoded events of `orders*`, `inventory`, `allocations`, `availability`,
`order-status` and `dead-letter`, each topic in its partition order. Events about one order share a
partition of `allocations` (keyed by order_id), so each line's story is in order; each
availability record is a committed snapshot of one SKU.

How an allocation event moves a line's units, always at its one `location`:
`allocated` and `reallocated` add soft units; `picked` turns soft units there into hard
ones, and any remainder becomes hard directly; `released` takes units away there, soft
first (an expiry releases only soft ones, a cancel all); `fulfilled` takes them away hard
first, and they leave on_hand; `backordered`, `rejected` and `returned` hold nothing. A
`released` with reason `reallocated` is not a final release: a `reallocated`, `picked`,
`backordered` or another `released` follows it (a location went offline, or the pick
came from elsewhere).

Checks:
- oversold: no availability snapshot shows allocated + picked above on_hand anywhere, and
  no line ever holds more units than it ordered (fewer is fine: a partial allocation),
  nor gives back or ships more than it holds at a location. `oversold_units` is one
  measure of both: each place's worst excess, counted once and summed over places, a
  place being a (SKU, location) in the availability snapshots (units promised beyond
  on_hand there) or an order line (units held beyond what it ordered);
- traceable: every allocation event names a cause that exists: an order event, an
  inventory event, an allocation event (the order stage's releases, expiries), or a
  locations-table or clock decision (`locations:<location_id>:...`, `clock:...`);
- one decision: every placed line has exactly one first decision (allocated, rejected or
  backordered) caused by its placement, repeats of the same event id aside. The parts of
  a split allocation (by location or lot) are one decision; a second placement-caused
  `allocated` after it, or at a location and lot it already took from, is another one;
  so is a partial allocation (`allocated`, then a `backordered` for the rest). A line
  placed by a `held` order event (a cart's checkout hold) is decided by its `held`
  events, which take units as `allocated` ones do; `confirmed` and `extended` move none. A fill of
  a waiting line (an `allocated` with another cause) and a reallocation are not
  decisions, but they need a backorder or a release for reallocation before them, and a
  fill never exceeds the units the line waits for (the last `backordered` said how many;
  each fill takes its units off). A `backordered` that is not a placement's restates
  what a waiting line still lacks, or follows a release for reallocation. An order edit
  (`amended`: the line's new qty, which "ordered" means from then on) may give a line
  units (`allocated`) or let it wait (`backordered`) under its own cause; a line the edit
  adds is placed by it, and so is a line it moves to another SKU, at that SKU;
- cancelled lines released: no line of a cancelled order still holds units at the end;
- balances: the final balances replayed from the events equal the last availability record;
- the ledger (when `stock_changes` are given): every change names a known cause, moves its
  location by exactly its deltas, and every applied inventory event has one; where a count
  makes the events alone unable to say the balance, the ledger's last word is checked
  against the last availability record instead (audit_ledger.py).
- transfers: a shipment takes its units off the source's on_hand and puts them in transit
  to its destination; its receipt (of the same transfer id) puts what arrived on hand there
  and ends the transfer, the rest lost in transit. The last availability record's
  `in_transit` per location, and the ledger's, must be what the events leave open: units
  in transit are neither lost nor counted twice (on hand at both ends);
- order status (when `order_statuses` are given): each order's last `order-status` record
  agrees with its lines' final states from the events, as audit_orders.py defines it.

The caller leaves out batches that never committed but that a broker showed anyway (a
crashed worker's last batch on the embedded broker, see runtime/lineage.py); their event
ids still count as known causes, since the engine may have reacted to them.

The report also carries the run's KPIs (kpis.py), computed from the same replay.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamalloc.audit_ledger import check_ledger
from streamalloc.audit_orders import check_order_statuses
from streamalloc.domain import reasons
from streamalloc.kpis import Kpis, LineOutcome, compute_kpis

FIRST_DECISIONS = frozenset({"allocated", "rejected", "backordered"})
BUCKETS = ("on_hand", "allocated", "picked", "quality_control", "damaged")
REALLOCATED = "reallocated"  # the reason of a release that is not final: the units move on
HOLD_EVENTS = frozenset({"held", "confirmed", "extended"})  # checkout holds (domain/checkout.py)
TABLE_CAUSES = ("locations:", "clock:")  # decisions a table or the clock caused, not an event


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
    decisions: set[str] = field(default_factory=set)  # event ids starting a first decision
    first: str | None = None  # allocated, rejected or backordered
    first_allocated: int = 0  # units the first decision allocated
    split: set[tuple[str, str | None]] = field(default_factory=set)  # (location, lot) of its parts
    splitting: bool = False  # the last event was a placement-caused `allocated`
    released: bool = False  # a final release was seen
    waiting: bool = False  # backordered, not filled yet
    wanting: int = 0  # units it waits for (the last `backordered`'s qty, less the fills since)
    reallocating: bool = False  # the last event was a release for reallocation or a reallocation
    dangling: bool = False  # the last event was a release for reallocation
    fills: set[str] = field(default_factory=set)  # causes of fills of its backorder
    held_since: int | None = None  # decided_at of the last event that gave it units
    fulfilled: int = 0
    over: int = 0  # the most units it ever held beyond what it ordered
    amended_by: str = ""  # the cause of its last `amended`: the edit may give it units, or let it wait
    promised_at: int | None = None  # the date its backorder was last promised for, until filled

    @property
    def held(self) -> int:
        return sum(self.soft.values()) + sum(self.hard.values())


@dataclass
class AuditReport:
    events: Counter[str] = field(default_factory=Counter)
    repeats: int = 0  # the same event id seen again (allowed: ids are deterministic)
    breaches: list[str] = field(default_factory=list)
    #: each place's worst excess, summed: every (SKU, location)'s most units promised beyond
    #: on_hand in a snapshot, and every line's most units held beyond what it ordered
    oversold_units: int = 0
    #: the most units any availability snapshot (the engine's own state) shows promised beyond
    #: on_hand at one location (a maximum, not a sum)
    promised_beyond_on_hand: int = 0
    per_channel: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lines_placed: int = 0
    lines_decided: int = 0
    checked_skus: int = 0
    checked_orders: int = 0  # orders whose last order-status was checked against their events
    leaked_batches: int = 0  # batches a broker showed although they never committed, left out
    leaked_events: int = 0
    waitlist_fills: int = 0  # backordered lines later allocated (one per line and cause)
    partial_allocations: int = 0  # placements that allocated part of a line and let the rest wait
    reallocations: int = 0  # `reallocated` events: units moved to another location
    #: checkout holds, in lines: "held" (units held for a cart), "confirmed", "extended" (at
    #: least once) and "expired" (released with reason hold_expired)
    holds: Counter[str] = field(default_factory=Counter)
    released_by_reason: Counter[str] = field(default_factory=Counter)  # final releases (lines)
    units_by_lot: Counter[str] = field(
        default_factory=Counter
    )  # units allocated, by lot (None: ""), moves too
    inspected: Counter[str] = field(default_factory=Counter)  # units inspected, by result
    #: events the engine decided on its own, by (cause, type): cause "locations" (a sweep) or "clock"
    engine_decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    expired_units: int = 0  # free units of expired lots in the last availability of each SKU
    #: transfers between locations: "shipped", "received" (transfers), "lost" (units lost in
    #: transit) and "fills" (waiting lines filled by a transfer's receipt)
    transfers: Counter[str] = field(default_factory=Counter)
    in_transit_units: int = 0  # units of transfers shipped and not received at the end
    #: promise dates: "promised" (backordered events with a promised_at) and "restated" (of
    #: those, the ones telling a waiting line a new date: an ETA moved); of the lines filled
    #: after a promise, "kept" (filled by the date last promised) and "missed" (later)
    promises: Counter[str] = field(default_factory=Counter)
    kpis: Kpis = field(default_factory=Kpis)

    @property
    def ok(self) -> bool:
        return not self.breaches

    @property
    def protected(self) -> Counter[str]:
        """Lines refused `protected_for_priority`, per channel: units kept for a higher one.
        (A line that waits instead says `waitlisted`, like any waiting line.)"""
        label = f"rejected: {reasons.PROTECTED_FOR_PRIORITY}"
        return Counter({ch: stats[label] for ch, stats in self.per_channel.items() if stats[label]})

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
    stock_changes: Iterable[Mapping[str, Any]] | None = None,
    order_statuses: Iterable[Mapping[str, Any]] | None = None,
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
        if event["type"] in ("placed", "held"):  # a cart's hold places its lines too
            for line in event["lines"]:
                placed_lines[(event["order_id"], line["line_id"])] = (
                    line["sku"],
                    event["channel"],
                    line["qty"],
                    event["event_id"],
                )
                report.per_channel[event["channel"]]["placed"] += 1
        elif event["type"] == "amended":
            _amend_lines(report, placed_lines, event)
        elif event["type"] == "cancelled":
            listed = {line["line_id"] for line in event["lines"]}
            already = cancelled.get(event["order_id"], set())
            cancelled[event["order_id"]] = None if not listed or already is None else already | listed
    report.lines_placed = len(placed_lines)

    inventory = list(inventory)
    refused = set(refused_inventory_ids)
    known = {event["event_id"] for event in leaked_allocations}
    known.update(order_events)
    known.update(event["event_id"] for event in inventory if event["event_id"] not in refused)
    allocations = list(allocations)
    lines, final, end_ms, depleted = _replay_allocations(report, allocations, placed_lines, known)
    transfer_receipts = {
        e["event_id"] for e in inventory if e["type"] == "transfer_received" and e["event_id"] not in refused
    }
    report.oversold_units += sum(line.over for line in lines.values())
    _apply_inventory(final, inventory, refused, report)
    if stock_changes is not None:
        check_ledger(report, stock_changes, inventory, refused, known, final)
    for key, line in lines.items():
        if key in placed_lines:
            if len(line.decisions) > 1:
                report.breach(f"line {key} has {len(line.decisions)} first decisions")
            if line.decisions:
                report.lines_decided += 1
            else:
                report.breach(f"placed line {key} has no decision")
        if line.dangling:
            report.breach(f"line {key} was released for reallocation and nothing followed")
        report.waitlist_fills += len(line.fills)
        report.transfers["fills"] += len(line.fills & transfer_receipts)
        order_cancel = cancelled.get(key[0], set())
        if (order_cancel is None or key[1] in (order_cancel or set())) and line.held:
            report.breach(f"cancelled line {key} still holds {line.held} unit(s)")
    undecided = placed_lines.keys() - lines.keys()
    for key in undecided:
        report.breach(f"placed line {key} has no decision")
    if order_statuses is not None:
        held = {key: line.held for key, line in lines.items()}
        report.checked_orders = check_order_statuses(report, allocations, order_statuses, held)
    availability = list(availability)
    _check_availability(report, availability, final)
    outcomes = [
        LineOutcome(
            line.channel,
            line.qty,
            key in placed_lines,
            line.first,
            line.first_allocated,
            line.held,
            line.held_since,
        )
        for key, line in lines.items()
    ]
    outcomes += [
        LineOutcome(placed_lines[key][1], placed_lines[key][2], True, None, 0, 0, None) for key in undecided
    ]
    report.kpis = compute_kpis(outcomes, availability, units_depleted=depleted, end_ms=end_ms)
    return report


def _amend_lines(
    report: AuditReport,
    placed_lines: dict[tuple[str, str], tuple[str, str, int, str]],
    event: Mapping[str, Any],
) -> None:
    """An order edit's lines: one it adds is placed by the edit; one whose SKU changed is placed
    by the edit at its new SKU, and what it was at the old one is kept under `moved_key`. A line
    keeps its ordered qty until its `amended` allocation event (a refused edit changes none)."""
    order_id = event["order_id"]
    for line in event["lines"]:
        key = (order_id, line["line_id"])
        was = placed_lines.get(key)
        if was is not None and was[0] == line["sku"]:
            continue
        if was is not None:
            placed_lines[moved_key(key, was[0])] = was
        placed_lines[key] = (line["sku"], event["channel"], line["qty"], event["event_id"])
        report.per_channel[event["channel"]]["placed"] += 1


def moved_key(key: tuple[str, str], sku: str) -> tuple[str, str]:
    """Where the audit keeps a line at a SKU an order edit moved it from."""
    return (key[0], f"{key[1]}@{sku}")


def _traceable(cause: str, known: set[str]) -> bool:
    """An event, or a table or clock decision: `locations:<location_id>:...`, `clock:...`."""
    if cause in known:
        return True
    if cause.startswith("locations:"):
        location, sep, rest = cause.removeprefix("locations:").partition(":")
        return bool(location and sep and rest)
    return cause.startswith("clock:") and len(cause) > len("clock:")


def _replay_allocations(
    report: AuditReport,
    allocations: Iterable[Mapping[str, Any]],
    placed_lines: Mapping[tuple[str, str], tuple[str, str, int, str]],
    known: set[str],
) -> tuple[dict[tuple[str, str], _Line], dict[tuple[str, str], Counter[str]], int, int]:
    """Each line's units and decisions, and each (SKU, location)'s balance changes.

    Also returns the end of the stream (the latest decided_at) and the units shipped.
    `known` holds the ids of the events outside `allocations` a cause may name.
    """
    seen: set[str] = set()
    events = list(allocations)
    known = known | {event["event_id"] for event in events}
    lines: dict[tuple[str, str], _Line] = {}
    holds: dict[str, set[tuple[str, str]]] = defaultdict(set)  # kind -> lines (see AuditReport.holds)
    final: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)  # (sku, location) -> buckets
    end_ms = depleted = 0
    for event in events:
        event_id = event["event_id"]
        if event_id in seen:
            report.repeats += 1
            continue
        seen.add(event_id)
        kind = event["type"]
        report.events[f"allocation.{kind}"] += 1
        if kind in HOLD_EVENTS or (kind == "released" and event.get("reason") == reasons.HOLD_EXPIRED):
            _count_hold(report, holds, event)
        decided_at = event.get("decided_at") or 0
        end_ms = max(end_ms, decided_at)
        cause = event["cause_event_id"]
        if not _traceable(cause, known):
            report.breach(f"{kind} {event_id} has an unknown cause {cause}")
        elif cause.startswith(TABLE_CAUSES):
            report.engine_decisions[(cause.partition(":")[0], kind)] += 1
        if event["line_id"] is None or event["sku"] is None or kind == "amend_requested":
            continue  # about the order (amend_requested: an edit's line, for the order stage)
        if kind == "held":  # a cart's hold takes units as an allocation does (its stats say held)
            kind = "allocated"
        key = (event["order_id"], event["line_id"])
        placed = placed_lines.get(key)
        if placed is not None and placed[0] != event["sku"] and moved_key(key, event["sku"]) in placed_lines:
            key = moved_key(key, event["sku"])  # at the SKU an order edit moved the line from
        line = lines.get(key)
        if line is None:
            unplaced = (event["sku"], event["channel"], event["qty"], "")
            sku, channel, qty, placed_by = placed_lines.get(key, unplaced)
            line = lines[key] = _Line(key[0], key[1], sku, channel, qty, placed_by)
        qty, location = event["qty"], event["location"]
        stats = report.per_channel[line.channel]
        placement = bool(line.placed_by) and cause == line.placed_by
        # What the line's previous event left open; this event closes it unless it continues it.
        splitting, reallocating = line.splitting, line.reallocating
        line.splitting = line.reallocating = line.dangling = False
        if kind in FIRST_DECISIONS and placement:
            # The decision about the placed line (a refused pick or release is not one); the
            # parts of a split allocation come together, each at another location or lot, and
            # a partial one ends with the `backordered` of the rest.
            part = (location, event.get("lot"))
            if kind == "backordered" and splitting:
                report.partial_allocations += 1
                stats["partially allocated"] += 1
            elif not (kind == "allocated" and splitting and part not in line.split):
                line.decisions.add(event_id)
                line.split = set()
                if line.first is None:
                    line.first = kind
                    stats[event["type"] if kind != "rejected" else f"rejected: {event['reason']}"] += 1
            if kind == "allocated":
                line.splitting = True
                line.split.add(part)
                if line.first == "allocated" and len(line.decisions) == 1:
                    line.first_allocated += qty
        if location is None and kind in ("allocated", "reallocated", "picked", "fulfilled", "returned"):
            report.breach(f"{kind} {event_id} of line {key} names no location")
            continue
        if kind in ("allocated", "reallocated"):
            if not placement and line.placed_by:
                if kind == "allocated" and line.waiting:
                    if cause not in line.fills:  # the parts of a split fill are one fill
                        line.fills.add(cause)
                        stats["waitlist fills"] += 1
                    if qty > line.wanting:
                        report.breach(
                            f"allocated {event_id}: line {key} is filled with {qty} unit(s) but waits "
                            f"for {line.wanting}"
                        )
                    line.wanting = max(0, line.wanting - qty)
                    line.waiting = line.wanting > 0
                    if not line.waiting and line.promised_at is not None:  # filled: was it on time?
                        report.promises["kept" if decided_at <= line.promised_at else "missed"] += 1
                        line.promised_at = None
                elif not (reallocating or line.waiting or cause == line.amended_by):
                    report.breach(
                        f"{kind} {event_id}: line {key} gets units from {cause}, neither its placement "
                        "nor after a backorder or a release for reallocation"
                    )
            if kind == REALLOCATED:
                report.reallocations += 1
                line.reallocating = True  # a reallocation may be split over locations too
            line.soft[location] += qty
            final[(line.sku, location)]["allocated"] += qty
            report.units_by_lot[event.get("lot") or ""] += qty
            line.held_since = decided_at
            _check_held(report, line, key)
        elif kind == "backordered":
            if event.get("promised_at") is not None:
                report.promises["promised"] += 1
                report.promises["restated"] += int(line.waiting and not placement)
                line.promised_at = event["promised_at"]
            if not (
                placement or reallocating or line.waiting or not line.placed_by or cause == line.amended_by
            ):
                report.breach(
                    f"backordered {event_id}: line {key} is backordered by {cause}, neither its "
                    "placement nor after a release for reallocation, nor the rest of a waiting line"
                )
            line.waiting = True
            line.wanting = qty
        elif kind == "amended":  # an order edit: the line's new qty (its units move in other events)
            line.qty = qty
            line.amended_by = cause
        elif kind == "rejected" and not placement:
            stats[f"command refused: {event['reason']}"] += 1
        elif kind == "picked":
            moved = min(qty, line.soft[location])
            line.soft[location] -= moved
            line.hard[location] += qty  # beyond its soft units there, a pick takes units directly
            final[(line.sku, location)]["allocated"] -= moved
            final[(line.sku, location)]["picked"] += qty
            if qty > moved:
                line.held_since = decided_at
            _check_held(report, line, key)
        elif kind == "released":
            _release(report, line, key, event, final)
            if event.get("reason") == REALLOCATED:
                line.reallocating = line.dangling = True
            else:
                stats["released"] += 1
                report.released_by_reason[event.get("reason") or ""] += 1
                line.released = True
                line.waiting = False
                line.wanting = 0
                line.promised_at = None  # released while waiting: a promise neither kept nor missed
        elif kind == "fulfilled":
            stats["fulfilled"] += 1
            hard = min(qty, line.hard[location])
            soft = min(qty - hard, line.soft[location])
            if hard + soft < qty:
                report.breach(
                    f"fulfilled {event_id} ships {qty} unit(s) of line {key} at {location}, "
                    f"which holds {hard + soft} there"
                )
            line.hard[location] -= hard
            line.soft[location] -= soft
            final[(line.sku, location)]["picked"] -= hard
            final[(line.sku, location)]["allocated"] -= soft
            final[(line.sku, location)]["on_hand"] -= qty
            line.fulfilled += qty
            depleted += qty
        elif kind == "returned":
            stats["returned"] += 1
            final[(line.sku, location)]["quality_control"] += qty
    return lines, final, end_ms, depleted


def _count_hold(
    report: AuditReport, holds: dict[str, set[tuple[str, str]]], event: Mapping[str, Any]
) -> None:
    """Count a line once per kind of checkout-hold event (a hold may be split over locations)."""
    kind = event["type"] if event["type"] != "released" else "expired"
    lines = holds[kind]
    key = (event["order_id"], event["line_id"])
    if key not in lines:
        lines.add(key)
        report.holds[kind] += 1


def _release(
    report: AuditReport,
    line: _Line,
    key: tuple[str, str],
    event: Mapping[str, Any],
    final: dict[tuple[str, str], Counter[str]],
) -> None:
    """Take a release's units from the line at its location: soft ones first, then hard."""
    qty, location = event["qty"], event["location"]
    if location is None:
        if qty:
            report.breach(f"released {event['event_id']} gives back {qty} unit(s) at no location")
        return  # the line held nothing
    soft = min(qty, line.soft[location])
    hard = min(qty - soft, line.hard[location])
    if soft + hard < qty:
        report.breach(
            f"released {event['event_id']} gives back {qty} unit(s) of line {key} at {location}, "
            f"which holds {soft + hard} there"
        )
    line.soft[location] -= soft
    line.hard[location] -= hard
    final[(line.sku, location)]["allocated"] -= soft
    final[(line.sku, location)]["picked"] -= hard


def _check_held(report: AuditReport, line: _Line, key: tuple[str, str]) -> None:
    if line.held > line.qty:
        line.over = max(line.over, line.held - line.qty)
        report.breach(f"line {key} holds {line.held} of {line.qty} ordered")


def _apply_inventory(
    final: dict[tuple[str, str], Counter[str]],
    inventory: Iterable[Mapping[str, Any]],
    refused: set[str],
    report: AuditReport,
) -> None:
    seen: set[str] = set()
    open_transfers: dict[tuple[str, str], tuple[str, int]] = {}  # (sku, transfer id) -> destination, qty
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
        if kind == "transfer_shipped":
            transfer_id = event.get("transfer_id") or event_id
            if (event["sku"], transfer_id) in open_transfers:  # applied again: its ETA moved
                report.transfers["eta_changes"] += 1
                continue
            open_transfers[(event["sku"], transfer_id)] = (event["destination"], qty)
            report.transfers["shipped"] += 1
            buckets["on_hand"] -= qty
            final[(event["sku"], event["destination"])]["in_transit"] += qty
        elif kind == "transfer_received":
            shipment = open_transfers.pop((event["sku"], event.get("transfer_id") or ""), None)
            if shipment is None:  # applied, so the engine saw its shipment first
                report.breach(f"transfer receipt {event_id} ends no transfer shipped before it")
                continue
            destination, shipped = shipment
            report.transfers["received"] += 1
            report.transfers["lost"] += shipped - qty
            buckets["on_hand"] += qty
            final[(event["sku"], destination)]["in_transit"] -= shipped
        elif kind in ("received", "adjusted"):
            buckets["on_hand"] += qty
        elif kind == "counted":
            buckets["uncheckable"] = 1  # an absolute count depends on interleaving the events do not show
        elif kind == "inspected":
            report.inspected[event["result"] or ""] += qty
            buckets["quality_control"] -= qty
            buckets["on_hand" if event["result"] == "pass" else "damaged"] += qty
    report.in_transit_units = sum(qty for _, qty in open_transfers.values())


def _check_availability(
    report: AuditReport,
    availability: Iterable[Mapping[str, Any]],
    final: Mapping[tuple[str, str], Counter[str]],
) -> None:
    last: dict[str, Mapping[str, Any]] = {}
    worst: dict[tuple[str, str], int] = {}  # (sku, location) -> its most units promised beyond on_hand
    for record in availability:
        last[record["sku"]] = record
        for row in record["locations"]:
            over = row["allocated"] + row["picked"] - row["on_hand"]
            if over > 0:
                where = (record["sku"], row["location"])
                worst[where] = max(worst.get(where, 0), over)
                report.breach(f"{record['sku']} at {row['location']}: {over} unit(s) promised beyond on_hand")
    report.oversold_units += sum(worst.values())
    report.promised_beyond_on_hand = max(worst.values(), default=0)
    report.checked_skus = len(last)
    report.expired_units = sum(record.get("totals", {}).get("expired", 0) for record in last.values())
    for sku, record in last.items():
        for row in record["locations"]:
            expected = final.get((sku, row["location"]), Counter())
            in_transit = row.get("in_transit", 0)
            if in_transit != expected.get("in_transit", 0):  # (a count never moves these)
                report.breach(
                    f"{sku} at {row['location']}: last availability has in_transit={in_transit}, "
                    f"the events give {expected.get('in_transit', 0)}"
                )
            if expected.get("uncheckable"):
                continue
            for bucket in BUCKETS:
                if row[bucket] != expected.get(bucket, 0):
                    report.breach(
                        f"{sku} at {row['location']}: last availability has {bucket}={row[bucket]}, "
                        f"the events give {expected.get(bucket, 0)}"
                    )
